"""Where a training step's host time goes when it is not a CUDA graph (GPU machine): the step's
host-inclusive and device time, the time Python takes to enqueue it (no sync inside), and a cProfile of
the enqueue, by own time and by cumulative time.

    source .devpack/setup.sh && PYTHONPATH=.:$PYTHONPATH python tools/step_host_profile.py \\
        --model gpt2_124m --backend triton [--backend cutile ...]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch

from bench.measure.e2e import DEFAULT_BT, autocast, batches, build_model, train_step_fn
from model.config import preset


def profile_backend(model_name, impl, steps, top, device="cuda"):
    cfg = preset(model_name)
    B, T = DEFAULT_BT[model_name]
    model, fwd, backend = build_model(cfg, impl, device, 0, "bf16", {}, False, print)
    opt = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device)
    data = batches(cfg.vocab_size, B, T, device, 0)
    step = train_step_fn(model, fwd, opt, autocast(device, "bf16"), 1.0, data)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for i in range(3):
        step(i)
    sync()
    cuda = device == "cuda"
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if cuda else None
    if cuda:
        ev[0].record()
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    enqueue = (time.perf_counter() - t) * 1e3 / steps
    if cuda:
        ev[1].record()
    sync()
    wall = (time.perf_counter() - t) * 1e3 / steps
    device_ms = ev[0].elapsed_time(ev[1]) / steps if cuda else float("nan")
    prof = cProfile.Profile()
    # backward in this thread, so the profile sees the Python of the autograd Functions' backward too
    with torch.autograd.set_multithreading_enabled(False):
        prof.enable()
        for i in range(steps):
            step(i)
        prof.disable()
    sync()
    print(f"\n== {model_name} {impl}: host enqueue {enqueue:.2f} ms/step, wall {wall:.2f}, "
          f"device (events, back to back) {device_ms:.2f}; fallbacks {len(backend.fallbacks) if backend else 0}")
    for key in ("tottime", "cumtime"):
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats(key).print_stats(top)
        print(f"-- by {key} ({steps} steps)\n" + "\n".join(s.getvalue().splitlines()[6:]))
    del model, opt, step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2_124m")
    ap.add_argument("--backend", action="append")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top", type=int, default=35)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    for impl in a.backend or ["triton"]:
        profile_backend(a.model, impl, a.steps, a.top, a.device)


if __name__ == "__main__":
    main()
