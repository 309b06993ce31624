"""Compile the cuTile and Triton kernels ahead of time for GPU generations this machine need not have.

By default each impl's default config: every None parameter resolves per arch to that generation's preset
(kernels/aot.py FAMILY), so this is what runs on each GPU. `presets` adds named presets or tuning configs (`all`:
every preset of each impl). One task per (op, impl, config, arch), spread over worker processes; each task's rows
are appended to the store as it finishes, so a killed run keeps what it compiled.

The workers share two on-disk things: Triton's cache directory (entries written to a temporary file and renamed
into place, safe to share) and, only with TILEBENCH_CUTILE_AOT_CACHE=1, cuda.tile's cubin cache (an sqlite
database made for concurrent processes). cuda.tile's other state (its settings, its temporary directory, whose
file names are unique) is per process."""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from bench.measure import devinfo
from kernels import registry
from kernels.rows import SCHEMA_VERSION

ARCHS = ("sm_80", "sm_89", "sm_90", "sm_100", "sm_120")
ALL_PRESETS = "all"   # --preset all: every preset of each impl (not its tuning configs)


def targets(ops=None, impls=None):
    """(op, impl name, KernelImpl | None, reason) for every impl that can compile ahead of time."""
    for op in ops or registry.OPS:
        for name in registry.impl_names(op):
            if impls and name not in impls:
                continue
            impl, err = registry._import_impl(op, name)
            if impl is None:
                backend = registry._backend_of_ref(op, name)
                if backend in ("triton", "cutile"):
                    yield op, name, None, err
                continue
            if impl.backend in ("triton", "cutile"):
                yield op, name, impl, None if impl.aot else "no aot() defined"


def configs(impl, names=(), quick=False) -> list[tuple[str, dict]]:
    """(label, overrides) to compile for an impl: its default, then each of `names` it has as a preset or tuning
    config (`all`: every preset), each once. quick: the default alone."""
    out = {"default": {}}
    if impl is not None and not quick:
        for n in names:
            if n == ALL_PRESETS:
                out.update((k, dict(v)) for k, v in impl.presets.items() if k not in out)
            elif impl.named(n) is not None and n not in out:
                out[n] = impl.named(n)
    return list(out.items())


def unknown_names(names, ops=None, impls=None) -> list[str]:
    """The names no selected impl has as a preset or tuning config (`all` is always known)."""
    known = set()
    for _, _, impl, _ in targets(ops, impls):
        if impl is not None:
            known |= set(impl.presets) | set(impl.tuning)
    return [n for n in names if n != ALL_PRESETS and n not in known]


def compile_one(op: str, name: str, cfg: dict, arch: str) -> list[dict]:
    """impl.aot for one config and arch, in this process (a worker): its rows, or one compile_error row if it
    raised (aot should not; if it does, that is still one row)."""
    impl, err = registry._import_impl(op, name)
    t0 = time.perf_counter()
    try:
        if impl is None:
            raise ImportError(err)
        return impl.aot(impl.config(cfg), arch) or []
    except Exception as e:   # noqa: BLE001 - a task's failure is its row, never the run's
        return [_failed(e, time.perf_counter() - t0)]


def _failed(e: BaseException, seconds: float | None = None) -> dict:
    first = str(e).splitlines()[0] if str(e) else ""
    return {"kernel": "*", "status": "compile_error", "message": f"{type(e).__name__}: {first}"[:500],
            "compile_s": seconds}


def run(archs, store, ops=None, impls=None, quick=False, presets=(), jobs=None, progress=True) -> list[dict]:
    """Compile and append one row per kernel to `store`; returns the rows. jobs: worker processes (None: one per
    CPU; 1: this process, no workers)."""
    meta = {k: v for k, v in devinfo.static_info("cpu").items() if k not in ("device", "arch")}
    rows, tasks = [], []

    def keep(base, results):
        for r in results:
            row = {**base, **r}
            row["point_id"] += f":{r.get('kernel')}"
            row.setdefault("message", "")
            store.append(row)
            rows.append(row)
            if progress:
                extra = f"{r.get('compile_s', 0) or 0:.2f}s" if r.get("status") == "ok" else (r.get("message") or "")[:100]
                print(f"static {base['arch']} {base['op']}/{base['impl']} [{base['preset']}] {r.get('kernel')}: "
                      f"{r.get('status')} {extra}", file=sys.stderr, flush=True)

    for op, name, impl, reason in targets(ops, impls):
        for label, cfg in configs(impl, presets, quick):
            for arch in archs:
                base = {"mode": "static", "op": op, "impl": name, "preset": label, "arch": arch,
                        "point_id": f"static:{op}:{name}:{label}:{arch}", "date": devinfo.now_iso(),
                        "schema_version": SCHEMA_VERSION,
                        **{k: v for k, v in meta.items() if k not in ("device", "arch")},
                        "device_name": f"aot {arch}"}
                if impl is None or reason:
                    keep(base, [{"kernel": "*", "status": "unavailable", "message": reason}])
                else:
                    tasks.append((base, (op, name, cfg, arch)))
    # cuTile's tasks first: tileiras takes longest per kernel, and a long task last would leave the others idle
    tasks.sort(key=lambda t: registry._backend_of_ref(t[0]["op"], t[0]["impl"]) != "cutile")
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks) or 1))
    if jobs == 1:
        for base, args in tasks:
            keep(base, compile_one(*args))
        return rows
    pool = ProcessPoolExecutor(max_workers=jobs)
    done = False
    try:
        futures = {pool.submit(compile_one, *args): base for base, args in tasks}
        for fut in as_completed(futures):
            try:
                results = fut.result()
            except Exception as e:   # noqa: BLE001 - the worker died (BrokenProcessPool): this task's row says so
                results = [_failed(e)]
            keep(futures[fut], results)
        done = True
    finally:   # interrupted: drop the tasks not started; rows kept so far are in the store
        pool.shutdown(wait=done, cancel_futures=not done)
    return rows


def summary(rows, archs, seconds: float, jobs: int) -> str:
    """The closing line: how many kernels compiled, for which archs, in how long, on how many workers."""
    ok = sum(r.get("status") == "ok" for r in rows)
    line = f"static: {ok} kernels compiled for {','.join(archs)} in {seconds:.1f} s ({jobs} jobs)"
    other = {}
    for r in rows:
        if r.get("status") != "ok":
            other[r.get("status")] = other.get(r.get("status"), 0) + 1
    if other:
        line += "; not compiled: " + ", ".join(f"{n} {s}" for s, n in sorted(other.items()))
    return line
