"""Output allocation for our kernels. The correctness gate turns poisoning on, so every output
element a kernel fails to write stays NaN and fails the check instead of passing on stale memory."""
from __future__ import annotations

import contextlib
import threading

import torch

# One flag for the whole process, not per thread: on CUDA autograd runs backward on a thread of its own, and
# gradients allocated there must be poisoned too. A depth, so nested gates keep it on until the outermost ends.
_depth = 0
_lock = threading.Lock()


def poisoning() -> bool:
    return _depth > 0


@contextlib.contextmanager
def poisoned():
    global _depth
    with _lock:
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1


def empty(*shape, dtype, device) -> torch.Tensor:
    """torch.empty, but NaN-filled (or all-ones bits for integers) while the correctness gate runs."""
    t = torch.empty(*shape, dtype=dtype, device=device)
    if poisoning():
        t.fill_(float("nan") if t.is_floating_point() else -1)
    return t


def empty_like(x: torch.Tensor, dtype=None) -> torch.Tensor:
    return empty(*x.shape, dtype=dtype or x.dtype, device=x.device)


# Requests up to 1 MiB come from the caching allocator's small pool (2 MiB segments), larger ones from the large
# pool; a free block is refilled by asking for exactly its size (small ones whole, large ones whole or in 1 MiB +
# remainder pieces), largest first, so best-fit hands back that very block.
_SMALL_REQUEST = 1 << 20
_RESERVE = 256 << 20     # fresh headroom, NaN-filled too, so outputs that need new memory also land on NaN


def _requests(seg: dict) -> list[int]:
    sizes = []
    for block in seg["blocks"]:
        if block["state"] != "inactive":
            continue
        size = block["size"]
        if seg["segment_type"] == "small" and size > _SMALL_REQUEST:
            sizes += [_SMALL_REQUEST] * (size // _SMALL_REQUEST) + ([size % _SMALL_REQUEST] if size % _SMALL_REQUEST else [])
        else:
            sizes.append(size)
    return sizes


def poison_free_memory(device) -> None:
    """Fill every free block of the CUDA caching allocator's default pool on the current stream (plus a reserve)
    with NaN, so an output any impl allocates, peers with their own torch.empty included, holds NaN until written:
    a freed buffer that held the right answer (eager's, or the impl's own earlier call) can no longer pass for an
    unwritten one. Blocks of private pools (CUDA graphs) or other streams are not reachable this way. No-op on CPU."""
    if not str(device).startswith("cuda"):
        return
    dev = torch.device(device)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(index).cuda_stream
    torch.cuda.synchronize(dev)
    held = [torch.empty(_RESERVE, dtype=torch.uint8, device=dev)]
    sizes = []
    for seg in torch.cuda.memory_snapshot():
        if seg.get("device") != index or tuple(seg.get("segment_pool_id", (0, 0))) != (0, 0) \
                or seg.get("stream", stream) != stream:
            continue
        sizes += _requests(seg)
    for size in sorted((n for n in sizes if n > 0), reverse=True):
        held.append(torch.empty(size, dtype=torch.uint8, device=dev))
    for t in held:
        t.fill_(0xFF)       # 0xFFFF.. is a NaN in fp16, bf16, fp32 and fp64 alike (-1 as an integer)
    torch.cuda.synchronize(dev)
    del held
