"""On a GPU: the harness's numbers against a plain triton.testing.do_bench of the same call.

    source .devpack/setup.sh && PYTHONPATH=.:$PYTHONPATH python tests/gpu/harness_vs_do_bench.py \
        [--results results/<run>/results.jsonl] [--tol 0.10]

With --results, every `ok` row of that run_bench.py results file is timed again with do_bench (same op,
impl, shape, dtype, pass, tile config; median, L2 flushed by do_bench) and the two medians are printed
side by side; without it, a fixed list of GPT-2 cases goes through the harness's timer directly. Exit 1
if any ratio is off by more than --tol.
"""
import argparse
import json
import sys

import torch
import triton.testing

from bench import check as checking
from bench import timing
from kernels import registry
from kernels.spec import gen_for

CASES = [("fmha", n, dict(B=16, H=12, T=1024, D=64, causal=True), "bf16", p, {})
         for n in ("eager", "sdpa_flash", "sdpa_cudnn") for p in ("fwd", "fwd+bwd")]
CASES += [("layer_norm", "eager", dict(M=16384, C=768), "bf16", "fwd", {}),
          ("gelu", "eager", dict(M=16384, C=3072), "bf16", "fwd", {}),
          ("linear", "eager", dict(M=16384, N=3072, K=768), "bf16", "fwd", {}),
          ("cross_entropy", "eager", dict(M=16384, V=50304), "bf16", "fwd+bwd", {})]


def call_of(op, name, shape, dtype, pass_, cfg):
    """(fn, setup, grad_to_none): the call the harness times, built the same way."""
    spec, impl = registry.spec_of(op), registry.get(op, name, "cuda")
    gen = gen_for(0, "cuda")
    inputs = spec.make_inputs(spec.full_shape(shape), dtype, "cuda", gen)
    cfg = impl.config(cfg)
    if pass_ == "fwd":
        args = inputs.args

        def f():
            with torch.no_grad():
                return impl.fn(*args, **inputs.kwargs, **cfg)
        return f, None, None
    inp = inputs.detached(True)
    leaves = [inp.args[i] for i in inputs.grad_args]
    with torch.no_grad():
        g = checking.grad_out_for(impl.fn(*inputs.args, **inputs.kwargs, **cfg), gen)

    def f():
        impl.fn(*inp.args, **inp.kwargs, **cfg).backward(g)

    def setup():
        for t in leaves:
            t.grad = None
    return f, setup, leaves


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", help="a run_bench.py results.jsonl whose ok rows are re-timed")
    ap.add_argument("--tol", type=float, default=0.10)
    a = ap.parse_args()
    if a.results:
        rows = [json.loads(line) for line in open(a.results) if line.strip()]
        cases = [(r["op"], r["impl"], r["shape"], r["dtype"], r["pass"], r.get("config") or {}, r["median_ms"])
                 for r in rows if r.get("status") == "ok" and r.get("op") != "e2e"]
    else:
        cases = [c + (None,) for c in CASES]
    print(f"{'case':66s} {'harness ms':>11s} {'do_bench ms':>11s} {'ratio':>6s}")
    worst, off = 1.0, []
    for op, name, shape, dtype, pass_, cfg, harness_ms in cases:
        f, setup, leaves = call_of(op, name, shape, dtype, pass_, cfg)
        if harness_ms is None:
            harness_ms = timing.measure(f, "cuda", setup=setup, budget_s=1.0).median_ms
        theirs = triton.testing.do_bench(f, warmup=50, rep=200, grad_to_none=leaves, return_mode="median")
        ratio = harness_ms / theirs
        worst = max(worst, ratio, 1 / ratio)
        label = f"{op}/{name} {dtype} {pass_} {registry.spec_of(op).label(registry.spec_of(op).full_shape(shape))}"
        if abs(ratio - 1) > a.tol:
            off.append(label)
        print(f"{label:66s} {harness_ms:11.4f} {theirs:11.4f} {ratio:6.3f}")
        torch.cuda.empty_cache()
    print(f"{len(cases)} cases; worst ratio {worst:.3f}; {len(off)} beyond {a.tol:.0%}: {', '.join(off) or 'none'}")
    return 1 if off else 0


if __name__ == "__main__":
    sys.exit(main())
