"""PyTorch's scaled_dot_product_attention pinned to one backend each: the peers our kernels must beat."""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from kernels.registry import KernelImpl, Unsupported


def _pinned(backend):
    def fmha(q, k, v, causal=True, scale=None):
        with sdpa_kernel([backend]):
            try:
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
            except RuntimeError as e:
                # the pinned backend declines these inputs (cuDNN at T=1 on torch 2.11, say): the peer's limit,
                # not its failure; torch's warning just before says why
                if str(e).startswith("No available kernel"):
                    raise Unsupported(f"{backend.name.lower()} SDPA has no kernel for q {tuple(q.shape)} "
                                      f"{str(q.dtype).replace('torch.', '')}{' causal' if causal else ''}") from e
                raise
    fmha.__name__ = f"sdpa_{backend.name.lower()}"
    return fmha


def _needs(flag_fn, what):
    def available(device):
        if not device.startswith("cuda"):
            return f"{what} needs a CUDA device"
        if not flag_fn():
            return f"{what} is disabled or not built into this torch"
        return None
    return available


def _fused_supports(shape, dtype, device):
    if shape.get("D", 64) > 256:
        return "head dim > 256"
    return None


_HALF = ("bf16", "fp16")
FLASH = KernelImpl(fn=_pinned(SDPBackend.FLASH_ATTENTION), backend="torch_cuda", kind="peer", dtypes=_HALF,
                   supports=_fused_supports, available=_needs(torch.backends.cuda.flash_sdp_enabled, "flash SDPA"))
CUDNN = KernelImpl(fn=_pinned(SDPBackend.CUDNN_ATTENTION), backend="torch_cuda", kind="peer", dtypes=_HALF,
                   supports=_fused_supports, available=_needs(torch.backends.cuda.cudnn_sdp_enabled, "cuDNN SDPA"))
EFFICIENT = KernelImpl(fn=_pinned(SDPBackend.EFFICIENT_ATTENTION), backend="torch_cuda", kind="peer",
                       available=_needs(torch.backends.cuda.mem_efficient_sdp_enabled, "memory-efficient SDPA"))
MATH = KernelImpl(fn=_pinned(SDPBackend.MATH), backend="torch", kind="peer")
