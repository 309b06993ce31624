"""Did my change make it faster? Two runs compared point by point.

Points are joined by every axis (op, impl, shape, dtype, pass, tile config, timer). Per point: the ratio
new / base of the median times with a 95 % confidence interval, bootstrapped (scipy.stats.bootstrap)
from the per-repetition samples each row keeps (`samples_ms`, `host_samples_ms`), and a verdict:

  slower / faster  the interval excludes 1 and the ratio is beyond the `same` band (2 %)
  same             the whole interval lies within the band
  noisy            neither: the samples cannot tell
  retuned          not same, and a time-capped autotuner (a peer's, --autotune-cap) picked other configs in the two
                   runs: two configs compared, not two versions of the code; listed, never a --fail-above failure

Rows written before samples were kept get a wider, conservative interval from their quartiles
(new q1 / base q3 .. new q3 / base q1), marked `ci: quartiles`. Per (op, impl): the geometric mean of the
ratios. Points in one run only, and points whose status changed (ok in base, wrong in new ...), are listed;
two runs with no point in common are an error (CompareError), not an empty comparison."""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pandas as pd

from kernels.rows import BROKEN, POINT_AXES, point_key, read_rows

KEY = POINT_AXES
SAME_BAND = 0.02          # ratios within 2 % are "same": the run-to-run spread of a settled GPU point
CONFIDENCE = 0.95
RESAMPLES = 2000          # percentile bootstrap; 2000 keeps the interval's ends stable to ~0.1 %
# the time each --compare-time compares: (median, q1, q3, samples); host falls back to kernel in old files
TIMES = {"kernel": ("median_ms", "q1_ms", "q3_ms", "samples_ms"),
         "host": ("host_median_ms", "host_q1_ms", "host_q3_ms", "host_samples_ms")}


VERDICTS = ("faster", "slower", "same", "noisy", "retuned")


class CompareError(ValueError):
    pass


def load(path: str) -> list[dict]:
    """The rows of a results file or run folder (kernels/rows.py result_files: a folder's own results, or its shards')."""
    try:
        rows = [r for r in read_rows(path) if r.get("op") and r.get("status")]
    except FileNotFoundError:
        raise CompareError(f"{path}: no such results file or folder") from None
    if not rows:
        raise CompareError(f"{path}: no result rows (a folder's results.jsonl, or its shards')")
    return rows


key_of = point_key


def _by_key(rows: list[dict]) -> dict:
    out = {}
    for r in rows:          # the latest row wins when a point was measured twice (a resumed run)
        out[key_of(r)] = r
    return out


def _times(row: dict, which: str) -> tuple[float, float, float, list | None, str]:
    """(median, q1, q3, samples or None, the field used) of one row."""
    med, q1, q3, samples = TIMES[which]
    if which == "host" and row.get(med) is None:     # written before host time was kept
        return _times(row, "kernel")[:4] + ("median_ms",)
    s = row.get(samples)
    return float(row[med]), float(row.get(q1, row[med])), float(row.get(q3, row[med])), \
        (list(map(float, s)) if isinstance(s, list) and len(s) >= 2 else None), med


def _median_ratio(base, new, axis=-1):
    return np.median(new, axis=axis) / np.median(base, axis=axis)


def _seeded(stats, seed: int) -> dict:
    """The same interval on every run: scipy >= 1.15 takes rng=, older ones random_state=."""
    import inspect
    name = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def ratio_ci(base: tuple, new: tuple, seed: int = 0) -> tuple[float, float, float, str]:
    """(ratio, lo, hi, method) of new / base medians; base and new are _times() tuples."""
    from scipy import stats
    ratio = new[0] / base[0]
    if base[3] is not None and new[3] is not None:
        b, n = np.asarray(base[3]), np.asarray(new[3])
        if np.ptp(b) == 0 and np.ptp(n) == 0:        # constant samples: nothing to resample
            return ratio, ratio, ratio, "bootstrap"
        res = stats.bootstrap((b, n), _median_ratio, paired=False, vectorized=True, n_resamples=RESAMPLES,
                              confidence_level=CONFIDENCE, method="percentile", **_seeded(stats, seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        return ratio, min(lo, ratio), max(hi, ratio), "bootstrap"
    return ratio, new[1] / base[2], new[2] / base[1], "quartiles"


def verdict(ratio: float, lo: float, hi: float, band: float = SAME_BAND) -> str:
    if lo > 1 and ratio > 1 + band:
        return "slower"
    if hi < 1 and ratio < 1 / (1 + band):
        return "faster"
    if lo >= 1 / (1 + band) and hi <= 1 + band:
        return "same"
    return "noisy"


def _picks(row: dict) -> list[str]:
    """The configs a row's autotune searches settled on ("best": "namespace(TILE_M=64, ...) 111.1 us", time dropped)."""
    return [str(a.get("best", "")).rsplit(" ", 2)[0] for a in row.get("autotune") or [] if isinstance(a, dict)]


def retuned(base: dict, new: dict) -> bool:
    """A capped autotune in either run, and other picks: the runs timed different configs of the point."""
    return bool(base.get("autotune_capped") or new.get("autotune_capped")) and _picks(base) != _picks(new)


def label(row: dict) -> str:
    cfg = row.get("config_label")
    return (f"{row['op']}/{row['impl']} {row.get('shape_label') or row.get('shape')} {row.get('dtype')} "
            f"{row.get('pass')}" + (f" [{cfg}]" if cfg not in (None, "default") else "") +
            (f" ({row['timer']})" if row.get("timer") else ""))


@dataclasses.dataclass
class Comparison:
    base: str
    new: str
    time: str                   # kernel | host
    points: pd.DataFrame        # one row per point timed in both runs
    per_impl: pd.DataFrame      # geometric mean of the ratios per (op, impl)
    only_base: list[str]
    only_new: list[str]
    status_changed: pd.DataFrame
    devices: tuple[str, str]

    def over(self, threshold: float) -> pd.DataFrame:
        """Points slower than 1 + threshold with confidence: the interval's low end above it (retuned points are two
        configs, not two versions of the code: they are listed, not counted)."""
        return self.points[(self.points["ci_lo"] > 1 + threshold) & (self.points["verdict"] != "retuned")]

    def newly_broken(self) -> pd.DataFrame:
        s = self.status_changed
        return s[(s["base status"] == "ok") & s["new status"].isin(BROKEN)] if not s.empty else s


def _devices(rows):
    return ", ".join(sorted({str(r.get("device_name", "unknown device")) for r in rows}))


def compare(base_path: str, new_path: str, time: str = "kernel", band: float = SAME_BAND) -> Comparison:
    if time not in TIMES:
        raise CompareError(f"unknown time {time!r} (known: {', '.join(TIMES)})")
    return compare_rows(load(base_path), load(new_path), base_path, new_path, time, band)


def compare_rows(base_rows: list[dict], new_rows: list[dict], base_name: str, new_name: str, time: str = "kernel",
                 band: float = SAME_BAND) -> Comparison:
    """compare() of rows from anywhere (two commits of the results history, bench/history.py); the names label
    them. Within each side the latest row of a point wins."""
    if time not in TIMES:
        raise CompareError(f"unknown time {time!r} (known: {', '.join(TIMES)})")
    base, new = _by_key(base_rows), _by_key(new_rows)
    if not base.keys() & new.keys():    # a gate that compared nothing must not read as a pass
        raise CompareError(f"nothing compared: no point is in both runs (BASE has {len(base)} points, NEW has "
                           f"{len(new)}; points are joined by {', '.join(KEY)})")
    points, changed = [], []
    for k in [k for k in base if k in new]:
        b, n = base[k], new[k]
        timed = all(r.get("status") == "ok" and r.get("median_ms") is not None for r in (b, n))
        if not timed:
            # unavailable or unsupported in both runs is no news; a change, or a point still broken, is
            if b.get("status") != n.get("status") or b.get("status") in BROKEN:
                changed.append({"point": label(n), "base status": b.get("status"), "new status": n.get("status"),
                                "new message": str(n.get("message", ""))[:160]})
            continue
        bt, nt = _times(b, time), _times(n, time)
        ratio, lo, hi, how = ratio_ci(bt, nt)
        points.append({"op": n["op"], "impl": n["impl"], "point": label(n), "shape": n.get("shape_label"),
                       "dtype": n.get("dtype"), "pass": n.get("pass"), "config": n.get("config_label"),
                       "timer": n.get("timer"), "base_ms": bt[0], "new_ms": nt[0],
                       "base_reps": len(bt[3]) if bt[3] else b.get("reps"), "new_reps": len(nt[3]) if nt[3] else n.get("reps"), "ratio": ratio, "ci_lo": lo, "ci_hi": hi, "ci": how,
                       "time": nt[4], "verdict": _verdict_of(b, n, ratio, lo, hi, band)})
    df = pd.DataFrame(points, columns=["op", "impl", "point", "shape", "dtype", "pass", "config", "timer", "base_ms",
                                       "new_ms", "base_reps", "new_reps", "ratio", "ci_lo", "ci_hi", "ci", "time",
                                       "verdict"])
    return Comparison(base_name, new_name, time, df.sort_values("ratio", ascending=False, ignore_index=True),
                      _per_impl(df), sorted(label(base[k]) for k in base if k not in new),
                      sorted(label(new[k]) for k in new if k not in base), pd.DataFrame(changed),
                      (_devices(base_rows), _devices(new_rows)))


def _verdict_of(b, n, ratio, lo, hi, band) -> str:
    v = verdict(ratio, lo, hi, band)
    return "retuned" if v != "same" and retuned(b, n) else v


def _per_impl(df: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (op, impl), g in df.groupby(["op", "impl"], sort=True):
        v = g["verdict"].value_counts()
        out.append({"op": op, "impl": impl, "points": len(g), "geomean ratio": math.exp(np.log(g["ratio"]).mean()),
                    **{k: int(v.get(k, 0)) for k in VERDICTS}})
    return pd.DataFrame(out, columns=["op", "impl", "points", "geomean ratio", *VERDICTS])


def parse_threshold(text: str) -> float:
    """'5%' or '5' -> 0.05."""
    t = text.strip()
    try:
        v = float(t[:-1] if t.endswith("%") else t)
    except ValueError:
        raise CompareError(f"--fail-above {text!r}: expected a percentage like 5%") from None
    if not 0 <= v < 1000:
        raise CompareError(f"--fail-above {text!r}: expected a percentage >= 0")
    return v / 100


def _table(df: pd.DataFrame) -> str:
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_rows", 1000,
                           "display.max_colwidth", 90, "display.float_format", lambda v: f"{v:.4g}"):
        return df.to_string(index=False)


def text(c: Comparison, fail_above: float | None = None) -> str:
    what = "kernel time" if c.time == "kernel" else "host-inclusive time"
    lines = [f"compare: NEW {c.new} ({c.devices[1]}) vs BASE {c.base} ({c.devices[0]})",
             f"{what}, ratio = new / base median; {CONFIDENCE:.0%} interval bootstrapped from the per-repetition "
             f"samples (column ci: quartiles where a row has none); 'same' = within {SAME_BAND:.0%}"]
    if c.points.empty:
        lines.append("no point was timed in both runs")
    else:
        cols = ["point", "base_ms", "new_ms", "ratio", "ci_lo", "ci_hi", "verdict"]
        if (c.points["ci"] != "bootstrap").any():
            cols.insert(-1, "ci")
        lines += [_table(c.points[cols]), "", "per impl (geometric mean of new/base over its points):",
                  _table(c.per_impl)]
        counts = c.points["verdict"].value_counts()
        lines.append("verdicts: " + ", ".join(f"{k} {counts[k]}" for k in VERDICTS if k in counts))
        if "retuned" in counts:
            lines.append("retuned: a time-capped autotuner picked other configs in the two runs (the rows' `autotune`"
                         " says which); not counted by --fail-above")
    for name, only in (("BASE", c.only_base), ("NEW", c.only_new)):
        if only:
            lines.append(f"only in {name} ({len(only)}): " + "; ".join(only[:20]) + (" ..." if len(only) > 20 else ""))
    if not c.status_changed.empty:
        lines += ["status changed or not timed in one run:", _table(c.status_changed)]
    if fail_above is not None:
        over, broken = c.over(fail_above), c.newly_broken()
        if len(over) or len(broken):
            lines.append(f"FAIL: {len(over)} point(s) slower than +{fail_above:.1%} with {CONFIDENCE:.0%} confidence"
                         + (f", {len(broken)} point(s) ok in BASE and broken in NEW" if len(broken) else ""))
        else:
            lines.append(f"pass: no point slower than +{fail_above:.1%} with {CONFIDENCE:.0%} confidence")
    return "\n".join(lines)
