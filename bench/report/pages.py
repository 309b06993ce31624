"""Reports: pandas tables and matplotlib charts from one or more result files, as an HTML page.

Merging several files (two GPUs, shards of one sweep) is the same as reading one: every row carries its
device, so tables and charts split by device where there is more than one."""
from __future__ import annotations

import html
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.report import plotly_charts, hover  # noqa: E402

from bench.measure import profile
from bench.measure.compiled_baseline import BEST, best_rows  # noqa: E402
from kernels.rows import group_key, scan  # noqa: E402

PEER_KINDS = ("peer",)
OURS = ("triton", "cutile")


def training_log_row(path: str) -> dict | None:
    """A `model.train --log-json` file as an e2e row (loss curve, ms/step, tokens/s), so that training runs
    made outside the harness (model/gpu_runs.sh) draw their curves side by side in a report; None if the
    file is not such a log."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or not isinstance(d.get("train"), list) or not isinstance(d.get("summary"), dict):
        return None
    cfg, s = d.get("config") or {}, d["summary"]
    T = cfg.get("block_size") or (d.get("model_config") or {}).get("block_size")
    ms = s.get("median_ms_per_step")
    return {"op": "e2e", "mode": "train", "impl": d.get("backend") or cfg.get("backend"),
            "shape_label": f"model={cfg.get('model')} B={cfg.get('batch_size')} T={T} ({d.get('iter')} iters)",
            "status": "ok" if d.get("status") == "ok" else (d.get("status") or "error"),
            "message": d.get("message", ""), "device_name": d.get("device_name"), "date": d.get("date"),
            "torch": d.get("torch"), "dtype": cfg.get("dtype"), "ms_per_step": ms, "median_ms": ms,
            "tokens_per_s": s.get("median_tokens_per_s"), "mfu": s.get("median_mfu"),
            "losses": d["train"], "loss": s.get("last_loss"), "fallbacks": d.get("fallbacks"),
            "point_id": f"train:{os.path.abspath(path)}", "cuda_graph": bool(cfg.get("cuda_graph"))}


RESULT_KEYS = ("op", "impl", "status")


def read_input(path: str) -> tuple[list[dict], str | None]:
    """One report input's rows (a results file's result rows; a training log as one row) and, where part or
    all of it is not usable, why, in a few words (None when all of it is)."""
    if path.endswith(".json"):
        r = training_log_row(path)
        if r is None:
            return [], "not a training log (model.train --log-json: a JSON object with train and summary)"
        r["source"] = os.path.basename(path)
        return [r], None
    good, bad = scan(path)
    rows = [r for _, r in good if all(r.get(k) is not None for k in RESULT_KEYS)]
    source = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
    for r in rows:
        r.setdefault("source", source)
    if not good and not bad:
        return [], "empty file"
    if not good:
        return [], "not JSON lines (a results file holds one JSON object per line)"
    if not rows:
        return [], f"no result rows (a result row has {', '.join(RESULT_KEYS)})"
    skipped = len(good) + len(bad) - len(rows)
    return rows, f"{skipped} of {len(good) + len(bad)} lines skipped (cut off, or not result rows)" if skipped else None


def frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as a DataFrame with their groups (kernels/rows.py group_key): every point axis but the tile config, so
    rows of a `group` compete for best config and rows of a `contest` (impl left out too) for fastest impl, and
    launch- and graph-timed rows of one point never meet."""
    df = pd.DataFrame(rows)
    if not df.empty:
        df["group"] = [group_key(r) for r in rows]
        df["contest"] = [group_key(r, without=("impl",)) for r in rows]
    return df


def load(paths: list[str]) -> pd.DataFrame:
    df = frame([r for p in paths for r in read_input(p)[0]])
    if df.empty:
        return df
    for col in ("device_name", "mode", "config_label", "median_ms", "tflops", "gbps", "roofline_frac", "impl_kind",
                "shape_label", "x", "message"):
        if col not in df:
            df[col] = None
    df["device_name"] = df["device_name"].fillna("unknown device")
    df["mode"] = df["mode"].fillna("kernel")
    df["config_label"] = df["config_label"].fillna("default")
    # the latest row wins when a point was measured twice (a resumed or repeated run)
    if "gpu_index" not in df:
        df["gpu_index"] = None
    if "host" not in df:
        df["host"] = None
    if "point_id" in df:
        # two hosts with the same GPU model (shards of a cluster run) are two measurements, not a repeat
        df = df.assign(_g=df["gpu_index"].astype(str), _h=df["host"].astype(str)).drop_duplicates(
            subset=["point_id", "device_name", "mode", "_g", "_h"], keep="last").drop(columns=["_g", "_h"])
    return df


def gpu_disagreements(ok: pd.DataFrame, floor: float = 0.05) -> pd.DataFrame:
    """Points measured on several GPUs of one host whose medians differ beyond noise: more than
    max(5 %, twice the larger relative IQR of the two)."""
    d = ok[ok["gpu_index"].notna()]
    out = []
    for (host, dev, pid), g in d.groupby(["host", "device_name", "point_id"]):
        if g["gpu_index"].nunique() < 2:
            continue
        lo, hi = g.loc[g["median_ms"].idxmin()], g.loc[g["median_ms"].idxmax()]
        spread = hi["median_ms"] / lo["median_ms"] - 1
        noise = max(floor, 2 * float(g["iqr_rel"].max() if "iqr_rel" in g else 0))
        if spread > noise:
            out.append({"host": host, "device": dev, "op": lo["op"], "impl": lo["impl"], "shape": lo["shape_label"],
                        "dtype": lo["dtype"], "pass": lo["pass"], "fast GPU": int(lo["gpu_index"]),
                        "fast ms": lo["median_ms"], "slow GPU": int(hi["gpu_index"]), "slow ms": hi["median_ms"],
                        "spread": spread, "noise bound": noise})
    return pd.DataFrame(out)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(s)).strip("_")[:80]


def metric_of(bound: str) -> tuple[str, str]:
    return ("tflops", "TFLOP/s") if bound == "compute" else ("gbps", "GB/s")


def best_configs(ok: pd.DataFrame) -> pd.DataFrame:
    """Per device and point group (every axis but the tile config, timer included): the fastest tile config."""
    idx = ok.groupby(["device_name", "group"])["median_ms"].idxmin()
    return ok.loc[idx]


def winners(best: pd.DataFrame) -> pd.DataFrame:
    """Fastest correct impl per point, its speedup over eager, and how our best kernel does against the
    fastest peer (cuDNN/flash SDPA, TileGym, Liger, torch.compile)."""
    out = []
    for key, g in best.groupby(["device_name", "op", "shape_label", "dtype", "pass", "contest"], sort=False):
        g = g.sort_values("median_ms")
        top = g.iloc[0]
        eager = g[g["impl"] == "eager"]["median_ms"]
        peers = g[g["impl_kind"].isin(PEER_KINDS)]
        ours = g[g["impl"].isin(OURS)]
        metric, unit = metric_of(top.get("bound", "memory"))
        out.append({
            "device": key[0], "op": key[1], "shape": key[2], "dtype": key[3], "pass": key[4], "timer": top.get("timer"),
            "winner": top["impl"], "ms": top["median_ms"], unit: top[metric],
            "roofline": top.get("roofline_frac"),
            "vs eager": (eager.iloc[0] / top["median_ms"]) if len(eager) else None,
            "best ours": ours.iloc[0]["impl"] if len(ours) else None,
            "best peer": peers.iloc[0]["impl"] if len(peers) else None,
            "ours vs best peer": (peers.iloc[0]["median_ms"] / ours.iloc[0]["median_ms"]) if len(ours) and len(peers)
            else None,
            "x": top.get("x"),
        })
    return pd.DataFrame(out)


def _fmt(df: pd.DataFrame) -> str:
    def f(v):
        if isinstance(v, float):
            if v != v:
                return ""
            return f"{v:.4g}"
        return v
    return df.map(f).to_html(index=False, escape=True, border=0, classes="t", na_rep="")


def _grid(n: int):
    """Subplots two to a row, so a page stays readable with many dtype x pass combinations."""
    cols = min(2, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.4 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def _panels(d: pd.DataFrame):
    """A figure with one panel per (dtype, pass) of d: (fig, [(ax, dtype, pass, d's rows for it), ...])."""
    combos = sorted(d.groupby(["dtype", "pass"]).groups)
    fig, axes = _grid(len(combos))
    return fig, [(ax, dtype, pass_, d[(d["dtype"] == dtype) & (d["pass"] == pass_)])
                 for ax, (dtype, pass_) in zip(axes, combos)]


def _save(fig, path: str) -> None:
    """Writes the figure (every chart at one dpi) and frees it: a report draws many."""
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _bars_over_one(ax, table: pd.DataFrame, ylabel: str, title: str, title_size: int, xticks: tuple[int, int]):
    """A bar per impl (table's columns) against a line at 1.0, eager's speed or the roofline;
    xticks: (label size, rotation)."""
    table.plot.bar(ax=ax, width=0.8)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=title_size)
    ax.tick_params(axis="x", labelsize=xticks[0], labelrotation=xticks[1])
    ax.legend(fontsize=7)


def _throughput_chart(best: pd.DataFrame, op: str, device: str, path: str) -> bool:
    d = best[(best["op"] == op) & (best["device_name"] == device)]
    if d.empty:
        return False
    metric, unit = metric_of(d["bound"].iloc[0])
    fig, panels = _panels(d)
    for ax, dtype, pass_, g in panels:
        order = g.sort_values("x")["shape_label"].drop_duplicates().tolist()
        for impl, gi in g.groupby("impl"):
            gi = gi.set_index("shape_label").reindex(order)
            style = "-o" if impl in OURS else ("--s" if impl == "eager" else ":^")
            ax.plot(range(len(order)), gi[metric], style, label=impl, markersize=4)
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels(order, rotation=35, ha="right", fontsize=7)
        ax.set_title(f"{op} {dtype} {pass_}", fontsize=10)
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(device, fontsize=9)
    _save(fig, path)
    return True


def _speedup_chart(best: pd.DataFrame, op: str, device: str, path: str) -> bool:
    d = best[(best["op"] == op) & (best["device_name"] == device)]
    if d.empty or "eager" not in set(d["impl"]):
        return False
    fig, panels = _panels(d)
    for ax, dtype, pass_, g in panels:
        p = g.pivot_table(index="shape_label", columns="impl", values="median_ms", aggfunc="min")
        if "eager" not in p:
            continue
        order = g.sort_values("x")["shape_label"].drop_duplicates().tolist()
        sp = (1.0 / p.div(p["eager"], axis=0)).reindex(order).drop(columns=["eager"])
        if sp.empty:
            continue
        _bars_over_one(ax, sp, "speedup over eager (x)", f"{op} {dtype} {pass_}", 10, (7, 35))
    fig.suptitle(device, fontsize=9)
    _save(fig, path)
    return True


def _roofline_chart(best: pd.DataFrame, op: str, device: str, path: str) -> bool:
    d = best[(best["op"] == op) & (best["device_name"] == device) & best["roofline_frac"].notna()]
    if d.empty:
        return False
    d = d.assign(case=d["shape_label"] + " " + d["dtype"] + " " + d["pass"])
    p = d.pivot_table(index="case", columns="impl", values="roofline_frac", aggfunc="max")
    fig, ax = plt.subplots(figsize=(min(18, 3 + 0.45 * len(p) * max(1, len(p.columns)) / 3), 4.2))
    _bars_over_one(ax, p, "fraction of measured roofline",
                   f"{op}: achieved fraction of the device's measured peak (matmul TFLOP/s or copy GB/s)", 9, (6, 45))
    _save(fig, path)
    return True


def _config_axes(cfgs: pd.Series) -> list[str]:
    vals: dict[str, set] = {}
    for c in cfgs:
        for k, v in (c or {}).items():
            vals.setdefault(k, set()).add(json.dumps(v))
    return [k for k, v in sorted(vals.items(), key=lambda kv: -len(kv[1])) if len(v) > 1][:2]


def _heatmaps(ok: pd.DataFrame, op: str, device: str, outdir: str, limit: int = 6) -> list[str]:
    """Throughput over the two most varied tile-config axes, per (impl, shape, dtype, pass)."""
    files = []
    d = ok[(ok["op"] == op) & (ok["device_name"] == device)]
    if "config" not in d:
        return files
    for key, g in d.groupby(["impl", "shape_label", "dtype", "pass"]):
        if len(g) < 3:
            continue
        axes = _config_axes(g["config"])
        if not axes:
            continue
        metric, unit = metric_of(g["bound"].iloc[0])
        a0 = axes[0]
        a1 = axes[1] if len(axes) > 1 else None
        t = g.assign(_r=g["config"].map(lambda c: str((c or {}).get(a0))),
                     _c=g["config"].map(lambda c: str((c or {}).get(a1)) if a1 else "-"))
        p = t.pivot_table(index="_r", columns="_c", values=metric, aggfunc="max")
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(p.columns), 1.2 + 0.5 * len(p.index)))
        im = ax.imshow(p.values, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(p.columns)), p.columns, fontsize=7)
        ax.set_yticks(range(len(p.index)), p.index, fontsize=7)
        ax.set_xlabel(a1 or "")
        ax.set_ylabel(a0)
        for i in range(p.shape[0]):
            for j in range(p.shape[1]):
                v = p.values[i, j]
                if v == v:
                    ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=6, color="w")
        fig.colorbar(im, ax=ax, label=unit)
        ax.set_title(f"{key[0]} {key[1]} {key[2]} {key[3]}", fontsize=7)
        name = f"heat_{_slug(op)}_{_slug(device)}_{_slug('_'.join(key))}.png"
        _save(fig, os.path.join(outdir, name))
        files.append(name)
        if len(files) >= limit:
            break
    return files


def _device_compare(best: pd.DataFrame) -> pd.DataFrame:
    p = best.pivot_table(index=["op", "shape_label", "dtype", "pass", "impl"], columns="device_name",
                         values="median_ms", aggfunc="min")
    return p.reset_index()


def presets_compare(ok: pd.DataFrame) -> pd.DataFrame:
    """Median ms of each named preset (preset:hopper, preset:blackwell, ...) per device, side by side: how a
    config tuned for one GPU generation runs on another. Empty without preset points."""
    if "config_label" not in ok:
        return pd.DataFrame()
    p = ok[ok["config_label"].astype(str).str.startswith("preset:")]
    if p.empty:
        return pd.DataFrame()
    idx = [c for c in ("op", "shape_label", "dtype", "pass", "impl", "timer") if c in p]
    t = p.pivot_table(index=idx, columns=["device_name", "config_label"], values="median_ms", aggfunc="min")
    t.columns = [f"{dev} {label}" for dev, label in t.columns]
    return t.reset_index()


def _static_section(df: pd.DataFrame, outdir: str) -> str:
    s = df[df["mode"] == "static"]
    if s.empty:
        return ""
    cols = [c for c in ("op", "impl", "preset", "arch", "kernel", "status", "compile_s", "cubin_bytes", "registers",
                        "smem_bytes", "spills", "message") if c in s]
    parts = ["<h2>Ahead-of-time compilation per GPU generation (no GPU needed)</h2>"]
    summary = s.pivot_table(index=["op", "impl"], columns="arch", values="status",
                            aggfunc=lambda v: f"{(v == 'ok').sum()}/{len(v)} ok").reset_index()
    parts.append(_fmt(summary))
    okc = s[s["status"] == "ok"]
    if not okc.empty and "compile_s" in okc:
        p = okc.pivot_table(index=["op", "impl"], columns="arch", values="compile_s", aggfunc="sum")
        fig, ax = plt.subplots(figsize=(9, 0.4 * len(p) + 2))
        p.plot.barh(ax=ax)
        ax.set_xlabel("compile time, all kernels and presets (s)")
        _save(fig, os.path.join(outdir, "static_compile_time.png"))
        parts.append('<img src="static_compile_time.png">')
    parts.append("<details><summary>every kernel</summary>" + _fmt(s[cols]) + "</details>")
    return "\n".join(parts)


def _e2e_speedups(tok: pd.DataFrame) -> str:
    """tokens/s of each backend over each baseline that ran at the same (device, model, B, T)."""
    rows = []
    for base in (BEST, "eager_sdpa", "eager"):   # BEST: the fastest torch.compile mode, "the" compiled peer
        if base not in tok:
            continue
        sp = tok.div(tok[base], axis=0).drop(columns=[base])
        sp.columns = [f"{c} / {base}" for c in sp.columns]
        rows.append(sp)
    if not rows:
        return ""
    t = pd.concat(rows, axis=1).round(2).reset_index()
    return "<h3>Speed-up in tokens/s over each baseline (same run, same device)</h3>" + _fmt(t)


def _e2e_section(df: pd.DataFrame, outdir: str) -> str:
    e = df[df["op"] == "e2e"]
    if e.empty:
        return ""
    best = best_rows(e.to_dict("records"))
    if best:
        e = pd.concat([e, pd.DataFrame(best)], ignore_index=True)
    # a step replayed as a CUDA graph is another way of running the backend, never the same series
    graphed = e["cuda_graph"].fillna(False).astype(bool) if "cuda_graph" in e else pd.Series(False, index=e.index)
    e = e.assign(impl=e["impl"].where(~graphed, e["impl"] + " +graph"))
    cols = [c for c in ("device_name", "shape_label", "impl", "best_of", "status", "ms_per_step", "host_median_ms",
                        "tokens_per_s", "model_tflops", "mfu", "peak_mem_bytes", "compile_s", "fallbacks", "message")
            if c in e]
    parts = ["<h2>End to end: training steps</h2>", _fmt(e[cols])]
    ok = e[e["status"] == "ok"]
    if not ok.empty and "tokens_per_s" in ok:
        p = ok.pivot_table(index=["device_name", "shape_label"], columns="impl", values="tokens_per_s", aggfunc="max")
        fig, ax = plt.subplots(figsize=(max(9, 1.6 * len(p)), 4.5))
        p.plot.bar(ax=ax)
        ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
        ax.set_ylabel("tokens/s")
        ax.tick_params(axis="x", labelsize=7, labelrotation=20)
        _save(fig, os.path.join(outdir, "e2e_tokens.png"))
        parts.append('<img src="e2e_tokens.png">')
        parts.append(_e2e_speedups(p))
    if "breakdown" in ok and ok["breakdown"].notna().any():
        bd = pd.DataFrame([{**(b or {}), "case": f"{r['shape_label']} {r['impl']}"} for b, (_, r)
                           in zip(ok["breakdown"], ok.iterrows()) if isinstance(b, dict)]).set_index("case")
        if not bd.empty:
            fig, ax = plt.subplots(figsize=(10, 0.45 * len(bd) + 2))
            bd.plot.barh(stacked=True, ax=ax)
            ax.set_xlabel("ms per step, by op")
            ax.legend(fontsize=7)
            _save(fig, os.path.join(outdir, "e2e_breakdown.png"))
            parts.append("<h3>Where a step's time goes</h3><img src=\"e2e_breakdown.png\">")
    if "losses" in ok and ok["losses"].notna().any():
        fig, ax = plt.subplots(figsize=(8, 4))
        for _, r in ok.iterrows():
            if isinstance(r.get("losses"), list) and r["losses"]:
                it, loss = zip(*r["losses"])
                ax.plot(it, loss, label=f"{r['shape_label']} {r['impl']}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("train loss")
        ax.legend(fontsize=7)
        _save(fig, os.path.join(outdir, "e2e_losses.png"))
        parts.append("<h3>Loss curves</h3><img src=\"e2e_losses.png\">")
    return "\n".join(parts)


CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1500px}
table.t{border-collapse:collapse;font-size:12px;margin:.5em 0}table.t td,table.t th{border:1px solid #ccc;padding:2px 6px}
table.t th{background:#f0f0f0}img{max-width:100%;margin:.4em 0}h2{border-bottom:2px solid #444;margin-top:1.6em}
.note{color:#555;font-size:13px}details{margin:.5em 0}"""


def build(paths: list[str], outdir: str) -> str:
    """Write outdir/index.html (and PNGs) from result files; returns the HTML path."""
    os.makedirs(outdir, exist_ok=True)
    df = load(paths)
    interactive = plotly_charts.plotly_or_none() is not None
    parts = [f"<html><head><meta charset='utf-8'><title>tilebench report</title><style>{CSS}</style>"
             f"{plotly_charts.script_tag() if interactive else ''}</head><body>",
             "<h1>tilebench report</h1>"]
    if not interactive:
        parts.append(plotly_charts.MISSING)
    if df.empty:
        parts.append("<p>No results in: " + html.escape(", ".join(paths)) + "</p>")
        return _write(outdir, parts)
    meta_cols = [c for c in ("device_name", "arch", "sm_count", "mem_total_gb", "driver", "torch", "triton", "cuda_tile",
                             "tileiras", "git_commit", "host", "peak_tflops", "peak_gbps") if c in df]
    meta = df.groupby("device_name", dropna=False)[meta_cols[1:]].first().reset_index()
    dates = df.groupby("device_name")["date"].agg(["min", "max"]).reset_index() if "date" in df else None
    parts.append("<h2>What ran where</h2>" + _fmt(meta))
    if dates is not None:
        parts.append("<p class='note'>Dates (UTC): " + "; ".join(f"{html.escape(r['device_name'])}: {r['min']} to {r['max']}"
                                                          for _, r in dates.iterrows()) + "</p>")
    parts.append("<p class='note'>Times are medians of CUDA-event-timed calls with the L2 flushed before each (CPU: "
                 "monotonic clock), after a correctness gate against a float64/float32 reference. Peaks are the matmul "
                 "and copy rates measured on the device at the start of the run. Rows flagged throttled ran while the "
                 "GPU reported a power or thermal slowdown. Triton under TRITON_INTERPRET=1 (CPU) is for correctness, "
                 "not speed.</p>")
    k = df[(df["mode"] == "kernel") & (df["op"] != "e2e")]
    counts = k.pivot_table(index=["op", "impl"], columns="status", values="point_id", aggfunc="count", fill_value=0) \
        if not k.empty else pd.DataFrame()
    if not counts.empty:
        reasons = k[k["status"] == "unavailable"].groupby(["op", "impl"])["message"].first()
        counts = counts.reset_index()
        counts.columns.name = None
        counts["why not available"] = [reasons.get((o, i), "") for o, i in zip(counts["op"], counts["impl"])]
        parts.append("<h2>Implementations and point status</h2>" + _fmt(counts))
    ok = k[(k["status"] == "ok") & k["median_ms"].notna()]
    if not ok.empty:
        best = best_configs(ok)
        w = winners(best)
        parts.append("<h2>Who wins where</h2><p class='note'>Fastest correct impl per point (best tile config), "
                     "its speedup over eager, and our fastest kernel (Triton or cuTile) against the fastest peer "
                     "(cuDNN/flash SDPA, TileGym, Liger, torch.compile): above 1 means ours is faster.</p>" + _fmt(w.drop(columns=["x"])))
        if ok["gpu_index"].nunique() > 1:
            per = ok.groupby(["host", "device_name", "gpu_index"]).agg(points=("point_id", "count"),
                                                                     time_s=("duration_s", "sum")).reset_index()
            parts.append("<h2>Per GPU</h2>" + _fmt(per))
            dis = gpu_disagreements(ok)
            parts.append("<h3>GPUs of one host that disagree beyond noise on the same point</h3>" +
                         (_fmt(dis) if not dis.empty else "<p class='note'>none (or no point ran on two GPUs; "
                                                          "use --replicate)</p>"))
        if best["device_name"].nunique() > 1:
            parts.append("<h2>Across devices (median ms, best config)</h2>" + _fmt(_device_compare(best)))
        pre = presets_compare(ok)
        if not pre.empty:
            parts.append("<h2>Per-generation presets on each GPU (median ms)</h2><p class='note'>Each impl's named "
                         "tile configs (sweeps.yaml presets), so a config tuned for one generation is seen on the "
                         "other; timer cuda_graph = graph replays, cuda_events = launched calls.</p>" + _fmt(pre))
        for op in [o for o in ("fmha", "layer_norm", "gelu", "linear", "cross_entropy") if o in set(best["op"])] + \
                sorted(set(best["op"]) - {"fmha", "layer_norm", "gelu", "linear", "cross_entropy"}):
            parts.append(f"<h2>{html.escape(op)}</h2>")
            for dev in best[best["op"] == op]["device_name"].unique():
                tag = f"{_slug(op)}_{_slug(dev)}"
                parts.append(hover.throughput(best, op, dev, outdir, metric_of))
                if _throughput_chart(best, op, dev, os.path.join(outdir, f"tput_{tag}.png")):
                    parts.append(f'<img src="tput_{tag}.png">')
                if _speedup_chart(best, op, dev, os.path.join(outdir, f"speedup_{tag}.png")):
                    parts.append(f'<img src="speedup_{tag}.png">')
                if _roofline_chart(best, op, dev, os.path.join(outdir, f"roofline_{tag}.png")):
                    parts.append(f'<img src="roofline_{tag}.png">')
                for h in _heatmaps(ok, op, dev, outdir):
                    parts.append(f'<img src="{h}">')
            cols = [c for c in ("device_name", "shape_label", "dtype", "pass", "impl", "config_label", "median_ms",
                                "q1_ms", "q3_ms", "reps", "tflops", "gbps", "roofline_frac", "compile_s", "extra_mem_bytes",
                                "err_ratio", "throttled", "picked_config") if c in ok]
            parts.append("<details><summary>all measurements</summary>" +
                         _fmt(ok[ok["op"] == op][cols].sort_values(["device_name", "shape_label", "dtype", "pass", "median_ms"]))
                         + "</details>")
    bad = k[k["status"].isin(["wrong", "error", "compile_error", "oom", "unsupported"])]
    if not bad.empty:
        cols = [c for c in ("device_name", "op", "impl", "shape_label", "dtype", "pass", "config_label", "status", "message")
                if c in bad]
        parts.append("<h2>Points that did not produce a time</h2><p class='note'>wrong = failed the correctness gate "
                     "(never timed); unsupported = the impl declines the shape/dtype.</p>" + _fmt(bad[cols]))
    parts.append(profile.report_section(k, _fmt))
    parts.append(_static_section(df, outdir))
    parts.append(_e2e_section(df, outdir))
    return _write(outdir, parts)


def _write(outdir, parts) -> str:
    parts.append("</body></html>")
    path = os.path.join(outdir, "index.html")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path


def summary_table(rows: list[dict]) -> str:
    """The stdout summary at the end of a run: per point, each impl's median ms, fastest first."""
    df = frame(rows)
    if df.empty:
        return "no points ran"
    lines = []
    st = df["status"].value_counts().to_dict()
    lines.append("status: " + ", ".join(f"{k} {v}" for k, v in st.items()))
    not_run = df[df["status"].isin(["unavailable"])].drop_duplicates(["op", "impl"])
    if not not_run.empty:
        lines.append("not run here:")
        lines += [f"  {r['op']}/{r['impl']}: {r['message']}" for _, r in not_run.iterrows()]
    failed = df[df["status"].isin(["wrong", "error", "compile_error", "oom"])]
    if not failed.empty:
        lines.append("failed points:")
        lines += [f"  {r['op']}/{r['impl']} {r.get('dtype')} {r.get('pass')} {r.get('shape_label', '')}: {r['status']}: "
                  f"{str(r['message'])[:120]}" for _, r in failed.head(30).iterrows()]
    if "median_ms" not in df:
        return "\n".join(lines)
    ok = df[(df["status"] == "ok") & df["median_ms"].notna()]
    if ok.empty:
        return "\n".join(lines)
    ok = ok.assign(device_name=ok.get("device_name", "device"), config_label=ok.get("config_label", "default"))
    best = best_configs(ok)
    timers = ", ".join(sorted(str(t) for t in ok["timer"].dropna().unique())) if "timer" in ok else "?"
    tables = [("median_ms", f"kernel time ({timers}), median ms per call")]
    if "host_median_ms" in best and best["host_median_ms"].notna().any() and timers != "cpu_clock":
        tables.append(("host_median_ms", "host-inclusive time (synchronised wall clock per call: what an eager "
                                         "step pays), median ms per call"))
    for col, title in tables:
        piv = best.pivot_table(index=["op", "shape_label", "dtype", "pass"], columns="impl", values=col,
                               aggfunc="min")
        piv["fastest"] = piv.idxmin(axis=1)
        with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_rows", 500,
                               "display.float_format", lambda v: f"{v:.4g}"):
            lines.append(f"{title} (best tile config); fastest correct impl last column:")
            lines.append(piv.to_string())
    return "\n".join(lines)
