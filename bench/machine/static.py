"""Compile every cuTile and Triton kernel, in every preset, for GPU generations this machine need not have."""
from __future__ import annotations

import sys
import time

from bench.measure import devinfo
from kernels import registry
from kernels.rows import SCHEMA_VERSION

ARCHS = ("sm_80", "sm_89", "sm_90", "sm_100", "sm_120")


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


def run(archs, store, ops=None, impls=None, quick=False, progress=True) -> list[dict]:
    meta = devinfo.static_info("cpu")
    rows = []
    for op, name, impl, reason in targets(ops, impls):
        presets = {"default": {}}
        if impl is not None and not quick:
            presets.update(impl.presets)
        for preset, cfg in presets.items():
            for arch in archs:
                base = {"mode": "static", "op": op, "impl": name, "preset": preset, "arch": arch,
                        "point_id": f"static:{op}:{name}:{preset}:{arch}", "date": devinfo.now_iso(),
                        "schema_version": SCHEMA_VERSION,
                        **{k: v for k, v in meta.items() if k not in ("device", "arch")},
                        "device_name": f"aot {arch}"}
                if impl is None or reason:
                    results = [{"kernel": "*", "status": "unavailable", "message": reason}]
                else:
                    t0 = time.perf_counter()
                    try:
                        results = impl.aot(impl.config(cfg), arch) or []
                    except Exception as e:  # aot should not raise; if it does, it is still one row
                        results = [{"kernel": "*", "status": "compile_error",
                                    "message": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500],
                                    "compile_s": time.perf_counter() - t0}]
                for r in results:
                    row = {**base, **r}
                    row["point_id"] += f":{r.get('kernel')}"
                    row.setdefault("message", "")
                    store.append(row)
                    rows.append(row)
                    if progress:
                        extra = f"{r.get('compile_s', 0) or 0:.2f}s" if r.get("status") == "ok" else (r.get("message") or "")[:100]
                        print(f"static {arch} {op}/{name} [{preset}] {r.get('kernel')}: {r.get('status')} {extra}",
                              file=sys.stderr, flush=True)
    return rows
