"""The HTML page of a comparison (bench.report.compare): a forest chart of new/base ratios with their confidence
intervals, interactive where plotly is installed and always as a PNG, then the tables."""
from __future__ import annotations

import html
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.report import plotly_charts  # noqa: E402
from bench.report.compare import CONFIDENCE, SAME_BAND, Comparison  # noqa: E402
from bench.report.pages import CSS, _fmt  # noqa: E402

COLORS = {"slower": "#d62728", "faster": "#2ca02c", "same": "#7f7f7f", "noisy": "#ff7f0e"}
PNG = "compare.png"


def _png(c: Comparison, path: str) -> None:
    d = c.points.iloc[::-1]          # slowest at the top
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.28 * len(d)))
    y = range(len(d))
    ax.axvspan(1 / (1 + SAME_BAND), 1 + SAME_BAND, color="#eeeeee", zorder=0)
    ax.axvline(1.0, color="k", lw=0.8)
    for v, color in COLORS.items():
        m = (d["verdict"] == v).to_numpy()
        if m.any():
            ys = [i for i, keep in zip(y, m) if keep]
            r = d["ratio"].to_numpy()[m]
            ax.errorbar(r, ys, xerr=[r - d["ci_lo"].to_numpy()[m], d["ci_hi"].to_numpy()[m] - r], fmt="o",
                        color=color, label=v, capsize=2, markersize=4)
    ax.set_yticks(list(y), d["point"], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(f"new / base median time (log scale; {CONFIDENCE:.0%} interval; grey band: same within "
                  f"{SAME_BAND:.0%})")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _interactive(c: Comparison, go, outdir: str) -> str:
    d = c.points.iloc[::-1]
    fig = go.Figure()
    for v, color in COLORS.items():
        g = d[d["verdict"] == v]
        if g.empty:
            continue
        hover = [f"<b>{html.escape(r.point)}</b><br>base {r.base_ms:.4g} ms ({r.base_reps} reps)<br>"
                 f"new {r.new_ms:.4g} ms ({r.new_reps} reps)<br>ratio {r.ratio:.4f} "
                 f"[{r.ci_lo:.4f}, {r.ci_hi:.4f}] ({r.ci})<br>{v}" for r in g.itertuples()]
        fig.add_trace(go.Scatter(x=g["ratio"], y=g["point"], mode="markers", name=v, marker={"color": color},
                                 error_x={"type": "data", "symmetric": False, "array": g["ci_hi"] - g["ratio"],
                                          "arrayminus": g["ratio"] - g["ci_lo"]},
                                 hovertext=hover, hoverinfo="text"))
    fig.add_vrect(x0=1 / (1 + SAME_BAND), x1=1 + SAME_BAND, fillcolor="#dddddd", opacity=0.5, line_width=0)
    fig.add_vline(x=1.0, line_color="black", line_width=1)
    fig.update_layout(height=160 + 24 * len(d), margin={"l": 10, "r": 10, "t": 30, "b": 40},
                      xaxis={"type": "log", "title": f"new / base median time ({CONFIDENCE:.0%} interval)"},
                      yaxis={"categoryorder": "array", "categoryarray": list(d["point"])}, template="plotly_white")
    return plotly_charts.div(fig, outdir)


def write(c: Comparison, outdir: str, fail_above: float | None = None) -> str:
    """outdir/index.html for the comparison; returns its path."""
    os.makedirs(outdir, exist_ok=True)
    go = plotly_charts.plotly_or_none()
    head = plotly_charts.script_tag() if go is not None and not c.points.empty else ""
    parts = [f"<html><head><meta charset='utf-8'><title>tilebench compare</title><style>{CSS}"
             ".slower{color:#d62728;font-weight:bold}.faster{color:#2ca02c;font-weight:bold}</style>"
             f"{head}</head><body>",
             "<h1>tilebench compare</h1>",
             f"<p><b>BASE</b> {html.escape(c.base)} ({html.escape(c.devices[0])})<br><b>NEW</b> "
             f"{html.escape(c.new)} ({html.escape(c.devices[1])})</p>",
             f"<p class='note'>{'Kernel' if c.time == 'kernel' else 'Host-inclusive'} time. Ratio = new / base "
             f"median; below 1 is faster. The {CONFIDENCE:.0%} interval is bootstrapped from each row's "
             f"per-repetition samples (rows without samples: from their quartiles, wider). slower/faster: the "
             f"interval excludes 1 and the ratio is beyond {SAME_BAND:.0%}; same: the whole interval is within "
             f"{SAME_BAND:.0%}; noisy: the samples cannot tell. The interval covers the spread of the repetitions "
             f"within each run, not drift between runs (clocks, temperature, another tenant): rerun to confirm a "
             f"small change.</p>"]
    if fail_above is not None:
        over, broken = c.over(fail_above), c.newly_broken()
        bad = len(over) + len(broken)
        parts.append(f"<p class='{'slower' if bad else 'faster'}'>--fail-above {fail_above:.1%}: "
                     + (f"FAIL, {len(over)} point(s) slower beyond it with {CONFIDENCE:.0%} confidence, "
                        f"{len(broken)} newly broken" if bad else "pass") + "</p>")
    if c.points.empty:
        parts.append("<p>No point was timed in both runs.</p>")
    else:
        counts = c.points["verdict"].value_counts()
        parts.append("<p>" + ", ".join(f"<span class='{k}'>{k} {counts[k]}</span>"
                                       for k in ("slower", "faster", "same", "noisy") if k in counts) + "</p>")
        parts.append("<h2>Per impl: geometric mean of the ratios</h2>" + _fmt(c.per_impl))
        parts.append("<h2>Every point</h2>")
        parts.append(_interactive(c, go, outdir) if go is not None else plotly_charts.MISSING)
        _png(c, os.path.join(outdir, PNG))
        parts.append(f'<details{" open" if go is None else ""}><summary>the same chart as a PNG</summary>'
                     f'<img src="{PNG}"></details>')
        cols = ["point", "base_ms", "new_ms", "base_reps", "new_reps", "ratio", "ci_lo", "ci_hi", "ci", "verdict"]
        parts.append(_fmt(c.points[cols + (["time"] if c.time == "host" else [])]))
    for name, only in (("BASE", c.only_base), ("NEW", c.only_new)):
        if only:
            parts.append(f"<h2>Only in {name} ({len(only)})</h2><ul>" +
                         "".join(f"<li>{html.escape(p)}</li>" for p in only) + "</ul>")
    if not c.status_changed.empty:
        parts.append("<h2>Status changed, or not timed in one run</h2>" + _fmt(c.status_changed))
    parts.append("</body></html>")
    path = os.path.join(outdir, "index.html")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path
