"""Attention as nanoGPT writes it by hand: matmul, finite mask floor, softmax, matmul."""
from kernels.fmha.spec import SPEC
from kernels.registry import KernelImpl


def fmha(q, k, v, causal=True, scale=None):
    return SPEC.math(q, k, v, causal=causal, scale=scale)


IMPL = KernelImpl(fn=fmha, backend="eager", kind="baseline", doc="explicit matmul/softmax/matmul in PyTorch")
