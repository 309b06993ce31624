"""gelu's torch.library ops (kernels/library.py), one registration for every backend that has them:
`tilebench::gelu_fwd_<backend>` and `tilebench::gelu_bwd_<backend>`, their fakes, CPU stand-ins and autograd, and
the `traced` entry that calls them. A backend hands over what is its own: its forward and backward host code, how
it fills its tile config and how it lays out rows. Triton's are triton_ops, cuTile's opaque custom ops."""
from typing import Callable, Optional

import torch

from kernels import library
from kernels.gelu import eager


def register(backend: str, *, forward: Callable, backward: Callable, config_for: Callable, rows: Callable,
             triton: bool = False) -> tuple:
    """(FWD_OP, BWD_OP, traced) of `backend`.

    forward(x2, bias, cfg) -> tanh-GELU(x2 + bias); backward(x2, bias, dy2, cfg, need_db) -> (dx, db or None), both
    on rows (M, C) as rows(t, C) lays them out. config_for(x, cfg) -> the full tile config for x. triton: the ops
    are triton_ops (forward and backward launch only through library.kernel; pass named functions then, not
    lambdas: torch reads the source of what an op body calls to find its Triton kernels)."""

    def fwd(x: torch.Tensor, bias: Optional[torch.Tensor], config: str) -> torch.Tensor:
        """tanh-GELU(x + bias) of rows x (M, C), laid out by the backend's rows()."""
        return forward(x, bias, config_for(x, library.config(config)))

    def bwd(dy: torch.Tensor, x: torch.Tensor, bias: Optional[torch.Tensor], need_db: bool,
            config: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(dx, db); db is empty when not wanted (an op's outputs are tensors)."""
        dx, db = backward(x, bias, dy, config_for(x, library.config(config)), need_db)
        return dx, db if db is not None else _db_like(x, bias, False)

    fwd_op = library.define(f"gelu_fwd_{backend}", fwd, triton=triton, alloc=_alloc_fwd, standin=_standin_fwd)
    bwd_op = library.define(f"gelu_bwd_{backend}", bwd, triton=triton, alloc=_alloc_bwd, standin=_standin_bwd)

    def setup_context(ctx, inputs, output):
        x, bias, config = inputs
        ctx.save_for_backward(x, bias)
        ctx.config = config

    def backward_op(ctx, dy):
        x, bias = ctx.saved_tensors
        need_db = bias is not None and ctx.needs_input_grad[1]
        dx, db = bwd_op(rows(dy, x.shape[1]), x, bias, need_db, ctx.config)
        return dx, (db if need_db else None), None

    library.autograd(fwd_op, backward_op, setup_context)

    def traced(x, bias=None, *, config):
        """gelu through the library ops (torch.compile traces this; config: library.config_json)."""
        b = bias.contiguous() if bias is not None else None
        return fwd_op(rows(x, x.shape[-1]), b, config).view(x.shape)

    return fwd_op, bwd_op, traced


def _db_like(x, bias, need_db):
    return x.new_empty(x.shape[1] if need_db else 0, dtype=bias.dtype if bias is not None else x.dtype)


def _alloc_fwd(x, bias, config):
    return x.new_empty(x.shape)


def _alloc_bwd(dy, x, bias, need_db, config):
    return x.new_empty(x.shape), _db_like(x, bias, need_db)


def _standin_fwd(x, bias, config):
    return eager.standin_fwd(x, bias)


def _standin_bwd(dy, x, bias, need_db, config):
    return eager.standin_bwd(dy, x, bias, need_db)
