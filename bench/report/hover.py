"""The report's interactive charts (plotly): throughput per shape for each impl, with the config, the median
and quartiles, and the speed-up over eager on hover. The PNG charts stay beside them for docs and papers."""
from __future__ import annotations

import html

from bench.report import plotly_charts


def _num(v) -> bool:
    return isinstance(v, (int, float)) and v == v


def _hover(r, unit: str, metric: str, eager_ms: float | None) -> str:
    q1, q3, reps = r.get("q1_ms"), r.get("q3_ms"), r.get("reps")
    q = f"{q1:.4g} .. {q3:.4g} ms" if _num(q1) and _num(q3) else "n/a"   # rows from before quartiles were kept
    text = (f"<b>{html.escape(str(r['impl']))}</b> {html.escape(str(r['shape_label']))}<br>"
            f"config {html.escape(str(r.get('config_label') or 'default'))}<br>"
            f"median {r['median_ms']:.4g} ms (quartiles {q}, {f'{reps:.0f}' if _num(reps) else '?'} reps)<br>"
            f"{r[metric]:.4g} {unit}")
    if eager_ms:
        text += f"<br>{eager_ms / r['median_ms']:.3g}x eager"
    return text


def throughput(best, op: str, device: str, outdir: str, metric_of) -> str:
    """Divs, one per (dtype, pass), for one op on one device; '' without plotly or data."""
    go = plotly_charts.plotly_or_none()
    d = best[(best["op"] == op) & (best["device_name"] == device)]
    if go is None or d.empty:
        return ""
    metric, unit = metric_of(d["bound"].iloc[0])
    out = []
    for (dtype, pass_), g in sorted(d.groupby(["dtype", "pass"]), key=lambda kv: kv[0]):
        order = g.sort_values("x")["shape_label"].drop_duplicates().tolist()
        eager = g[g["impl"] == "eager"].set_index("shape_label")["median_ms"].to_dict()
        fig = go.Figure()
        for impl, gi in g.groupby("impl"):
            gi = gi.set_index("shape_label").reindex(order).dropna(subset=["median_ms"]).reset_index()
            fig.add_trace(go.Scatter(
                x=gi["shape_label"], y=gi[metric], mode="lines+markers", name=str(impl),
                hovertext=[_hover(r, unit, metric, eager.get(r["shape_label"]) if impl != "eager" else None)
                           for r in gi.to_dict("records")], hoverinfo="text"))
        fig.update_layout(title=f"{op} {dtype} {pass_} - {device}", height=380, template="plotly_white",
                          xaxis={"categoryorder": "array", "categoryarray": order}, yaxis={"title": unit},
                          margin={"l": 10, "r": 10, "t": 40, "b": 40})
        out.append(plotly_charts.div(fig, outdir))
    return "\n".join(out)
