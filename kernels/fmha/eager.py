"""Attention as nanoGPT writes it by hand: matmul, finite mask floor, softmax, matmul.

Scores are masked and softmaxed in fp32 (as autocast does for softmax): -1e20 has no fp16 encoding."""
import math

import torch

from kernels.mask import MASK_FLOOR
from kernels.registry import KernelImpl


def fmha(q, k, v, causal=True, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    att = (q @ k.transpose(-2, -1)).float() * scale
    if causal:
        T, S = q.shape[-2], k.shape[-2]
        keep = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        att = att.masked_fill(~keep, MASK_FLOOR)
    return torch.softmax(att, dim=-1).to(v.dtype) @ v


IMPL = KernelImpl(fn=fmha, backend="eager", kind="baseline", doc="explicit matmul/softmax/matmul in PyTorch")


# --- the op's math in the kernels' calling conventions: CPU stand-ins of the torch.library ops ----------------
# (kernels/library.py: for tracing tests where the kernels cannot run; never timed)

def _scores(q, k, causal, scale):
    s = (q.float() @ k.float().transpose(-2, -1)) * scale
    if causal:
        T, S = q.shape[-2], k.shape[-2]
        s = s.masked_fill(~torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T), MASK_FLOOR)
    return s


def standin_fwd(q, k, v, causal, scale):
    """(o (B, H, T, D) in q's dtype, lse (B*H, T) fp32)."""
    s = _scores(q, k, causal, scale)
    lse = torch.logsumexp(s, -1)
    o = torch.exp(s - lse[..., None]) @ v.float()
    B, H, T, _ = q.shape
    return o.to(q.dtype), lse.reshape(B * H, T)


def standin_bwd(do, q, k, v, o, lse, causal, scale):
    """dQ, dK, dV as one (B, T, 3, H, D) buffer, as the library ops return them."""
    B, H, T, D = q.shape
    p = torch.exp(_scores(q, k, causal, scale) - lse.reshape(B, H, T)[..., None])
    dof = do.float()
    dv = p.transpose(-2, -1) @ dof
    ds = p * (dof @ v.float().transpose(-2, -1) - (dof * o.float()).sum(-1, keepdim=True))
    dq, dk = ds @ k.float() * scale, ds.transpose(-2, -1) @ q.float() * scale
    return torch.stack([g.transpose(1, 2) for g in (dq, dk, dv)], dim=2).to(q.dtype)
