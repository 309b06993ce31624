"""Profiler ranges per op: "op:NAME" around each forward call, and with Backend.profile_ranges on an
"op:NAME:bwd" range around the op's backward, so a profile groups a whole step's kernel time by op
(bench/measure/e2e.py reads them). Each range is seen by both profilers: torch.profiler's record_function (the e2e
per-op breakdown, --profile traces) and, on a CUDA machine, NVTX, so Nsight Systems users see op names on the
timeline. NVTX start/end rather than push/pop: a backward range opens and closes in autograd's callbacks,
which may interleave with other ranges and run on autograd's own thread."""
from __future__ import annotations

import functools

import torch
from torch.profiler import record_function


@functools.lru_cache(maxsize=None)
def nvtx_enabled() -> bool:
    return torch.cuda.is_available()


class op_range:
    """record_function(name) plus an NVTX range of the same name."""

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


def forward_range(op: str):
    return op_range(f"op:{op}")


class _RangeState:
    __slots__ = ("name", "rf")

    def __init__(self, name):
        self.name, self.rf = name, None


_open_ranges: list[_RangeState] = []


class _Mark(torch.autograd.Function):
    """A no-op on tensors whose backward opens the range (on the op's outputs: it runs just before the op's own
    backward) or closes it (on the op's inputs: it runs once all of them have their gradients)."""
    @staticmethod
    def forward(ctx, state, opening, *ts):
        ctx.state, ctx.opening = state, opening
        return tuple(t.view_as(t) for t in ts)

    @staticmethod
    def backward(ctx, *grads):
        (_open if ctx.opening else _close)(ctx.state)
        return (None, None, *grads)


def _open(st: _RangeState) -> None:
    if st.rf is None:
        st.rf = op_range(st.name)
        st.rf.__enter__()
        _open_ranges.append(st)


def _close(st: _RangeState) -> None:
    if st.rf is not None:
        st.rf.__exit__(None, None, None)
        st.rf = None
        if st in _open_ranges:
            _open_ranges.remove(st)


def close_open_ranges() -> None:
    """Close backward ranges an unusual graph left open (call after backward while profiling)."""
    for st in list(_open_ranges):
        _close(st)


def backward_range_inputs(op: str, args) -> tuple[_RangeState, list]:
    """The op's args with the closing node on those that need gradients, and the range's state for
    backward_range_outputs."""
    state = _RangeState(f"op:{op}:bwd")
    idx = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
    args = list(args)
    for i, m in zip(idx, _Mark.apply(state, False, *(args[i] for i in idx))):
        args[i] = m
    return state, args


def backward_range_outputs(state: _RangeState, out):
    """out (a tensor, or a tuple of them: add_layer_norm's (sum, normed)) with the opening node on its tensors
    that carry gradients."""
    if isinstance(out, torch.Tensor):
        return _Mark.apply(state, True, out)[0]
    out = list(out)
    idx = [i for i, t in enumerate(out) if isinstance(t, torch.Tensor) and t.requires_grad]
    for i, m in zip(idx, _Mark.apply(state, True, *(out[i] for i in idx))):
        out[i] = m
    return tuple(out)
