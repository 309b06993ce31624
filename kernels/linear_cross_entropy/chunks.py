"""The row-chunk loop the fused impls share (the Liger approach).

For each chunk of rows: logits = x_c @ W^T into one reused (CHUNK_ROWS, V) buffer; a cross-entropy step
writes the rows' losses and overwrites the buffer with dlogits = (softmax - onehot) / n_valid in the
logits' dtype; then dx_c = dlogits @ W and dW += dlogits^T @ x_c. The gradients are complete when the
forward returns; the backward only scales them by grad_output. Memory: one chunk of logits, dx and dW,
never the (M, V) logits.

An impl supplies ce_rows(logits, targets, loss_rows, n_valid, ignore_index, grad), in place on the logits
when grad, and scale_(t, g): t *= g for a device scalar g (ideally skipped on the device when g == 1).
"""
import torch

from kernels import poison
from kernels.registry import Unsupported


def _addmm_fp32_ok(t: torch.Tensor) -> bool:
    # addmm(out_dtype=fp32) accumulates a bf16/fp16 product into an fp32 dW in one cuBLAS call (CUDA only)
    return t.device.type == "cuda" and t.dtype in (torch.bfloat16, torch.float16)


def _acc_dw(dw, dl_t, xc, first: bool):
    if dw.dtype == dl_t.dtype:
        torch.addmm(dw, dl_t, xc, beta=0 if first else 1, out=dw)   # beta=0: dw's old (poisoned) values unread
    elif _addmm_fp32_ok(dl_t):
        torch.addmm(dw, dl_t, xc, beta=0 if first else 1, out_dtype=torch.float32, out=dw)
    else:   # CPU: a product-sized fp32 temporary per chunk
        p = torch.mm(dl_t, xc).float()
        dw.copy_(p) if first else dw.add_(p)


def fused_forward(x2, w, targets, ignore_index, chunk_rows, ce_rows, want_dx, want_dw, dw_fp32=True):
    """(loss, dx or None, dW or None) for x2 (M, K) contiguous, w (V, K), targets (M,)."""
    M, K = x2.shape
    V = w.shape[0]
    dev = x2.device
    n_valid = (targets != ignore_index).sum()   # stays on the device: no sync
    loss_rows = poison.empty(M, dtype=torch.float32, device=dev)
    rows = max(1, min(chunk_rows, M))
    buf = torch.empty(rows, V, dtype=x2.dtype, device=dev)
    grad = want_dx or want_dw
    dx = poison.empty(M, K, dtype=x2.dtype, device=dev) if want_dx else None
    dw = None
    if want_dw:
        dw = poison.empty(V, K, dtype=torch.float32 if dw_fp32 and w.dtype != torch.float32 else w.dtype, device=dev)
    wt = w.t()
    for i, s in enumerate(range(0, M, rows)):
        e = min(s + rows, M)
        xc, lg = x2[s:e], buf[: e - s]
        torch.mm(xc, wt, out=lg)
        ce_rows(lg, targets[s:e], loss_rows[s:e], n_valid, ignore_index, grad)     # lg now holds dlogits if grad
        if want_dx:
            torch.mm(lg, w, out=dx[s:e])
        if want_dw:
            _acc_dw(dw, lg.t(), xc, first=i == 0)
    del buf
    loss = loss_rows.sum() / n_valid
    if dw is not None and dw.dtype != w.dtype:
        dw = dw.to(w.dtype)
    return loss, dx, dw


class FusedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, targets, ignore_index, cfg, ce_rows, scale_):
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        with torch.autocast(x.device.type, enabled=False):   # the Backend already cast what autocast would
            loss, dx, dw = fused_forward(x2, w, targets.reshape(-1).contiguous(), ignore_index, cfg["CHUNK_ROWS"],
                                         ce_rows, x.requires_grad, w.requires_grad, cfg.get("DW_FP32", True))
        ctx.save_for_backward(*(t for t in (dx, dw) if t is not None))
        ctx.has = (dx is not None, dw is not None)
        ctx.x_shape, ctx.scale_ = x.shape, scale_
        return loss

    @staticmethod
    def backward(ctx, g):
        saved = list(ctx.saved_tensors)
        dx = saved.pop(0) if ctx.has[0] else None
        dw = saved.pop(0) if ctx.has[1] else None
        g = g.reshape(1).to(torch.float32)
        # in place: the stashed gradients are ours alone (a second backward through this graph is not supported)
        for t in (dx, dw):
            if t is not None:
                ctx.scale_(t, g)
        return (dx.view(ctx.x_shape) if dx is not None else None), dw, None, None, None, None, None


def check_args(x, w, targets):
    if x.shape[-1] != w.shape[-1] or w.dim() != 2:
        raise Unsupported(f"x (..., K) and weight (V, K), got {tuple(x.shape)}, {tuple(w.shape)}")
    if x.dtype != w.dtype:
        raise Unsupported(f"dtypes x {x.dtype}, weight {w.dtype}")
    if targets.numel() != x.numel() // x.shape[-1]:
        raise Unsupported(f"targets {tuple(targets.shape)} for {x.numel() // x.shape[-1]} rows")


def apply(x, w, targets, ignore_index, cfg, ce_rows, scale_):
    """The op through the chunk loop: an autograd.Function when a gradient is wanted, else the loop alone."""
    check_args(x, w, targets)
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        return FusedLinearCE.apply(x, w, targets, ignore_index, cfg, ce_rows, scale_)
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    with torch.autocast(x.device.type, enabled=False):
        return fused_forward(x2, w, targets.reshape(-1).contiguous(), ignore_index, cfg["CHUNK_ROWS"], ce_rows,
                             False, False)[0]
