"""The sweep runner: every point ends with a status and one bad point never stops the sweep.

Per point: resolve the impl (unavailable?), ask whether it takes the shape (unsupported?), time the
first call apart (compile/autotune), run the correctness gate (wrong points are not timed), then time
it, read peak memory and the GPU's clocks before and after, and append the row to disk."""
from __future__ import annotations

import dataclasses
import gc
import sys
import time
import traceback

import torch

from bench.measure import check as checking
from bench.measure.outcome import classify
from bench.measure import devinfo, stress, timing, verdict_store
from bench.measure import capture, profile, tunecap
from bench.measure.progress import Progress
from kernels import gpu_defaults, registry
from kernels.rows import SCHEMA_VERSION, STATUSES, mode_of, timer_for  # noqa: F401 - STATUSES: what run_point may answer
from kernels.spec import gen_for



@dataclasses.dataclass
class Options:
    budget_s: float | None = None     # per point timing budget; default 1 s on GPU, 0.3 s on CPU
    mode: str = "events"                  # "events" (launched calls) or "graph" (--cuda-graph: graph replays)
    seed: int = 0
    measure_peaks: bool = True
    autotune_cap_s: float | None = 10.0   # per point, peers' autotuners (bench.measure.tunecap); None: no cap
    profile_dir: str | None = None        # --profile: kernel table and Chrome trace per point (bench.measure.profile)
    stress: bool = True                   # the stress battery before timing (--no-stress: rows say "off")
    verdicts: str | None = None           # folder of verdicts kept across runs (bench.measure.verdict_store); None: off
    fresh_verdicts: bool = False          # --fresh-verdicts: judge every case again, keep the new verdicts


def _seed_of(point: dict, base: int) -> int:
    return (int(point["point_id"][:8], 16) + base) % (2**31)


def _shape_label(spec, shape):
    try:
        return spec.label(shape)
    except (KeyError, ValueError, TypeError):   # a shape the spec rejects still gets a readable label
        return str(shape)


@dataclasses.dataclass
class Plan:
    """What a point runs: its impl, full tile config and timer mode, or the status that ends it before it runs."""
    impl: object = None
    status: str | None = None      # unavailable | unsupported | error; None: it runs
    message: str = ""
    cfg: dict | None = None
    config_source: str | None = None
    mode: str | None = None


def plan_point(point: dict, spec, shape: dict, device: str, default_mode: str) -> Plan:
    """Resolve the impl, ask whether it takes the shape, fill its config, ask whether its timer can time it."""
    op, name, dtype, pass_ = point["op"], point["impl"], point["dtype"], point["pass"]
    res = registry.resolve(op, name, device)
    if not res.ok:
        return Plan(res.impl, "unavailable", res.reason)
    impl = res.impl
    try:
        why = impl.why_not(shape, dtype, device, pass_)
    except Exception as e:  # noqa: BLE001 - a broken supports() is this point's error, not the sweep's
        return Plan(impl, "error", f"supports() raised {type(e).__name__}: {e}")
    if why:
        return Plan(impl, "unsupported", why)
    cfg_in = dict(point.get("config") or {})
    if "__missing_preset__" in cfg_in:
        return Plan(impl, "error", f"impl {name} has no preset {cfg_in['__missing_preset__']!r} and no "
                                   f"tuning config of that name ({impl.known_names()})")
    try:
        cfg, source = gpu_defaults.config(impl, op, name, cfg_in, device)
    except ValueError as e:
        return Plan(impl, "error", f"bad tile config: {e}")
    mode = mode_of(point.get("timer") or timer_for(device, default_mode))
    why = impl.timer_refusal(cfg, mode) if impl.timer_refusal else None
    return Plan(impl, "unsupported" if why else None, why or "", cfg, source, mode)


def run_point(point: dict, device: str, opts: Options) -> dict:
    t_start = time.perf_counter()
    row = dict(point)
    if point["op"] == "e2e":
        return _run_e2e(point, device, opts, row, t_start)
    op, name, dtype, pass_ = point["op"], point["impl"], point["dtype"], point["pass"]
    spec = registry.spec_of(op)
    shape = spec.full_shape(point["shape"])
    row.update(shape_label=_shape_label(spec, shape), x=spec.x_value(shape), bound=spec.bound,
               flops=spec.flops(shape, pass_), bytes=spec.bytes(shape, dtype, pass_))
    plan = plan_point(point, spec, shape, device, opts.mode)
    row["impl_kind"] = plan.impl.kind if plan.impl else None
    if plan.cfg is not None:
        row["config_full"], row["config_source"] = plan.cfg, plan.config_source
    if plan.status:
        return _finish(row, plan.status, plan.message, t_start)
    impl, cfg, mode = plan.impl, plan.cfg, plan.mode
    row["interpreted"] = interpreted(impl, device)
    state_before = devinfo.sample(device)
    try:
        _measure(row, spec, name, impl, shape, dtype, pass_, cfg, device, opts, _seed_of(point, opts.seed), mode)
    except BaseException as e:  # noqa: BLE001 - a point's failure is data
        if isinstance(e, KeyboardInterrupt):
            raise
        status, msg = classify(e)
        row["traceback"] = "".join(traceback.format_exception_only(type(e), e))[-2000:]
        _finish(row, status, msg, t_start)
    finally:
        _free(device)
    row.update(devinfo.point_state(state_before, devinfo.sample(device)))
    msg = row.pop("_msg", "")
    if "status" not in row:
        return _finish(row, "ok", msg, t_start)
    return _finish(row, row["status"], row.get("message", ""), t_start)


def interpreted(impl, device: str) -> bool:
    """The impl's kernels run under Triton's CPU interpreter here."""
    return impl.backend in ("triton", "liger") and not device.startswith("cuda")


def calls_for(impl, device: str) -> int:
    """Calls of the checked point the gate judges: CALLS, but 2 under Triton's CPU interpreter, which runs a
    kernel's programs one at a time (no race can show between calls) at seconds per call."""
    return 2 if interpreted(impl, device) else checking.CALLS


def _measure(row, spec, name, impl, shape, dtype, pass_, cfg, device, opts, seed, mode):
    fn = spec.wrap(impl.fn, shape)
    gen = gen_for(seed, device)
    inputs = spec.make_inputs(shape, dtype, device, gen)
    # 1. the first call alone: JIT compile, autotune, module load (a no-grad forward first for fwd+bwd, as the
    #    gate's upstream gradient needs no call of the impl: its compile counts here too)
    grad_out = None
    probe_s = 0.0
    if pass_ == "fwd+bwd":
        holder = {}

        def probe_call():
            with torch.no_grad():
                holder["out"] = fn(*inputs.args, **inputs.kwargs, **cfg)
        probe_s = timing.first_call_s(probe_call, device)
        grad_out = checking.grad_out_for(holder.pop("out"), gen)
    row["compile_s"] = probe_s + timing.first_call_s(
        lambda: checking.run_once(fn, inputs, pass_, cfg, grad_out), device)
    if impl.picked is not None:
        try:
            row["picked_config"] = impl.picked()
        except (AttributeError, KeyError, TypeError, RuntimeError) as e:   # costs the column, not the point
            row["picked_config"] = f"unreadable: {type(e).__name__}: {e}"
    del inputs, grad_out
    # 2. the correctness gate, on fresh inputs with poisoned outputs, held to eager's own error, several calls
    res = checking.check(spec, fn, shape, dtype, pass_, device, cfg, seed=seed + 1, calls=calls_for(impl, device),
                         interpreted=row["interpreted"])
    row.update(res.as_row())
    if not res.ok:
        row["status"], row["message"] = "wrong", res.message
        return
    exp = res.expected
    # 3. the stress battery: the model's layouts, hard values, ragged and edge sizes (each case once per process)
    if opts.stress:
        failed = stress.into_row(row, stress.run(spec, name, impl, cfg, shape, dtype, pass_, device, opts.seed,
                                                 classify, interpreted=row["interpreted"]))
        if failed:
            row["status"] = failed.status
            row["message"] = f"stress:{failed.regime} ({failed.case}): {failed.message}"
            return
    else:
        row["stress"] = "off"
    # 4. memory of one call beyond the inputs
    if device.startswith("cuda"):
        _free(device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = checking.run_once(fn, exp.inputs, pass_, cfg, exp.grad_out)
        torch.cuda.synchronize()
        row["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
        row["extra_mem_bytes"] = torch.cuda.max_memory_allocated() - base
        del out
    # 5. timing, on the checked inputs: kernel time, then host-inclusive time
    budget = opts.budget_s if opts.budget_s is not None else (1.0 if device.startswith("cuda") else 0.3)
    last = {}
    if pass_ == "fwd":
        args = exp.inputs.detached(requires_grad=False).args

        def target():
            with torch.no_grad():
                last["out"] = fn(*args, **exp.inputs.kwargs, **cfg)
        setup = None
    else:
        inp = exp.inputs.detached(requires_grad=True)
        leaves = {i: inp.args[i] for i in exp.inputs.grad_args}

        def target():
            last["out"] = fn(*inp.args, **inp.kwargs, **cfg)
            checking.backward(last["out"], exp.grad_out)

        def setup():
            for t in leaves.values():
                t.grad = None
    stats = timing.measure(target, device, setup=setup, budget_s=budget, mode=mode)
    # 6. the last timed call answers as the checked one did: an impl right once and wrong when timed is wrong
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    grads = {i: t.grad for i, t in leaves.items()} if pass_ == "fwd+bwd" else {}
    problems = exp.judge(last.pop("out"), grads)[0]
    if problems:
        row["status"], row["message"] = "wrong", "timed call: " + "; ".join(problems)
        return
    row.update(stats.as_row())
    host = stats if not device.startswith("cuda") else \
        timing.measure_host(target, device, setup=setup, budget_s=budget / 2)
    row.update(host.as_row(prefix="host_"))
    if opts.profile_dir:
        profile.capture(row, lambda: checking.run_once(fn, exp.inputs, pass_, cfg, exp.grad_out), target, setup,
                        device, opts.profile_dir)
    sec = stats.median_ms * 1e-3
    row["tflops"] = row["flops"] / sec / 1e12
    row["gbps"] = row["bytes"] / sec / 1e9
    peaks = devinfo.measured_peaks(device) if opts.measure_peaks else {}
    if peaks:
        floor = max(row["flops"] / (peaks["peak_tflops"] * 1e12), row["bytes"] / (peaks["peak_gbps"] * 1e9))
        row["roofline_frac"] = floor / sec
    row["_msg"] = res.message


def _run_e2e(point, device, opts, row, t_start):
    try:
        from bench.measure import e2e
    except Exception as e:
        return _finish(row, "unavailable", f"bench.measure.e2e not importable: {type(e).__name__}: {e}", t_start)
    p = {**point["shape"], "backend": point["impl"], "dtype": point["dtype"], **point.get("extra", {})}
    if opts.measure_peaks:
        p.setdefault("peak_tflops", devinfo.measured_peaks(device)["peak_tflops"])
    state_before = devinfo.sample(device)
    try:
        out = e2e.run_e2e_point(p, device)
        row.update(out)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        status, msg = classify(e)
        row.update(status=status, message=msg)
    finally:
        _free(device)
    row.update(devinfo.point_state(state_before, devinfo.sample(device)))
    row.setdefault("status", "error")
    row.setdefault("message", "")
    row["shape_label"] = " ".join(f"{k}={v}" for k, v in point["shape"].items())
    return _finish(row, row["status"], row["message"], t_start)


def _finish(row, status, message, t_start):
    row["status"] = status
    row["message"] = message or ""
    row["duration_s"] = round(time.perf_counter() - t_start, 3)
    row["date"] = devinfo.now_iso()
    row["schema_version"] = SCHEMA_VERSION
    return row


def _free(device):
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def run_one(point: dict, device: str, opts: Options) -> dict:
    """run_point with the point's console output (third-party prints, compiler chatter) kept in its row and
    peers' autotuning capped at opts.autotune_cap_s."""
    with capture.output() as out, tunecap.capped(opts.autotune_cap_s) as tuned:
        row = run_point(point, device, opts)
    capture.into_row(row, out.text)
    tunecap.into_row(row, tuned, opts.autotune_cap_s)
    return row


def keep(row: dict, store, rows: list, bar: Progress | None, on_row=None) -> None:
    """A finished row: on disk first (a kill after this loses nothing), then the list, the bar, the hook."""
    store.append(row)
    rows.append(row)
    if bar:
        bar.update(row)
    if on_row:
        on_row(row)


def _battery_points(points: list[dict], device: str, default_mode: str = "events") -> list[tuple]:
    """The points whose battery stress.prewarm can compile ahead: (spec, impl name, impl, cfg, shape, dtype, pass)
    of each that plan_point lets run; the rest meet their problem when run."""
    out = []
    for p in points:
        if p["op"] == "e2e":
            continue
        try:
            spec = registry.spec_of(p["op"])
            shape = spec.full_shape(p["shape"])
            plan = plan_point(p, spec, shape, device, default_mode)
        except Exception:  # noqa: BLE001 - run_point classifies it
            continue
        if not plan.status:
            out.append((spec, p["impl"], plan.impl, plan.cfg, shape, p["dtype"], p["pass"]))
    return out


def run(points: list[dict], device: str, store, opts: Options, progress: bool = True, on_row=None) -> list[dict]:
    """Run points in order, appending each row to `store` as it finishes; on_row(row) after each."""
    if device.startswith("cuda:"):
        # device-less torch.cuda calls (synchronize, memory stats) must act on this GPU, not GPU 0
        torch.cuda.set_device(torch.device(device))
    meta = devinfo.static_info(device)
    peaks = {}
    if opts.measure_peaks and any(p["op"] != "e2e" for p in points):
        try:
            peaks = devinfo.measured_peaks(device)
        except Exception as e:  # a failed calibration costs the roofline column, nothing else
            print(f"warning: could not measure device peaks: {e}", file=sys.stderr)
            opts.measure_peaks = False
    stress.use_store(verdict_store.open_store(opts.verdicts, device, opts.seed, opts.fresh_verdicts)
                     if opts.stress else None)
    try:
        return _run(points, device, store, opts, progress, on_row, meta, peaks)
    finally:
        stress.use_store(None)


def _run(points, device, store, opts, progress, on_row, meta, peaks) -> list[dict]:
    ahead = set()
    if opts.stress and device.startswith("cuda"):
        try:
            warm = stress.prewarm(_battery_points(points, device, opts.mode), device, opts.seed)
        except Exception as e:  # noqa: BLE001 - the points still run, their battery judged one case at a time
            print(f"warning: the stress battery's compiles ahead failed ({type(e).__name__}: {e})", file=sys.stderr)
            warm = {"cases": 0}
        if warm["cases"]:
            ahead = warm.pop("impls")
            meta = {**meta, "stress_prewarm": warm}
            print(f"stress battery: {warm['cases']} cases of cuTile impls compiled ahead in {warm['s']:.1f} s, "
                  f"{warm['workers']} threads" + ("" if warm["parallel"] else " (one compile at a time)")
                  + (f"; meanwhile {warm['here_cases']} of Triton and torch.compile impls in {warm['here_s']:.1f} s"
                     if warm["here_cases"] else ""), file=sys.stderr)
            for name, why in warm.pop("failed").items():
                print(f"stress battery: {name} raised while compiling ahead ({why}); its judged case will say "
                      f"what it is", file=sys.stderr)
    bar = Progress(points) if progress else None
    rows = []
    try:
        for p in points:
            if bar:
                bar.start(p)
            row = run_one(p, device, opts)
            if ahead and stress.ahead_key(row["impl"], row.get("config_full"), row["dtype"]) in ahead:
                row["compile_ahead"] = True   # its compile_s may be a module load: the battery compiled first
            row.update(meta)
            row.update(peaks)
            keep(row, store, rows, bar, on_row)
    finally:
        if bar:
            bar.close()
    return rows
