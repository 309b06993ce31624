"""GPU check of `--backend auto` with no results yet (model/measure.py) and of the NVML columns (bench/measure/devinfo.py).

Into a fresh results folder (OUT/results, so results/ already on the machine do not count): records the op shapes
of a GPT preset at its training batch, measures them through run_bench.py (once), ranks them for a plain step,
and checks that a second call measures nothing. Prints the time the first-run measurement took and auto's picks;
then one devinfo sample and point_state (throttled must be True/False on a GPU with NVML, never None).

    PYTHONPATH=. python tools/auto_measure_check.py --out $OUT/auto [--model shakespeare_6x768 --impls eager,triton]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from bench.measure import devinfo
from model import measure, ranking
from model.config import preset
from model.gpt import GPT
from model.ops import Backend

BATCH = {"gpt2_124m": (16, 1024), "shakespeare_6x768": (64, 256), "shakespeare_6x384": (64, 256)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="shakespeare_6x768", choices=sorted(BATCH))
    ap.add_argument("--impls", default=None, help="comma-separated (default: every impl, as the trainer does)")
    ap.add_argument("--graphed", action="store_true", help="rank for a CUDA-graphed step (measures with --cuda-graph)")
    a = ap.parse_args()
    ranking.RESULTS_ROOT = os.path.join(a.out, "results")
    device = "cuda:0"
    B, T = BATCH[a.model]
    backend = Backend("auto", dtype="bf16", graphed=a.graphed)
    model = GPT(preset(a.model), backend).to(device)
    impls = a.impls.split(",") if a.impls else None
    t0 = time.perf_counter()
    where = measure.ensure_results(backend, model, B, T, device, impls=impls)
    first_s = time.perf_counter() - t0
    again = measure.ensure_results(backend, model, B, T, device, impls=impls)
    backend.resolve_auto(device)
    rows = ranking.read_results(os.path.join(where, "results.jsonl")) if where else []
    statuses = {}
    for r in rows:
        statuses[r.get("status")] = statuses.get(r.get("status"), 0) + 1
    before = devinfo.sample(device)
    torch.cuda.synchronize()
    state = devinfo.point_state(before, devinfo.sample(device))
    out = {"model": a.model, "measured_into": where, "first_run_s": round(first_s, 1),
           "second_call_measured": again is not None, "rows": statuses, "choice": backend.choice,
           "fallbacks": backend.fallbacks, "throttled": state["throttled"], "nvml_error": devinfo.static_info(device).get("nvml_error")}
    print(json.dumps(out, indent=1))
    ok = where is not None and again is None and statuses.get("ok", 0) > 0 and state["throttled"] is not None \
        and not [f for f in backend.fallbacks if "no usable" in f]
    print("AUTO MEASURE CHECK:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
