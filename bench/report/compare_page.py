"""The HTML page of a comparison (bench.report.compare): a forest chart of new/base ratios with their confidence
intervals, interactive where plotly is installed and always as a PNG, then the tables (templates/compare.html)."""
from __future__ import annotations

import html
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bench.report import charts, plotly_charts, render, cells  # noqa: E402
from bench.report.compare import CONFIDENCE, SAME_BAND, VERDICTS, Comparison  # noqa: E402

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
    charts.save(fig, path)


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
    """outdir/index.html for the comparison (templates/compare.html); returns its path."""
    os.makedirs(outdir, exist_ok=True)
    go = plotly_charts.plotly_or_none()
    interactive = go is not None and not c.points.empty
    ctx = {"title": "tilebench compare", "interactive": interactive, "base": c.base, "new": c.new,
           "devices": c.devices, "time": c.time, "confidence": f"{CONFIDENCE:.0%}", "band": f"{SAME_BAND:.0%}",
           "gate": None, "empty": c.points.empty, "only_in": [(n, o) for n, o in (("BASE", c.only_base),
                                                                                 ("NEW", c.only_new)) if o],
           "status_changed": cells.from_df(c.status_changed) if not c.status_changed.empty else None}
    if fail_above is not None:
        over, broken = c.over(fail_above), c.newly_broken()
        ctx["gate"] = {"threshold": f"{fail_above:.1%}", "failed": bool(len(over) + len(broken)), "over": len(over),
                       "broken": len(broken)}
    if not c.points.empty:
        counts = c.points["verdict"].value_counts()
        ctx["counts"] = [(k, int(counts[k])) for k in VERDICTS if k in counts]
        per = c.per_impl
        ctx["per_impl"] = cells.Table(list(per.columns), [
            [cells.cell(v) if col != "geomean ratio" else cells.ratio(v) for col, v in zip(per.columns, r)]
            for r in per.itertuples(index=False)])
        _png(c, os.path.join(outdir, PNG))
        ctx["chart"] = charts.Chart("new / base per point", PNG, _interactive(c, go, outdir) if interactive else None)
        cols = ["point", "base_ms", "new_ms", "base_reps", "new_reps", "ratio", "ci_lo", "ci_hi", "ci", "verdict"] + \
            (["time"] if c.time == "host" else [])
        rows = []
        for r in c.points[cols].to_dict("records"):
            row = []
            for col in cols:
                v = r[col]
                if col == "verdict":
                    row.append(cells.Cell(v, v))
                elif col in ("ratio", "ci_lo", "ci_hi"):
                    row.append(cells.Cell(f"{v:.4f}", "num"))
                else:
                    row.append(cells.cell(v))
            rows.append(row)
        ctx["points"] = cells.Table(cols, rows)
    return render.render("compare.html", outdir, **ctx)
