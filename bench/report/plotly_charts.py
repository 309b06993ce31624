"""Interactive charts (plotly) for HTML pages, where plotly is installed; pages built without it keep their
PNG charts and say why there is nothing to hover (templates/_macros.html, missing_plotly). plotly.js is written
once beside the page (no network needed to view it: GPU hosts and CI artifacts are often offline)."""
from __future__ import annotations

import os

JS_NAME = "plotly.min.js"


def plotly_or_none():
    try:
        import plotly.graph_objects as go
    except ImportError:
        return None
    return go


def div(fig, outdir: str) -> str:
    """The figure as an HTML div, with plotly.js written to outdir once and loaded from there."""
    import plotly.offline
    js = os.path.join(outdir, JS_NAME)
    if not os.path.exists(js):
        with open(js, "w") as f:
            f.write(plotly.offline.get_plotlyjs())
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
