"""The report's charts, each drawn once as a PNG (matplotlib: always there, for docs and papers) and, where plotly is
installed, once as an interactive div with the same colours (bench.report.colors) and the same content; the page
shows the interactive one and links the PNG, or shows the PNG.

- speed-up over the best peer (per op and device): one categorical x per shape (no line joins two shapes), a
  marker per impl with its 95 % interval, log y, a line at 1; the best peer of a point sits at 1 as a diamond;
  unsettled ratios are hollow; impls slower than FLOOR x the best peer are named under the chart, not drawn.
- throughput (per op and device): grouped bars per shape, as the fraction of the device's measured roofline where
  the rows have it (the achieved TFLOP/s or GB/s where not).
- tile-config heatmaps, e2e tokens/s, step breakdown, loss curves, static compile times: PNG only."""
from __future__ import annotations

import dataclasses
import html
import math
import os
import re
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from bench.report import plotly_charts  # noqa: E402
from bench.report.colors import impl_color  # noqa: E402

DPI = 90
LOG_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0)
FLOOR = 0.1          # speed-ups below this (10x slower than the best peer) are listed, not drawn
PANEL_W, PANEL_H = 7.0, 3.6


@dataclasses.dataclass
class Chart:
    title: str
    png: str | None = None      # file name beside the page
    div: str | None = None      # plotly's HTML (rendered as is: plotly escapes its own JSON)
    note: str = ""


def slug(s) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(s)).strip("_")[:80]


def save(fig, path: str) -> None:
    """Writes the figure (every chart at one dpi) and frees it: a report draws many."""
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def impl_order(impls, kinds: dict | None = None) -> list[str]:
    """Ours first (cuTile, Triton), then peers, then baselines, each alphabetical: legends read the same way."""
    rank = {"ours": 0, "peer": 1, "baseline": 2}
    kinds = kinds or {}
    return sorted(set(map(str, impls)), key=lambda i: (rank.get(kinds.get(i), 1), i not in ("cutile", "triton"), i))


def _wrap(label: str, width: int = 18) -> str:
    return "\n".join(textwrap.wrap(str(label), width)) or str(label)


def _panels(d: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) per (dtype, pass[, timer]) of d."""
    timers = d["timer"].dropna().unique() if "timer" in d else []
    keys = ["dtype", "pass"] + (["timer"] if len(timers) > 1 else [])
    d = d.assign(**{k: d[k].fillna("") for k in keys})
    return [(" ".join(str(v) for v in (k if isinstance(k, tuple) else (k,)) if v), g)
            for k, g in sorted(d.groupby(keys, sort=False), key=lambda kv: tuple(map(str, kv[0])))]


def _categories(g: pd.DataFrame) -> list[str]:
    x = g["x"] if "x" in g else pd.Series([None] * len(g), index=g.index)
    order = g.assign(_x=pd.to_numeric(x, errors="coerce")).sort_values(["_x", "shape_label"], na_position="last")
    return order["shape_label"].astype(str).drop_duplicates().tolist()


def _grid(n: int, ncols_max: int = 2, extra_h: float = 0.9):
    cols = min(ncols_max, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_W * cols, PANEL_H * rows + extra_h), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def _top_legend(fig, handles, labels, title: str) -> None:
    """The chart's title and legend above the panels, never over the data (after tight_layout: the legend is placed
    in figure coordinates above the axes; savefig's tight bounding box makes room)."""
    fig.tight_layout()
    leg = fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(labels), 7),
                     fontsize=8, frameon=False, title=title, title_fontsize=10)
    leg._legend_box.align = "center"


def _dodge(n: int, width: float = 0.7) -> list[float]:
    if n <= 1:
        return [0.0]
    step = width / n
    return [(i - (n - 1) / 2) * step for i in range(n)]


# --- speed-up over the best peer -----------------------------------------------------------------------------------

def _speedup_frame(sp: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(drawn, off the chart): baselines only where they are the reference, and nothing below FLOOR."""
    d = sp[(sp["kind"] != "baseline") | sp["is_ref"]]
    return d[d["ratio"] >= FLOOR], d[d["ratio"] < FLOOR]


def _off_note(off: pd.DataFrame) -> str:
    if off.empty:
        return ""
    parts = []
    for impl, g in off.groupby("impl"):
        lo, hi = g["ratio"].min(), g["ratio"].max()
        parts.append(f"{impl} ({lo:.2g}×" + (f"–{hi:.2g}×" if hi - lo > 0.005 else "") + ")")
    return f"Below {FLOOR:g}× the best peer, not drawn: " + ", ".join(parts) + "."


def speedup(sp: pd.DataFrame, title: str, outdir: str, name: str, interactive: bool) -> Chart | None:
    """sp: bench.report.speedup.table rows of one op on one device."""
    drawn, off = _speedup_frame(sp)
    if drawn.empty or drawn["is_ref"].all():
        return None
    kinds = dict(zip(drawn["impl"], drawn["kind"]))
    order = impl_order(drawn["impl"], kinds)
    panels = _panels(drawn)
    fig, axes = _grid(len(panels))
    lo_all = min(drawn["lo"].min(), 1.0)
    hi_all = max(drawn["hi"].max(), 1.0)
    ylim = (lo_all / 1.25, hi_all * 1.25)
    for ax, (ptitle, g) in zip(axes, panels):
        cats = _categories(g)
        present = [i for i in order if i in set(g["impl"])]
        offs = dict(zip(present, _dodge(len(present))))
        ax.axhspan(1, ylim[1], color="#edf7ee", zorder=0)
        ax.axhspan(ylim[0], 1, color="#fcefee", zorder=0)
        ax.axhline(1.0, color="k", lw=0.9, zorder=1)
        for impl in present:
            gi = g[g["impl"] == impl]
            c = impl_color(impl)
            for _, r in gi.iterrows():
                x = cats.index(str(r["shape_label"])) + offs[impl]
                marker = "D" if r["is_ref"] else "o"
                ax.errorbar([x], [r["ratio"]], yerr=[[r["ratio"] - r["lo"]], [r["hi"] - r["ratio"]]], fmt=marker,
                            color=c, mfc="white" if r["unsettled"] else c, mec=c, ms=6, capsize=3, lw=1.2, zorder=3)
        ax.set_xticks(range(len(cats)), [_wrap(c) for c in cats], fontsize=8)
        ax.set_xlim(-0.6, len(cats) - 0.4)
        ax.set_yscale("log")
        ax.set_ylim(*ylim)
        ax.set_yticks([v for v in LOG_TICKS if ylim[0] <= v <= ylim[1]])
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        ax.set_ylabel("speed-up over the best peer", fontsize=8)
        ax.set_title(ptitle, fontsize=10)
        ax.grid(axis="y", alpha=0.3, which="major")
    handles = [Line2D([], [], marker="o", ls="", color=impl_color(i), label=i) for i in order]
    handles += [Line2D([], [], marker="D", ls="", color="#555", label="best peer (= 1)"),
                Line2D([], [], marker="o", ls="", color="#555", mfc="white", label="unsettled")]
    _top_legend(fig, handles, [h.get_label() for h in handles], title)
    png = f"speedup_{name}.png"
    save(fig, os.path.join(outdir, png))
    div = _speedup_plotly(drawn, order, title, outdir) if interactive else None
    return Chart(title, png, div, _off_note(off))


def _speedup_plotly(drawn: pd.DataFrame, order: list[str], title: str, outdir: str) -> str | None:
    go = plotly_charts.plotly_or_none()
    if go is None:
        return None
    from plotly.subplots import make_subplots
    panels = _panels(drawn)
    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for t, _ in panels], shared_yaxes=True,
                        horizontal_spacing=0.06, vertical_spacing=0.18 if rows > 1 else 0.1)
    shown = set()
    for n, (_, g) in enumerate(panels):
        row, col = n // cols + 1, n % cols + 1
        cats = _categories(g)
        for impl in [i for i in order if i in set(g["impl"])]:
            gi = g[g["impl"] == impl].copy()
            gi["_c"] = gi["shape_label"].astype(str).map(cats.index)
            gi = gi.sort_values("_c")
            c = impl_color(impl)
            hover = [_speedup_hover(r) for r in gi.to_dict("records")]
            if impl not in shown:        # the legend's own entry: a plain circle (a point's marker may be the ref's)
                fig.add_trace(go.Scatter(x=[cats[0]], y=[None], mode="markers", name=impl, legendgroup=impl,
                                         offsetgroup=impl,
                                         marker={"color": c, "size": 10, "line": {"color": c, "width": 2}}),
                              row=row, col=col)
            fig.add_trace(go.Scatter(
                x=gi["shape_label"].astype(str), y=gi["ratio"], mode="markers", name=impl, legendgroup=impl,
                showlegend=False, offsetgroup=impl,
                marker={"color": [("white" if u else c) for u in gi["unsettled"]], "line": {"color": c, "width": 2},
                        "size": 10, "symbol": ["diamond" if r else "circle" for r in gi["is_ref"]]},
                error_y={"type": "data", "symmetric": False, "array": gi["hi"] - gi["ratio"],
                         "arrayminus": gi["ratio"] - gi["lo"], "color": c},
                hovertext=hover, hoverinfo="text"), row=row, col=col)
            shown.add(impl)
        fig.update_xaxes(categoryorder="array", categoryarray=cats, row=row, col=col)
    lo, hi = min(drawn["lo"].min(), 1.0) / 1.25, max(drawn["hi"].max(), 1.0) * 1.25
    ticks = [v for v in LOG_TICKS if lo <= v <= hi]
    fig.update_yaxes(type="log", range=[math.log10(lo), math.log10(hi)], tickvals=ticks,
                     ticktext=[f"{v:g}×" for v in ticks])
    fig.update_yaxes(title_text="speed-up over the best peer", col=1)
    fig.add_hline(y=1.0, line_color="black", line_width=1)
    fig.update_layout(title=title, height=120 + 300 * rows, template="plotly_white", scattermode="group",
                      margin={"l": 10, "r": 10, "t": 80, "b": 40})
    return plotly_charts.div(fig, outdir)


def _speedup_hover(r: dict) -> str:
    e = html.escape
    if r["is_ref"]:
        text = f"<b>{e(str(r['impl']))}</b>: the best peer here, {r['median_ms']:.4g} ms"
    else:
        text = (f"<b>{e(str(r['impl']))}</b>: {r['ratio']:.2f}× vs {e(str(r['ref_impl']))} "
                f"[{r['lo']:.2f}×–{r['hi']:.2f}×, {r['ci']}]<br>{r['median_ms']:.4g} ms vs {r['ref_ms']:.4g} ms")
    text += f"<br>{e(str(r['shape_label']))} {e(str(r['dtype']))} {e(str(r['pass']))}"
    if r.get("config_text"):
        text += "<br>config " + e(textwrap.shorten(str(r["config_text"]), 120))
    if r["unsettled"]:
        text += "<br><i>unsettled: IQR above the timing target</i>"
    return text


# --- throughput -----------------------------------------------------------------------------------------------------

def _num(v) -> bool:
    return isinstance(v, (int, float)) and v == v


def _tput_hover(r: dict, unit: str, metric: str, eager_ms) -> str:
    """Config, median, quartiles and reps, throughput and roofline, and the speed-up over eager."""
    q1, q3, reps = r.get("q1_ms"), r.get("q3_ms"), r.get("reps")
    q = f"{q1:.4g} .. {q3:.4g} ms" if _num(q1) and _num(q3) else "n/a"
    text = (f"<b>{html.escape(str(r['impl']))}</b> {html.escape(str(r['shape_label']))}<br>"
            f"config {html.escape(str(r.get('config_label') or 'default'))}<br>"
            f"median {r['median_ms']:.4g} ms (quartiles {q}, {f'{reps:.0f}' if _num(reps) else '?'} reps)")
    if _num(r.get(metric)):
        text += f"<br>{r[metric]:.4g} {unit}"
    if _num(r.get("roofline_frac")):
        text += f"<br>{100 * r['roofline_frac']:.1f} % of the measured roofline"
    if eager_ms and r["impl"] != "eager":
        text += f"<br>{eager_ms / r['median_ms']:.3g}x eager"
    return text


def throughput(best: pd.DataFrame, title: str, outdir: str, name: str, interactive: bool, kinds: dict) -> Chart | None:
    """best: ok rows (best config per impl) of one op on one device."""
    if best.empty:
        return None
    metric, unit = ("tflops", "TFLOP/s") if best["bound"].iloc[0] == "compute" else ("gbps", "GB/s")
    roof = "roofline_frac" in best and best["roofline_frac"].notna().all()
    ycol, ylabel = ("roofline_frac", "fraction of the measured roofline") if roof else (metric, unit)
    if ycol not in best or best[ycol].isna().all():
        return None
    order = impl_order(best["impl"], kinds)
    panels = _panels(best)
    fig, axes = _grid(len(panels))
    for ax, (ptitle, g) in zip(axes, panels):
        cats = _categories(g)
        present = [i for i in order if i in set(g["impl"])]
        offs = dict(zip(present, _dodge(len(present), 0.8)))
        w = 0.8 / max(1, len(present))
        for impl in present:
            gi = g[g["impl"] == impl]
            xs = [cats.index(str(s)) + offs[impl] for s in gi["shape_label"]]
            ax.bar(xs, gi[ycol], width=w, color=impl_color(impl), label=impl)
        ax.set_xticks(range(len(cats)), [_wrap(c) for c in cats], fontsize=8)
        ax.set_title(ptitle, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)
        if roof:
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f} %"))
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=impl_color(i)) for i in order]
    _top_legend(fig, handles, order, title)
    png = f"tput_{name}.png"
    save(fig, os.path.join(outdir, png))
    div = None
    go = plotly_charts.plotly_or_none() if interactive else None
    if go is not None:
        from plotly.subplots import make_subplots
        cols = min(2, len(panels))
        rows = (len(panels) + cols - 1) // cols
        pf = make_subplots(rows=rows, cols=cols, subplot_titles=[t for t, _ in panels], horizontal_spacing=0.06,
                           vertical_spacing=0.18 if rows > 1 else 0.1)
        shown = set()
        for n, (_, g) in enumerate(panels):
            cats = _categories(g)
            eager = g[g["impl"] == "eager"].set_index("shape_label")["median_ms"].to_dict()
            for impl in [i for i in order if i in set(g["impl"])]:
                gi = g[g["impl"] == impl].copy()
                gi["_c"] = gi["shape_label"].astype(str).map(cats.index)
                gi = gi.sort_values("_c")
                pf.add_trace(go.Bar(x=gi["shape_label"].astype(str), y=gi[ycol], name=impl, legendgroup=impl,
                                    showlegend=impl not in shown, marker_color=impl_color(impl),
                                    hovertext=[_tput_hover(r, unit, metric, eager.get(r["shape_label"]))
                                               for r in gi.to_dict("records")], hoverinfo="text"),
                             row=n // cols + 1, col=n % cols + 1)
                shown.add(impl)
            pf.update_xaxes(categoryorder="array", categoryarray=cats, row=n // cols + 1, col=n % cols + 1)
        pf.update_yaxes(tickformat=".0%" if roof else None)
        pf.update_yaxes(title_text=ylabel, col=1)
        pf.update_layout(title=title, barmode="group", height=120 + 300 * rows, template="plotly_white",
                         margin={"l": 10, "r": 10, "t": 80, "b": 40})
        div = plotly_charts.div(pf, outdir)
    return Chart(title, png, div)


# --- tile-config heatmaps -------------------------------------------------------------------------------------------

def _config_axes(g: pd.DataFrame) -> list[str]:
    """The two config columns (config.X) with the most distinct values, among those that vary."""
    cols = [c for c in g.columns if c.startswith("config.")]
    varied = [(c, g[c].astype(str).nunique()) for c in cols]
    return [c for c, n in sorted(varied, key=lambda kv: -kv[1]) if n > 1][:2]


def heatmaps(ok: pd.DataFrame, outdir: str, tag: str, limit: int = 6) -> list[Chart]:
    """Throughput over the two most varied tile-config axes, per (impl, shape, dtype, pass)."""
    out = []
    for key, g in ok.groupby(["impl", "shape_label", "dtype", "pass"]):
        if len(g) < 3:
            continue
        axes = _config_axes(g)
        if not axes:
            continue
        metric, unit = ("tflops", "TFLOP/s") if g["bound"].iloc[0] == "compute" else ("gbps", "GB/s")
        a0, a1 = axes[0], (axes[1] if len(axes) > 1 else None)
        t = g.assign(_r=g[a0].astype(str), _c=g[a1].astype(str) if a1 else "-")
        p = t.pivot_table(index="_r", columns="_c", values=metric, aggfunc="max")
        fig, ax = plt.subplots(figsize=(2.2 + 0.9 * len(p.columns), 1.6 + 0.5 * len(p.index)))
        im = ax.imshow(p.values, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(p.columns)), p.columns, fontsize=7)
        ax.set_yticks(range(len(p.index)), p.index, fontsize=7)
        ax.set_xlabel((a1 or "").removeprefix("config."))
        ax.set_ylabel(a0.removeprefix("config."))
        for i in range(p.shape[0]):
            for j in range(p.shape[1]):
                v = p.values[i, j]
                if v == v:
                    ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=6, color="w")
        fig.colorbar(im, ax=ax, label=unit)
        title = " ".join(map(str, key))
        ax.set_title(title, fontsize=7)
        png = f"heat_{tag}_{slug('_'.join(map(str, key)))}.png"
        save(fig, os.path.join(outdir, png))
        out.append(Chart(f"tile configs: {title}", png))
        if len(out) >= limit:
            break
    return out


# --- e2e and static -------------------------------------------------------------------------------------------------

def e2e_tokens(p: pd.DataFrame, outdir: str) -> Chart:
    """p: tokens/s, index (device, shape), one column per impl."""
    order = impl_order(p.columns)
    p = p[order]
    fig, ax = plt.subplots(figsize=(max(9, 1.6 * len(p)), 4.5))
    p.plot.bar(ax=ax, color=[impl_color(c) for c in p.columns], width=0.8)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_ylabel("tokens/s")
    ax.set_xlabel("")
    ax.tick_params(axis="x", labelsize=7, labelrotation=20)
    save(fig, os.path.join(outdir, "e2e_tokens.png"))
    return Chart("tokens/s per backend", "e2e_tokens.png")


def e2e_breakdown(bd: pd.DataFrame, outdir: str) -> Chart:
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(bd) + 2))
    bd.plot.barh(stacked=True, ax=ax, colormap="tab20")
    ax.set_xlabel("ms per step, by op")
    ax.set_ylabel("")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    save(fig, os.path.join(outdir, "e2e_breakdown.png"))
    return Chart("where a step's time goes", "e2e_breakdown.png")


def e2e_losses(curves: list[tuple[str, str, list]], outdir: str) -> Chart:
    """curves: (label, impl, [[iter, loss], ...])."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, impl, losses in curves:
        it, loss = zip(*losses)
        ax.plot(it, loss, label=label, color=impl_color(impl))
    ax.set_xlabel("iteration")
    ax.set_ylabel("train loss")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    save(fig, os.path.join(outdir, "e2e_losses.png"))
    return Chart("loss curves", "e2e_losses.png")


def static_compile(p: pd.DataFrame, outdir: str) -> Chart:
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(p) + 2))
    p.plot.barh(ax=ax)
    ax.set_xlabel("compile time, all kernels and presets (s)")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    save(fig, os.path.join(outdir, "static_compile_time.png"))
    return Chart("compile time per GPU generation", "static_compile_time.png")
