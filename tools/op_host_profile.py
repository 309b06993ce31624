"""Where the host time of one op call goes (GPU machine): for each (op, impl) at a model shape, the
enqueue time of a fwd+bwd call (host clock, no sync inside: what the GPU waits for when kernels are
short), the same call's GPU time from CUDA events, and a cProfile of the slowest impl's host path.

    source .devpack/setup.sh && PYTHONPATH=.:$PYTHONPATH python tools/op_host_profile.py [--ops layer_norm,gelu]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch

from bench.measure.check import grad_out_for
from kernels import registry
from kernels.spec import gen_for

SHAPES = {
    "layer_norm": {"M": 16384, "C": 768},
    "gelu": {"M": 16384, "C": 3072},
    "linear": {"M": 16384, "N": 768, "K": 768},
    "fmha": {"B": 16, "H": 12, "T": 1024, "D": 64, "causal": True},
    "cross_entropy": {"M": 16384, "V": 50304},
}


def one_call(fn, args, kwargs, cfg, grad_out, leaves):
    for t in leaves:
        t.grad = None
    fn(*args, **kwargs, **cfg).backward(grad_out)


def measure(op, name, n=50):
    r = registry.resolve(op, name, "cuda")
    if not r.ok:
        return None, r.reason
    impl, spec = r.impl, registry.spec_of(op)
    shape = spec.full_shape(SHAPES[op])
    inputs = spec.make_inputs(shape, "bf16", "cuda", gen_for(0, "cuda"))
    cfg = impl.config({})
    inp = inputs.detached(requires_grad=True)
    leaves = [inp.args[i] for i in inputs.grad_args]
    with torch.no_grad():
        grad_out = grad_out_for(impl.fn(*inp.args, **inp.kwargs, **cfg), gen_for(1, "cuda"))
    for _ in range(5):
        one_call(impl.fn, inp.args, inp.kwargs, cfg, grad_out, leaves)
    torch.cuda.synchronize()
    host = []
    for _ in range(n):   # enqueue time: the GPU runs behind, so this is the host's own cost
        t0 = time.perf_counter()
        one_call(impl.fn, inp.args, inp.kwargs, cfg, grad_out, leaves)
        host.append((time.perf_counter() - t0) * 1e3)
        torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    gpu = []
    for _ in range(n):
        s.record()
        one_call(impl.fn, inp.args, inp.kwargs, cfg, grad_out, leaves)
        e.record()
        torch.cuda.synchronize()
        gpu.append(s.elapsed_time(e))
    # graph-free kernel-only time: capture the call in a CUDA graph and replay it
    try:
        g = torch.cuda.CUDAGraph()
        st = torch.cuda.Stream()
        st.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(st):
            one_call(impl.fn, inp.args, inp.kwargs, cfg, grad_out, leaves)
            with torch.cuda.graph(g, stream=st):
                one_call(impl.fn, inp.args, inp.kwargs, cfg, grad_out, leaves)
        torch.cuda.current_stream().wait_stream(st)
        torch.cuda.synchronize()
        rep = []
        for _ in range(n):
            s.record()
            g.replay()
            e.record()
            torch.cuda.synchronize()
            rep.append(s.elapsed_time(e))
        graph_ms = sorted(rep)[n // 2]
    except Exception as ex:  # noqa: BLE001 - report, go on
        graph_ms = f"{type(ex).__name__}"
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(20):
        one_call(impl.fn, inp.args, inp.kwargs, cfg, grad_out, leaves)
    prof.disable()
    torch.cuda.synchronize()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
    return {"host_ms": sorted(host)[n // 2], "events_ms": sorted(gpu)[n // 2], "graph_ms": graph_ms}, buf.getvalue()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", default="layer_norm,gelu,linear,fmha,cross_entropy")
    ap.add_argument("--impls", default="eager,triton,cutile,liger")
    ap.add_argument("--profile", default="triton,cutile", help="impls whose cProfile is printed")
    a = ap.parse_args()
    rows, profiles = [], []
    for op in a.ops.split(","):
        for name in a.impls.split(","):
            if name not in registry.impl_names(op):
                continue
            try:
                res, text = measure(op, name)
            except Exception as ex:  # noqa: BLE001
                res, text = None, f"{type(ex).__name__}: {ex}"
            rows.append((op, name, res, text if res is None else ""))
            if res is not None and name in a.profile.split(","):
                profiles.append(f"--- {op} {name}: cProfile of 20 fwd+bwd calls (host only)\n{text}")
    print("\n".join(p[:3000] for p in profiles))
    print(f"{'op':14} {'impl':8} {'host enqueue ms':>16} {'events ms':>10} {'graph ms':>9}")
    for op, name, res, why in rows:
        if res is None:
            print(f"{op:14} {name:8} {why[:80]}")
        else:
            g = res["graph_ms"]
            print(f"{op:14} {name:8} {res['host_ms']:16.3f} {res['events_ms']:10.3f} "
                  f"{g if isinstance(g, str) else f'{g:9.3f}'}")


if __name__ == "__main__":
    main()
