"""Ranking measured results for Backend("auto"): per op, which impl was fastest on this GPU.

Rows are the harness's JSONL result rows (run_bench.py --sweep model_ops). Only the time a step of the
kind being run pays is compared: a step replayed as a CUDA graph pays the kernels' own time, so it ranks
graph-replay rows (timer "cuda_graph", median_ms); a plain step pays the host's launch cost too, so it
ranks launch-timed rows by their host-inclusive wall clock (host_median_ms; median_ms in rows written
before that column existed). Rows of the other timer are never mixed in."""
from __future__ import annotations

import glob
import json
import math
import os
from collections import Counter, defaultdict

from kernels.rows import is_graph, read_file, results_root
from model.op_list import OPS

def default_results() -> str:
    """Every result file under the results folder: auto keeps the rows of this GPU (and this step's timer)."""
    return os.path.join(results_root(), "**", "*.jsonl")


def read_results(paths) -> list[dict]:
    """Rows from JSONL files or glob patterns of them, read as every reader reads rows (kernels/rows.py); missing
    files are skipped."""
    if isinstance(paths, str):
        paths = [paths]
    return [r for pattern in paths for path in sorted(glob.glob(pattern, recursive=True)) or [pattern]
            if os.path.isfile(path) for r in read_file(path)]


def _positive(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def step_ms(r: dict, timer: str) -> float | None:
    """What one call of this row's point costs a step timed by `timer` (kernels/rows.py), or None when the row's
    timer is of the other kind: graph replays for a graphed step, launched calls (or a CPU's clock) for a plain one."""
    if is_graph(r.get("timer")) != is_graph(timer):
        return None
    if is_graph(timer):
        return _positive(r.get("median_ms"))
    return _positive(r.get("host_median_ms")) or _positive(r.get("median_ms"))


def rank_impls(rows: list[dict], device: str, dtype: str = "bf16", ops=OPS, timer: str = "cuda_events"
               ) -> dict[str, list[dict]]:
    """Per op, impls from fastest to slowest among `ok` fwd+bwd rows measured on GPU `device`.

    Impls are compared shape by shape: an impl's score is the geometric mean over the shapes it ran of
    its time / the best time at that shape, and it must have run at least half the op's shapes. Rows of
    the model's dtype are used when there are any, else all dtypes. Times are step_ms(row, timer)."""
    ranked = {}
    for op, (groups, same) in _groups(rows, device, dtype, ops, timer).items():
        ratios, configs = defaultdict(list), defaultdict(Counter)
        for impls in groups.values():
            best = min(step_ms(r, timer) for r in impls.values())
            for name, r in impls.items():
                ratios[name].append(step_ms(r, timer) / best)
                cfg = r.get("config")
                if isinstance(cfg, dict):
                    configs[name][json.dumps(cfg, sort_keys=True)] += 1
        out = []
        for name, rat in ratios.items():
            cover = len(rat) / len(groups)
            if cover < 0.5:
                continue
            score = math.exp(sum(math.log(x) for x in rat) / len(rat))
            cfg = json.loads(configs[name].most_common(1)[0][0]) if configs[name] else None
            out.append({"impl": name, "score": score, "shapes": len(rat), "of": len(groups), "config": cfg,
                        "dtype": dtype if same else "any"})
        out.sort(key=lambda d: (d["score"], -d["shapes"]))
        ranked[op] = out
    return ranked


def shape_key(shape: dict) -> str:
    return json.dumps(shape, sort_keys=True, default=str)


def fastest_by_shape(rows: list[dict], device: str, dtype: str = "bf16", ops=OPS, timer: str = "cuda_events"
                     ) -> dict[str, dict[str, list[str]]]:
    """Per op and measured shape (shape_key), impls from fastest to slowest: the same rows rank_impls reads.
    Where the model calls an op at a shape that was measured, "auto" takes that shape's winner (e.g. eager
    cross-entropy at V=65 but cuTile at V=50304) instead of the op's overall ranking."""
    out = {}
    for op, (groups, _) in _groups(rows, device, dtype, ops, timer).items():
        for (_, key), impls in groups.items():
            out.setdefault(op, {})[key] = sorted(impls, key=lambda n: step_ms(impls[n], timer))
    return out


def _groups(rows, device, dtype, ops, timer):
    """op -> ({(dtype, shape_key): {impl: fastest row}}, whether rows of `dtype` were found): the ok fwd+bwd
    rows measured on `device` with `timer`, the model's dtype where it has any."""
    want = device.strip().lower()
    latest = {}    # a point measured again (a newer commit, a rerun) counts once, as last measured: a newer wrong
    for r in rows:  # row vetoes an older ok one
        latest[(r.get("device_name"), r.get("point_id") or id(r))] = r
    by_op = defaultdict(list)
    for r in latest.values():
        if r.get("stress") == "off":   # never through the stress battery (--no-stress): not trusted to rank
            continue
        ok = (r.get("status") == "ok" and r.get("pass") == "fwd+bwd" and r.get("op") in ops
              and isinstance(r.get("impl"), str) and step_ms(r, timer) is not None
              and isinstance(r.get("shape"), dict) and str(r.get("device_name", "")).strip().lower() == want)
        if ok:
            by_op[r["op"]].append(r)
    out = {}
    for op, rs in by_op.items():
        same = [r for r in rs if r.get("dtype") == dtype]
        rs = same or rs
        groups = defaultdict(dict)
        for r in rs:
            key = (r.get("dtype"), shape_key(r["shape"]))
            cur = groups[key].get(r["impl"])
            if cur is None or step_ms(r, timer) < step_ms(cur, timer):
                groups[key][r["impl"]] = r
        out[op] = (groups, bool(same))
    return out
