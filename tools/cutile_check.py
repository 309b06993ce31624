"""GPU check of the cuTile kernels: correctness (bench.measure.check) at odd and GPT-2 shapes, fwd and fwd+bwd,
then timings (triton.testing.do_bench, median) against eager and the peers, only for impls that passed
the check at that point. Run on the GPU machine:

    source .devpack/setup.sh && PYTHONPATH=.:$PYTHONPATH python tools/cutile_check.py \
        [--tune] [--sweep] [--no-fp32] [--budget S]

(PYTHONPATH must keep the pack's /tmp/devpack-site: a bare PYTHONPATH=. hides cuda.tile.)
--tune sweeps fmha forward tiles and runs autotune mode; --sweep tries tile configs for every op, each
checked at a smaller shape that runs the same compiled kernel, then timed. Full logs go to $OUT
(or ./cutile_check_out) as cutile_check.jsonl; the compact table prints last."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import torch

from bench.measure.check import check, grad_out_for
from kernels import registry
from kernels.spec import gen_for

OUT = os.environ.get("OUT") or "cutile_check_out"
T0 = time.time()
LOG = []
TABLE = []


def log(rec: dict):
    rec["t"] = round(time.time() - T0, 1)
    LOG.append(rec)
    print(json.dumps(rec, default=str), flush=True)


def impl_or_reason(op, name):
    try:
        r = registry.resolve(op, name, "cuda")
        return (r.impl, None) if r.ok else (None, r.reason)
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"


def run_check(op, name, shape, dtype, pass_, config=None):
    impl, why = impl_or_reason(op, name)
    if impl is None:
        log({"kind": "check", "op": op, "impl": name, "shape": shape, "dtype": dtype, "pass": pass_,
             "status": "unavailable", "msg": why})
        return None
    nope = impl.why_not(shape, dtype, "cuda", pass_)
    if nope:
        log({"kind": "check", "op": op, "impl": name, "shape": shape, "dtype": dtype, "pass": pass_,
             "status": "unsupported", "msg": nope})
        return None
    spec = registry.spec_of(op)
    cfg = impl.config(config or {})
    t = time.time()
    try:
        r = check(spec, impl.fn, shape, dtype, pass_, "cuda", cfg)
        status, msg = ("ok" if r.ok else "wrong"), r.message
    except registry.Unsupported as e:
        status, msg = "unsupported", str(e)
    except Exception as e:
        status, msg = "error", f"{type(e).__name__}: {str(e)[:600]}"
        traceback.print_exc()
    torch.cuda.synchronize()
    log({"kind": "check", "op": op, "impl": name, "shape": shape, "dtype": dtype, "pass": pass_,
         "status": status, "msg": msg[:800], "s": round(time.time() - t, 2),
         "picked": impl.picked() if (impl.picked and status == "ok") else None})
    return status == "ok"


def time_point(op, name, shape, dtype, pass_, config=None, label=None, check_shape=None):
    """Check first (at this point, or for sweeps at a smaller shape that runs the same compiled kernel);
    time only if it passed."""
    ok = run_check(op, name, check_shape or shape, dtype, pass_, config)
    row = {"op": op, "impl": label or name, "shape": registry.spec_of(op).label(shape), "dtype": dtype,
           "pass": pass_, "ms": None, "perf": None, "status": "ok" if ok else "fail/unavail", "config": config}
    if not ok:
        TABLE.append(row)
        return None
    import triton.testing
    impl, _ = impl_or_reason(op, name)
    spec = registry.spec_of(op)
    cfg = impl.config(config or {})
    inputs = spec.make_inputs(shape, dtype, "cuda", gen_for(1, "cuda"))
    inp = inputs.detached(requires_grad=(pass_ == "fwd+bwd"))
    fn = impl.fn
    if pass_ == "fwd":
        def call():
            with torch.no_grad():
                return fn(*inp.args, **inp.kwargs, **cfg)
    else:
        g = grad_out_for(fn(*inp.args, **inp.kwargs, **cfg).detach(), gen_for(2, "cuda"))
        leaves = [inp.args[i] for i in inputs.grad_args]

        def call():
            for a in leaves:
                a.grad = None
            fn(*inp.args, **inp.kwargs, **cfg).backward(g)
    try:
        call()
        ms = triton.testing.do_bench(call, warmup=25, rep=100, return_mode="median")
    except Exception as e:
        row["status"] = f"time error: {type(e).__name__}: {str(e)[:200]}"
        TABLE.append(row)
        log({"kind": "time", **row})
        return None
    row["ms"] = ms
    if spec.bound == "compute":
        row["perf"] = f"{spec.flops(shape, pass_) / ms / 1e9:.0f} TFLOP/s"
    else:
        row["perf"] = f"{spec.bytes(shape, dtype, pass_) / ms / 1e9:.2f} TB/s"
    if impl.picked and name == "cutile":
        row["picked"] = impl.picked()
    TABLE.append(row)
    log({"kind": "time", **row})
    return ms


# --- extra checks the spec cannot express: strided views, leading dims, fused activation ---------

def extra_checks():
    from kernels.fmha.eager import fmha as fmha_eager
    from kernels.layer_norm.eager import layer_norm as ln_eager
    from kernels.linear.eager import linear as lin_eager
    from kernels.gelu.eager import gelu as gelu_eager
    g = torch.Generator(device="cuda").manual_seed(3)

    def rel(a, b):
        return ((a.float() - b.float()).norm() / b.float().norm()).item()

    def case(name, f):
        try:
            err = f()
            log({"kind": "extra", "name": name, "status": "ok" if err < 3e-2 else "wrong", "rel_err": err})
        except Exception as e:
            traceback.print_exc()
            log({"kind": "extra", "name": name, "status": "error", "msg": f"{type(e).__name__}: {str(e)[:400]}"})

    def fmha_strided():
        B, T, H, D = 2, 333, 4, 64
        qkv = torch.randn(B, T, 3, H, D, device="cuda", generator=g, dtype=torch.bfloat16)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))   # (B, H, T, D) strided views
        for t in (q, k, v):
            t.requires_grad_(True)
        fn = registry.get("fmha", "cutile", "cuda").fn
        o = fn(q, k, v, causal=True)
        go = torch.randn_like(o)
        o.backward(go)
        grads = [t.grad.clone() for t in (q, k, v)]
        q2, k2, v2 = (t.detach().float().requires_grad_(True) for t in (q, k, v))
        o2 = fmha_eager(q2, k2, v2, causal=True)
        o2.backward(go.float())
        return max([rel(o, o2)] + [rel(a, b.grad) for a, b in zip(grads, (q2, k2, v2))])

    def ln_3d():
        x = torch.randn(4, 100, 1000, device="cuda", generator=g, dtype=torch.bfloat16)[:, ::2]
        w = torch.randn(1000, device="cuda", generator=g, dtype=torch.bfloat16)
        b = torch.randn(1000, device="cuda", generator=g, dtype=torch.bfloat16)
        return rel(registry.get("layer_norm", "cutile", "cuda").fn(x, w, b), ln_eager(x.float(), w.float(), b.float()))

    def gelu_nobias_3d():
        x = torch.randn(3, 50, 777, device="cuda", generator=g, dtype=torch.bfloat16, requires_grad=True)
        y = registry.get("gelu", "cutile", "cuda").fn(x)
        gy = torch.randn_like(y)
        y.backward(gy)
        x2 = x.detach().float().requires_grad_(True)
        gelu_eager(x2).backward(gy.float())
        return max(rel(y, gelu_eager(x.detach().float())), rel(x.grad, x2.grad))

    def linear_gelu():
        x = torch.randn(2, 77, 96, device="cuda", generator=g, dtype=torch.bfloat16, requires_grad=True)
        w = (torch.randn(130, 96, device="cuda", generator=g) * 0.1).to(torch.bfloat16).requires_grad_(True)
        b = torch.randn(130, device="cuda", generator=g, dtype=torch.bfloat16, requires_grad=True)
        y = registry.get("linear", "cutile", "cuda").fn(x, w, b, activation="gelu")
        gy = torch.randn_like(y)
        y.backward(gy)
        xs = [t.detach().float().requires_grad_(True) for t in (x, w, b)]
        lin_eager(*xs, activation="gelu").backward(gy.float())
        return max([rel(y, lin_eager(*[t.detach() for t in xs], activation="gelu"))] +
                   [rel(a.grad, c.grad) for a, c in zip((x, w, b), xs)])

    for name, f in (("fmha strided qkv views fwd+bwd", fmha_strided), ("layer_norm 3d strided", ln_3d),
                    ("gelu no bias 3d fwd+bwd", gelu_nobias_3d), ("linear gelu epilogue fwd+bwd", linear_gelu)):
        case(name, f)


# --- the plan ------------------------------------------------------------------------------------

CHECKS = [
    ("fmha", {"B": 2, "H": 3, "T": 200, "D": 64, "causal": True}, "bf16"),
    ("fmha", {"B": 2, "H": 3, "T": 200, "D": 64, "causal": False}, "bf16"),
    ("fmha", {"B": 1, "H": 2, "T": 77, "D": 128, "causal": True}, "bf16"),
    ("fmha", {"B": 1, "H": 2, "T": 77, "D": 128, "causal": False}, "fp16"),
    ("fmha", {"B": 1, "H": 2, "T": 65, "D": 64, "causal": True}, "fp32"),
    ("layer_norm", {"M": 37, "C": 1000}, "bf16"),
    ("layer_norm", {"M": 37, "C": 768}, "fp32"),
    ("layer_norm", {"M": 301, "C": 4096}, "fp16"),
    ("gelu", {"M": 37, "C": 1000}, "bf16"),
    ("gelu", {"M": 37, "C": 1000}, "fp32"),
    ("linear", {"M": 77, "N": 130, "K": 96}, "bf16"),
    ("linear", {"M": 77, "N": 130, "K": 96}, "fp32"),
    ("cross_entropy", {"M": 37, "V": 1000}, "bf16"),
    ("cross_entropy", {"M": 37, "V": 50304}, "fp32"),
]

# (op, shape, dtype, pass, peers) timed at GPT-2 scale; the target rows first
TIMED = [
    ("fmha", {"B": 16, "H": 12, "T": 1024, "D": 64, "causal": True}, "bf16", "fwd",
     ["eager", "sdpa_cudnn", "sdpa_flash", "tilegym", "triton"]),
    ("fmha", {"B": 8, "H": 16, "T": 4096, "D": 128, "causal": True}, "bf16", "fwd", ["sdpa_cudnn", "sdpa_flash", "tilegym"]),
    ("fmha", {"B": 16, "H": 12, "T": 1024, "D": 64, "causal": True}, "bf16", "fwd+bwd",
     ["eager", "sdpa_cudnn", "sdpa_flash", "tilegym", "triton"]),
    ("fmha", {"B": 64, "H": 12, "T": 256, "D": 64, "causal": True}, "bf16", "fwd", ["sdpa_cudnn", "sdpa_flash", "tilegym"]),
    ("layer_norm", {"M": 16384, "C": 768}, "bf16", "fwd", ["eager", "tilegym", "liger", "triton"]),
    ("layer_norm", {"M": 65536, "C": 4096}, "bf16", "fwd", ["eager", "tilegym", "liger"]),
    ("layer_norm", {"M": 16384, "C": 768}, "bf16", "fwd+bwd", ["eager", "liger", "triton"]),
    ("cross_entropy", {"M": 16384, "V": 50304}, "bf16", "fwd+bwd", ["eager", "liger", "triton"]),
    ("gelu", {"M": 16384, "C": 3072}, "bf16", "fwd", ["eager", "triton"]),
    ("gelu", {"M": 16384, "C": 3072}, "bf16", "fwd+bwd", ["eager", "triton"]),
    ("linear", {"M": 16384, "N": 3072, "K": 768}, "bf16", "fwd", ["eager", "triton"]),
    ("linear", {"M": 16384, "N": 3072, "K": 768}, "bf16", "fwd+bwd", ["eager", "triton"]),
]

FMHA_SWEEP = [  # forward configs tried at the target shapes (--tune)
    {"TILE_M": 64, "TILE_N": 64, "occupancy": 2}, {"TILE_M": 128, "TILE_N": 64, "occupancy": 1},
    {"TILE_M": 128, "TILE_N": 64, "occupancy": 2}, {"TILE_M": 128, "TILE_N": 128, "occupancy": 1},
    {"TILE_M": 256, "TILE_N": 64, "occupancy": 1}, {"TILE_M": 256, "TILE_N": 128, "occupancy": 1},
    {"TILE_M": 128, "TILE_N": 64, "occupancy": 1, "V_LATENCY": 5}, {"TILE_M": 128, "TILE_N": 128, "occupancy": 2},
]


def _cfgs(keys, rows):
    return [dict(zip(keys, r)) for r in rows]


F, T_ = False, True
# (op, shape, check shape, pass, configs): tried in this order until the budget runs out
SWEEPS = [
    ("layer_norm", {"M": 16384, "C": 768}, {"M": 1000, "C": 768}, "fwd", _cfgs(
        ("ROWS", "TMA", "occupancy", "num_worker_warps"),
        [(1, F, 8, 4), (2, F, 8, 4), (4, F, 4, 4), (8, F, 4, 4), (16, F, 2, 4), (1, T_, 8, 4), (8, T_, 4, 4),
         (16, T_, 2, 4), (4, T_, 4, 8), (2, T_, 8, 4)])),
    ("layer_norm", {"M": 65536, "C": 4096}, {"M": 300, "C": 4096}, "fwd", _cfgs(
        ("ROWS", "TMA", "num_worker_warps", "occupancy"),
        [(1, F, 8, 2), (1, T_, 8, 2), (2, F, 8, 2), (1, T_, 4, 4), (1, F, 4, 4), (2, T_, 8, 1), (4, T_, 8, 1)])),
    ("layer_norm", {"M": 16384, "C": 768}, {"M": 1000, "C": 768}, "fwd+bwd", _cfgs(
        ("BWD_ROWS", "BWD_PROGS", "TMA"),
        [(1, 8, F), (2, 8, F), (4, 8, F), (8, 4, F), (16, 2, F), (4, 32, F), (1, 32, F), (8, 4, T_)])
     + [{"BWD_ROWS": 4, "BWD_PROGS": 8, "TMA": F, "num_worker_warps": 8},
        {"BWD_ROWS": 2, "BWD_PROGS": 32, "TMA": F, "num_worker_warps": 8}]),
    ("fmha", {"B": 64, "H": 12, "T": 256, "D": 64, "causal": True}, {"B": 2, "H": 2, "T": 256, "D": 64, "causal": True},
     "fwd", _cfgs(("TILE_M", "TILE_N", "occupancy", "K_LATENCY", "V_LATENCY", "num_ctas"),
                  [(128, 64, 2, 1, 1, 1), (128, 64, 2, 3, 3, 1), (128, 64, 2, 2, 5, 1), (64, 64, 3, 2, 4, 1),
                   (64, 64, 4, 2, 4, 1), (128, 64, 3, 2, 4, 1), (128, 32, 2, 2, 4, 1), (128, 64, 2, 2, 4, 2)])),
    ("fmha", {"B": 16, "H": 12, "T": 1024, "D": 64, "causal": True}, {"B": 1, "H": 2, "T": 1024, "D": 64, "causal": True},
     "fwd+bwd", _cfgs(("BWD_TILE_M", "BWD_TILE_N", "bwd_occupancy"),
                      [(64, 64, 2), (64, 128, 1), (128, 64, 1), (128, 128, 1), (32, 64, 2), (64, 32, 2)])),
    ("gelu", {"M": 16384, "C": 3072}, {"M": 100, "C": 3072}, "fwd", _cfgs(
        ("BM", "BC", "occupancy", "TMA"),
        [(8, 512, 4, T_), (16, 512, 2, T_), (32, 256, 2, T_), (4, 1024, 4, T_), (16, 256, 4, F), (8, 512, 4, F),
         (64, 128, 2, T_), (32, 512, 2, T_)])),
    ("linear", {"M": 16384, "N": 3072, "K": 768}, {"M": 300, "N": 3072, "K": 768}, "fwd", _cfgs(
        ("TILE_M", "TILE_N", "TILE_K", "occupancy", "num_ctas"),
        [(128, 256, 64, 1, 1), (256, 128, 64, 1, 1), (128, 128, 64, 2, 1), (128, 128, 64, 1, 2),
         (128, 256, 64, 1, 2), (128, 128, 128, 1, 1)])),
    ("cross_entropy", {"M": 16384, "V": 50304}, {"M": 64, "V": 50304}, "fwd+bwd", _cfgs(
        ("ROWS", "BV", "BWD_BV", "occupancy"),
        [(1, 8192, 8192, 2), (1, 2048, 4096, 4), (2, 4096, 4096, 4), (1, 4096, 8192, 4)])),
]


def run_sweeps(budget):
    best = []
    for op, shape, cshape, pass_, cfgs in SWEEPS:
        timed = []
        for cfg in cfgs:
            if time.time() - T0 > budget:
                log({"kind": "note", "msg": f"budget reached in sweep {op} {pass_}"})
                break
            ms = time_point(op, "cutile", shape, "bf16", pass_, cfg, "cutile " + json.dumps(cfg, separators=(",", ":")),
                            check_shape=cshape)
            if ms:
                timed.append((ms, cfg))
        if timed:
            ms, cfg = min(timed, key=lambda x: x[0])
            best.append({"kind": "best", "op": op, "shape": shape, "pass": pass_, "ms": ms, "config": cfg})
            log(best[-1])
    return best


def print_table():
    print("\n=== cutile_check table ===")
    print(f"{'op':14} {'impl':22} {'shape':34} {'dtype':5} {'pass':8} {'ms':>9} {'perf':>16}  status")
    for r in TABLE:
        ms = f"{r['ms']:.4f}" if r["ms"] else "-"
        print(f"{r['op']:14} {r['impl']:22} {r['shape']:34} {r['dtype']:5} {r['pass']:8} {ms:>9} "
              f"{r['perf'] or '-':>16}  {r['status']}{'  ' + json.dumps(r['picked']) if r.get('picked') else ''}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tune", action="store_true", help="sweep fmha forward configs and run autotune mode")
    ap.add_argument("--budget", type=float, default=420, help="stop starting new work after this many seconds")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: doctor,checks,extra,timed")
    ap.add_argument("--sweep", action="store_true", help="tile-config sweeps per op (checked, then timed)")
    ap.add_argument("--no-fp32", action="store_true", help="skip the (slow to compile) fp32 fmha/linear checks")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    skip = set(a.skip.split(","))
    print(f"device: {torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    try:
        if "doctor" not in skip:
            from bench.machine import doctor
            doctor.main([])
    except Exception:
        traceback.print_exc()
    try:
        if "checks" not in skip:
            for op, shape, dtype in CHECKS:
                if a.no_fp32 and dtype == "fp32" and op in ("fmha", "linear"):
                    continue
                for pass_ in ("fwd", "fwd+bwd"):
                    run_check(op, "cutile", shape, dtype, pass_)
        if "extra" not in skip:
            extra_checks()
        if "timed" not in skip:
            for op, shape, dtype, pass_, peers in TIMED:
                if time.time() - T0 > a.budget:
                    log({"kind": "note", "msg": "budget reached; skipping the rest"})
                    break
                time_point(op, "cutile", shape, dtype, pass_)
                for p in peers:
                    time_point(op, p, shape, dtype, pass_)
                if op == "layer_norm" and pass_ == "fwd" and shape["C"] == 768:
                    time_point(op, "tilegym", shape, dtype, pass_, {"variant": "persistent"}, "tilegym persistent")
        best = run_sweeps(a.budget) if a.sweep else []
        if a.tune:
            for shape, pass_ in (({"B": 16, "H": 12, "T": 1024, "D": 64, "causal": True}, "fwd"),
                                 ({"B": 8, "H": 16, "T": 4096, "D": 128, "causal": True}, "fwd"),
                                 ({"B": 64, "H": 12, "T": 256, "D": 64, "causal": True}, "fwd")):
                for cfg in FMHA_SWEEP:
                    if time.time() - T0 > a.budget:
                        break
                    time_point("fmha", "cutile", shape, "bf16", pass_, cfg, "cutile " + json.dumps(cfg))
                if time.time() - T0 < a.budget:
                    time_point("fmha", "cutile", shape, "bf16", pass_, {"autotune": True}, "cutile autotune")
    except Exception:
        traceback.print_exc()
    finally:
        with open(os.path.join(OUT, "cutile_check.jsonl"), "w") as f:
            for r in LOG:
                f.write(json.dumps(r, default=str) + "\n")
        print_table()
        for r in LOG:
            if r.get("kind") == "best":
                print("BEST", json.dumps(r, default=str))
        bad = [r for r in LOG if r.get("kind") in ("check", "extra") and r.get("status") in ("wrong", "error")]
        print(f"\nchecks: {sum(1 for r in LOG if r.get('kind') in ('check', 'extra') and r.get('status') == 'ok')} ok, "
              f"{len(bad)} wrong/error; elapsed {time.time() - T0:.0f} s")
        for r in bad:
            print("BAD", json.dumps(r, default=str)[:600])


if __name__ == "__main__":
    sys.exit(main())
