"""Liger-Kernel's LayerNorm (Triton), the library people already train with: a peer, not ours."""
from liger_kernel.ops.layer_norm import LigerLayerNormFunction

from kernels.layer_norm.spec import EPS
from kernels.registry import KernelImpl


def layer_norm(x, weight, bias, eps=EPS):
    return LigerLayerNormFunction.apply(x, weight, bias, eps)


IMPL = KernelImpl(fn=layer_norm, backend="liger", kind="peer",
                  doc="liger_kernel.ops.layer_norm.LigerLayerNormFunction")
