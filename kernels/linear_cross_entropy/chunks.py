"""The row-chunk loop the fused impls share (the Liger approach).

For each chunk of rows: logits = x_c @ W^T into one reused (CHUNK_ROWS, V) buffer; a cross-entropy step
writes the rows' losses and overwrites the buffer with softmax - onehot in the logits' dtype (0 on ignored
rows); then dx_c = that @ W and dW += that^T @ x_c. The mean's 1/n_valid goes on dx and dW after the loop, in
fp32: folded into the buffer it was one low-precision constant in every row's target entry, whose rounding
(up to 0.4 % in bf16) scaled the whole gradient (a +0.11 % bias at M=301, V=50257 on an H100, 2026-12-07, where
eager's own was 0.008 %). The gradients are complete when the forward returns; the backward only scales them by
grad_output. Memory: one chunk of logits, dx and dW, never the (M, V) logits.

An impl supplies ce_rows(logits, targets, loss_rows, ignore_index, grad), in place on the logits when grad,
and scale_(t, g): t *= g for a device scalar g (ideally skipped on the device when g == 1).
"""
import torch

from kernels import poison
from kernels.registry import Unsupported


def _addmm_fp32_ok(t: torch.Tensor) -> bool:
    # addmm(out_dtype=fp32) accumulates a bf16/fp16 product into an fp32 dW in one cuBLAS call (CUDA only)
    return t.device.type == "cuda" and t.dtype in (torch.bfloat16, torch.float16)


# addmm(out_dtype=fp32) takes an fp32 `self` beside bf16/fp16 operands from torch 2.10 (2.9 wants one dtype); a
# build that refuses it anyway turns this off on first refusal and takes the mm path
_addmm_fp32_self = [tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 10)]


def _mm_fp32(a, b, out, beta: int):
    """out = a @ b + beta * out in fp32 for any a, b: a bf16/fp16 product is not rounded to its dtype on the way."""
    if a.dtype == torch.float32:
        torch.addmm(out, a, b, beta=beta, out=out)
    elif not _addmm_fp32_ok(a):   # CPU: an fp32 copy of the chunk's operands
        p = torch.mm(a.float(), b.float())
        out.copy_(p) if beta == 0 else out.add_(p)
    elif not (_addmm_fp32_self[0] and _addmm_fp32(a, b, out, beta)):
        if beta == 0:
            torch.mm(a, b, out_dtype=torch.float32, out=out)
        else:
            out.add_(torch.mm(a, b, out_dtype=torch.float32))


def _addmm_fp32(a, b, out, beta) -> bool:
    try:
        torch.addmm(out, a, b, beta=beta, out_dtype=torch.float32, out=out)   # beta=0: out's poison unread
        return True
    except RuntimeError as e:
        if not any(m in str(e) for m in ("out_dtype must be", "addmm.dtype_out")):   # only the refusals known
            raise
        _addmm_fp32_self[0] = False
        return False


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
    # dx and dW are summed in fp32 (dx: 50 MB at GPT-2's M=16384) and scaled by 1/n_valid there, then rounded once:
    # scaling values already rounded to bf16 by a constant near a power of two (1/255 = 2^-8 * 1.0039) rounds them
    # all the same way, a bias of its own (+0.21 % at M=255)
    dx = poison.empty(M, K, dtype=torch.float32, device=dev) if want_dx else None
    dw = None
    if want_dw:
        dw = poison.empty(V, K, dtype=torch.float32 if dw_fp32 else w.dtype, device=dev)
    wt = w.t()
    for i, s in enumerate(range(0, M, rows)):
        e = min(s + rows, M)
        xc, lg = x2[s:e], buf[: e - s]
        torch.mm(xc, wt, out=lg)
        ce_rows(lg, targets[s:e], loss_rows[s:e], ignore_index, grad)     # lg: softmax - onehot if grad
        if want_dx:
            _mm_fp32(lg, w, dx[s:e], beta=0)
        if want_dw:
            if dw.dtype == torch.float32:
                _mm_fp32(lg.t(), xc, dw, beta=0 if i == 0 else 1)
            else:   # DW_FP32 off: summed in w's dtype, so its scaling below rounds twice (up to ~0.4 % bias in bf16)
                torch.addmm(dw, lg.t(), xc, beta=0 if i == 0 else 1, out=dw)
    del buf
    loss = loss_rows.sum() / n_valid
    inv_n = 1.0 / n_valid.clamp(min=1)    # fp32 on the device; every row ignored: gradients 0, as eager's
    return loss, scaled(dx, inv_n, x2.dtype), scaled(dw, inv_n, w.dtype)


def scaled(t, s, dtype):
    """t * s (an fp32 device scalar) in dtype, the product in fp32 and rounded once (a bf16 t times a 0-dim fp32 s
    would round s to bf16 first); in place where t is of dtype already; None stays None."""
    if t is None:
        return None
    if t.dtype == dtype:
        return t.mul_(s) if dtype == torch.float32 else t.copy_(t.float().mul_(s))
    return torch.mul(t, s, out=torch.empty(t.shape, dtype=dtype, device=t.device))


class FusedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, targets, ignore_index, cfg, ce_rows, scale_):
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        with torch.autocast(x.device.type, enabled=False):   # the Backend already cast what autocast would
            loss, dx, dw = fused_forward(x2, w, targets.reshape(-1).contiguous(), ignore_index, cfg["CHUNK_ROWS"],
                                         ce_rows, x.requires_grad, w.requires_grad, cfg.get("DW_FP32") is not False)
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
