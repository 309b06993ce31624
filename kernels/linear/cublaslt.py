"""Linear + GELU on cuBLASLt's GELU epilogue: torch._addmm_activation(bias, x, W^T, use_gelu=True), the bias
add and tanh-GELU inside the one cuBLASLt matmul instead of a second pass over the output. The epilogue
does not hand back the pre-activation the GELU backward needs, so where a gradient is wanted (or there is
no bias, or the tensors are not on CUDA, where torch's fallback is erf-GELU) it is the eager op:
F.linear (cuBLASLt's bias epilogue) then GELU keeping its input."""
import torch
import torch.nn.functional as F

from kernels.linear.eager import linear as eager_linear
from kernels.registry import KernelImpl, Unsupported


def linear(x, weight, bias=None, activation=None):
    if activation not in (None, "gelu"):
        raise Unsupported(f"activation {activation!r} (takes None or 'gelu')")
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias) if t is not None)
    if activation is None or bias is None or x.device.type != "cuda" or grad:
        return eager_linear(x, weight, bias, activation)
    y = torch._addmm_activation(bias, x.reshape(-1, x.shape[-1]), weight.t(), use_gelu=True)
    return y.view(*x.shape[:-1], weight.shape[0])


IMPL = KernelImpl(fn=linear, backend="torch_cuda", kind="peer",
                  doc="cuBLASLt GELU epilogue (torch._addmm_activation) without a gradient; eager with one")
