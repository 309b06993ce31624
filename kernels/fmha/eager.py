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
