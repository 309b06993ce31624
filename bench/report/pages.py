"""The report: one HTML page (templates/report.html) with PNG charts beside it, from one or more result files.

It answers the question a reader comes with: which impl is fastest at a point, and by how much against the best
thing they could use instead (bench.report.speedup: the best peer, eager only where no peer ran). Per op and
device: the speed-up chart and table against the best peer, throughput against the measured roofline, tile-config
heatmaps, every measurement. Around them: what ran where, the notes that apply to these rows (timers, CPU rows,
unsettled or throttled points, skipped stress battery), the status of every impl, the points that produced no time,
declined stress cases, several GPUs, presets, --profile tables, --static compiles and whole training steps.

Merging several files (two GPUs, shards of one sweep) is the same as reading one: every row carries its device, so
tables and charts split by device where there is more than one."""
from __future__ import annotations

import json
import os

import pandas as pd

from bench.measure import profile
from bench.measure.compiled_baseline import BEST, best_rows
from bench.report import charts, plotly_charts, render, speedup, cells
from bench.report.colors import color_map
from bench.report.speedup import OURS, kind_of, winners  # noqa: F401 - winners: part of this module's API
from bench.report.cells import Table, cell, config_text
from kernels.rows import HOST_TIMER, SPREAD_TARGET, TIMERS, flatten, group_key, scan

PEER_KINDS = ("peer",)
OP_ORDER = ("fmha", "layer_norm", "add_layer_norm", "gelu", "linear", "cross_entropy", "linear_cross_entropy")


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
    """Rows as a flat DataFrame (kernels.rows.flatten: shape.B, config.BLOCK_M, errors.out ...) with their groups
    (kernels/rows.py group_key): every point axis but the tile config, so rows of a `group` compete for best config
    and rows of a `contest` (impl left out too) for fastest impl, and launch- and graph-timed rows of one point never
    meet; `config_text` and `picked_text` are the configs as `BLOCK_M=128, num_warps=8`."""
    df = flatten(rows)
    if not df.empty:
        df["group"] = [group_key(r) for r in rows]
        df["contest"] = [group_key(r, without=("impl",)) for r in rows]
        df["config_text"] = [config_text(r["config"]) if isinstance(r.get("config"), dict) and r["config"]
                             else (r.get("config_label") or "default") for r in rows]
        df["picked_text"] = [config_text(r["picked_config"]) if isinstance(r.get("picked_config"), dict)
                             else r.get("picked_config") for r in rows]
    return df


def load(paths: list[str]) -> pd.DataFrame:
    df = frame([r for p in paths for r in read_input(p)[0]])
    if df.empty:
        return df
    for col in ("device_name", "mode", "config_label", "median_ms", "tflops", "gbps", "roofline_frac", "impl_kind",
                "shape_label", "x", "message", "timer", "dtype", "pass", "bound", "iqr_rel", "gpu_index", "host"):
        if col not in df:
            df[col] = None
    df["device_name"] = df["device_name"].fillna("unknown device")
    df["mode"] = df["mode"].fillna("kernel")
    df["config_label"] = df["config_label"].fillna("default")
    if "point_id" in df:
        # the latest row wins when a point was measured twice (a resumed or repeated run); two hosts with the same
        # GPU model (shards of a cluster run) are two measurements, not a repeat
        df = df.assign(_g=df["gpu_index"].astype(str), _h=df["host"].astype(str)).drop_duplicates(
            subset=["point_id", "device_name", "mode", "_g", "_h"], keep="last").drop(columns=["_g", "_h"])
    return df.reset_index(drop=True)


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
        noise = max(floor, 2 * float(g["iqr_rel"].max() if "iqr_rel" in g and g["iqr_rel"].notna().any() else 0))
        if spread > noise:
            out.append({"host": host, "device": dev, "op": lo["op"], "impl": lo["impl"], "shape": lo["shape_label"],
                        "dtype": lo["dtype"], "pass": lo["pass"], "fast GPU": int(lo["gpu_index"]),
                        "fast ms": lo["median_ms"], "slow GPU": int(hi["gpu_index"]), "slow ms": hi["median_ms"],
                        "spread": spread, "noise bound": noise})
    return pd.DataFrame(out)


def metric_of(bound: str) -> tuple[str, str]:
    return ("tflops", "TFLOP/s") if bound == "compute" else ("gbps", "GB/s")


def best_configs(ok: pd.DataFrame) -> pd.DataFrame:
    """Per device and point group (every axis but the tile config, timer included): the fastest tile config."""
    idx = ok.groupby(["device_name", "group"])["median_ms"].idxmin()
    return ok.loc[idx]


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


def _device_compare(best: pd.DataFrame) -> pd.DataFrame:
    p = best.pivot_table(index=["op", "shape_label", "dtype", "pass", "impl"], columns="device_name",
                         values="median_ms", aggfunc="min")
    p.columns.name = None
    return p.reset_index()


# --- what the page says --------------------------------------------------------------------------------------------

def _truthy(s: pd.Series) -> pd.Series:
    return s.map(lambda v: v is True or v == 1 or v == "True")


def notes(df: pd.DataFrame, k: pd.DataFrame, ok: pd.DataFrame) -> list[str]:
    """The notes that apply to these rows, and only those."""
    out = []
    timed = df[df["mode"] != "static"]           # kernel rows and whole steps: the timers they carry
    timers = sorted(str(t) for t in timed["timer"].dropna().unique()) if not timed.empty else []
    for t in timers:
        out.append(f"Timer {t}: {TIMERS.get(t, 'a timer this version does not know')}.")
    if "host_median_ms" in timed and timed["host_median_ms"].notna().any() and set(timers) - {"cpu_clock"}:
        out.append(f"Host-inclusive time (host_*, timer {HOST_TIMER}): the GPU idle and the L2 flushed, then a wall "
                   "clock from the Python call to the end of its GPU work: launch cost included, what an eager step "
                   "pays.")
    if timers:
        out.append(f"Each time is the median of repeated calls (repetitions until the interquartile range is within "
                   f"{SPREAD_TARGET:.0%} of the median, or the budget is spent), after a correctness gate against a "
                   f"float64/float32 reference; a wrong point is never timed.")
    if "peak_tflops" in df and df["peak_tflops"].notna().any():
        out.append("Roofline: each point's time against the device's own ceilings, a bf16 8192³ matmul (fp32 on "
                   "a CPU) and a 1 GiB copy, measured at the start of the run.")
    unsettled = ok[pd.to_numeric(ok["iqr_rel"], errors="coerce") > SPREAD_TARGET] if not ok.empty else ok
    if len(unsettled):
        out.append(f"{len(unsettled)} of {len(ok)} timed rows never settled: their IQR stayed above "
                   f"{SPREAD_TARGET:.0%} of the median until the budget ran out. Their ratios are marked ~ in tables "
                   "and drawn hollow in charts; rerun them with a larger --budget before trusting a small gap.")
    cpu = k[k["timer"] == "cpu_clock"] if not k.empty else k
    if len(cpu):
        out.append("Rows timed on a CPU (timer cpu_clock): Triton and Liger run under TRITON_INTERPRET=1 there, "
                   "which is for correctness, not speed; compare CPU times among CPU-native impls only.")
    if "throttled" in k and _truthy(k["throttled"]).any():
        n = int(_truthy(k["throttled"]).sum())
        out.append(f"{n} rows ran while the GPU reported a power or thermal slowdown (column throttled).")
    if "stress" in k and (k["stress"] == "off").any():
        n = int((k["stress"] == "off").sum())
        out.append(f"{n} rows were measured with the stress battery off (--no-stress): they were not checked on "
                   "the model's layouts, hard values and ragged sizes.")
    if "stress_kept" in k:
        kept = pd.to_numeric(k["stress_kept"], errors="coerce").fillna(0)
        if (kept > 0).any():
            out.append(f"{int((kept > 0).sum())} rows took {int(kept.sum())} stress verdicts from an earlier run of "
                       "the same code, toolchain and GPU (column stress_kept); --fresh-verdicts judges them again.")
    if "autotune_capped" in k and _truthy(k["autotune_capped"]).any():
        capped = k[_truthy(k["autotune_capped"])]
        cap = pd.to_numeric(capped.get("autotune_cap_s"), errors="coerce").max()
        out.append(f"Autotuning of {', '.join(sorted(set(capped['impl'].astype(str))))} was cut off at "
                   + (f"{cap:g} s " if cap == cap else "") + f"per point on {len(capped)} rows (--autotune-cap): "
                   "those times may not be their best config's.")
    return out


def _status_table(k: pd.DataFrame) -> Table | None:
    if k.empty:
        return None
    counts = k.pivot_table(index=["op", "impl"], columns="status", values="point_id" if "point_id" in k else "impl",
                           aggfunc="count", fill_value=0)
    reasons = k[k["status"].isin(["unavailable"])].groupby(["op", "impl"])["message"].first()
    counts = counts.reset_index()
    counts.columns.name = None
    counts["why not available"] = [reasons.get((o, i), "") for o, i in zip(counts["op"], counts["impl"])]
    return cells.from_df(counts)


def _winners_table(w: pd.DataFrame) -> Table:
    rows = []
    multi_dev = w["device"].nunique() > 1
    for r in w.to_dict("records"):
        row = ([cell(r["device"])] if multi_dev else []) + [
            cell(r["op"]), cell(r["shape"]), cell(r["dtype"]), cell(r["pass"]), cell(r["timer"]),
            cell(r["winner"]), cells.ms(r["ms"]),
            cell(None if r["throughput"] is None else f"{r['throughput']:.4g} {r['unit']}"),
            cells.pct(r["roofline"]), cells.times(r["vs eager"]), cell(r["best ours"]), cells.ms(r["ours ms"]),
            cell(r["best peer"]), cells.ms(r["peer ms"]),
            cells.ratio(r["ours vs best peer"], unsettled=r["unsettled"],
                         what=f"{r['best ours']} vs {r['best peer']}")]
        rows.append(row)
    cols = (["device"] if multi_dev else []) + ["op", "shape", "dtype", "pass", "timer", "fastest", "ms", "throughput",
                                                "roofline", "vs eager", "best ours", "ours ms", "best peer",
                                                "peer ms", "ours vs best peer"]
    return Table(cols, rows)


def _speedup_table(sp: pd.DataFrame, order: list[str]) -> Table:
    """One row per point: the best peer and its time, each impl's speed-up over it, the fastest."""
    timers = sp["timer"].dropna().unique()
    rows = []
    for _, g in sp.groupby("contest", sort=False):
        first = g.iloc[0]
        by = {r["impl"]: r for r in g.to_dict("records")}
        row = [cell(first["shape_label"]), cell(first["dtype"]), cell(first["pass"])]
        if len(timers) > 1:
            row.append(cell(first["timer"]))
        ref = "eager (no peer ran)" if first["ref_kind"] == "eager" else first["ref_impl"]
        row += [cell(ref), cells.ms(first["ref_ms"])]
        for impl in order:
            r = by.get(impl)
            if r is None:
                row.append(cells.Cell("", "dim"))
                continue
            declined = r.get("stress_declined")
            extra = f"; declined stress cases: {', '.join(declined)}" if isinstance(declined, list) and declined else ""
            if r["is_ref"]:
                c = cells.Cell("1.00× (ref)", "num ref", f"the best peer here: {r['median_ms']:.4g} ms{extra}")
            else:
                c = cells.ratio(r["ratio"], r["lo"], r["hi"], r["unsettled"],
                                 f"{impl}: {r['median_ms']:.4g} ms vs {r['ref_impl']} {r['ref_ms']:.4g} ms{extra}")
            if extra:
                c.text += " †"
            row.append(c)
        fastest = g.loc[g["median_ms"].idxmin()]
        row.append(cell(fastest["impl"]))
        rows.append((first.get("x"), str(first["shape_label"]), str(first["dtype"]), str(first["pass"]), row))
    rows.sort(key=lambda t: (str(t[2]), str(t[3]), float(t[0]) if t[0] is not None and t[0] == t[0] else 0.0, t[1]))
    cols = ["shape", "dtype", "pass"] + (["timer"] if len(timers) > 1 else []) + ["best peer", "peer ms"] + \
        list(order) + ["fastest"]
    return Table(cols, [r[-1] for r in rows])


def _compile_cell(r) -> "cells.Cell":
    """compile_s, but `ahead` where the battery compiled the impl's kernels before its first point (its
    compile_s is then a module load, no compile to compare with another impl's)."""
    if r.get("compile_ahead") is True:
        return cells.Cell("ahead", "num")
    return cells.ms(r.get("compile_s"))


def _measurements_table(d: pd.DataFrame) -> Table:
    d = d.sort_values(["device_name", "dtype", "pass", "shape_label", "median_ms"])
    metric_unit = "TFLOP/s" if (d["bound"] == "compute").all() else ("GB/s" if (d["bound"] == "memory").all() else "")
    rows = []
    for r in d.to_dict("records"):
        m, unit = metric_of(r.get("bound"))
        iqr = r.get("iqr_rel")
        uns = isinstance(iqr, float) and iqr == iqr and iqr > SPREAD_TARGET
        picked = r.get("picked_text")
        tput = r.get(m)
        tput = None if tput is None or tput != tput else f"{tput:.4g}" + ("" if metric_unit else f" {unit}")
        declined = r.get("stress_declined")
        rows.append([cell(r["shape_label"]), cell(r["dtype"]), cell(r["pass"]), cell(r["impl"]),
                     cells.Cell(str(r.get("config_text") or ""), "cfg"),
                     cells.Cell(str(picked) if isinstance(picked, str) else "", "cfg"),
                     cells.ms(r["median_ms"]), cells.ms(r.get("q1_ms")), cells.ms(r.get("q3_ms")),
                     cell(r.get("reps")),
                     cells.Cell("" if iqr is None or iqr != iqr else f"{100 * iqr:.1f} %" + (" ~" if uns else ""),
                                 "num" + (" down unsettled" if uns else "")),
                     cells.ms(r.get("host_median_ms")),
                     cell(tput),
                     cells.pct(r.get("roofline_frac")), _compile_cell(r),
                     cell(r.get("extra_mem_bytes")), cells.ms(r.get("err_ratio")),
                     cell(", ".join(declined) if isinstance(declined, list) else None),
                     cell(r.get("throttled"))])
    return Table(["shape", "dtype", "pass", "impl", "config", "picked config", "median ms", "q1 ms", "q3 ms", "reps",
                  "IQR", "host ms", metric_unit or "throughput", "roofline", "compile s", "extra mem bytes",
                  "err ratio", "stress declined", "throttled"], rows)


def _declined_table(k: pd.DataFrame) -> Table | None:
    if "stress_declined" not in k:
        return None
    d = k[k["stress_declined"].map(lambda v: isinstance(v, list) and len(v) > 0)]
    if d.empty:
        return None
    cols = [c for c in ("device_name", "op", "impl", "shape_label", "dtype", "pass", "config_label", "status")
            if c in d]
    t = cells.from_df(d.assign(declined=d["stress_declined"].map(", ".join)), cols + ["declined"])
    return t


def _op_sections(ok: pd.DataFrame, best: pd.DataFrame, sp: pd.DataFrame, outdir: str, interactive: bool) -> list:
    ops = [o for o in OP_ORDER if o in set(best["op"])] + sorted(set(best["op"]) - set(OP_ORDER))
    sections = []
    for op in ops:
        devices = []
        for dev in best[best["op"] == op]["device_name"].unique():
            b = best[(best["op"] == op) & (best["device_name"] == dev)]
            s = sp[(sp["op"] == op) & (sp["device_name"] == dev)]
            kinds = {i: kind_of(i, k) for i, k in zip(b["impl"], b["impl_kind"])}
            order = charts.impl_order(b["impl"], kinds)
            tag = f"{charts.slug(op)}_{charts.slug(dev)}"
            refs = sorted(set(s["ref_impl"])) if not s.empty else []
            no_peer = not s.empty and (s["ref_kind"] == "eager").all()
            devices.append({
                "name": dev,
                "speedup": charts.speedup(s, f"{op}: speed-up over the best peer, {dev}", outdir, tag, interactive)
                if not s.empty else None,
                "speedup_table": _speedup_table(s, order) if not s.empty and not s["is_ref"].all() else None,
                "refs": refs, "no_peer": no_peer,
                "declined": bool(len(s)) and s["stress_declined"].map(lambda v: isinstance(v, list) and bool(v)).any(),
                "throughput": charts.throughput(b, f"{op}: throughput, {dev}", outdir, tag, interactive, kinds),
                "heatmaps": charts.heatmaps(ok[(ok["op"] == op) & (ok["device_name"] == dev)], outdir, tag),
                "colors": color_map(order),
            })
        sections.append({"op": op, "devices": devices, "all": _measurements_table(ok[ok["op"] == op])})
    return sections


def _meta(df: pd.DataFrame) -> tuple[Table, list[str]]:
    meta_cols = [c for c in ("device_name", "arch", "sm_count", "mem_total_gb", "driver", "torch", "triton",
                             "cuda_tile", "tileiras", "git_commit", "host", "peak_tflops", "peak_gbps") if c in df]
    meta = df.groupby("device_name", dropna=False)[meta_cols[1:]].first().reset_index()
    dates = []
    if "date" in df:
        for dev, g in df.groupby("device_name"):
            d = g["date"].dropna().astype(str)
            if len(d):
                dates.append(f"{dev}: {d.min()} to {d.max()}")
    return cells.from_df(meta), dates


def _static_section(df: pd.DataFrame, outdir: str) -> dict | None:
    s = df[df["mode"] == "static"]
    if s.empty:
        return None
    cols = [c for c in ("op", "impl", "preset", "arch", "kernel", "status", "compile_s", "cubin_bytes", "registers",
                        "smem_bytes", "spills", "message") if c in s]
    summary = s.pivot_table(index=["op", "impl"], columns="arch", values="status",
                            aggfunc=lambda v: f"{(v == 'ok').sum()}/{len(v)} ok").reset_index()
    summary.columns.name = None
    chart = None
    okc = s[s["status"] == "ok"]
    if not okc.empty and "compile_s" in okc:
        chart = charts.static_compile(okc.pivot_table(index=["op", "impl"], columns="arch", values="compile_s",
                                                      aggfunc="sum"), outdir)
    return {"summary": cells.from_df(summary), "chart": chart, "all": cells.from_df(s, cols)}


def _e2e_speedups(tok: pd.DataFrame) -> Table | None:
    """tokens/s of each backend over each baseline that ran at the same (device, model, B, T)."""
    parts = []
    for base in (BEST, "eager_sdpa", "eager"):   # BEST: the fastest torch.compile mode, "the" compiled peer
        if base not in tok:
            continue
        sp = tok.div(tok[base], axis=0).drop(columns=[base])
        sp.columns = [f"{c} / {base}" for c in sp.columns]
        parts.append(sp)
    if not parts:
        return None
    t = pd.concat(parts, axis=1).reset_index()
    rows = [[cell(v) if i < 2 else cells.ratio(v) for i, v in enumerate(r)] for r in t.itertuples(index=False)]
    return Table(list(t.columns), rows)


def _e2e_section(df: pd.DataFrame, outdir: str) -> dict | None:
    e = df[df["op"] == "e2e"]
    if e.empty:
        return None
    best = best_rows(e.to_dict("records"))
    if best:
        e = pd.concat([e, pd.DataFrame(best)], ignore_index=True)
    # a step replayed as a CUDA graph is another way of running the backend, never the same series
    graphed = e["cuda_graph"].fillna(False).astype(bool) if "cuda_graph" in e else pd.Series(False, index=e.index)
    e = e.assign(impl=e["impl"].where(~graphed, e["impl"] + " +graph"))
    cols = [c for c in ("device_name", "shape_label", "impl", "best_of", "status", "ms_per_step", "host_median_ms",
                        "tokens_per_s", "model_tflops", "mfu", "peak_mem_bytes", "compile_s", "fallbacks", "message")
            if c in e]
    out = {"table": cells.from_df(e, cols), "tokens": None, "speedups": None, "breakdown": None, "losses": None}
    ok = e[e["status"] == "ok"]
    if not ok.empty and "tokens_per_s" in ok and ok["tokens_per_s"].notna().any():
        p = ok.pivot_table(index=["device_name", "shape_label"], columns="impl", values="tokens_per_s", aggfunc="max")
        out["tokens"] = charts.e2e_tokens(p, outdir)
        out["speedups"] = _e2e_speedups(p)
    bcols = [c for c in ok.columns if c.startswith("breakdown.")]
    if bcols:
        bd = ok[ok[bcols].notna().any(axis=1)]
        if not bd.empty:
            t = bd[bcols].rename(columns=lambda c: c.removeprefix("breakdown."))
            t.index = [f"{s} {i}" for s, i in zip(bd["shape_label"], bd["impl"])]
            out["breakdown"] = charts.e2e_breakdown(t.fillna(0.0), outdir)
    if "losses" in ok:
        curves = [(f"{r['shape_label']} {r['impl']}", r["impl"], r["losses"]) for r in ok.to_dict("records")
                  if isinstance(r.get("losses"), list) and r["losses"]]
        if curves:
            out["losses"] = charts.e2e_losses(curves, outdir)
    return out


def _bad_table(k: pd.DataFrame) -> Table | None:
    bad = k[k["status"].isin(["wrong", "error", "compile_error", "oom", "unsupported"])]
    if bad.empty:
        return None
    cols = [c for c in ("device_name", "op", "impl", "shape_label", "dtype", "pass", "config_label", "status",
                        "message") if c in bad]
    return cells.from_df(bad, cols)


def build(paths: list[str], outdir: str) -> str:
    """Write outdir/index.html (and PNGs) from result files; returns the HTML path."""
    os.makedirs(outdir, exist_ok=True)
    df = load(paths)
    interactive = plotly_charts.plotly_or_none() is not None
    ctx = {"title": "tilebench report", "interactive": interactive, "paths": paths, "empty": df.empty}
    if df.empty:
        return render.render("report.html", outdir, **ctx)
    meta, dates = _meta(df)
    k = df[(df["mode"] == "kernel") & (df["op"] != "e2e")]
    ok = k[(k["status"] == "ok") & k["median_ms"].notna()]
    ctx.update(meta=meta, dates=dates, notes=notes(df, k, ok), status=_status_table(k), declined=_declined_table(k),
               winners=None, per_gpu=None, disagreements=None, devices=None, presets=None, ops=[],
               bad=_bad_table(k), profile=profile.report_items(k), static=_static_section(df, outdir),
               e2e=_e2e_section(df, outdir))
    if not ok.empty:
        best = best_configs(ok)
        ctx["winners"] = _winners_table(winners(best))
        if ok["gpu_index"].nunique() > 1:
            per = ok.groupby(["host", "device_name", "gpu_index"]).agg(
                points=("point_id", "count"), time_s=("duration_s", "sum")).reset_index()
            ctx["per_gpu"] = cells.from_df(per)
            ctx["disagreements"] = cells.from_df(gpu_disagreements(ok))
        if best["device_name"].nunique() > 1:
            ctx["devices"] = cells.from_df(_device_compare(best))
        pre = presets_compare(ok)
        if not pre.empty:
            ctx["presets"] = cells.from_df(pre)
        ctx["ops"] = _op_sections(ok, best, speedup.table(best), outdir, interactive)
    return render.render("report.html", outdir, **ctx)


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
        lines += [f"  {r['op']}/{r['impl']} {r.get('dtype')} {r.get('pass')} {r.get('shape_label', '')}: "
                  f"{r['status']}: {str(r['message'])[:120]}" for _, r in failed.head(30).iterrows()]
    if "median_ms" not in df:
        return "\n".join(lines)
    ok = df[(df["status"] == "ok") & df["median_ms"].notna()]
    if ok.empty:
        return "\n".join(lines)
    ok = ok.assign(device_name=ok.get("device_name", "device"), config_label=ok.get("config_label", "default"))
    best = best_configs(ok)
    timers = ", ".join(sorted(str(t) for t in ok["timer"].dropna().unique())) if "timer" in ok else "?"
    tabs = [("median_ms", f"kernel time ({timers}), median ms per call")]
    if "host_median_ms" in best and best["host_median_ms"].notna().any() and timers != "cpu_clock":
        tabs.append(("host_median_ms", "host-inclusive time (synchronised wall clock per call: what an eager "
                                       "step pays), median ms per call"))
    for col, title in tabs:
        piv = best.pivot_table(index=["op", "shape_label", "dtype", "pass"], columns="impl", values=col,
                               aggfunc="min")
        piv["fastest"] = piv.idxmin(axis=1)
        with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_rows", 500,
                               "display.float_format", lambda v: f"{v:.4g}"):
            lines.append(f"{title} (best tile config); fastest correct impl last column:")
            lines.append(piv.to_string())
    return "\n".join(lines)
