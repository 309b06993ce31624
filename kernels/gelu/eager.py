import torch
import torch.nn.functional as F

from kernels.registry import KernelImpl


def gelu(x, bias=None):
    return F.gelu(x if bias is None else x + bias, approximate="tanh")


IMPL = KernelImpl(fn=gelu, backend="eager", kind="baseline", doc="x + bias, then F.gelu(approximate='tanh')")


# --- the op's math in the kernels' calling conventions: CPU stand-ins of the torch.library ops ----------------
# (kernels/library.py: for tracing tests where the kernels cannot run; never timed)

def standin_fwd(x2, bias):
    z = x2.float() if bias is None else x2.float() + bias.float()
    return F.gelu(z, approximate="tanh").to(x2.dtype)


def gelu_grad(z):
    """d/dz of tanh-GELU, fp32."""
    k = 0.7978845608028654
    t = torch.tanh(k * (z + 0.044715 * z * z * z))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * k * (1 + 3 * 0.044715 * z * z)


def standin_bwd(dy2, x2, bias, need_db):
    """(dx, db): db the column sums of dx in bias's (or x's) dtype, an empty vector when not wanted."""
    z = x2.float() if bias is None else x2.float() + bias.float()
    dxf = dy2.float() * gelu_grad(z)
    dt = bias.dtype if bias is not None else x2.dtype
    return dxf.to(x2.dtype), dxf.sum(0).to(dt) if need_db else x2.new_empty(0, dtype=dt)
