import torch
import torch.nn.functional as F

from kernels.layer_norm.spec import EPS
from kernels.registry import KernelImpl


def layer_norm(x, weight, bias, eps=EPS):
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


IMPL = KernelImpl(fn=layer_norm, backend="eager", kind="baseline", doc="torch.nn.functional.layer_norm")


# --- the op's math in the kernels' calling conventions: CPU stand-ins of the torch.library ops ----------------
# (kernels/library.py: for tracing tests where the kernels cannot run; never timed)

def standin_fwd(x2, w, b, eps):
    """(y, mean, rstd) of rows x2 (M, C); statistics in fp32, as the kernels keep them."""
    xf = x2.float()
    mean = xf.mean(-1)
    xc = xf - mean[:, None]
    rstd = torch.rsqrt((xc * xc).mean(-1) + eps)
    return (xc * rstd[:, None] * w.float() + b.float()).to(x2.dtype), mean, rstd


def standin_bwd(dy2, x2, w, mean, rstd):
    """(dx, dw, db) from the forward's statistics."""
    xhat = (x2.float() - mean[:, None]) * rstd[:, None]
    dyf = dy2.float()
    wdy = w.float() * dyf
    dx = (wdy - (xhat * (xhat * wdy).mean(-1, keepdim=True) + wdy.mean(-1, keepdim=True))) * rstd[:, None]
    return dx.to(x2.dtype), (dyf * xhat).sum(0).to(w.dtype), dyf.sum(0).to(w.dtype)
