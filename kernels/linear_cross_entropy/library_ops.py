"""linear_cross_entropy's torch.library op (kernels/library.py), one per backend that has it:
`tilebench::linear_cross_entropy_fwd_<backend>`, an opaque custom op (the chunk loop writes in place into one reused
logits buffer, kernels/linear_cross_entropy/chunks.py). As the chunk loop computes dx and dW in the forward, the op
returns them beside the loss; the registered backward scales them by the loss's gradient in plain torch ops, which
inductor sees. The logits never exist whole, under torch.compile too."""
from typing import Callable

import torch
import torch.nn.functional as F

from kernels import library
from kernels.linear_cross_entropy import chunks
from kernels.linear_cross_entropy.spec import IGNORE_INDEX


def register(backend: str, *, ce_rows_for: Callable, config_for: Callable, interpreted: bool = False) -> tuple:
    """(FWD_OP, traced) of `backend`. ce_rows_for(cfg) -> the impl's chunk step (chunks.py's ce_rows);
    config_for(x, cfg) -> the full tile config for x. interpreted: the chunk step's kernels are Triton's, run under
    the interpreter on a CPU (library.define)."""

    def fwd(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int, want_dx: bool,
            want_dw: bool, config: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, dx or empty, dW or empty) of rows x (M, K), weight (V, K), targets (M,)."""
        cfg = config_for(x, library.config(config))
        with torch.autocast(x.device.type, enabled=False):   # the Backend already cast what autocast would
            loss, dx, dw = chunks.fused_forward(x, weight, targets, ignore_index, cfg["CHUNK_ROWS"],
                                                ce_rows_for(cfg), want_dx, want_dw, cfg.get("DW_FP32") is not False)
        return loss, (dx if dx is not None else x.new_empty(0)), (dw if dw is not None else weight.new_empty(0))

    fwd_op = library.define(f"linear_cross_entropy_fwd_{backend}", fwd, alloc=_alloc, standin=_standin,
                            interpreted=interpreted)

    def setup_context(ctx, inputs, output):
        _, dx, dw = output
        ctx.save_for_backward(dx, dw)

    def backward_op(ctx, g, _gdx, _gdw):
        dx, dw = ctx.saved_tensors
        g = g.float()   # the products in fp32: a bf16 tensor times a 0-dim fp32 g would round g to bf16 first
        gx = (dx.float() * g).to(dx.dtype) if dx.numel() else None
        gw = (dw.float() * g).to(dw.dtype) if dw.numel() else None
        return gx, gw, None, None, None, None, None

    library.autograd(fwd_op, backward_op, setup_context)

    def traced(x, weight, targets, ignore_index=IGNORE_INDEX, *, config):
        """linear_cross_entropy through the library op (torch.compile traces this; config: library.config_json)."""
        chunks.check_args(x, weight, targets)
        if library.CHECKING:   # at trace time: a config this GPU's arch refuses falls back before the graph is made
            config_for(x, library.config(config))
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        grad = torch.is_grad_enabled()   # a weight is a Parameter under no_grad too: no dW in evaluation
        loss, _, _ = fwd_op(x2, weight.contiguous(), targets.reshape(-1).contiguous(), int(ignore_index),
                            grad and x.requires_grad, grad and weight.requires_grad, config)
        return loss

    return fwd_op, traced


def _alloc(x, weight, targets, ignore_index, want_dx, want_dw, config):
    dw_dtype = weight.dtype
    return (torch.empty((), dtype=torch.float32, device=x.device),
            x.new_empty(x.shape if want_dx else (0,)),
            weight.new_empty(weight.shape if want_dw else (0,), dtype=dw_dtype))


def _standin(x, weight, targets, ignore_index, want_dx, want_dw, config):
    """The eager math in fp32 and its gradients in closed form (an op body records no autograd graph):
    dlogits = (softmax - onehot) / valid rows, 0 on ignored rows."""
    logits = F.linear(x.float(), weight.float())
    loss = F.cross_entropy(logits, targets, ignore_index=ignore_index)
    valid = targets != ignore_index
    dl = torch.softmax(logits, dim=-1)
    dl[valid, targets[valid]] -= 1
    dl = dl * valid.unsqueeze(1) / valid.sum().clamp(min=1)
    dx = (dl @ weight.float()).to(x.dtype) if want_dx else x.new_empty(0)
    dw = (dl.t() @ x.float()).to(weight.dtype) if want_dw else weight.new_empty(0)
    return loss, dx, dw
