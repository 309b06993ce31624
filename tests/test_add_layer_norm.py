"""add_layer_norm's autograd plumbing for the cuTile impl on the CPU: its kernels cannot run here, so they are
replaced by torch versions of the same math, and the Function around them (which outputs exist, which
gradients are asked for, an unused sum's None gradient) is checked against the eager op."""
import pytest
import torch

from kernels import cutile_env

pytestmark = pytest.mark.skipif(cutile_env.why_not_compilable() is not None, reason="cuda.tile not importable")


def _fwd(x2, y2, bias, w, b, eps, h_dtype, c):
    s = x2 if y2 is None else x2 + y2.float() + (bias if bias is not None else 0)
    mean = s.mean(-1)
    rstd = torch.rsqrt(((s - mean[:, None]) ** 2).mean(-1) + eps)
    h = ((s - mean[:, None]) * rstd[:, None] * w + b).to(h_dtype)
    return s, h, mean, rstd


def _bwd(s2, w, dh, ds, mean, rstd, dy_dtype, need_dbias, c):
    shat = (s2 - mean[:, None]) * rstd[:, None]
    wdh = w * dh.float()
    dx = (wdh - (shat * (shat * wdh).mean(-1, keepdim=True) + wdh.mean(-1, keepdim=True))) * rstd[:, None]
    if ds is not None:
        dx = dx + ds
    dy = dx.to(dy_dtype) if dy_dtype is not None else None
    return dx, dy, (dh.float() * shat).sum(0), dh.float().sum(0), (dx.sum(0) if need_dbias else None)


@pytest.fixture
def cutile_aln(monkeypatch):
    from kernels.add_layer_norm import cutile
    monkeypatch.setattr(cutile, "_forward", _fwd)
    monkeypatch.setattr(cutile, "_backward", _bwd)
    return cutile.add_layer_norm


@pytest.mark.parametrize("case", ["full", "no_bias", "no_branch", "sum_unused", "3d"])
def test_cutile_function_matches_eager(cutile_aln, case):
    from kernels.add_layer_norm.eager import add_layer_norm as eager
    g = torch.Generator().manual_seed(0)
    shape = (3, 5, 24) if case == "3d" else (13, 24)
    x = torch.randn(*shape, generator=g)
    y = None if case == "no_branch" else torch.randn(*shape, generator=g).to(torch.bfloat16)
    bias = None if case in ("no_bias", "no_branch") else torch.randn(24, generator=g)
    w, b = torch.randn(24, generator=g) * 0.1 + 1, torch.randn(24, generator=g) * 0.1
    leaves = [t for t in (x, y, bias, w, b) if t is not None]
    grads = {}
    for name, fn in (("cutile", cutile_aln), ("eager", eager)):
        ins = [t.detach().clone().requires_grad_() for t in leaves]
        it = iter(ins)
        args = [next(it) if t is not None else None for t in (x, y, bias, w, b)]
        s, h = fn(*args, out_dtype=torch.bfloat16)
        assert h.dtype == torch.bfloat16 and s.dtype == torch.float32 and s.shape == h.shape == x.shape
        gh = torch.randn(h.shape, generator=torch.Generator().manual_seed(1)).to(h.dtype)
        if case == "sum_unused":
            h.backward(gh)
        else:
            torch.autograd.backward([s, h], [torch.randn(s.shape, generator=torch.Generator().manual_seed(2)), gh])
        grads[name] = [i.grad for i in ins]
        if case == "no_branch":
            assert s is args[0]     # no branch: the sum is x itself
    for a, e in zip(grads["cutile"], grads["eager"]):
        assert a is not None and a.dtype == e.dtype
        assert torch.allclose(a.float(), e.float(), rtol=2e-2, atol=2e-2)
