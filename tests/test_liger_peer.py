"""The Liger cross-entropy peer on the CPU, Liger's Function stood in for by one that (like Liger) writes
the gradient over its input in the forward: the caller's logits must survive every call, timed ones too."""
import importlib
import sys
import types

import pytest
import torch


class _InPlaceCE(torch.autograd.Function):
    """Liger's contract: (loss, ...) from the forward, d loss / d logits stored over the logits."""

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, *rest):
        keep = target != ignore_index
        loss = torch.nn.functional.cross_entropy(x.float(), target, ignore_index=ignore_index)
        # as Liger's kernel, whether or not a gradient is wanted (an H100 run saw a forward's logits written)
        p = torch.softmax(x.float(), -1)
        p[torch.arange(len(target))[keep], target[keep]] -= 1
        with torch.no_grad():
            x.copy_((p * keep[:, None] / keep.sum()).to(x.dtype))
        ctx.save_for_backward(x)
        return loss.to(x.dtype), None, None, None

    @staticmethod
    def backward(ctx, g, *_):
        (x,) = ctx.saved_tensors
        return (x * g,) + (None,) * 10


@pytest.fixture
def liger_ce(monkeypatch):
    mod = types.ModuleType("liger_kernel.ops.cross_entropy")
    mod.LigerCrossEntropyFunction = _InPlaceCE
    for name in ("liger_kernel", "liger_kernel.ops"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "liger_kernel.ops.cross_entropy", mod)
    monkeypatch.delitem(sys.modules, "kernels.cross_entropy.liger", raising=False)
    yield importlib.import_module("kernels.cross_entropy.liger").cross_entropy
    sys.modules.pop("kernels.cross_entropy.liger", None)


@pytest.mark.parametrize("grad_mode,leaf_grad", [(True, True), (False, True), (False, False)])
def test_logits_intact_on_every_call(liger_ce, grad_mode, leaf_grad):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 11, generator=g).requires_grad_(leaf_grad)
    targets = torch.randint(0, 11, (7,), generator=g)
    targets[2] = -1
    before = logits.detach().clone()
    with torch.set_grad_enabled(grad_mode):
        for _ in range(3):        # timed calls: no poisoning, no gate
            loss = liger_ce(logits, targets)
    assert torch.equal(logits.detach(), before), "the peer overwrote the caller's logits"
    ref = torch.nn.functional.cross_entropy(before, targets, ignore_index=-1)
    assert loss.dtype == torch.float32 and torch.allclose(loss, ref)
    if grad_mode:
        loss.backward()
        ref_logits = before.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(ref_logits, targets, ignore_index=-1).backward()
        assert torch.allclose(logits.grad, ref_logits.grad, atol=1e-6)
