"""Output allocation for our kernels. The correctness gate turns poisoning on, so every output
element a kernel fails to write stays NaN and fails the check instead of passing on stale memory."""
from __future__ import annotations

import contextlib
import threading

import torch

_state = threading.local()


def poisoning() -> bool:
    return getattr(_state, "on", False)


@contextlib.contextmanager
def poisoned():
    prev = poisoning()
    _state.on = True
    try:
        yield
    finally:
        _state.on = prev


def empty(*shape, dtype, device) -> torch.Tensor:
    """torch.empty, but NaN-filled (or all-ones bits for integers) while the correctness gate runs."""
    t = torch.empty(*shape, dtype=dtype, device=device)
    if poisoning():
        t.fill_(float("nan") if t.is_floating_point() else -1)
    return t


def empty_like(x: torch.Tensor, dtype=None) -> torch.Tensor:
    return empty(*x.shape, dtype=dtype or x.dtype, device=x.device)
