"""Pages from Jinja2 templates (bench/report/templates/, package data: loaded through the package, so an installed
tilebench renders the same pages as a checkout), autoescaped: every value a row brings is text, never markup. The
one exception is a chart's plotly div, which plotly writes (and escapes) itself."""
from __future__ import annotations

import functools
import os

import jinja2

from bench.report import plotly_charts


@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("bench.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "css"], default=True),
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.globals.update(plotly_js=plotly_charts.JS_NAME)
    return env


def render(template: str, outdir: str, name: str = "index.html", **context) -> str:
    """Renders `template` into outdir/name; returns the path."""
    os.makedirs(outdir, exist_ok=True)
    text = environment().get_template(template).render(**context)
    path = os.path.join(outdir, name)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)       # a live rebuild never leaves a half page to a reader
    return path
