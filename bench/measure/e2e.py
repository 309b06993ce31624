"""Whole training steps for the harness: forward + backward + (fused) AdamW of a GPT per backend.

run_e2e_point(point, device) -> row. point: model (preset), backend (eager | eager_sdpa (nanoGPT's model:
eager ops, SDPA attention) | triton | cutile | auto[:path] | op=impl,... | a torch.compile baseline:
torch_compile, torch_compile_max_autotune, torch_compile_graphs = nanoGPT's model (model/plain_gpt.py) under
torch.compile(fullgraph=True) in mode default, max-autotune-no-cudagraphs, reduce-overhead | compile+<backend>,
compile_max_autotune+<backend>, compile_graphs+<backend> = our GPT with that backend (triton, cutile, auto, a mix)
under torch.compile(fullgraph=True) in those modes, each op through its impl's torch.library ops
(kernels/library.py)), B, T, dtype
(bf16), steps; optional warmup, profile_steps, peak_tflops, results (for auto), auto_trials (auto's whole-step
trials, model/auto_step.py: default on CUDA only), grad_clip, seed, check_steps,
converge_iters (+ data_dir, lr), cuda_graph (true: the whole step, clipping and AdamW included, captured once
and replayed; model/cuda_graph.py); for compile+ backends on a CPU only (a tracing check, never a measurement):
compile_backend (e.g. aot_eager) and standins (true: the library ops' eager-math stand-ins run where the kernels
cannot).

The row: status (ok | wrong | compile_error | error | oom | unsupported), message, ms_per_step (median of
CUDA-event times per step, graph replays under cuda_graph, perf_counter on CPU, after warm-up; also as
median_ms with q1_ms ... samples_ms and `timer`), ms_q1, ms_q3, host_median_ms ... host_samples_ms (each step
synchronised, wall clock: what a step pays with its host work), tokens_per_s, model_tflops (6N + 12LHQT per
token), mfu, peak_mem_bytes, compile_s (the first step, apart), fallbacks, ops_ran / ops_fell_back (the
ops that ran the backend's impl, the ops that fell back to eager: "k of n ops ran ..." in the message),
loss_check (the first check_steps losses against eager's from the same init and batches: `wrong` beyond
LOSS_TOL), breakdown (op -> ms per step from a torch.profiler pass, kernel time grouped by the op:NAME ranges
model/ops.py opens in forward and backward; "optimizer", "clip" and "other" for the rest; "idle" is step time
no kernel covers), and with converge_iters, losses [(iter, loss)] of a short training run on real data.

A backend that ran none of its own impls is `unsupported`; a torch.compile baseline that would run eager
(graph break, recompile limit, no graph compiled) is `compile_error`.

Standalone (one JSON row per point appended to --out, each point in a subprocess on the GPU):
    python -m bench.measure.e2e --models shakespeare_6x768,gpt2_124m --backends eager,torch_compile,triton,cutile \\
        --out results/e2e.jsonl
"""
from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import types
from collections import defaultdict

import torch
from torch.profiler import record_function

from bench import child_env
from bench.measure import devinfo, timing
from bench.measure.compiled_baseline import COMPILE_BACKENDS, compiled_ours
from bench.measure.outcome import classify
from kernels.compiled import CompileFallback, call_compiled, fresh_code, graphs_compiled
from kernels.device import name as device_name
from kernels.registry import DTYPES, Unsupported
from kernels.rows import SCHEMA_VERSION
from model import auto_step, cuda_graph
from model.step import autocast, batches, train_step_fn  # noqa: F401 - tools/ import them from here too
from model.config import PRESETS, preset
from model.gpt import GPT
from model.op_list import OPS
from model.ops import EAGER_SDPA, Backend
from model.plain_gpt import PlainGPT
from model.ranges import close_open_ranges

DEFAULT_BT = {"gpt2_124m": (16, 1024), "shakespeare_6x768": (64, 256), "shakespeare_6x384": (64, 256), "tiny": (4, 64)}
BASELINES = ("eager", EAGER_SDPA, *COMPILE_BACKENDS)   # backends that are not an impl choice of the registry
# Largest |loss - eager's loss| / |eager's loss| over the first check_steps steps from the same init and batches.
# Measured on CPU (tiny model, 3 steps): SDPA vs explicit attention 0 in fp32 and 5e-5 in bf16; a GELU 5 %
# high 1.3e-3 in fp32. bf16/fp16 leave room for GPU kernel orders (tokens x layers of reductions); fp32 for
# tf32 dots. Each row's loss_check.max_rel_diff shows the margin.
LOSS_TOL = {"fp32": 1e-4, "fp16": 5e-3, "bf16": 5e-3}
CHECK_STEPS = 3


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


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
        row["status"], row["message"] = classify(e)
        row["traceback"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-2000:]
        if "backend" in state:
            row["fallbacks"] = list(state["backend"].fallbacks)
    finally:
        state.clear()
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    row.setdefault("message", "")
    return row


def build_model(cfg, impl, device, seed, dtype, point, graphed, log):
    """(model, forward callable, backend or None) at the seed's initialisation: every backend, and the eager
    reference the losses are checked against, starts from the same weights."""
    torch.manual_seed(seed)
    ours = compiled_ours(impl)
    if ours:   # our GPT, kernels inside, one dynamo graph (model/ops.py traces each op's library entry)
        mode, inner = ours
        backend = Backend(inner, results=point.get("results"), dtype=dtype, fuse_gelu=point.get("fuse_gelu"),
                          log=log, annotate=False, standins=bool(point.get("standins")))
        model = GPT(cfg, backend).to(device)
        backend.resolve_auto(device)
        forward = types.MethodType(fresh_code(GPT.forward), model)
        compiled = torch.compile(forward, mode=None if mode == "default" else mode, fullgraph=True,
                                 backend=point.get("compile_backend", "inductor"))
        return model, functools.partial(call_compiled, compiled, f"torch.compile(GPT({inner}), mode={mode})"), backend
    if impl in COMPILE_BACKENDS:
        model = PlainGPT(cfg).to(device)
        mode = COMPILE_BACKENDS[impl]
        # forward with a code object of its own: dynamo's cache and recompile limit (8) are per code object, and
        # a sweep compiles a new model per point in one process (a module compile would share PlainGPT.forward's)
        forward = types.MethodType(fresh_code(PlainGPT.forward), model)
        compiled = torch.compile(forward, mode=None if mode == "default" else mode, fullgraph=True)
        return model, functools.partial(call_compiled, compiled, f"torch.compile(model, mode={mode})"), None
    backend = Backend(impl, results=point.get("results"), dtype=dtype, fuse_gelu=point.get("fuse_gelu"),
                      log=log, graphed=graphed)
    model = GPT(cfg, backend).to(device)
    backend.resolve_auto(device)
    return model, model, backend


def _run(point: dict, device: str, state: dict) -> dict:
    cuda = device.startswith("cuda")
    name, impl = point["model"], point.get("backend", "eager")
    B, T = int(point["B"]), int(point["T"])
    dtype = point.get("dtype", "bf16")
    if dtype not in DTYPES:
        raise Unsupported(f"dtype {dtype!r} (use bf16, fp16 or fp32)")
    steps = int(point.get("steps", 20 if cuda else 3))
    n_check = int(point.get("check_steps", CHECK_STEPS))
    # the checked losses are those of the first n_check steps, all before timing
    warmup = max(int(point.get("warmup", 3 if cuda else 1)), n_check - 1)
    n_prof = int(point.get("profile_steps", 3 if cuda else 1))
    seed = int(point.get("seed", 0))
    ours = compiled_ours(impl)
    compiled = impl in COMPILE_BACKENDS or ours is not None
    mode = COMPILE_BACKENDS.get(impl) or (ours[0] if ours else None)
    tracing_check = bool(point.get("standins") or point.get("compile_backend"))
    if tracing_check and (cuda or not ours):
        raise Unsupported("standins / compile_backend are a CPU tracing check of compile+ backends, never a "
                          "measurement: not on a GPU, not for other backends")
    if compiled and not cuda and not tracing_check and os.environ.get("TILEBENCH_COMPILE_ON_CPU") != "1":
        raise Unsupported(f"{impl} is timed on CUDA only: inductor's CPU build time dwarfs the step "
                          "(TILEBENCH_COMPILE_ON_CPU=1 forces it)")
    if mode == "reduce-overhead" and not cuda:
        raise Unsupported(f"{impl}: mode reduce-overhead is CUDA graphs")
    graphed = bool(point.get("cuda_graph"))
    if graphed:
        why = cuda_graph.refusal(device, dtype, 1, compiled)
        if why:
            raise Unsupported(why)

    cfg = preset(name)
    if T > cfg.block_size:
        cfg = preset(name, block_size=T)
    notes = []
    model, fwd, backend = build_model(cfg, impl, device, seed, dtype, point, graphed, notes.append)
    clip = float(point.get("grad_clip", 1.0))
    trials = None
    if backend is not None and backend.mode == "auto" and not ours and point.get("auto_trials", cuda):
        # whole-step trials on copies (model/auto_step.py): this model, its losses and the timing below unchanged
        backend, trials = auto_step.choose(model, backend, B, T, dtype, device, graphed, clip)
        model.ops = backend
    if backend is not None:
        state["backend"] = backend
    opt = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), "cuda" if cuda else "cpu", capturable=graphed)
    state.update(model=model, opt=opt, fwd=fwd)
    data = batches(cfg.vocab_size, B, T, device, seed)
    ctx = autocast(device, dtype)
    step = train_step_fn(model, fwd, opt, ctx, clip, data, mark_step=mode == "reduce-overhead")
    gstep, eager_step = None, step
    if graphed:   # the first calls are eager warm-up (side stream), then one capture, then replays
        gstep = cuda_graph.GraphedStep(model, opt, model.parameters(), B, T, 1, clip, dtype, device,
                                       warmup=max(1, min(3, warmup)))

        def step(i):   # noqa: F811 - the graphed step replaces the eager one
            with record_function("step:graph"):
                return gstep([data[i % len(data)]], 6e-4)

    # first step apart: Triton/cuTile JIT, autotuning, torch.compile
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    graphs0 = graphs_compiled()
    t0 = time.perf_counter()
    losses = [float(step(0))]   # read now: cudagraph trees overwrite a step's outputs at the next replay
    out = {"compile_s": time.perf_counter() - t0}
    if compiled:
        out["graphs_compiled"] = graphs_compiled() - graphs0
        if out["graphs_compiled"] == 0:
            raise CompileFallback(f"{impl}: the first step compiled no graph and ran eager "
                                  "(dynamo disabled or the frame skipped)")
    if backend is not None and impl not in BASELINES:
        out.update(_ops_ran(backend))
        if not out["ops_ran"] and not (trials and trials.winner == "eager"):   # auto may find eager fastest
            return {**out, "status": "unsupported", "fallbacks": list(backend.fallbacks),
                    "message": f"no op ran on {impl}: " + "; ".join(backend.fallbacks)[:480]}
    for i in range(warmup):
        loss = step(1 + i)
        if len(losses) < n_check:
            losses.append(float(loss))

    out.update(time_steps(step, steps, device, "cuda_graph" if graphed else "cuda_events"))
    ms = out["ms_per_step"]
    tflops = model.flops_per_token(T) * B * T / (ms * 1e-3) / 1e12
    peak = point.get("peak_tflops")
    out.update(status="ok", message="", steps=steps, compile_mode=mode,
               tokens_per_s=B * T / (ms * 1e-3), model_tflops=tflops,
               mfu=(tflops / peak if peak else None), peak_tflops=peak,
               peak_mem_bytes=torch.cuda.max_memory_allocated(device) if cuda else None,
               params=model.get_num_params(), flops_per_token=model.flops_per_token(T),
               fused_adamw=getattr(opt, "fused_adamw", False),
               backend_choice=backend.describe() if backend else f"nanoGPT's model, {impl}",
               cuda_graph=graphed, graph_capture_s=gstep.capture_s if graphed else None,
               impls_used={op: sorted(v) for op, v in backend.used.items()} if backend else {})
    if compiled:
        out["graphs_compiled"] = graphs_compiled() - graphs0   # > 1: recompiled while timed (still compiled)
    if trials is not None:
        out.update(trials.as_row())

    if n_prof > 0:
        try:
            # graph replays launch no ops from Python, so a graphed point's split by op comes from the same
            # model's eager steps (the same kernels; breakdown_source says so), without their idle time
            prof_step = eager_step if graphed and backend is not None else step
            out.update(_breakdown(prof_step, n_prof, device, backend, ms, annotate=not compiled))
            if prof_step is not step:
                out["breakdown_source"] += " (eager steps of the graphed model: the split by op)"
                out["breakdown"].pop("idle", None)
        except Exception as e:  # noqa: BLE001 - the timing stands without the breakdown, which says why
            out["breakdown"], out["breakdown_error"] = None, classify(e)[1]
    fallbacks = list(backend.fallbacks) if backend else []
    if backend is not None and impl not in BASELINES:
        out.update(_ops_ran(backend))
        out["message"] = _ops_message(impl, out)
        if point.get("standins"):
            out["standins"] = True
            out["message"] += ("; CPU stand-ins (the ops' eager math) ran in the kernels' place: a tracing check, "
                               "not a measurement")
    state.clear()   # the timed model's memory back before the reference runs
    del model, fwd, opt, step, gstep, backend
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

    check = _check_losses(losses, impl, cfg, device, seed, dtype, point, data, ctx, clip)
    out["loss_check"] = check
    out["loss"] = losses[-1]
    if not check["ok"]:
        out.update(status="wrong", message=check["message"])

    if point.get("converge_iters"):
        out.update(_converge(point, device, B, T, dtype))
    out["fallbacks"] = list(dict.fromkeys(fallbacks + out.get("fallbacks", [])))
    out["notes"] = notes
    return out


def time_steps(step, steps, device, timer) -> dict:
    """Two timers per step, each labelled: the device's (CUDA events around the step, back to back, as a
    training loop runs; around the replay of a graphed step) and the host-inclusive one (synchronised wall
    clock per step: what the step costs with its Python and launch work). On the CPU the two are one."""
    host = []
    if device.startswith("cuda"):
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
        for i, (a, b) in enumerate(ev):
            a.record()
            step(i)
            b.record()
        torch.cuda.synchronize(device)
        times = [a.elapsed_time(b) for a, b in ev]
        for i in range(steps):
            t = time.perf_counter()
            step(i)
            torch.cuda.synchronize(device)
            host.append((time.perf_counter() - t) * 1e3)
    else:
        timer, times = "cpu_clock", []
        for i in range(steps):
            t = time.perf_counter()
            step(i)
            times.append((time.perf_counter() - t) * 1e3)
        host = times
    dev, wall = timing.summarize(times, timer), timing.summarize(host, "host_wall")
    return {**dev.as_row(), **wall.as_row(prefix="host_"), "ms_per_step": dev.median_ms, "ms_q1": dev.q1_ms,
            "ms_q3": dev.q3_ms}


def _ops_ran(backend) -> dict:
    """The model's ops that ran the backend's impl, and those that fell back to eager (at some shape or all)."""
    ran = sorted(op for op in OPS if backend.used.get(op))
    fell = sorted({f.split(":", 1)[0] for f in backend.fallbacks} & set(OPS))
    return {"ops_ran": ran, "ops_fell_back": fell}


def _ops_message(impl, out) -> str:
    ran, fell = out["ops_ran"], out["ops_fell_back"]
    n = len(set(ran) | set(fell))
    msg = f"{len(ran)} of {n} ops ran {impl}"
    return msg + (f"; fell back to eager: {', '.join(fell)}" if fell else "")


def _check_losses(losses, impl, cfg, device, seed, dtype, point, data, ctx, clip) -> dict:
    """The backend's first len(losses) losses against the eager model's from the same init and batches."""
    tol = LOSS_TOL[dtype]
    if impl == "eager":
        return {"ok": all(map(math.isfinite, losses)), "reference": "itself", "losses": losses, "tol": tol,
                "message": "" if all(map(math.isfinite, losses)) else f"non-finite loss {losses}"}
    model, fwd, _ = build_model(cfg, "eager", device, seed, dtype, point, False, lambda m: None)
    opt = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device.split(":")[0])
    step = train_step_fn(model, fwd, opt, ctx, clip, data)
    ref = [float(step(i)) for i in range(len(losses))]
    del model, fwd, opt, step
    gc.collect()
    rel = [abs(a - b) / abs(b) if math.isfinite(a) else math.inf for a, b in zip(losses, ref)]
    worst = max(range(len(rel)), key=rel.__getitem__)
    ok = rel[worst] <= tol
    msg = "" if ok else (f"loss off eager's at step {worst}: {losses[worst]:.6g} vs {ref[worst]:.6g} "
                         f"(rel {rel[worst]:.2e} > {tol:.0e} for {dtype})")
    return {"ok": ok, "reference": "eager", "losses": losses, "eager_losses": ref, "max_rel_diff": rel[worst],
            "tol": tol, "message": msg}


def _t(e, *names):
    for n in names:
        v = getattr(e, n, None)
        if v is not None:
            return float(v)
    return 0.0


def _breakdown(step, n, device, backend, ms_step, annotate=True) -> dict:
    """Kernel time per op from torch.profiler: each kernel-launching CPU event's self time goes to the
    innermost op:/step: range around it (forward ranges and the backward ones model/ops.py opens; none
    without a backend, the compiled baselines)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    cuda = device.startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if backend is not None:
        backend.profile_ranges = annotate
    try:
        with profile(activities=acts) as prof:
            for i in range(n):
                step(i)
            _sync(device)
    finally:
        if backend is not None:
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
    data_dir = point.get("data_dir") or os.path.abspath(os.path.join("data", "shakespeare_char"))
    if not os.path.isfile(os.path.join(data_dir, "train.bin")):
        return {"losses": None, "converge_error": f"no dataset at {data_dir} (python -m model.data shakespeare_char)"}
    iters = int(point["converge_iters"])
    impl = point.get("backend", "eager")
    lr = float(point.get("lr", 6e-4 if point["model"] == "gpt2_124m" else 1e-3))
    ours = compiled_ours(impl)
    compiled = impl in COMPILE_BACKENDS or ours is not None
    with tempfile.TemporaryDirectory() as tmp:
        cfg = train.TrainConfig(
            model=point["model"], data_dir=data_dir, batch_size=B, block_size=T, max_iters=iters,
            learning_rate=lr, min_lr=lr / 10, warmup_iters=min(100, iters // 5), eval_interval=0, eval_iters=0, save_checkpoints=False,
            log_interval=max(1, min(10, iters // 10)), out_dir=tmp, dtype=dtype, device=device,
            backend=EAGER_SDPA if impl in COMPILE_BACKENDS else (ours[1] if ours else impl), compile=bool(compiled),
            results=point.get("results"), seed=int(point.get("seed", 1337)), peak_tflops=point.get("peak_tflops"),
            fuse_gelu=point.get("fuse_gelu"), cuda_graph=bool(point.get("cuda_graph")))
        tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        try:
            res = train.run(cfg, log=lambda m: None)
        finally:   # the trainer turns TF32 on for itself: the sweep's later fp32 points must not inherit it
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return {"losses": [tuple(x) for x in res["train"]], "converge_status": res["status"],
            "converge_message": res["message"], "converge_tokens_per_s": res["summary"]["median_tokens_per_s"],
            "fallbacks": res["fallbacks"]}


# ----------------------------------------------------------------------------------------------------

def _run_isolated(point, device, timeout) -> dict:
    cmd = [sys.executable, "-m", "bench.measure.e2e", "--point", json.dumps(point), "--device", device]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env())
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
    ap.add_argument("--backends", default="eager,eager_sdpa,torch_compile,triton,cutile,auto",
                    help="comma-separated; op=impl after a name mixes into it: 'triton,cutile,linear=eager' is "
                         "two backends, triton and cutile with cuBLAS linears")
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
        peak = devinfo.measured_peaks(a.device)["peak_tflops"]
        print(f"measured bf16 GEMM peak: {peak:.0f} TFLOP/s", file=sys.stderr)
    isolate = a.device.startswith("cuda") if a.isolate is None else a.isolate
    rows = []
    for m in a.models.split(","):
        B, T = DEFAULT_BT.get(m, (8, 256))
        for b in split_backends(a.backends):
            point = {"model": m, "backend": b, "B": a.B or B, "T": a.T or T, "dtype": a.dtype}
            for k in ("steps", "warmup", "profile_steps", "converge_iters", "data_dir", "results", "fuse_gelu",
                      "cuda_graph"):
                if getattr(a, k) is not None:
                    point[k] = getattr(a, k)
            if peak:
                point["peak_tflops"] = peak
            row = _run_isolated(point, a.device, a.timeout) if isolate else run_e2e_point(point, a.device)
            row.update(date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), torch=torch.__version__, schema_version=SCHEMA_VERSION)
            rows.append(row)
            if a.out:
                os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
                with open(a.out, "a") as f:
                    f.write(json.dumps(row, default=str) + "\n")
            _print_row(row)
    return 0


def split_backends(text: str) -> list[str]:
    """"eager,cutile,linear=eager,triton" -> ["eager", "cutile,linear=eager", "triton"]: an op=impl override
    belongs to the backend before it (model/ops.py's mix syntax), a bare name starts the next backend."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" in part and out:
            out[-1] += "," + part
        else:
            out.append(part)
    return out


def _print_row(r):
    name = f"{r.get('backend')}{'+graph' if r.get('cuda_graph') else ''}"
    head = f"{r.get('model')} B={r.get('B')} T={r.get('T')} {name:>14}: {r.get('status')}"
    if r.get("status") != "ok":
        print(f"{head} {r.get('message', '')}", flush=True)
        return
    mfu = f" mfu {r['mfu'] * 100:.1f}%" if r.get("mfu") else ""
    mem = f" {r['peak_mem_bytes'] / 2**30:.1f} GiB" if r.get("peak_mem_bytes") else ""
    host = f" (host-inclusive {r['host_median_ms']:.2f})" if r.get("host_median_ms") else ""
    print(f"{head} {r['ms_per_step']:.2f} ms/step [{r['ms_q1']:.2f}, {r['ms_q3']:.2f}]{host} "
          f"{r['tokens_per_s']:,.0f} tok/s {r['model_tflops']:.1f} TFLOP/s{mfu}{mem} first step {r['compile_s']:.1f} s"
          + (f" fallbacks {len(r['fallbacks'])}" if r.get("fallbacks") else ""), flush=True)
    check = r.get("loss_check") or {}
    if check.get("reference") == "eager":
        print(f"    loss vs eager: max rel diff {check['max_rel_diff']:.1e} (tol {check['tol']:.0e})"
              + (f"; {r['message']}" if r.get("message") else ""), flush=True)
    if r.get("breakdown"):
        print("    " + ", ".join(f"{k} {v:.2f}" for k, v in r["breakdown"].items()) + " (ms/step)", flush=True)
    if r.get("losses"):
        ls = r["losses"]
        print(f"    loss {ls[0][1]:.3f} -> {ls[-1][1]:.3f} over {ls[-1][0] + 1} iters", flush=True)


if __name__ == "__main__":
    sys.exit(main())
