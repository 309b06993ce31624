"""linear's torch.library ops (kernels/library.py), one registration for every backend that has them:
`tilebench::linear_fwd_<backend>` and `tilebench::linear_bwd_<backend>`, their fakes, CPU stand-ins and autograd,
and the `traced` entry that calls them. A backend hands over what is its own: how it runs the forward matmul,
its autograd.Function's backward, how it fills its tile config, how it lays out rows, and any per-arch config
check.

Opaque custom ops, not triton_ops: Triton's Hopper/Blackwell presets run the TMA kernel, whose descriptors are
built on the host (make_fx cannot capture them), and inductor fuses nothing into a matmul it did not write."""
import types
from typing import Callable, Optional

import torch

from kernels import library
from kernels.linear import eager
from kernels.registry import Unsupported


def register(backend: str, *, forward: Callable, backward: Callable, config_for: Callable, rows: Callable,
             check: Optional[Callable] = None) -> tuple:
    """(FWD_OP, BWD_OP, traced) of `backend`.

    forward(x, w, bias, gelu, keep_pre, cfg) -> (y, pre-activation or None): the forward matmul of rows x (M, K)
    and w (N, K). backward: the backend's autograd.Function.backward(ctx, dy), handed a ctx with the state its
    forward saves (saved_tensors (x, w, pre or None), needs_input_grad, has_bias, gelu, cfg, shape, bias_dtype).
    config_for(x, cfg) -> the full tile config for tensors like x. rows(t, C) -> t as (rows, C) the way the
    kernels take it. check(full config): raises Unsupported for a config the arch refuses, run by `traced` only at
    trace time (library.CHECKING)."""

    def fwd(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor], gelu: bool, keep_pre: bool,
            config: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, pre-activation (empty unless gelu and keep_pre)) of rows x (M, K); w (N, K), bias (N,) contiguous."""
        y, pre = forward(x, w, bias, gelu, keep_pre, config_for(x, library.config(config)))
        return y, pre if keep_pre and pre is not None else x.new_empty(0)

    def bwd(dy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, pre: torch.Tensor, gelu: bool, need_dx: bool,
            need_dw: bool, need_db: bool, config: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dx, dW, db), each empty where not wanted: the backend's own backward, handed the state it saves."""
        ctx = types.SimpleNamespace(saved_tensors=(x, w, pre if gelu else None),
                                    needs_input_grad=(need_dx, need_dw, need_db), has_bias=need_db, gelu=gelu,
                                    cfg=config_for(x, library.config(config)), shape=x.shape, bias_dtype=w.dtype)
        return tuple(g if g is not None else x.new_empty(0) for g in backward(ctx, dy)[:3])

    fwd_op = library.define(f"linear_fwd_{backend}", fwd, alloc=_alloc_fwd, standin=_standin_fwd)
    bwd_op = library.define(f"linear_bwd_{backend}", bwd, alloc=_alloc_bwd, standin=_standin_bwd)

    def setup_context(ctx, inputs, output):
        x, w, bias, gelu, keep_pre, config = inputs
        ctx.save_for_backward(x, w, output[1])
        ctx.gelu, ctx.has_bias, ctx.config = gelu, bias is not None, config

    def backward_op(ctx, dy, _dpre):
        x, w, pre = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx, dw, db = bwd_op(rows(dy, w.shape[0]), x, w, pre, ctx.gelu, need[0], need[1], ctx.has_bias and need[2],
                            ctx.config)
        return (dx if need[0] else None), (dw if need[1] else None), (db if ctx.has_bias and need[2] else None), \
            None, None, None

    library.autograd(fwd_op, backward_op, setup_context)

    def traced(x, weight, bias=None, activation=None, *, config):
        """linear through the library ops (torch.compile traces this; config: library.config_json)."""
        if activation not in (None, "gelu"):
            raise Unsupported(f"activation {activation!r} (takes None or 'gelu')")
        if weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
            raise Unsupported(f"dtypes x {x.dtype}, weight {weight.dtype}, "
                              f"bias {bias.dtype if bias is not None else None}")
        if check is not None and library.CHECKING:   # per-arch config checks: at trace time only (kernels/library.py)
            check(config_for(x, library.config(config)))
        K = x.shape[-1]
        gelu = activation == "gelu"
        grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or
                                            (bias is not None and bias.requires_grad))
        b = bias.contiguous() if bias is not None else None
        y = fwd_op(rows(x, K), weight.contiguous(), b, gelu, gelu and grad, config)[0]
        return y.view(*x.shape[:-1], weight.shape[0])

    return fwd_op, bwd_op, traced


def _alloc_fwd(x, w, bias, gelu, keep_pre, config):
    M, N = x.shape[0], w.shape[0]
    return x.new_empty(M, N), x.new_empty((M, N) if gelu and keep_pre else (0,))


def _alloc_bwd(dy, x, w, pre, gelu, need_dx, need_dw, need_db, config):
    return (x.new_empty(x.shape if need_dx else (0,)), w.new_empty(w.shape if need_dw else (0,)),
            w.new_empty(w.shape[0] if need_db else 0))


def _standin_fwd(x, w, bias, gelu, keep_pre, config):
    return eager.standin_fwd(x, w, bias, gelu, keep_pre)


def _standin_bwd(dy, x, w, pre, gelu, need_dx, need_dw, need_db, config):
    return eager.standin_bwd(dy, x, w, pre, gelu, need_dx, need_dw, need_db)
