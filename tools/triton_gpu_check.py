"""On one GPU: the Triton kernels through the correctness gate at full GPT-2 shapes, then timed with
triton.testing.do_bench (median) beside eager PyTorch and the peers (SDPA flash/cuDNN, Liger, TileGym).
A point that fails the gate is never timed. Prints a compact table last; writes JSON to $OUT if set.

    source .devpack/setup.sh && PYTHONPATH=. python3 tools/triton_gpu_check.py [--tune] [--quick]
"""
import argparse
import json
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from bench.measure.check import check, rel_l2
from kernels import registry
from kernels.spec import gen_for

T0 = time.time()
ROWS = []


def ms_of(fn, grads=None):
    return do_bench(fn, warmup=10, rep=60, grad_to_none=grads, return_mode="median")


def time_point(spec, fn, shape, dtype, pass_, cfg):
    """(median ms, extra peak GB over the inputs) for one fwd or fwd+bwd call."""
    inputs = spec.make_inputs(shape, dtype, "cuda", gen_for(0, "cuda"))
    torch.cuda.synchronize()
    if pass_ == "fwd":
        with torch.no_grad():
            call = lambda: fn(*inputs.args, **inputs.kwargs, **cfg)   # noqa: E731
            ms = ms_of(call)
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            call()
    else:
        inp = inputs.detached(True)
        leaves = [inp.args[i] for i in inp.grad_args]
        out = fn(*inp.args, **inp.kwargs, **cfg)
        g = torch.ones_like(out) if out.dim() == 0 else torch.randn_like(out)
        del out
        call = lambda: fn(*inp.args, **inp.kwargs, **cfg).backward(g)   # noqa: E731
        ms = ms_of(call, leaves)
        for t in leaves:
            t.grad = None
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        call()
    torch.cuda.synchronize()
    extra = (torch.cuda.max_memory_allocated() - base) / 1e9
    return ms, extra


def point(op, shape, dtype, pass_, impl_name, tune=False, label=None):
    spec = registry.spec_of(op)
    row = {"op": op, "shape": spec.label(shape), "dtype": dtype, "pass": pass_,
           "impl": impl_name + ("+tune" if tune else ""), "label": label}
    r = registry.resolve(op, impl_name, "cuda")
    if not r.ok:
        row.update(status="unavailable", note=r.reason[:120])
        ROWS.append(row)
        return row
    impl = r.impl
    why = impl.why_not(shape, dtype, "cuda", pass_)
    if why:
        row.update(status="unsupported", note=why)
        ROWS.append(row)
        return row
    cfg = impl.config({"autotune": True} if tune else None)
    try:
        res = check(spec, impl.fn, shape, dtype, pass_, "cuda", cfg)
        row["err"] = res.max_err_ratio
        if not res.ok:
            row.update(status="wrong", note=res.message[:200])
            ROWS.append(row)
            return row
        ms, extra = time_point(spec, impl.fn, shape, dtype, pass_, cfg)
        row.update(status="ok", ms=ms, extra_gb=extra)
        if spec.bound == "compute":
            row["tflops"] = spec.flops(shape, pass_) / ms * 1e-9
        row["gbs"] = spec.bytes(shape, dtype, pass_) / ms * 1e-6
        if impl.picked and impl_name == "triton":
            row["picked"] = impl.picked()
    except registry.Unsupported as e:
        row.update(status="unsupported", note=str(e))
    except Exception as e:
        row.update(status="error", note=f"{type(e).__name__}: {str(e)[:200]}")
        traceback.print_exc()
    torch.cuda.empty_cache()
    ROWS.append(row)
    print(json.dumps(row), flush=True)
    return row


def lm_head_ce(tune):
    """lm_head matmul + cross-entropy, fwd+bwd at 16384x768 by 50304: ours composed vs eager vs Liger fused."""
    from kernels.cross_entropy.spec import IGNORE_INDEX
    M, K, V = 16384, 768, 50304
    g = gen_for(0, "cuda")
    x0 = torch.randn(M, K, generator=g, device="cuda").bfloat16()
    w0 = (torch.randn(V, K, generator=g, device="cuda") * K ** -0.5).bfloat16()
    tgt = torch.randint(0, V, (M,), generator=g, device="cuda")
    tgt[torch.rand(M, generator=g, device="cuda") < 1 / 16] = IGNORE_INDEX

    def eager(x, w):
        return F.cross_entropy(F.linear(x, w).float(), tgt, ignore_index=IGNORE_INDEX)

    impls = {"eager": eager}
    lin = registry.resolve("linear", "triton", "cuda")
    ce = registry.resolve("cross_entropy", "triton", "cuda")
    if lin.ok and ce.ok:
        lcfg = lin.impl.config({"autotune": True} if tune else None)
        ccfg = ce.impl.config({"autotune": True} if tune else None)
        impls["triton linear+ce"] = lambda x, w: ce.impl.fn(lin.impl.fn(x, w, None, **lcfg), tgt, **ccfg)
    try:
        from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction as LF

        def liger(x, w):
            out = LF.apply(x, w, tgt, None, None, IGNORE_INDEX)
            return (out[0] if isinstance(out, tuple) else out).float()
        impls["liger fused"] = liger
    except Exception as e:
        ROWS.append({"op": "lm_head+ce", "impl": "liger fused", "status": "unavailable", "note": str(e)[:100]})
    ref = None
    for name, fn in impls.items():
        row = {"op": "lm_head+ce", "shape": f"M{M} K{K} V{V}", "dtype": "bf16", "pass": "fwd+bwd", "impl": name}
        try:
            x, w = x0.clone().requires_grad_(True), w0.clone().requires_grad_(True)
            loss = fn(x, w)
            loss.backward()
            got = (loss.detach().double(), x.grad.double(), w.grad.double())
            if ref is None:
                ref = got
            errs = [rel_l2(a, b) for a, b in zip(got, ref)]
            row["err"] = max(errs)
            if max(errs) > 4e-2:
                row.update(status="wrong", note=f"rel-L2 vs eager loss/dx/dw {errs}")
                ROWS.append(row)
                continue
            x.grad = w.grad = None
            ms = ms_of(lambda: fn(x, w).backward(), [x, w])
            x.grad = w.grad = None
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn(x, w).backward()
            torch.cuda.synchronize()
            row.update(status="ok", ms=ms, extra_gb=(torch.cuda.max_memory_allocated() - base) / 1e9,
                       tflops=6 * M * K * V / ms * 1e-9)
        except Exception as e:
            row.update(status="error", note=f"{type(e).__name__}: {str(e)[:200]}")
            traceback.print_exc()
        ROWS.append(row)
        print(json.dumps(row), flush=True)
        torch.cuda.empty_cache()


def graph_point(op, shape, pass_, impl_name, dtype="bf16"):
    """Diagnostic: the same call replayed from a CUDA graph (no launch overhead, L2 not flushed), only
    for points that passed the gate above. Shows how much of a small op's time is host-side."""
    passed = [r for r in ROWS if r["op"] == op and r["impl"] == impl_name and r.get("pass") == pass_
              and r.get("status") == "ok" and r.get("shape") == registry.spec_of(op).label(shape)]
    if not passed:
        return
    from triton.testing import do_bench_cudagraph
    spec = registry.spec_of(op)
    impl = registry.get(op, impl_name, "cuda")
    inputs = spec.make_inputs(shape, dtype, "cuda", gen_for(0, "cuda"))
    row = {"op": op, "shape": spec.label(shape), "dtype": dtype, "pass": pass_, "impl": impl_name + " [graph]"}
    try:
        if pass_ == "fwd":
            def call():
                with torch.no_grad():
                    impl.fn(*inputs.args, **inputs.kwargs)
            leaves = None
        else:
            inp = inputs.detached(True)
            leaves = [inp.args[i] for i in inp.grad_args]
            g = torch.randn_like(impl.fn(*inp.args, **inp.kwargs))
            call = lambda: impl.fn(*inp.args, **inp.kwargs).backward(g)   # noqa: E731
            call()
        ms = do_bench_cudagraph(call, rep=20, grad_to_none=leaves, return_mode="median")
        row.update(status="ok", ms=ms, gbs=spec.bytes(shape, dtype, pass_) / ms * 1e-6)
    except Exception as e:
        row.update(status="error", note=f"{type(e).__name__}: {str(e)[:150]}")
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def copy_bw():
    x = torch.empty(65536, 4096, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    ms = ms_of(lambda: y.copy_(x))
    ROWS.append({"op": "copy", "shape": "65536x4096", "dtype": "bf16", "pass": "fwd", "impl": "torch copy_",
                 "status": "ok", "ms": ms, "gbs": 2 * x.numel() * 2 / ms * 1e-6})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tune", action="store_true", help="also run autotune mode and report its pick")
    ap.add_argument("--only", default="", help="comma list of ops")
    ap.add_argument("--tune-until", type=float, default=250, help="no new autotuning after this many seconds")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    dev = torch.cuda.get_device_name()
    print(f"device {dev}, cc {torch.cuda.get_device_capability()}, torch {torch.__version__}, "
          f"triton {__import__('triton').__version__}", flush=True)
    B = ("fwd", "fwd+bwd")
    plan = [
        ("fmha", {"B": 16, "H": 12, "T": 1024, "D": 64, "causal": True}, B, ("triton", "sdpa_flash", "sdpa_cudnn", "eager")),
        ("fmha", {"B": 8, "H": 16, "T": 4096, "D": 128, "causal": True}, B, ("triton", "sdpa_flash", "sdpa_cudnn")),
        ("fmha", {"B": 16, "H": 12, "T": 1000, "D": 64, "causal": False}, ("fwd+bwd",), ("triton", "sdpa_flash")),
        ("layer_norm", {"M": 16384, "C": 768}, B, ("triton", "eager", "liger", "tilegym")),
        ("layer_norm", {"M": 65536, "C": 4096}, ("fwd",), ("triton", "eager", "liger")),
        ("gelu", {"M": 16384, "C": 3072}, B, ("triton", "eager")),
        ("linear", {"M": 16384, "N": 3072, "K": 768}, B, ("triton", "eager")),
        ("cross_entropy", {"M": 16384, "V": 50304}, B, ("triton", "eager", "liger")),
    ]
    for op, shape, passes, impls in plan:
        if only and op not in only:
            continue
        for pass_ in passes:
            for name in impls:
                point(op, shape, "bf16", pass_, name)
                if args.tune and name == "triton" and shape.get("T") != 1000 and time.time() - T0 < args.tune_until:
                    point(op, shape, "bf16", pass_, name, tune=True)
        print(f"[{time.time() - T0:.0f}s] {op} done", flush=True)
        table(dev, quiet=True)
    for op, shape, passes, impls in (("layer_norm", {"M": 16384, "C": 768}, B, ("triton", "eager", "liger")),
                                     ("gelu", {"M": 16384, "C": 3072}, B, ("triton", "eager"))):
        if only and op not in only:
            continue
        for pass_ in passes:
            for name in impls:
                graph_point(op, shape, pass_, name)
    if not only or "lm_head" in only:
        lm_head_ce(args.tune and time.time() - T0 < args.tune_until)
    copy_bw()
    table(dev)


def table(dev, quiet=False):
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "triton_gpu_check.json"), "w") as f:
            json.dump({"device": dev, "rows": ROWS}, f, indent=1)
    if quiet:
        return
    print(f"\n== {dev}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {time.time() - T0:.0f}s ==")
    print(f"{'op':<13}{'shape':<26}{'pass':<8}{'impl':<18}{'status':<8}{'ms':>9}{'TFLOP/s':>9}{'GB/s':>8}{'xGB':>7}")
    for r in ROWS:
        ms = f"{r['ms']:.4f}" if "ms" in r else ""
        tf = f"{r['tflops']:.0f}" if "tflops" in r else ""
        gb = f"{r['gbs']:.0f}" if "gbs" in r else ""
        xg = f"{r['extra_gb']:.2f}" if "extra_gb" in r else ""
        print(f"{r['op']:<13}{str(r.get('shape', ''))[:25]:<26}{r.get('pass', ''):<8}{r['impl'][:17]:<18}"
              f"{r['status'][:7]:<8}{ms:>9}{tf:>9}{gb:>8}{xg:>7}"
              + (f"  {r['note'][:70]}" if r.get("note") and r["status"] != "ok" else ""))
    for r in ROWS:
        if r.get("picked") and r["impl"].endswith("+tune"):
            print(f"picked {r['op']} {r['shape']} {r['pass']}: {r['picked']}")


if __name__ == "__main__":
    sys.exit(main())
