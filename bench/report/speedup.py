"""The report's question: which impl is fastest at a point, and by how much against the best thing one could use
instead?

At each point (every axis but the impl and its tile config, each impl at its best config) the **best peer** is the
fastest `ok` impl that is neither ours nor the eager baseline: cuDNN / flash / efficient SDPA, cuBLASLt, Liger,
TileGym, torch.compile (`impl_kind` "peer"). Where no peer ran, eager stands in (the fastest baseline) and the
reference says so. Every impl's speed-up is the reference's median time over its own: above 1 it beats the best
peer. The 95 % interval comes from the rows' stored samples by a percentile bootstrap of the two medians, as
`--compare` (bench/report/compare.py) does, or, for rows without samples (and in reports past MAX_PAIRS ratios),
from the quartiles (ref q1 / impl q3 .. ref q3 / impl q1), wider. A ratio is `unsettled` where either time stopped on its budget with its IQR above the
timing target (kernels.rows.SPREAD_TARGET)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from kernels.rows import unsettled

OURS = ("triton", "cutile")
BASELINES = ("eager", "eager_chunked", "eager_sdpa")
RESAMPLES = 500           # the report's bootstrap: ~1 ms a pair; the ends stable to ~1 % of the interval
MAX_SAMPLES = 64          # each side's samples evenly thinned to this many: a slightly wider (conservative) interval
MAX_PAIRS = 2000          # past this many ratios in one report, quartile intervals: a live rebuild stays seconds
CONFIDENCE = 0.95
POINT = ["device_name", "op", "shape_label", "dtype", "pass", "timer"]


def kind_of(impl, impl_kind=None) -> str:
    """ours | peer | baseline: the row's impl_kind where it has one, else from the name (older rows)."""
    if isinstance(impl_kind, str) and impl_kind in ("ours", "peer", "baseline"):
        return impl_kind
    name = str(impl)
    if name in OURS or name.split("_")[0] in OURS:
        return "ours"
    if name in BASELINES:
        return "baseline"
    return "peer"


def _samples(v) -> np.ndarray | None:
    if isinstance(v, (list, tuple, np.ndarray)) and len(v) >= 2:
        a = np.asarray(v, dtype=float)
        if len(a) > MAX_SAMPLES:
            a = a[np.arange(MAX_SAMPLES) * len(a) // MAX_SAMPLES]
        return a if np.all(np.isfinite(a)) else None
    return None


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None


def interval(ref: dict, impl: dict, seed: int = 0, bootstrap: bool = True) -> tuple[float, float, float, str]:
    """(ratio, lo, hi, method) of ref / impl median times; method 'bootstrap' or 'quartiles'."""
    r = ref["median_ms"] / impl["median_ms"]
    a, b = _samples(ref.get("samples_ms")), _samples(impl.get("samples_ms"))
    if bootstrap and a is not None and b is not None:
        if np.ptp(a) == 0 and np.ptp(b) == 0:
            return r, r, r, "bootstrap"
        rng = np.random.default_rng(seed)
        ra = np.median(rng.choice(a, (RESAMPLES, len(a))), axis=1)
        rb = np.median(rng.choice(b, (RESAMPLES, len(b))), axis=1)
        tail = 100 * (1 - CONFIDENCE) / 2
        lo, hi = np.percentile(ra / rb, [tail, 100 - tail])
        return r, min(float(lo), r), max(float(hi), r), "bootstrap"
    rq1, rq3 = _num(ref.get("q1_ms")) or ref["median_ms"], _num(ref.get("q3_ms")) or ref["median_ms"]
    iq1, iq3 = _num(impl.get("q1_ms")) or impl["median_ms"], _num(impl.get("q3_ms")) or impl["median_ms"]
    return r, min(rq1 / iq3, r), max(rq3 / iq1, r), "quartiles"


def reference(group: pd.DataFrame) -> tuple[dict | None, str]:
    """The best peer of one point's rows (each impl at its best config): (row, 'peer'), or the fastest baseline
    where no peer ran (row, 'eager'), or (None, '')."""
    kinds = [kind_of(i, k) for i, k in zip(group["impl"], group.get("impl_kind", [None] * len(group)))]
    g = group.assign(_kind=kinds)
    for kind, why in (("peer", "peer"), ("baseline", "eager")):
        c = g[g["_kind"] == kind]
        if len(c):
            return c.loc[c["median_ms"].idxmin()].to_dict(), why
    return None, ""


def table(best: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per (point, impl) of `best` (ok rows, best config per impl): the impl's speed-up over the point's
    best peer (ratio = ref ms / impl ms) with its interval; the reference's own row has ratio 1 and is_ref."""
    cols = POINT + ["contest", "x", "impl", "kind", "median_ms", "ref_impl", "ref_kind", "ref_ms", "ratio", "lo", "hi",
                    "ci", "unsettled", "is_ref", "config_text", "stress_declined"]
    out = []
    if best.empty:
        return pd.DataFrame(columns=cols)
    best = best.assign(**{c: best[c] if c in best else None for c in POINT + ["x", "config_text", "stress_declined",
                                                                             "impl_kind"] if c not in best})
    bootstrap = len(best) <= MAX_PAIRS
    for (_, contest), g in best.groupby(["device_name", "contest"], sort=False, dropna=False):   # one GPU's peers
        ref, why = reference(g)
        if ref is None:
            continue
        for r in g.to_dict("records"):
            is_ref = r["impl"] == ref["impl"]
            ratio, lo, hi, how = (1.0, 1.0, 1.0, "reference") if is_ref else interval(ref, r, seed, bootstrap)
            out.append({**{k: r.get(k) for k in POINT}, "contest": contest, "x": r.get("x"), "impl": r["impl"],
                        "kind": kind_of(r["impl"], r.get("impl_kind")), "median_ms": r["median_ms"],
                        "ref_impl": ref["impl"], "ref_kind": why, "ref_ms": ref["median_ms"], "ratio": ratio, "lo": lo,
                        "hi": hi, "ci": how, "unsettled": unsettled(r) or unsettled(ref), "is_ref": is_ref,
                        "config_text": r.get("config_text"), "stress_declined": r.get("stress_declined")})
    return pd.DataFrame(out, columns=cols)


def winners(best: pd.DataFrame) -> pd.DataFrame:
    """Per point: the fastest correct impl, its speed-up over eager, the best peer, and our fastest kernel
    (Triton or cuTile) against it (above 1: ours is faster)."""
    out = []
    if best.empty:
        return pd.DataFrame()
    best = best.assign(**{c: None for c in ("timer", "impl_kind", "roofline_frac", "x", "bound", "iqr_rel")
                          if c not in best})
    for key, g in best.groupby(["device_name", "op", "shape_label", "dtype", "pass", "contest"], sort=False):
        g = g.sort_values("median_ms")
        top = g.iloc[0]
        kinds = pd.Series([kind_of(i, k) for i, k in zip(g["impl"], g["impl_kind"])], index=g.index)
        eager = g[g["impl"] == "eager"]["median_ms"]
        ours = g[kinds == "ours"]
        ref, why = reference(g)
        metric, unit = ("tflops", "TFLOP/s") if top.get("bound") == "compute" else ("gbps", "GB/s")
        ours_vs = None
        if len(ours) and ref is not None and why == "peer":
            o = ours.iloc[0]
            ours_vs = ref["median_ms"] / o["median_ms"]
        out.append({
            "device": key[0], "op": key[1], "shape": key[2], "dtype": key[3], "pass": key[4], "timer": top.get("timer"),
            "winner": top["impl"], "ms": top["median_ms"], "throughput": top.get(metric), "unit": unit,
            "roofline": top.get("roofline_frac"),
            "vs eager": (eager.iloc[0] / top["median_ms"]) if len(eager) else None,
            "best ours": ours.iloc[0]["impl"] if len(ours) else None,
            "ours ms": ours.iloc[0]["median_ms"] if len(ours) else None,
            "best peer": ref["impl"] if ref is not None and why == "peer" else None,
            "peer ms": ref["median_ms"] if ref is not None and why == "peer" else None,
            "ours vs best peer": ours_vs,
            "unsettled": bool(len(ours) and ref is not None
                              and (unsettled(ours.iloc[0].to_dict()) or unsettled(ref))),
            "x": top.get("x"),
        })
    return pd.DataFrame(out)
