import torch
import torch.nn.functional as F

from kernels.linear import parts
from kernels.registry import KernelImpl


def linear(x, weight, bias=None, activation=None):
    y = F.linear(x, weight, bias)
    return F.gelu(y, approximate="tanh") if activation == "gelu" else y


parts.provide(linear, lambda a, b, part: parts.reference(a, b, part))
IMPL = KernelImpl(fn=linear, backend="eager", kind="baseline", doc="F.linear (cuBLAS on CUDA)")


# --- the op's math in the kernels' calling conventions: CPU stand-ins of the torch.library ops ----------------
# (kernels/library.py: for tracing tests where the kernels cannot run; never timed)

def standin_fwd(x2, w, bias, gelu, keep_pre):
    """(y, pre-activation or an empty tensor) of rows x2 (M, K), fp32 accumulation."""
    pre = x2.float() @ w.float().t()
    if bias is not None:
        pre = pre + bias.float()
    y = torch.nn.functional.gelu(pre, approximate="tanh") if gelu else pre
    return y.to(x2.dtype), pre.to(x2.dtype) if keep_pre else x2.new_empty(0)


def standin_bwd(dy2, x2, w, pre, gelu, need_dx, need_dw, need_db):
    """(dx, dW, db), each an empty tensor where not wanted."""
    from kernels.gelu.eager import gelu_grad
    d = dy2.float() * gelu_grad(pre.float()) if gelu else dy2.float()
    empty = x2.new_empty(0)
    return ((d @ w.float()).to(x2.dtype) if need_dx else empty, (d.t() @ x2.float()).to(w.dtype) if need_dw else empty,
            d.sum(0).to(w.dtype) if need_db else empty)
