import torch.nn.functional as F

from kernels.layer_norm.spec import EPS
from kernels.registry import KernelImpl


def layer_norm(x, weight, bias, eps=EPS):
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


IMPL = KernelImpl(fn=layer_norm, backend="eager", kind="baseline", doc="torch.nn.functional.layer_norm")
