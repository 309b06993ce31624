"""`run_bench.py --history-add` and `--history`: the results history (bench.history) as a table per point, oldest
commit first, with steps flagged (bench.report.steps), and as a page (templates/history.html) with a chart per point:
each impl's median across commits in its report colour, interquartile bars, steps marked.

A series is one point (op, impl, shape, dtype, pass, tile config, timer) on one GPU; its level at a commit is the
median of that commit's medians there (a point measured twice by one commit is one level)."""
from __future__ import annotations

import html
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from bench import history  # noqa: E402
from bench.report import charts, plotly_charts, render, steps, cells  # noqa: E402
from bench.report.colors import color_map, impl_color  # noqa: E402

SERIES = ["op", "impl", "shape_label", "dtype", "pass", "config_label", "timer", "device_name"]
CHART = ["op", "shape_label", "dtype", "pass", "config_label", "timer", "device_name"]   # impls side by side
MAX_CHARTS = 60


def series(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (series, commit): level (median ms), q1, q3, iqr_rel, rows, first date; oldest first."""
    ok = df[(df["status"] == "ok") & df["median_ms"].notna()].copy()
    if ok.empty:
        return pd.DataFrame()
    for c in SERIES + ["git_commit", "q1_ms", "q3_ms", "iqr_rel"]:
        if c not in ok:
            ok[c] = None
    ok[SERIES + ["git_commit"]] = ok[SERIES + ["git_commit"]].fillna("").astype(str)
    g = ok.groupby(SERIES + ["git_commit"], sort=False)
    out = g.agg(level=("median_ms", "median"), q1=("q1_ms", "median"), q3=("q3_ms", "median"),
                iqr_rel=("iqr_rel", "median"), rows=("median_ms", "size"), date=("date", "min")).reset_index()
    return out.sort_values(SERIES + ["date"], kind="stable").reset_index(drop=True)


def flag(s: pd.DataFrame) -> pd.DataFrame:
    """s (series()) with each level's change over the previous commit and the steps: step (''/'slower'/'faster'),
    step_ratio, confirmed."""
    s = s.assign(vs_prev=np.nan, step="", step_ratio=np.nan, step_before=np.nan, step_after=np.nan, confirmed=False,
                 threshold=np.nan)
    for _, g in s.groupby(SERIES, sort=False):
        idx = list(g.index)
        lv = g["level"].to_numpy()
        s.loc[idx[1:], "vs_prev"] = lv[1:] / lv[:-1]
        for st in steps.detect(lv, list(g["iqr_rel"])):
            i = idx[st.index]
            s.loc[i, ["step", "step_ratio", "step_before", "step_after", "confirmed", "threshold"]] = \
                [st.direction, st.ratio, st.before, st.after, st.confirmed, st.threshold]
    return s


def _label(r) -> str:
    cfg = f" [{r['config_label']}]" if r["config_label"] not in ("", "default") else ""
    return (f"{r['op']}/{r['impl']} {r['shape_label']} {r['dtype']} {r['pass']}{cfg} ({r['timer']}) "
            f"on {r['device_name']}")


def text(s: pd.DataFrame) -> str:
    lines = []
    for _, g in s.groupby(SERIES, sort=False):
        lines.append(_label(g.iloc[0]))
        lines.append(f"  {'date':25s} {'commit':16s} {'median ms':>10s} {'IQR':>7s} {'rows':>4s} {'vs prev':>8s}")
        for r in g.to_dict("records"):
            iqr = f"{100 * r['iqr_rel']:.1f} %" if r["iqr_rel"] == r["iqr_rel"] and r["iqr_rel"] is not None else ""
            prev = f"{r['vs_prev']:.3f}x" if r["vs_prev"] == r["vs_prev"] else ""
            step = ""
            if r["step"]:
                step = f"  STEP {100 * (r['step_ratio'] - 1):+.1f} % ({r['step']}" + \
                       ("" if r["confirmed"] else ", newest commit: rerun to confirm") + ")"
            lines.append(f"  {str(r['date'])[:25]:25s} {str(r['git_commit'])[:16]:16s} {r['level']:10.4g} {iqr:>7s} "
                         f"{r['rows']:4d} {prev:>8s}{step}")
    n = int((s["step"] != "").sum())
    lines.append(f"{s.groupby(SERIES).ngroups} series, {n} step(s) flagged")
    return "\n".join(lines)


def _chart(g: pd.DataFrame, title: str, outdir: str, name: str, interactive: bool) -> charts.Chart:
    commits = g.sort_values("date").drop_duplicates("git_commit")["git_commit"].tolist()
    impls = charts.impl_order(g["impl"])
    fig, ax = plt.subplots(figsize=(max(7.0, 1.0 + 0.9 * len(commits)), 3.6))
    for impl in impls:
        gi = g[g["impl"] == impl].sort_values("date")
        xs = [commits.index(c) for c in gi["git_commit"]]
        c = impl_color(impl)
        err = [np.clip((gi["level"] - gi["q1"]).fillna(0).to_numpy(), 0, None),
               np.clip((gi["q3"] - gi["level"]).fillna(0).to_numpy(), 0, None)]
        ax.errorbar(xs, gi["level"], yerr=err, fmt="-o", color=c, label=impl, ms=4, capsize=2, lw=1.2)
        st = gi[gi["step"] != ""]
        if len(st):
            ax.scatter([commits.index(c_) for c_ in st["git_commit"]], st["level"], s=160, facecolors="none",
                       edgecolors="#c62828", linewidths=2, zorder=5)
            for _, r in st.iterrows():
                ax.annotate(f"{100 * (r['step_ratio'] - 1):+.0f} %", (commits.index(r["git_commit"]), r["level"]),
                            textcoords="offset points", xytext=(8, 8), color="#c62828", fontsize=8)
    ax.set_xticks(range(len(commits)), [str(c)[:12] for c in commits], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("median ms (IQR bars)")
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(len(impls), 7), fontsize=8, frameon=False,
               title=title, title_fontsize=9)
    png = f"history_{name}.png"
    charts.save(fig, os.path.join(outdir, png))
    div = None
    go = plotly_charts.plotly_or_none() if interactive else None
    if go is not None:
        f = go.Figure()
        for impl in impls:
            gi = g[g["impl"] == impl].sort_values("date")
            c = impl_color(impl)
            hover = [f"<b>{html.escape(impl)}</b> {html.escape(str(r['git_commit']))} ({html.escape(str(r['date']))})"
                     f"<br>median {r['level']:.4g} ms" + (f", {r['vs_prev']:.3f}x the previous commit"
                                                          if r["vs_prev"] == r["vs_prev"] else "")
                     + (f"<br><b>step: {100 * (r['step_ratio'] - 1):+.1f} % ({r['step']})</b>" if r["step"] else "")
                     for r in gi.to_dict("records")]
            f.add_trace(go.Scatter(x=gi["git_commit"], y=gi["level"], mode="lines+markers", name=impl,
                                   line={"color": c}, marker={"color": c, "size": 8},
                                   error_y={"type": "data", "symmetric": False, "color": c,
                                            "array": (gi["q3"] - gi["level"]).clip(lower=0),
                                            "arrayminus": (gi["level"] - gi["q1"]).clip(lower=0)},
                                   hovertext=hover, hoverinfo="text"))
            st = gi[gi["step"] != ""]
            if len(st):
                f.add_trace(go.Scatter(x=st["git_commit"], y=st["level"], mode="markers", showlegend=False,
                                       marker={"size": 18, "color": "rgba(0,0,0,0)",
                                               "line": {"color": "#c62828", "width": 2}}, hoverinfo="skip"))
        f.update_layout(title=title, height=380, template="plotly_white", yaxis={"title": "median ms", "rangemode":
                        "tozero"}, xaxis={"type": "category", "categoryorder": "array", "categoryarray": commits},
                        margin={"l": 10, "r": 10, "t": 50, "b": 40})
        div = plotly_charts.div(f, outdir)
    return charts.Chart(title, png, div)


def write(s: pd.DataFrame, outdir: str, filters: dict, store: str) -> str:
    """outdir/index.html for flagged series (flag(series(...))); returns its path."""
    os.makedirs(outdir, exist_ok=True)
    interactive = plotly_charts.plotly_or_none() is not None
    ctx = {"title": "tilebench history", "interactive": interactive, "store": store,
           "filters": "; ".join(f"{k} {', '.join(v) if isinstance(v, list) else v}" for k, v in filters.items() if v)
           or "none", "charts": [],
           "steps": None, "table": None, "more": 0, "colors": color_map(charts.impl_order(s["impl"])) if len(s) else {}}
    if len(s):
        groups = list(s.groupby(CHART, sort=False))
        ctx["more"] = max(0, len(groups) - MAX_CHARTS)
        for n, (key, g) in enumerate(groups[:MAX_CHARTS]):
            op, shape, dtype, pass_, cfg, timer, dev = key
            title = f"{op} {shape} {dtype} {pass_}" + (f" [{cfg}]" if cfg not in ("", "default") else "") + \
                f" ({timer}), {dev}"
            ctx["charts"].append(_chart(g, title, outdir, f"{n:03d}_{charts.slug(op)}_{charts.slug(shape)}",
                                        interactive))
        st = s[s["step"] != ""]
        if len(st):
            ctx["steps"] = cells.Table(
                ["point", "commit", "date", "before ms", "after ms", "change", "confirmed"],
                [[cells.cell(_label(r)), cells.cell(r["git_commit"]), cells.cell(r["date"]),
                  cells.ms(r["step_before"]), cells.ms(r["step_after"]),
                  cells.Cell(f"{100 * (r['step_ratio'] - 1):+.1f} %", "num " + ("down" if r["step"] == "slower"
                                                                                else "up")),
                  cells.cell("yes" if r["confirmed"] else "newest commit: rerun to confirm")]
                 for r in st.to_dict("records")])
        rows = []
        for r in s.to_dict("records"):
            prev = r["vs_prev"]
            rows.append([cells.cell(_label(r)), cells.cell(r["date"]), cells.cell(r["git_commit"]),
                         cells.ms(r["level"]), cells.pct(r["iqr_rel"]), cells.cell(r["rows"]),
                         cells.Cell("" if prev != prev else f"{prev:.3f}×", "num"),
                         cells.Cell(f"step {100 * (r['step_ratio'] - 1):+.1f} %" if r["step"] else "",
                                     "step" if r["step"] else "")])
        ctx["table"] = cells.Table(["point", "date", "commit", "median ms", "IQR", "rows", "vs previous", "step"],
                                    rows)
    return render.render("history.html", outdir, **ctx)


def cmd_history_add(args) -> int:
    from bench.usage import die
    try:
        added, dup = history.add(args.history_add, args.history_dir)
    except history.HistoryError as e:
        return die(str(e))
    print(f"history: {added} row(s) added, {dup} already there ({history.db_path(args.history_dir)})")
    return 0


def cmd_history(args) -> int:
    from bench.usage import die
    filters = {"op": args.op, "impl": args.impl or None, "shape": args.shape, "gpu": args.gpu}
    try:
        df = history.load(args.history_dir, **filters)
    except history.HistoryError as e:
        return die(str(e))
    if df.empty:
        said = " ".join(f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in filters.items() if v)
        return die(f"no rows in the results history match {said or '(no filter)'}")
    s = series(df)
    if s.empty:
        return die("no timed (ok) rows in the results history match")
    s = flag(s)
    print(text(s))
    out = args.report_dir or os.path.join(history.default_dir() if args.history_dir is None else args.history_dir,
                                          "report")
    print(f"history page: {write(s, out, filters, history.db_path(args.history_dir))}")
    return 0


def compare_commits(args):
    """(Comparison) of two commits named on --compare, from the store."""
    from bench.report import compare
    (la, ra), (lb, rb) = history.commit_rows(args.compare[0], args.compare[1], args.history_dir, args.gpu)
    return compare.compare_rows(ra, rb, la, lb, time=args.compare_time)
