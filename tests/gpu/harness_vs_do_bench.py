"""On a GPU: the harness's timer against a plain triton.testing.do_bench of the same call.

    source .devpack/setup.sh && PYTHONPATH=. python tests/gpu/harness_vs_do_bench.py
"""
import torch
import triton.testing

from bench import check as checking
from bench import timing
from kernels import registry
from kernels.spec import gen_for

CASES = [("fmha", n, dict(B=16, H=12, T=1024, D=64, causal=True), p)
         for n in ("eager", "sdpa_flash", "sdpa_cudnn") for p in ("fwd", "fwd+bwd")]
CASES += [("layer_norm", "eager", dict(M=16384, C=768), "fwd"), ("gelu", "eager", dict(M=16384, C=3072), "fwd"),
          ("linear", "eager", dict(M=16384, N=3072, K=768), "fwd"), ("cross_entropy", "eager", dict(M=16384, V=50304), "fwd+bwd")]


def main():
    print(f"{'case':60s} {'harness ms':>11s} {'do_bench ms':>11s} {'ratio':>6s}")
    for op, name, shape, pass_ in CASES:
        spec, impl = registry.spec_of(op), registry.get(op, name, "cuda")
        gen = gen_for(0, "cuda")
        inputs = spec.make_inputs(shape, "bf16", "cuda", gen)
        if pass_ == "fwd":
            args = inputs.args

            def f():
                with torch.no_grad():
                    return impl.fn(*args, **inputs.kwargs)
            grad_to_none = None
            setup = None
        else:
            inp = inputs.detached(True)
            leaves = [inp.args[i] for i in inputs.grad_args]
            with torch.no_grad():
                g = checking.grad_out_for(impl.fn(*inputs.args, **inputs.kwargs), gen)

            def f():
                impl.fn(*inp.args, **inp.kwargs).backward(g)
            grad_to_none = leaves

            def setup():
                for t in leaves:
                    t.grad = None
        ours = timing.measure(f, "cuda", setup=setup, budget_s=1.0)
        theirs = triton.testing.do_bench(f, warmup=100, rep=500, grad_to_none=grad_to_none, return_mode="median")
        label = f"{op}/{name} {pass_} {spec.label(shape)}"
        print(f"{label:60s} {ours.median_ms:11.4f} {theirs:11.4f} {ours.median_ms / theirs:6.3f}")


if __name__ == "__main__":
    main()
