import torch.nn.functional as F

from kernels.linear_cross_entropy.spec import IGNORE_INDEX
from kernels.registry import KernelImpl


def linear_cross_entropy(x, weight, targets, ignore_index=IGNORE_INDEX):
    # nanoGPT's lm_head then cross-entropy: the full logits, and an fp32 copy of them (what autocast does)
    logits = F.linear(x, weight)
    return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index)


IMPL = KernelImpl(fn=linear_cross_entropy, backend="eager", kind="baseline",
                  doc="F.linear then F.cross_entropy on fp32-upcast logits (materialises (M, V) twice)")
