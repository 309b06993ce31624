import torch
import torch.nn.functional as F

from kernels.cross_entropy.spec import IGNORE_INDEX
from kernels.registry import KernelImpl


def cross_entropy(logits, targets, ignore_index=IGNORE_INDEX):
    # upcast as autocast does for cross_entropy: this fp32 copy of the logits is what fused kernels avoid
    return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index)


IMPL = KernelImpl(fn=cross_entropy, backend="eager", kind="baseline", doc="F.cross_entropy on fp32-upcast logits")


# --- the op's math in the kernels' calling conventions: CPU stand-ins of the torch.library ops ----------------
# (kernels/library.py: for tracing tests where the kernels cannot run; never timed)

def standin_rows(logits, targets, ignore_index):
    """(loss rows, lse, valid mask, n_valid as fp32) in fp32; ignored rows' losses 0."""
    lf = logits.float()
    lse = torch.logsumexp(lf, -1)
    valid = targets != ignore_index
    picked = lf.gather(1, torch.where(valid, targets, 0)[:, None])[:, 0]
    return torch.where(valid, lse - picked, 0.0), lse, valid, valid.sum().float()


def standin_dlogits(logits, targets, lse, valid, scale):
    """(softmax - onehot) * scale per row (scale: a 0-d or (N, 1) fp32), ignored rows 0, in the logits' dtype."""
    p = torch.exp(logits.float() - lse[:, None])
    onehot = torch.nn.functional.one_hot(torch.where(valid, targets, 0), logits.shape[1]).float()
    return torch.where(valid[:, None], (p - onehot) * scale, 0.0).to(logits.dtype)
