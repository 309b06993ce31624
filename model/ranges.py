"""An op's profiler range, seen by both profilers: torch.profiler's record_function (the e2e per-op
breakdown, --profile traces) and, on a CUDA machine, an NVTX range, so Nsight Systems users see op names
on the timeline. NVTX start/end rather than push/pop: a backward range opens and closes in autograd's
callbacks, which may interleave with other ranges and run on autograd's own thread."""
from __future__ import annotations

import functools

import torch
from torch.profiler import record_function


@functools.lru_cache(maxsize=None)
def nvtx_enabled() -> bool:
    return torch.cuda.is_available()


class op_range:
    def __init__(self, name: str):
        self.name, self.rf, self.nvtx_id = name, record_function(name), None

    def __enter__(self):
        self.rf.__enter__()
        if nvtx_enabled():
            self.nvtx_id = torch.cuda.nvtx.range_start(self.name)
        return self

    def __exit__(self, *exc):
        if self.nvtx_id is not None:
            torch.cuda.nvtx.range_end(self.nvtx_id)
            self.nvtx_id = None
        return self.rf.__exit__(*exc)
