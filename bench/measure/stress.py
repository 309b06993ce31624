"""The stress battery: before a point is timed, its impl also passes the cases its op's spec declares
(OpSpec.stress_cases): the layouts the model hands it, value regimes that break naive kernels (rows far from zero,
outlier channels, logits at a trained model's scale, large attention scores, GELU at large |x|) and ragged and edge
sizes. Each case is judged by the gate's rule (bench/measure/check.py) against eager on the same inputs.

A case's verdict is kept per (op, impl, config, pass, case) for the life of the process, so a sweep pays each case
once however many shapes share it, and, by the CLI, across runs of the same code, toolchain and GPU
(bench/measure/verdict_store.py). Peers' autotuners take one config at the battery's sizes (tunecap.one_config).
A case an impl declines is listed in the row: declining is no way around the
battery, it is a fact about the impl.

Most of the battery's cost on a cold machine is compiling kernels at its new sizes, and most of that is cuTile's
tileiras (TileGym's and ours). prewarm() compiles those for a whole sweep at once, several threads at a time,
before anything is timed, and Triton's, Liger's and torch.compile's in the calling thread meanwhile; the
judged cases then find them compiled."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import torch

from bench.measure import check as checking
from bench.measure import tunecap
from kernels import cutile_env, registry
from kernels.spec import gen_for

_verdicts: dict[str, "Verdict"] = {}
_store = None   # verdict_store.Store of this run, or None: verdicts live as long as the process


def use_store(store) -> None:
    """Keep verdicts across runs in store (bench.measure.verdict_store), or only in this process (None); the store
    in use before is closed (its new verdicts written)."""
    global _store
    if _store is not None and _store is not store:
        _store.close()
    _store = store


@dataclasses.dataclass
class Verdict:
    regime: str
    case: str          # the case's shape label and dtype
    status: str        # ok | declined | wrong | error | oom | compile_error
    message: str = ""
    kept: str | None = None   # when judged, where the verdict came from an earlier run's store

    def text(self) -> str:
        return self.status if self.status == "ok" else f"{self.status}: {self.message}"


def _key(op, impl, cfg, pass_, case, device) -> str:
    return json.dumps([op, impl, cfg, pass_, case.regime, case.shape, case.dtype, device], sort_keys=True, default=str)


def _label(spec, case) -> str:
    try:
        return f"{spec.label(case.shape)} {case.dtype}"
    except (KeyError, ValueError, TypeError):
        return f"{case.shape} {case.dtype}"


def run(spec, name: str, impl, cfg: dict, shape: dict, dtype: str, pass_: str, device: str, seed: int,
        classify, interpreted: bool = False) -> list[Verdict]:
    """The battery for one point: a verdict per case, stopping at the first that is neither ok nor declined.
    classify(exc) -> (status, message) names what a case's exception means (bench/measure/runner.py)."""
    out = []
    if _store:
        _store.check()   # a kernel edited since the harness was imported: its old verdicts are not this code's
    for case in spec.stress_cases(shape, dtype):
        key = _key(spec.name, name, cfg, pass_, case, device)
        if key not in _verdicts:
            skey = _store_key(key, spec, name, cfg, impl)
            kept = _store.get(skey) if skey else None
            if kept:
                _verdicts[key] = Verdict(kept["regime"], kept["case"], kept["status"], kept["message"],
                                         kept=kept["judged"])
            else:
                with tunecap.one_config():
                    _verdicts[key] = _run_case(spec, impl, cfg, case, pass_, device, seed, classify, interpreted)
                if skey:
                    _store.put(skey, dataclasses.asdict(_verdicts[key]))
        v = _verdicts[key]
        out.append(v)
        if v.status not in ("ok", "declined"):
            break
    if _store:
        _store.flush()
    return out


def _store_key(key, spec, name, cfg, impl) -> str | None:
    """The case's key in the run's verdict store; None where there is none or it keeps nothing of this impl."""
    return _store.key(key, spec.name, name, cfg, impl.backend) if _store else None


def _case_inputs(spec, case, device, seed):
    """The case's inputs and their generator: the same for prewarm's call as for the judged one."""
    gen = gen_for(seed + zlib.crc32(case.regime.encode()), device)
    inputs = spec.make_inputs(case.shape, case.dtype, device, gen)
    return (inputs if case.values is None else case.values(inputs, gen)), gen


def _run_case(spec, impl, cfg, case, pass_, device, seed, classify, interpreted) -> Verdict:
    label = _label(spec, case)
    why = impl.why_not(case.shape, case.dtype, device, pass_)
    if why:
        return Verdict(case.regime, label, "declined", why)
    try:
        inputs, _ = _case_inputs(spec, case, device, seed)
        res = checking.check(spec, spec.wrap(impl.fn, case.shape), case.shape, case.dtype, pass_, device, cfg,
                             inputs=inputs, interpreted=interpreted)
    except registry.Unsupported as e:
        return Verdict(case.regime, label, "declined", str(e))
    except Exception as e:  # noqa: BLE001 - a case that raises is the point's failure, classified like any other
        status, msg = classify(e)
        return Verdict(case.regime, label, status, msg)
    return Verdict(case.regime, label, "ok" if res.ok else "wrong", "" if res.ok else res.message)


# Backends whose compiles overlap across threads (cutile_env.parallel_compiles): their cases compile in the pool.
PARALLEL_BACKENDS = ("cutile", "tilegym")
# Backends that compile in process and are not safe to drive from threads (Triton's JIT, inductor): their cases
# compile in the calling thread while the pool works (on a cold fmha first look on an H100, 2026-12-06, Triton's
# were +1.6-3.0 s and torch.compile's +2.6-5.8 s). Eager and SDPA compile nothing; their cases wait for their points.
IN_THREAD_BACKENDS = ("triton", "liger", "compile")
# ... except a torch.compile case at a size some point of the sweep times: inductor times its reduction configs on
# a graph's first launch, which the pool's kernels disturb, and that point would reuse the pick. Its case waits.
TUNES_ON_FIRST_LAUNCH = ("compile",)


def prewarm(points, device: str, seed: int, workers: int | None = None) -> dict:
    """Run the battery's cases of the sweep's compiling impls once, unjudged, before the first point, so their
    compiles overlap: cuda.tile impls' in a thread pool, Triton's, Liger's and torch.compile's in the calling thread
    meanwhile (torch.compile's only at sizes no point times, see TUNES_ON_FIRST_LAUNCH).
    Only where there is a pool: without cuda.tile impls the points compile their cases as before.
    points: (spec, impl name, impl, cfg, shape, dtype, pass) for the sweep's points. An impl that autotunes its
    own config is left out (its search times candidates, which other work would disturb). Cases of one impl,
    config, pass and size (regimes that differ only in values) share their kernels and run one after another in
    one task; other sizes and the other pass compile side by side, a forward kernel both passes share perhaps
    twice (the fmha first look on an H100: 12.0 s ahead with one task per size and pass, 16.0 s per size).

    Nothing is judged here. The judged cases run later, one at a time, with nothing else running: the gate's
    poisoned memory must not be refilled by another thread's results (another impl's right answer to the same
    case, landing under an output that was never written). A failure here is ignored: the judged case meets it
    again and says what it is (`failed` names the impl, so a fault that leaves the GPU unusable is not pinned on
    whichever point runs next). Returns {"cases", "tasks", "workers", "parallel", "s", "here_cases", "here_s",
    "failed", "impls"} (cases and tasks: the pool's; here_*: the calling thread's, whose seconds overlap the
    pool's; s: the wall time until both are done; failed: impl -> its first exception here; impls: the (impl,
    config, dtype) whose kernels may be compiled before their first point)."""
    pooled: dict[str, list] = {}
    here: dict[str, list] = {}
    seen, impls = set(), set()
    timed = {(name, _size(shape)) for spec, name, impl, cfg, shape, dtype, pass_ in points}
    for spec, name, impl, cfg, shape, dtype, pass_ in points:
        tasks = pooled if impl.backend in PARALLEL_BACKENDS else here if impl.backend in IN_THREAD_BACKENDS else None
        if tasks is None or (cfg or {}).get("autotune"):
            continue
        try:
            cases = [c for c in spec.stress_cases(shape, dtype)
                     if not impl.why_not(c.shape, c.dtype, device, pass_)]
        except Exception:  # noqa: BLE001 - the point meets it again and records it
            continue
        for case in cases:
            key = _key(spec.name, name, cfg, pass_, case, device)
            if key in _verdicts or key in seen or (_store and _store.get(_store_key(key, spec, name, cfg, impl))):
                continue
            if impl.backend in TUNES_ON_FIRST_LAUNCH and (name, _size(spec.full_shape(case.shape))) in timed:
                continue
            seen.add(key)
            size = json.dumps([name, cfg, pass_, case.shape, case.dtype], sort_keys=True, default=str)
            tasks.setdefault(size, []).append((spec, name, impl, cfg, case, pass_))
            impls.add(ahead_key(name, cfg, dtype))
    if not pooled:
        return {"cases": 0, "tasks": 0, "workers": 0, "parallel": False, "s": 0.0, "here_cases": 0, "here_s": 0.0,
                "failed": {}, "impls": set()}

    failed: dict[str, str] = {}

    def warm(calls):
        for spec, name, impl, cfg, case, pass_ in calls:
            try:
                inputs, gen = _case_inputs(spec, case, device, seed)
                fn = spec.wrap(impl.fn, case.shape)
                inp = inputs.detached(requires_grad=(pass_ == "fwd+bwd"))   # as checking.run_once calls it
                out = fn(*inp.args, **inp.kwargs, **cfg)
                if pass_ == "fwd+bwd":
                    checking.backward(out, checking.grad_out_for(out, gen))
                if device.startswith("cuda"):
                    torch.cuda.synchronize()   # a kernel's fault shows here, in this try, not in the sweep
            except registry.Unsupported:   # declined: the judged case lists it
                pass
            except Exception as e:  # noqa: BLE001 - the judged case reports it
                # named here too: a fault that leaves the GPU unusable would be pinned on the next point's row
                failed.setdefault(name, (f"{type(e).__name__}: {e}".splitlines() or [""])[0][:200])

    t0 = time.perf_counter()
    workers = workers or max(1, min(8, (os.cpu_count() or 2) // 2, len(pooled)))
    init = (torch.cuda.set_device, (torch.cuda.current_device(),)) if device.startswith("cuda") else (None, ())
    with tunecap.one_config(), cutile_env.parallel_compiles() as parallel:
        pool = ThreadPoolExecutor(workers, thread_name_prefix="battery-prewarm", initializer=init[0],
                                  initargs=init[1])   # a new thread's current GPU is GPU 0, not the sweep's
        try:
            # the longest first: a fwd+bwd task compiles more kernels than a forward one
            futures = [pool.submit(warm, calls) for calls in
                       sorted(pooled.values(), key=lambda calls: calls[0][5] != "fwd+bwd")]
            t1 = time.perf_counter()
            with _no_inductor_disk_cache():   # a pick the pool's kernels disturbed stays in this process
                for calls in here.values():
                    warm(calls)
            here_s = time.perf_counter() - t1
            for f in futures:
                f.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)   # Ctrl-C: the queued tasks are dropped
    n_pooled = sum(map(len, pooled.values()))
    return {"cases": n_pooled, "tasks": len(pooled), "workers": workers, "parallel": parallel and workers > 1,
            "s": round(time.perf_counter() - t0, 3), "here_cases": len(seen) - n_pooled, "here_s": round(here_s, 3),
            "failed": failed, "impls": impls}


def _no_inductor_disk_cache():
    """Inductor writes a reduction's first-launch pick and its compiled graphs to its on-disk cache, where a later run
    timing that size would find them: off while the pool's kernels disturb the picks (the pool uses no inductor)."""
    try:
        from torch._inductor import config
    except ImportError:
        return contextlib.nullcontext()
    return config.patch({k: False for k in ("autotune_local_cache", "fx_graph_cache") if hasattr(config, k)})


def _size(shape: dict) -> str:
    return json.dumps(shape, sort_keys=True, default=str)


def ahead_key(name: str, cfg: dict, dtype: str) -> str:
    return json.dumps([name, cfg, dtype], sort_keys=True, default=str)


def into_row(row: dict, verdicts: list[Verdict]) -> Verdict | None:
    """The battery's columns (`stress`: regime -> verdict, `stress_declined`), and the failing verdict if any."""
    row["stress"] = {v.regime: v.text() for v in verdicts}
    row["stress_declined"] = [v.regime for v in verdicts if v.status == "declined"]
    row["stress_kept"] = sum(v.kept is not None for v in verdicts)
    bad = [v for v in verdicts if v.status not in ("ok", "declined")]
    return bad[0] if bad else None


def clear() -> None:
    _verdicts.clear()
