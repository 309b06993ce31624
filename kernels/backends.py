"""Availability probes per toolchain: None when it can run on a device, else a one-line reason.

Probes run once per (backend, device) and never raise: an unavailable backend is data, not a crash.
"""
from __future__ import annotations

import functools
import importlib
import os

import torch


def cuda_ok(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


def interpreting() -> bool:
    """Triton kernels run on the CPU under its interpreter (slow; for correctness only)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _import_error(module: str) -> str | None:
    try:
        importlib.import_module(module)
        return None
    except Exception as e:   # any failure while importing is the recorded reason (impl unavailable)
        return f"{module} not importable: {type(e).__name__}: {e}"


@functools.lru_cache(maxsize=None)
def probe(backend: str, device: str) -> str | None:
    fn = _PROBES.get(backend)
    if fn is None:
        return f"unknown backend {backend!r}"
    try:
        return fn(device)
    except Exception as e:  # a probe must never take the harness down
        return f"{backend} probe failed: {type(e).__name__}: {e}"


def _torch(device: str) -> str | None:
    return cuda_ok(device)


def _torch_cuda_only(device: str) -> str | None:
    if not device.startswith("cuda"):
        return "needs a CUDA device"
    return cuda_ok(device)


def _triton(device: str) -> str | None:
    err = _import_error("triton")
    if err:
        return err
    if device.startswith("cuda"):
        if interpreting():
            return "TRITON_INTERPRET=1 is set: Triton would run its CPU interpreter, not the GPU"
        return cuda_ok(device)
    if not interpreting():
        return "no CUDA device (set TRITON_INTERPRET=1 to run Triton's interpreter on the CPU, small shapes only)"
    return None


def _cutile(device: str) -> str | None:
    from kernels import cutile_env
    return cutile_env.why_not_runnable(device)


def _tilegym(device: str) -> str | None:
    from kernels import peers_env
    return peers_env.tilegym_why_not(device)


def _liger(device: str) -> str | None:
    err = _import_error("liger_kernel")
    if err:
        return err
    if not device.startswith("cuda"):
        return "needs a CUDA device (Liger-Kernel is Triton on the GPU)"
    return _triton(device)


_PROBES = {
    "eager": _torch,
    "torch": _torch,
    "torch_cuda": _torch_cuda_only,
    "compile": _torch,
    "triton": _triton,
    "cutile": _cutile,
    "tilegym": _tilegym,
    "liger": _liger,
}
