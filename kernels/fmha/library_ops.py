"""fmha's torch.library ops (kernels/library.py), one registration for every backend that has them:
`tilebench::fmha_fwd_<backend>` and `tilebench::fmha_bwd_<backend>`, their fakes, CPU stand-ins and autograd, and
the `traced` entry that calls them. A backend hands over what is its own: its forward and backward host code,
how it fills its tile config, the head dims it refuses and its per-arch config check. Both backends' are opaque
custom ops (kernels/fmha/triton.py says why Triton's are not triton_ops).

The backward op returns dQ, dK, dV as one (B, T, 3, H, D) buffer (layout.packed_grads): an op's outputs may not
alias each other."""
import math
from typing import Callable

import torch

from kernels import library
from kernels.fmha import eager, layout
from kernels.registry import Unsupported


def register(backend: str, *, forward: Callable, backward: Callable, config_for: Callable,
             head_dim_refusal: Callable, check: Callable, triton: bool = False, interpreted: bool = False) -> tuple:
    """(FWD_OP, BWD_OP, traced) of `backend`.

    forward(q, k, v, causal, scale, cfg) -> (o, lse (B*H, T) fp32); backward(q, k, v, o, lse, do, causal, scale,
    cfg, grads=(dq, dk, dv)) writes the gradients into grads. config_for(q, cfg) -> the full tile config for q.
    head_dim_refusal(D) -> None or why the kernels do not take head dim D. check(full config, causal): raises
    Unsupported for a config the arch refuses, run by `traced` only at trace time (library.CHECKING). triton: the
    ops are triton_ops (forward and backward launch only through library.kernel; pass named
    functions then, not lambdas: torch reads the source of what an op body calls to find its Triton kernels).
    interpreted: opaque ops whose Triton kernels run under the interpreter on a CPU (library.define)."""

    def fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float,
            config: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(o, lse (B*H, T) fp32) of q, k, v (B, H, T, D) with unit last stride."""
        return forward(q, k, v, causal, scale, config_for(q, library.config(config)))

    def bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
            lse: torch.Tensor, causal: bool, scale: float, config: str) -> torch.Tensor:
        buf, grads = layout.packed_grads(q)
        backward(q, k, v, o, lse, do, causal, scale, config_for(q, library.config(config)), grads=grads)
        return buf

    kinds = dict(triton=triton, interpreted=interpreted)
    fwd_op = library.define(f"fmha_fwd_{backend}", fwd, alloc=_alloc_fwd, standin=_standin_fwd, **kinds)
    bwd_op = library.define(f"fmha_bwd_{backend}", bwd, alloc=_alloc_bwd, standin=_standin_bwd, **kinds)

    def setup_context(ctx, inputs, output):
        q, k, v, causal, scale, config = inputs
        ctx.save_for_backward(q, k, v, *output)
        ctx.causal, ctx.scale, ctx.config = causal, scale, config

    def backward_op(ctx, do, _dlse):
        q, k, v, o, lse = ctx.saved_tensors
        buf = bwd_op(_unit_last(do), q, k, v, o, lse, ctx.causal, ctx.scale, ctx.config)
        return buf[:, :, 0].transpose(1, 2), buf[:, :, 1].transpose(1, 2), buf[:, :, 2].transpose(1, 2), None, None, \
            None

    library.autograd(fwd_op, backward_op, setup_context)

    def traced(q, k, v, causal=True, scale=None, *, config):
        """fmha through the library ops (torch.compile traces this; config: library.config_json)."""
        B, H, T, D = q.shape
        if k.shape != q.shape or v.shape != q.shape or not (q.dtype == k.dtype == v.dtype):
            raise Unsupported(f"q, k, v must share shape and dtype, got {tuple(q.shape)}, {tuple(k.shape)}, "
                              f"{tuple(v.shape)}")
        why = head_dim_refusal(D)
        if why:
            raise Unsupported(why)
        if library.CHECKING:   # per-arch config checks: at trace time only (see kernels/library.py)
            check(config_for(q, library.config(config)), causal)
        sm_scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
        return fwd_op(_unit_last(q), _unit_last(k), _unit_last(v), causal, sm_scale, config)[0]

    return fwd_op, bwd_op, traced


def _unit_last(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def _alloc_fwd(q, k, v, causal, scale, config):
    return layout.out_alloc(q), q.new_empty(q.shape[0] * q.shape[1], q.shape[2], dtype=torch.float32)


def _alloc_bwd(do, q, k, v, o, lse, causal, scale, config):
    B, H, T, D = q.shape
    return q.new_empty(B, T, 3, H, D)


def _standin_fwd(q, k, v, causal, scale, config):
    return eager.standin_fwd(q, k, v, causal, scale)


def _standin_bwd(do, q, k, v, o, lse, causal, scale, config):
    return eager.standin_bwd(do, q, k, v, o, lse, causal, scale)
