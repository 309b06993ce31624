"""Where fmha outputs live. The model feeds q, k, v as (B, H, T, D) views of one (B, T, 3*H*D) qkv matmul output
and reads the attention output back as (B, T, H*D). Allocating O as a (B, T, H, D) buffer seen through a
transpose, and dQ, dK, dV as the three slices of one (B, T, 3, H, D) buffer, makes the transpose back and the
qkv split's backward free of copies (model/gpt.py's split_qkv hands that buffer on as dqkv)."""
import torch

from kernels import poison


def heads_inside_rows(t: torch.Tensor) -> bool:
    """t (B, H, T, D) is a transposed view of (B, T, ..., H, D) memory: heads interleaved within each time row."""
    B, H, T, D = t.shape
    return t.stride(3) == 1 and t.stride(1) == D and t.stride(2) >= H * D


def out_like(q: torch.Tensor) -> torch.Tensor:
    """An output shaped like q, in (B, T, H, D) memory when q's heads live inside time rows, else contiguous."""
    B, H, T, D = q.shape
    if heads_inside_rows(q):
        return poison.empty(B, T, H, D, dtype=q.dtype, device=q.device).transpose(1, 2)
    return poison.empty(B, H, T, D, dtype=q.dtype, device=q.device)


def is_qkv_split(q, k, v) -> bool:
    """q, k, v are the three C-wide column blocks of one (B, T, 3C) tensor, viewed as (B, H, T, D)."""
    B, H, T, D = q.shape
    C, e = H * D, q.element_size()
    return (k.shape == q.shape == v.shape and q.dtype == k.dtype == v.dtype and heads_inside_rows(q)
            and q.stride() == k.stride() == v.stride() and q.stride(2) == 3 * C
            and k.data_ptr() == q.data_ptr() + C * e and v.data_ptr() == q.data_ptr() + 2 * C * e)


def out_alloc(q: torch.Tensor) -> torch.Tensor:
    """torch.empty in out_like's layout (a library op's fake and stand-in buffer: no poisoning there)."""
    B, H, T, D = q.shape
    if heads_inside_rows(q):
        return q.new_empty(B, T, H, D).transpose(1, 2)
    return q.new_empty(B, H, T, D)


def packed_grads(q) -> tuple:
    """(buffer, (dQ, dK, dV)): the three gradients as slices of one (B, T, 3, H, D) buffer, whatever q, k and v's
    layout. The library ops return the buffer: an op's outputs may not alias each other."""
    B, H, T, D = q.shape
    buf = poison.empty(B, T, 3, H, D, dtype=q.dtype, device=q.device)
    return buf, tuple(buf[:, :, i].transpose(1, 2) for i in range(3))


def grads_like(q, k, v) -> tuple:
    """dQ, dK, dV buffers with one set of strides (the kernels take one): slices of one (B, T, 3, H, D) tensor
    for a qkv split, in q's layout when k and v share it, else contiguous."""
    B, H, T, D = q.shape
    if is_qkv_split(q, k, v):
        buf = poison.empty(B, T, 3, H, D, dtype=q.dtype, device=q.device)
        return tuple(buf[:, :, i].transpose(1, 2) for i in range(3))
    if q.stride() == k.stride() == v.stride():
        return out_like(q), out_like(k), out_like(v)
    return tuple(poison.empty(B, H, T, D, dtype=t.dtype, device=t.device) for t in (q, k, v))


class _SplitQKV(torch.autograd.Function):
    """qkv.split(C, dim=2), whose backward skips the concatenation when the three gradients are already the
    column blocks of one (B, T, 3C) buffer, as our fmha kernels write them (grads_like above)."""

    @staticmethod
    def forward(ctx, qkv, C):
        return tuple(t.view_as(t) for t in qkv.split(C, dim=2))

    @staticmethod
    def backward(ctx, dq, dk, dv):   # gradients are materialized: never None
        base = dq._base
        B, T, C = dq.shape
        e = dq.element_size()
        if (base is not None and dk._base is base and dv._base is base and base.is_contiguous()
                and base.numel() == 3 * dq.numel() and dq.data_ptr() == base.data_ptr()
                and dk.data_ptr() == dq.data_ptr() + C * e and dv.data_ptr() == dq.data_ptr() + 2 * C * e
                and dq.stride() == dk.stride() == dv.stride() == (T * 3 * C, 3 * C, 1)):
            return base.view(B, T, 3 * C), None
        return torch.cat([dq, dk, dv], dim=2), None


def split_qkv(qkv, C):
    if torch.compiler.is_compiling():   # inductor plans its own buffers
        return qkv.split(C, dim=2)
    return _SplitQKV.apply(qkv, C)
