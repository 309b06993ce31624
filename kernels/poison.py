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


# Requests up to 1 MiB come from the caching allocator's small pool (2 MiB segments), larger ones from the large
# pool; a free block of either kind is refilled by asking for exactly its size.
_SMALL_REQUEST = 1 << 20
_RESERVE = 256 << 20     # fresh headroom, NaN-filled too, so outputs that need new memory also land on NaN


def poison_free_memory(device) -> None:
    """Fill every free block of the CUDA caching allocator (plus a reserve) with NaN, so an output any impl
    allocates, peers with their own torch.empty included, holds NaN until written: a freed buffer that held the
    right answer (eager's, or the impl's own earlier call) can no longer pass for an unwritten one. No-op on CPU."""
    if not str(device).startswith("cuda"):
        return
    dev = torch.device(device)
    torch.cuda.synchronize(dev)
    held = [torch.empty(_RESERVE, dtype=torch.uint8, device=dev)]
    for seg in torch.cuda.memory_snapshot():
        if seg.get("device") != (dev.index if dev.index is not None else torch.cuda.current_device()):
            continue
        for block in seg["blocks"]:
            if block["state"] != "inactive":
                continue
            size = block["size"]
            step = _SMALL_REQUEST if seg["segment_type"] == "small" else size
            for _ in range(size // step):
                held.append(torch.empty(step, dtype=torch.uint8, device=dev))
    for t in held:
        t.fill_(0xFF)       # 0xFFFF.. is a NaN in fp16, bf16, fp32 and fp64 alike (-1 as an integer)
    torch.cuda.synchronize(dev)
    del held
