"""Is the e2e torch_compile baseline as fast as nanoGPT's own model.py compiled the same way? Same run, same
GPU, same settings: bf16 autocast, fused AdamW (lr 6e-4, betas (0.9, 0.95), weight decay 0.1), clip 1.0,
random tokens; both compiled with torch.compile in mode default and timed by the same loop (bench.measure.e2e's
step and timers), alternating in rounds so drift hits both alike. The baseline passes within 5 %.

    PYTHONPATH=. python tools/nanogpt_compile_check.py --nanogpt .nanogpt/model.py

--nanogpt is a copy of karpathy/nanoGPT's model.py (kept out of the repository). On CPU (a smoke test of
the script, not a measurement): --device cpu --models tiny --steps 2 --rounds 1.
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import time

import torch

from bench.measure import timing
from bench.measure.e2e import DEFAULT_BT, autocast, batches, build_model, time_steps, train_step_fn
from model.config import preset

WITHIN = 0.05


def load_nanogpt(path: str):
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--nanogpt {path}: not a Python file")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def ours(cfg, device, seed):
    model, fwd, _ = build_model(cfg, "torch_compile", device, seed, "bf16", {}, False, print)
    return model, fwd


def theirs(nanogpt, cfg, device, seed):
    torch.manual_seed(seed)
    model = nanogpt.GPT(nanogpt.GPTConfig(block_size=cfg.block_size, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                                          n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=0.0, bias=True)).to(device)
    return model, torch.compile(model)   # as nanoGPT's train.py compiles it


def compare(name, nanogpt, device, steps, rounds, warmup) -> list[dict]:
    B, T = DEFAULT_BT[name]
    cfg = preset(name, block_size=T)
    data = batches(cfg.vocab_size, B, T, device, seed=0)
    ctx = autocast(device, "bf16")
    runs = {}
    for label, make in (("ours (bench.measure.e2e torch_compile)", lambda: ours(cfg, device, 0)),
                        ("nanoGPT model.py", lambda: theirs(nanogpt, cfg, device, 0))):
        model, fwd = make()
        opt = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), torch.device(device).type)
        step = train_step_fn(model, fwd, opt, ctx, 1.0, data)
        t0 = time.perf_counter()
        first = float(step(0))   # the compile
        compile_s = time.perf_counter() - t0
        for i in range(warmup):
            step(1 + i)
        runs[label] = {"step": step, "compile_s": compile_s, "loss0": first, "dev": [], "host": []}
    for _ in range(rounds):   # alternate, so clock and thermal drift fall on both
        for r in runs.values():
            t = time_steps(r["step"], steps, device, "cuda_events")
            r["dev"] += t["samples_ms"]
            r["host"] += t["host_samples_ms"]
    rows = []
    for label, r in runs.items():
        dev, host = timing.summarize(r["dev"], "events"), timing.summarize(r["host"], "wall")
        rows.append({"model": f"{name} B{B} T{T}", "impl": label, "compile_s": r["compile_s"], "loss0": r["loss0"],
                     "ms": dev.median_ms, "q1": dev.q1_ms, "q3": dev.q3_ms, "host_ms": host.median_ms,
                     "tok_s": B * T / (dev.median_ms * 1e-3)})
    rows[0]["ratio"] = rows[0]["ms"] / rows[1]["ms"]
    runs.clear()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanogpt", required=True, help="path of nanoGPT's model.py")
    ap.add_argument("--models", default="gpt2_124m,shakespeare_6x768")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args(argv)
    nanogpt = load_nanogpt(a.nanogpt)
    dev_name = torch.cuda.get_device_name(torch.device(a.device)) if a.device.startswith("cuda") else "cpu"
    print(f"# {dev_name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    rows = []
    for name in a.models.split(","):
        rows += compare(name, nanogpt, a.device, a.steps, a.rounds, a.warmup)
    print(f"{'model':26s} {'impl':32s} {'compile s':>9s} {'ms/step':>8s} {'q1':>7s} {'q3':>7s} {'host ms':>8s} "
          f"{'tok/s':>10s} {'loss0':>7s}  ours/theirs")
    worst = 0.0
    for r in rows:
        ratio = r.get("ratio")
        verdict = "" if ratio is None else f"{ratio:.3f} {'ok' if ratio <= 1 + WITHIN else 'SLOWER'}"
        worst = max(worst, ratio or 0.0)
        print(f"{r['model']:26s} {r['impl']:32s} {r['compile_s']:9.1f} {r['ms']:8.2f} {r['q1']:7.2f} {r['q3']:7.2f} "
              f"{r['host_ms']:8.2f} {r['tok_s']:10,.0f} {r['loss0']:7.3f}  {verdict}")
    print(f"worst ours/theirs {worst:.3f}: {'within' if worst <= 1 + WITHIN else 'NOT within'} {WITHIN:.0%}")
    return 0 if worst <= 1 + WITHIN else 1


if __name__ == "__main__":
    sys.exit(main())
