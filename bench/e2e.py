"""Whole training steps for the harness: forward + backward + (fused) AdamW of a GPT per backend.

run_e2e_point(point, device) -> row. point: model (preset), backend (eager | eager_sdpa (nanoGPT's model:
eager ops, SDPA attention) | triton | cutile | auto[:path] | op=impl,... | torch_compile = eager_sdpa under
torch.compile, nanoGPT's compiled baseline | torch_compile_graphs = the same in mode "reduce-overhead"), B, T,
dtype (bf16), steps; optional
warmup, profile_steps, peak_tflops, results (for auto), grad_clip, seed, converge_iters (+ data_dir, lr),
cuda_graph (true: the whole step, clipping and AdamW included, captured once and replayed; model/cuda_graph.py).

The row: status (ok | error | oom | unsupported), message, ms_per_step (median of CUDA-event times, or
perf_counter on CPU, after warm-up), ms_q1, ms_q3, tokens_per_s, model_tflops (6N + 12LHQT per token),
mfu, peak_mem_bytes, compile_s (the first step, apart), fallbacks, breakdown (op -> ms per step from a
torch.profiler pass, kernel time grouped by the op:NAME ranges model/ops.py opens in forward and
backward; "optimizer", "clip" and "other" for the rest; "idle" is step time no kernel covers), and with
converge_iters, losses [(iter, loss)] of a short training run on real data.

Standalone (one JSON row per point appended to --out, each point in a subprocess on the GPU):
    python -m bench.e2e --models shakespeare_6x768,gpt2_124m --backends eager,torch_compile,triton,cutile \\
        --out results/e2e.jsonl
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from contextlib import nullcontext

import torch
from torch.profiler import record_function

from kernels.registry import Unsupported
from model import cuda_graph
from model.config import PRESETS, preset
from model.gpt import GPT
from kernels.device import name as device_name
from model.ops import EAGER_SDPA, Backend
from model.ranges import close_open_ranges

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# The compiled baselines: nanoGPT's model (eager_sdpa) under torch.compile, as nanoGPT runs it, and the same in
# mode "reduce-overhead" (inductor captures forward and backward in CUDA graphs: a baseline free of launch
# overhead, to set against our whole-step CUDA graph)
COMPILED = {"torch_compile": {}, "torch_compile_graphs": {"mode": "reduce-overhead"}}
DEFAULT_BT = {"gpt2_124m": (16, 1024), "shakespeare_6x768": (64, 256), "shakespeare_6x384": (64, 256), "tiny": (4, 64)}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _quartiles(ts):
    ts = sorted(ts)
    if len(ts) >= 4:
        q1, med, q3 = statistics.quantiles(ts, n=4, method="inclusive")
        return med, q1, q3
    return statistics.median(ts), ts[0], ts[-1]


def _classify(e: BaseException) -> tuple[str, str]:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, Unsupported):
        return "unsupported", text[:500]
    if isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower():
        return "oom", f"{type(e).__name__}: {text}"[:500]
    tb = traceback.extract_tb(e.__traceback__)
    where = f" ({os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
    return "error", f"{type(e).__name__}: {text}{where}"[:500]


def run_e2e_point(point: dict, device: str) -> dict:
    device = str(device)
    if device == "cuda":
        device = f"cuda:{torch.cuda.current_device()}"
    row = {"op": "e2e", "model": point.get("model"), "backend": point.get("backend", "eager"),
           "B": point.get("B"), "T": point.get("T"), "dtype": point.get("dtype", "bf16"),
           "device": device, "device_name": device_name(device), "fallbacks": [],
           "cuda_graph": bool(point.get("cuda_graph"))}
    state = {}
    try:
        row.update(_run(point, device, state))
    except BaseException as e:  # noqa: BLE001 - a point always ends with a status
        if isinstance(e, KeyboardInterrupt):
            raise
        row["status"], row["message"] = _classify(e)
        if "backend" in state:
            row["fallbacks"] = list(state["backend"].fallbacks)
    finally:
        state.clear()
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    row.setdefault("message", "")
    return row


def _run(point: dict, device: str, state: dict) -> dict:
    cuda = device.startswith("cuda")
    name, impl = point["model"], point.get("backend", "eager")
    B, T = int(point["B"]), int(point["T"])
    dtype = point.get("dtype", "bf16")
    if dtype not in DTYPES:
        raise Unsupported(f"dtype {dtype!r} (use bf16, fp16 or fp32)")
    steps = int(point.get("steps", 20 if cuda else 3))
    warmup = int(point.get("warmup", 3 if cuda else 1))
    n_prof = int(point.get("profile_steps", 3 if cuda else 1))
    seed = int(point.get("seed", 0))
    compiled = impl in COMPILED
    if compiled and not cuda and os.environ.get("TILEBENCH_COMPILE_ON_CPU") != "1":
        raise Unsupported("torch_compile is timed on CUDA only: inductor's CPU build time dwarfs the step "
                          "(TILEBENCH_COMPILE_ON_CPU=1 forces it)")
    graphed = bool(point.get("cuda_graph"))
    if graphed:
        why = cuda_graph.refusal(device, dtype, 1, compiled)
        if why:
            raise Unsupported(why)

    cfg = preset(name)
    if T > cfg.block_size:
        cfg = preset(name, block_size=T)
    torch.manual_seed(seed)
    notes = []
    # the compiled baseline is nanoGPT's model (SDPA attention) under torch.compile, as nanoGPT runs it
    backend = Backend(EAGER_SDPA if compiled else impl, results=point.get("results"), dtype=dtype,
                      fuse_gelu=point.get("fuse_gelu"), annotate=not compiled, log=notes.append, graphed=graphed)
    state["backend"] = backend
    model = GPT(cfg, backend).to(device)
    backend.resolve_auto(device)
    opt = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cuda" if cuda else "cpu", capturable=graphed)
    fwd = torch.compile(model, **COMPILED[impl]) if compiled else model
    mark_step = impl == "torch_compile_graphs"   # cudagraph trees: each iteration a new step
    state.update(model=model, opt=opt, fwd=fwd)
    gen = torch.Generator(device=device if cuda else "cpu").manual_seed(seed)
    data = [torch.randint(cfg.vocab_size, (B, T + 1), generator=gen, device=device) for _ in range(2)]
    data = [(d[:, :-1].contiguous(), d[:, 1:].contiguous()) for d in data]
    ctx = torch.autocast(device.split(":")[0], dtype=DTYPES[dtype]) if dtype != "fp32" else nullcontext()
    clip = float(point.get("grad_clip", 1.0))

    def step(i):
        x, y = data[i % len(data)]
        if mark_step:
            torch.compiler.cudagraph_mark_step_begin()
        with ctx:
            _, loss = fwd(x, y)
        loss.backward()
        if clip:
            with record_function("step:clip"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        with record_function("step:optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss

    if graphed:   # the first calls are eager warm-up (side stream), then one capture, then replays
        gstep = cuda_graph.GraphedStep(model, opt, model.parameters(), B, T, 1, clip, dtype, device,
                                       warmup=max(1, min(3, warmup)))

        def step(i):   # noqa: F811 - the graphed step replaces the eager one
            with record_function("step:graph"):
                return gstep([data[i % len(data)]], 6e-4)

    # first step apart: Triton/cuTile JIT, autotuning, torch.compile
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    step(0)
    _sync(device)
    out = {"compile_s": time.perf_counter() - t0}
    if impl not in ("eager", EAGER_SDPA, *COMPILED):
        chosen = {op: n for op, n in backend.choice.items() if n != "eager"}
        ran = {op for op, names in backend.used.items() if names}
        if chosen and not ran:
            return {**out, "status": "unsupported", "fallbacks": list(backend.fallbacks),
                    "message": f"no op ran on {impl}: " + "; ".join(backend.fallbacks)[:480]}
    for i in range(warmup):
        step(1 + i)

    times = []
    if cuda:
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
        for i, (a, b) in enumerate(ev):
            a.record()
            loss = step(i)
            b.record()
        torch.cuda.synchronize(device)
        times = [a.elapsed_time(b) for a, b in ev]
    else:
        for i in range(steps):
            t = time.perf_counter()
            loss = step(i)
            times.append((time.perf_counter() - t) * 1e3)
    last = loss.item()
    if not math.isfinite(last):
        return {**out, "status": "error", "message": f"non-finite loss {last} after {warmup + steps + 1} steps",
                "fallbacks": list(backend.fallbacks)}
    ms, q1, q3 = _quartiles(times)
    tflops = model.flops_per_token(T) * B * T / (ms * 1e-3) / 1e12
    peak = point.get("peak_tflops")
    out.update(status="ok", message="", ms_per_step=ms, ms_q1=q1, ms_q3=q3, steps=steps,
               tokens_per_s=B * T / (ms * 1e-3), model_tflops=tflops,
               mfu=(tflops / peak if peak else None), peak_tflops=peak, loss=last,
               peak_mem_bytes=torch.cuda.max_memory_allocated(device) if cuda else None,
               params=model.get_num_params(), flops_per_token=model.flops_per_token(T),
               fused_adamw=getattr(opt, "fused_adamw", False), backend_choice=backend.describe(),
               cuda_graph=graphed, graph_capture_s=gstep.capture_s if graphed else None,
               impls_used={op: sorted(v) for op, v in backend.used.items()})

    if n_prof > 0:
        try:
            # graph replays launch no ops from Python: their kernels show up as "unattributed" (top_kernels
            # still lists them); the same point without cuda_graph gives the per-op split
            out.update(_breakdown(step, n_prof, device, backend, ms, annotate=not (compiled or graphed)))
        except Exception as e:  # the timing stands without the breakdown
            out["breakdown"], out["breakdown_error"] = None, _classify(e)[1]

    if point.get("converge_iters"):
        out.update(_converge(point, device, B, T, dtype))
    out["fallbacks"] = list(dict.fromkeys(backend.fallbacks + out.get("fallbacks", [])))
    out["notes"] = notes
    return out


def _t(e, *names):
    for n in names:
        v = getattr(e, n, None)
        if v is not None:
            return float(v)
    return 0.0


def _breakdown(step, n, device, backend, ms_step, annotate=True) -> dict:
    """Kernel time per op from torch.profiler: each kernel-launching CPU event's self time goes to the
    innermost op:/step: range around it (forward ranges and the backward ones model/ops.py opens)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    cuda = device.startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    backend.profile_ranges = annotate
    try:
        with profile(activities=acts) as prof:
            for i in range(n):
                step(i)
            _sync(device)
    finally:
        backend.profile_ranges = False
        close_open_ranges()
    detail = defaultdict(float)   # "linear:fwd" -> us
    kernels = defaultdict(float)
    total = 0.0
    for e in prof.events():
        if getattr(e, "device_type", DeviceType.CPU) != DeviceType.CPU:
            if cuda and not e.name.startswith(("op:", "step:", "ProfilerStep")):   # not an annotation
                kernels[e.name] += _t(e, "device_time_total", "cuda_time_total")
            continue
        t = _t(e, "self_device_time_total", "self_cuda_time_total") if cuda else _t(e, "self_cpu_time_total")
        if t <= 0:
            continue
        p = e
        while p is not None and not p.name.startswith(("op:", "step:")):
            p = p.cpu_parent
        if p is None:
            key = "other"
        else:
            parts = p.name.split(":")
            key = parts[1] + (":bwd" if len(parts) > 2 else (":fwd" if parts[0] == "op" else ""))
        detail[key] += t
        total += t
    per = lambda us: us / n / 1e3
    breakdown = defaultdict(float)
    for k, us in detail.items():
        breakdown[k.split(":")[0]] += per(us)
    out = {"breakdown": dict(sorted(breakdown.items(), key=lambda kv: -kv[1])),
           "breakdown_detail": {k: per(v) for k, v in sorted(detail.items())},
           "breakdown_total_ms": per(total), "breakdown_source": "cuda kernels" if cuda else "cpu self time"}
    if cuda:
        # kernels the profiler could not tie to a launching CPU op, then step time no kernel covers
        all_kernels = sum(kernels.values())
        if per(all_kernels - total) > 1e-3:
            out["breakdown"]["unattributed"] = per(all_kernels - total)
        out["breakdown"]["idle"] = max(0.0, ms_step - per(max(all_kernels, total)))
        out["top_kernels"] = [[k, per(v)] for k, v in sorted(kernels.items(), key=lambda kv: -kv[1])[:12]]
    return out


def _converge(point, device, B, T, dtype) -> dict:
    """A short training run on real data through model.train: the loss curve per iteration."""
    from model import train
    data_dir = point.get("data_dir") or os.path.join(REPO, "data", "shakespeare_char")
    if not os.path.isfile(os.path.join(data_dir, "train.bin")):
        return {"losses": None, "converge_error": f"no dataset at {data_dir} (python -m model.data shakespeare_char)"}
    iters = int(point["converge_iters"])
    impl = point.get("backend", "eager")
    lr = float(point.get("lr", 6e-4 if point["model"] == "gpt2_124m" else 1e-3))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = train.TrainConfig(
            model=point["model"], data_dir=data_dir, batch_size=B, block_size=T, max_iters=iters,
            learning_rate=lr, min_lr=lr / 10, warmup_iters=min(100, iters // 5), eval_interval=0, eval_iters=0, save_checkpoints=False,
            log_interval=max(1, min(10, iters // 10)), out_dir=tmp, dtype=dtype, device=device,
            backend=EAGER_SDPA if impl in COMPILED else impl, compile=impl in COMPILED,
            results=point.get("results"), seed=int(point.get("seed", 1337)), peak_tflops=point.get("peak_tflops"),
            fuse_gelu=point.get("fuse_gelu"), cuda_graph=bool(point.get("cuda_graph")))
        res = train.run(cfg, log=lambda m: None)
    return {"losses": [tuple(x) for x in res["train"]], "converge_status": res["status"],
            "converge_message": res["message"], "converge_tokens_per_s": res["summary"]["median_tokens_per_s"],
            "fallbacks": res["fallbacks"]}


# ----------------------------------------------------------------------------------------------------

def _measure_peak(device) -> float:
    """bf16 matmul TFLOP/s on this GPU (a dense 8192^3 GEMM, median of 20)."""
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    ts = []
    for _ in range(20):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        torch.cuda.synchronize(device)
        ts.append(s.elapsed_time(e))
    return 2 * n ** 3 / (statistics.median(ts) * 1e-3) / 1e12


def _run_isolated(point, device, timeout) -> dict:
    cmd = [sys.executable, "-m", "bench.e2e", "--point", json.dumps(point), "--device", device]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"status": "error", "message": f"timed out after {timeout} s", **point}
    for line in reversed(p.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
    return {"status": "error", "message": f"subprocess exit {p.returncode}: {' | '.join(tail)}"[:500], **point}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="shakespeare_6x768,gpt2_124m", help=f"presets: {', '.join(PRESETS)}")
    ap.add_argument("--backends", default="eager,eager_sdpa,torch_compile,triton,cutile,auto")
    ap.add_argument("--B", type=int, help="default per model: " + str(DEFAULT_BT))
    ap.add_argument("--T", type=int)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--profile-steps", type=int)
    ap.add_argument("--converge-iters", type=int)
    ap.add_argument("--data-dir")
    ap.add_argument("--results", help="results JSONL for backend auto (default results/**/*.jsonl)")
    ap.add_argument("--fuse-gelu", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--cuda-graph", action="store_true", default=None,
                    help="capture each whole step in a CUDA graph and time replays")
    ap.add_argument("--peak-tflops", type=float)
    ap.add_argument("--measure-peak", action="store_true", help="measure a bf16 GEMM peak for MFU first")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", help="append rows to this JSONL file")
    ap.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                    help="each point in its own process (default on for CUDA)")
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--point", help=argparse.SUPPRESS)   # internal: run one point, print its row
    a = ap.parse_args(argv)
    if a.point:
        print(json.dumps(run_e2e_point(json.loads(a.point), a.device), default=str))
        return 0
    peak = a.peak_tflops
    if a.measure_peak and a.device.startswith("cuda"):
        peak = _measure_peak(a.device)
        print(f"measured bf16 GEMM peak: {peak:.0f} TFLOP/s", file=sys.stderr)
    isolate = a.device.startswith("cuda") if a.isolate is None else a.isolate
    rows = []
    for m in a.models.split(","):
        B, T = DEFAULT_BT.get(m, (8, 256))
        for b in a.backends.split(","):
            point = {"model": m, "backend": b, "B": a.B or B, "T": a.T or T, "dtype": a.dtype}
            for k in ("steps", "warmup", "profile_steps", "converge_iters", "data_dir", "results", "fuse_gelu",
                      "cuda_graph"):
                if getattr(a, k) is not None:
                    point[k] = getattr(a, k)
            if peak:
                point["peak_tflops"] = peak
            row = _run_isolated(point, a.device, a.timeout) if isolate else run_e2e_point(point, a.device)
            row.update(date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), torch=torch.__version__)
            rows.append(row)
            if a.out:
                os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
                with open(a.out, "a") as f:
                    f.write(json.dumps(row, default=str) + "\n")
            _print_row(row)
    return 0


def _print_row(r):
    name = f"{r.get('backend')}{'+graph' if r.get('cuda_graph') else ''}"
    head = f"{r.get('model')} B={r.get('B')} T={r.get('T')} {name:>14}: {r.get('status')}"
    if r.get("status") != "ok":
        print(f"{head} {r.get('message', '')}", flush=True)
        return
    mfu = f" mfu {r['mfu'] * 100:.1f}%" if r.get("mfu") else ""
    mem = f" {r['peak_mem_bytes'] / 2**30:.1f} GiB" if r.get("peak_mem_bytes") else ""
    print(f"{head} {r['ms_per_step']:.2f} ms/step [{r['ms_q1']:.2f}, {r['ms_q3']:.2f}] "
          f"{r['tokens_per_s']:,.0f} tok/s {r['model_tflops']:.1f} TFLOP/s{mfu}{mem} first step {r['compile_s']:.1f} s"
          + (f" fallbacks {len(r['fallbacks'])}" if r.get("fallbacks") else ""), flush=True)
    if r.get("breakdown"):
        print("    " + ", ".join(f"{k} {v:.2f}" for k, v in r["breakdown"].items()) + " (ms/step)", flush=True)
    if r.get("losses"):
        ls = r["losses"]
        print(f"    loss {ls[0][1]:.3f} -> {ls[-1][1]:.3f} over {ls[-1][0] + 1} iters", flush=True)


if __name__ == "__main__":
    sys.exit(main())
