"""Linear + cross-entropy in row chunks, plain PyTorch: the memory win of fusion without custom kernels
(the chunk's log-softmax is a few torch ops on an fp32 copy of that chunk only)."""
import torch

from kernels.linear_cross_entropy import chunks
from kernels.linear_cross_entropy.spec import IGNORE_INDEX
from kernels.registry import KernelImpl, TileParam


def _ce_rows(lg, tgt, loss_rows, ignore_index, grad):
    x = lg.float()
    lse = torch.logsumexp(x, dim=1)
    valid = tgt != ignore_index
    safe = torch.where(valid, tgt, 0)
    loss_rows.copy_(torch.where(valid, lse - x.gather(1, safe[:, None])[:, 0], 0.0))
    if grad:
        p = x.sub_(lse[:, None]).exp_()                      # softmax, in the fp32 copy
        p.scatter_add_(1, safe[:, None], torch.full_like(lse[:, None], -1.0))
        p.mul_(valid[:, None])                               # ignored rows get 0 (1/n_valid: chunks.py)
        lg.copy_(p)


def _scale_(t, g):
    chunks.scaled(t, g, t.dtype)


def linear_cross_entropy(x, weight, targets, ignore_index=IGNORE_INDEX, CHUNK_ROWS=1024):
    return chunks.apply(x, weight, targets, ignore_index, {"CHUNK_ROWS": CHUNK_ROWS}, _ce_rows, _scale_)


IMPL = KernelImpl(fn=linear_cross_entropy, backend="eager", kind="baseline",
                  params=(TileParam("CHUNK_ROWS", int, 1024, None, "rows of logits held at once"),),
                  doc="row chunks in PyTorch ops, gradients computed in the forward; never the full logits")
