"""Liger-Kernel's fused linear cross-entropy (Triton CE kernel on cuBLAS-matmul row chunks): a peer.
Called as people call it, with its default chunking and dW accumulated in the weight's dtype."""
import inspect

from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction

from kernels.linear_cross_entropy.spec import IGNORE_INDEX
from kernels.registry import KernelImpl

# Positional only (autograd.Function.apply takes no keywords), and the order moved between releases
# (ce_weight came in before ignore_index): build the call from the installed forward's own signature.
_NAMES = list(inspect.signature(LigerFusedLinearCrossEntropyFunction.forward).parameters)[1:]
_UPTO = _NAMES.index("ignore_index") + 1


def linear_cross_entropy(x, weight, targets, ignore_index=IGNORE_INDEX):
    vals = {"_input": x.reshape(-1, x.shape[-1]), "weight": weight, "target": targets.reshape(-1),
            "ignore_index": ignore_index}
    out = LigerFusedLinearCrossEntropyFunction.apply(*(vals.get(n) for n in _NAMES[:_UPTO]))
    loss = out[0] if isinstance(out, tuple) else out     # (loss, z_loss, ...) in recent releases
    return loss.float()


IMPL = KernelImpl(fn=linear_cross_entropy, backend="liger", kind="peer",
                  doc="liger_kernel.ops.fused_linear_cross_entropy.LigerFusedLinearCrossEntropyFunction")
