"""kernels/spec.py: the reference computed in slices of dim 0 equals the whole one, weights included."""
import torch

from kernels import registry
from kernels.spec import gen_for


def _chunked(spec_cls, **attrs):
    return type("Chunked", (spec_cls,), {"REF_CHUNK_ELEMENTS": 64, **attrs})()


def _same(a, b):
    return torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def _compare(whole, sliced, shape, dtype="fp32"):
    inputs = whole.make_inputs(shape, dtype, "cpu", gen_for(5, "cpu"))
    g = gen_for(6, "cpu")
    out, grads = whole.reference(inputs, None)
    grad_out = tuple(torch.randn(o.shape, generator=g) for o in out) if isinstance(out, tuple) \
        else torch.randn(out.shape, generator=g)
    out, grads = whole.reference(inputs, grad_out)
    out2, grads2 = sliced.reference(inputs, grad_out)
    for a, b in zip(out if isinstance(out, tuple) else (out,), out2 if isinstance(out2, tuple) else (out2,)):
        assert _same(a, b)
    assert grads.keys() == grads2.keys()
    for i in grads:
        assert grads[i].shape == grads2[i].shape and _same(grads[i], grads2[i]), whole.grad_names().get(i, i)


def test_chunked_reference_sums_weight_gradients():
    """LayerNorm sliced along its rows: x is sliced, weight and bias go whole and their gradients add up
    (slicing them too, as chunk_dim0 once did, fails on shapes or concatenates partial sums)."""
    ln = registry.spec_of("layer_norm")
    sliced = _chunked(type(ln), chunk_dim0=True, chunk_args=(0,))
    assert len(sliced._chunked_args(ln.make_inputs(dict(M=9, C=16), "fp32", "cpu", gen_for(1, "cpu")))) == 1
    _compare(ln, sliced, dict(M=37, C=16))


def test_chunked_reference_fmha():
    fm = registry.spec_of("fmha")
    _compare(fm, _chunked(type(fm)), dict(B=5, H=2, T=8, D=16))
