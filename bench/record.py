"""--record-defaults RESULTS: a tuning sweep's results become this GPU's default tile configs (kernels/gpu_defaults.py).

Per GPU and op/impl, among the configs the results measured (ok rows on a GPU, one timer), the one with the lowest geometric
mean of time / the impl's best time at each point (shape, dtype, pass) wins, counting only configs measured at every
point the default was; it is recorded when it beats the default (the impl's preset) by more than MIN_GAIN, and an
entry the preset now matches is dropped. Rows of a default that ran a record instead of the preset are refused
(run the sweep with TILEBENCH_GPU_DEFAULTS=off), as are results that mix timers; --no-stress rows and unsettled
ones are left out. The record names the date, the results' commits and the
points it stands on, so a reader can rerun it:

    run_bench.py --sweep gemm_triton_fwd --cuda-graph --out results/mine
    run_bench.py --record-defaults results/mine                       # -> ./tilebench-gpu-defaults.json
    run_bench.py --record-defaults results/mine --defaults-file tuning/gpu_defaults.json   # the shipped record
"""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict

from kernels import gpu_defaults
from kernels.rows import read_rows, unsettled

MIN_GAIN = 0.02   # under 2 % the default's own run-to-run spread on an H100 can flip the order


def _key(cfg) -> str:
    return json.dumps(cfg or {}, sort_keys=True)


class RecordError(ValueError):
    """Results a record cannot stand on; the CLI prints it as one line."""


def decide(rows: list[dict]) -> list[dict]:
    """One decision per (gpu, op, impl) with more than one config measured: the winner, its geometric-mean
    time ratio, the default's, and whether it is recorded. Raises RecordError where the rows cannot say."""
    groups: dict = defaultdict(lambda: defaultdict(dict))   # (gpu, op, impl, timer) -> config -> point -> ms
    labels: dict = {}
    for r in rows:
        if r.get("status") != "ok" or r.get("op") == "e2e" or not r.get("device_name", "").strip():
            continue
        if r.get("interpreted") or not str(r.get("device", "")).startswith("cuda"):
            continue    # a CPU's or an interpreter's times say nothing of a GPU's tiles
        if r.get("stress") == "off" or unsettled(r):
            continue    # never a config the battery did not check, nor a time that never settled
        if not r.get("config") and r.get("config_source") not in (None, "preset"):
            raise RecordError(f"{r['op']}/{r['impl']} on {r['device_name']}: its default ran a recorded config "
                              f"({r['config_source']}), not the preset: rerun the sweep with "
                              f"{gpu_defaults.USER_ENV}={gpu_defaults.OFF} to time the preset beside the candidates")
        try:
            ms = float(r.get("median_ms"))
        except (TypeError, ValueError):
            continue
        if not (ms > 0 and math.isfinite(ms)):
            continue
        point = json.dumps([r.get("shape"), r.get("dtype"), r.get("pass")], sort_keys=True, default=str)
        g = groups[(r["device_name"], r["op"], r["impl"], r.get("timer"))]
        g[_key(r.get("config"))][point] = min(ms, g[_key(r.get("config"))].get(point, math.inf))
        labels[(r["device_name"], r["op"], r["impl"], _key(r.get("config")))] = r.get("config_label")
    timers = defaultdict(set)
    for gpu, op, impl, timer in groups:
        timers[(gpu, op, impl)].add(str(timer))
    for (gpu, op, impl), ts in timers.items():
        if len(ts) > 1:
            raise RecordError(f"{op}/{impl} on {gpu}: the results mix timers ({', '.join(sorted(ts))}): record from "
                              "one kind of run (--cuda-graph or not)")
    out = []
    for (gpu, op, impl, timer), by_cfg in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if len(by_cfg) < 2 or _key({}) not in by_cfg:
            continue
        points = set(by_cfg[_key({})])
        best_at = {p: min(t[p] for t in by_cfg.values() if p in t) for p in points}

        def score(times):
            return math.exp(sum(math.log(times[p] / best_at[p]) for p in points) / len(points))
        scores = {c: score(t) for c, t in by_cfg.items() if points <= set(t)}
        winner = min(scores, key=scores.get)
        gain = 1 - scores[winner] / scores[_key({})]
        commits = sorted({str(r.get("git_commit")) for r in rows if r.get("device_name") == gpu and r.get("op") == op
                          and r.get("impl") == impl and r.get("git_commit")})
        out.append({"gpu": gpu, "op": op, "impl": impl, "timer": timer, "config": json.loads(winner),
                    "label": labels.get((gpu, op, impl, winner)),
                    "score": round(scores[winner], 4), "default_score": round(scores[_key({})], 4),
                    "gain": round(gain, 4), "points": len(points), "configs": len(scores),
                    "record": winner != _key({}) and gain > MIN_GAIN, "commits": commits})
    return out


def write(decisions: list[dict], path: str, date: str) -> tuple[int, int]:
    """Merge the decisions into the record at path: recorded winners in, entries the default now beats out.
    Returns (entries written, entries dropped)."""
    data = gpu_defaults.read(path)
    written = dropped = 0
    for d in decisions:
        entries = data["gpus"].setdefault(d["gpu"], {})
        key = f"{d['op']}/{d['impl']}"
        if d["record"]:
            entries[key] = {"config": d["config"], "measured": {
                "date": date, "commits": d["commits"], "label": d["label"], "timer": d["timer"], "points": d["points"],
                "time_vs_default": round(d["score"] / d["default_score"], 4)}}
            written += 1
        elif key in entries and not d["config"]:
            del entries[key]
            dropped += 1
        if not entries:
            del data["gpus"][d["gpu"]]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return written, dropped


def text(decisions: list[dict]) -> str:
    if not decisions:
        return "no op/impl with its default and another config measured at the same points: nothing to record"
    lines = [f"{'gpu':<26} {'op/impl':<26} {'points':>6} {'configs':>7} {'default':>8} {'best':>8}  decision"]
    for d in decisions:
        what = (f"record {json.dumps(d['config'], sort_keys=True)}" if d["record"]
                else "keep the default" + ("" if not d["config"] else f" ({d['gain']:+.1%} is within {MIN_GAIN:.0%})"))
        lines.append(f"{d['gpu'][:26]:<26} {d['op'] + '/' + d['impl']:<26} {d['points']:>6} {d['configs']:>7} "
                     f"{d['default_score']:>8.3f} {d['score']:>8.3f}  {what}")
        if d["record"] and d["label"]:
            lines[-1] += f" ({d['label']})"
    return "\n".join(lines) + "\n(default, best: geometric mean of time / the impl's best time at each point)"


def cmd(paths: list[str], out: str | None) -> int:
    """run_bench.py --record-defaults RESULTS [--defaults-file PATH]."""
    import time
    from bench.usage import die
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        return die(f"--record-defaults: no such file or folder: {missing[0]}")
    rows = read_rows(*paths)
    try:
        decisions = decide(rows)
    except RecordError as e:
        return die(f"--record-defaults: {e}")
    print(text(decisions))
    path = out or gpu_defaults.user_path()
    if not decisions:
        return 0
    try:
        written, dropped = write(decisions, path, time.strftime("%Y-%m-%d"))
    except ValueError as e:
        return die(str(e))
    print(f"{path}: {written} entr{'y' if written == 1 else 'ies'} recorded, {dropped} dropped"
          + ("" if out else f" (the user's record; {gpu_defaults.USER_ENV} names another)"))
    return 0
