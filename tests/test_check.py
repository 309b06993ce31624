"""The correctness gate: eager passes on odd shapes; wrong, unwritten and NaN outputs are caught."""
import pytest

from bench.measure.check import check
from kernels import registry
from tests import fake_impls


@pytest.mark.parametrize("op", registry.OPS)
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
def test_eager_matches_reference_on_odd_shapes(op, dtype, pass_):
    spec, impl = registry.spec_of(op), registry.get(op, "eager", "cpu")
    for shape in spec.test_shapes():   # each op's small odd shapes
        r = check(spec, impl.fn, shape, dtype, pass_, "cpu", seed=7)
        assert r.ok, r.message
        assert 0 <= r.max_err_ratio <= 1


@pytest.mark.parametrize("fn,needle", [
    (fake_impls._off_by_a_bit, "rel-L2 error"),
    (fake_impls._half_written, "NaN/inf"),
    (fake_impls._nan, "NaN/inf"),
])
def test_gate_catches_bad_outputs(fn, needle):
    spec = registry.spec_of("gelu")
    r = check(spec, fn, dict(M=9, C=13), "fp32", "fwd", "cpu")
    assert not r.ok and needle in r.message


def test_gate_catches_wrong_gradient():
    import torch

    class BadGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b):
            ctx.save_for_backward(x, b)
            return fake_impls._right(x, b)

        @staticmethod
        def backward(ctx, g):
            x, b = ctx.saved_tensors
            return g, g.sum(0)       # identity instead of GELU's derivative
    r = check(registry.spec_of("gelu"), BadGrad.apply, dict(M=9, C=13), "fp32", "fwd+bwd", "cpu")
    assert not r.ok and "dx" in r.message


def test_inputs_are_random_and_fresh():
    spec = registry.spec_of("layer_norm")
    from kernels.spec import gen_for
    a = spec.make_inputs(dict(M=8, C=16), "fp32", "cpu", gen_for(1, "cpu")).args[0]
    b = spec.make_inputs(dict(M=8, C=16), "fp32", "cpu", gen_for(2, "cpu")).args[0]
    assert (a != 0).all() and not (a == b).all()


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_fully_masked_row_is_finite(dtype):
    """The -1e20 floor: a query row with every key masked softmaxes to uniform weights (the mean of v),
    never NaN, in the reference and in the eager impl (the ones that take fewer keys than queries)."""
    import torch
    spec, eager = registry.spec_of("fmha"), registry.get("fmha", "eager", "cpu").fn
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, n, 8, generator=g) for n in (5, 2, 2))   # tril(2 - 5): rows 0-2 see no key
    ref = spec.math(q.double(), k.double(), v.double(), causal=True)
    out = eager(*(t.to(registry.DTYPES[dtype]) for t in (q, k, v)), causal=True).double()
    uniform = v.double().mean(-2, keepdim=True).expand(1, 2, 3, 8)
    tol = 1e-6 if dtype == "fp32" else 2e-2
    for name, o in (("reference", ref), ("eager", out)):
        assert torch.isfinite(o).all(), name
        assert torch.allclose(o[:, :, :3], uniform, atol=tol), f"{name}: masked rows are not the mean of v"
    assert torch.allclose(out[:, :, 3:], ref[:, :, 3:], atol=tol)     # the rows that see keys agree too


def test_an_op_with_two_outputs_checks_both_and_their_count():
    """add_layer_norm returns (sum, norm): each is compared; returning only one of them fails the gate."""
    spec, impl = registry.spec_of("add_layer_norm"), registry.get("add_layer_norm", "eager", "cpu")
    shape = dict(M=33, C=65)
    ok = check(spec, impl.fn, shape, "bf16", "fwd+bwd", "cpu")
    assert ok.ok and {"sum", "norm"} <= set(ok.errors), ok.message
    bad = check(spec, lambda *a, **k: impl.fn(*a, **k)[1], shape, "bf16", "fwd", "cpu")
    assert not bad.ok and "returned 1 output(s), the reference 2" in bad.message
    wrong_sum = check(spec, lambda *a, **k: (impl.fn(*a, **k)[0] * 1.01, impl.fn(*a, **k)[1]), shape, "bf16", "fwd", "cpu")
    assert not wrong_sum.ok and "sum" in wrong_sum.message


def test_local_measure_sees_two_unwritten_rows_a_global_norm_dilutes():
    import torch
    from bench.measure.check import local_error, rel_l2
    ref = torch.randn(16384, 768, dtype=torch.float64)
    out = ref.clone()
    out[[0, 9000]] = 0
    assert rel_l2(out, ref) < 0.02            # what the old gate looked at: within a bf16 tolerance
    assert local_error(out, ref) > 0.9        # a whole row wrong is an error of ~1 row norm
    col = ref.clone()
    col[:, 5] = 0                              # one column (e.g. of a weight gradient) dropped
    assert rel_l2(col, ref) < 0.05 and local_error(col, ref) > 0.9


def test_tolerance_is_eager_relative_with_a_dtype_floor_and_ceiling():
    from bench.measure.check import BIAS_FLOOR_FRACTION, CEILING, K
    spec, impl = registry.spec_of("layer_norm"), registry.get("layer_norm", "eager", "cpu")
    r = check(spec, impl.fn, dict(M=257, C=768), "fp16", "fwd+bwd", "cpu", seed=3)
    import torch
    assert r.ok
    for name, b in r.expected.bounds.items():
        e, l, bias = b.eager
        floor = spec.error_floor(b.dtype)
        assert b.tol == min(max(K * e, floor), CEILING * floor)
        assert b.local_tol == min(max(K * l, 4 * floor), CEILING * 4 * floor)
        assert BIAS_FLOOR_FRACTION * floor <= b.bias_tol <= b.tol
    assert spec.error_floor(torch.bfloat16) > spec.error_floor(torch.float16) > spec.error_floor(torch.float32)


def test_the_ceiling_fails_eager_and_its_match_where_eager_itself_is_beyond_it():
    """CPU PyTorch accumulates bf16 LayerNorm's dW in bf16: ~10 % off at 16384 rows, beyond bf16's ceiling. Eager is
    `wrong` there and so is an impl that matches it; one that accumulates in fp32 passes."""
    import torch
    import torch.nn.functional as F
    spec, eager = registry.spec_of("layer_norm"), registry.get("layer_norm", "eager", "cpu").fn
    shape = dict(M=16384, C=768)
    r = check(spec, eager, shape, "bf16", "fwd+bwd", "cpu", seed=3)
    assert not r.ok and "dw: rel-L2" in r.message and "itself beyond the ceiling" in r.message

    def same_as_eager(x, w, b, eps=1e-5):
        return eager(x, w, b, eps)
    assert not check(spec, same_as_eager, shape, "bf16", "fwd+bwd", "cpu", seed=3).ok

    def fp32_inside(x, w, b, eps=1e-5):
        return F.layer_norm(x.float(), (x.shape[-1],), w.float(), b.float(), eps).to(x.dtype)
    assert check(spec, fp32_inside, shape, "bf16", "fwd+bwd", "cpu", seed=3).ok


def test_scale_bias_sees_what_rounding_hides():
    """A 0.3 % scale error in bf16 is under its rounding unit: rel-L2 passes it, the signed bias does not."""
    import torch
    from bench.measure.check import scale_bias
    spec, eager = registry.spec_of("gelu"), registry.get("gelu", "eager", "cpu").fn

    def high(x, bias=None):
        return (eager(x.float(), bias.float()) * 1.003).to(x.dtype)
    r = check(spec, high, dict(M=255, C=3072), "bf16", "fwd", "cpu", seed=5)
    assert not r.ok and "scale bias +0.003" in r.message and "rel-L2" not in r.message
    ref = torch.randn(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))   # not the global RNG:
    b, n = scale_bias(ref * 1.01, ref)                     # its state depends on which tests ran first
    # n: the effective element count, (sum r^2)^2 / sum r^4, N/3 for Gaussian r (290 seen once at N=1000)
    assert abs(b - 0.01) < 1e-12 and 250 < n < 450


def test_repeated_calls_are_each_judged():
    import torch
    spec, eager = registry.spec_of("gelu"), registry.get("gelu", "eager", "cpu").fn
    n = []

    def flaky(x, bias=None):
        n.append(1)
        return eager(x, bias) * (1.1 if len(n) == 3 else 1.0)
    assert check(spec, flaky, dict(M=9, C=13), "fp32", "fwd", "cpu").ok        # one call: looks right
    n.clear()
    r = check(spec, flaky, dict(M=9, C=13), "fp32", "fwd", "cpu", calls=8)
    assert not r.ok and r.message.startswith("call 3 of 8: ") and len(n) == 3


def test_gate_catches_wrong_dtype_and_input_writes():
    import torch
    spec = registry.spec_of("gelu")

    def in_fp32(x, bias=None):
        return fake_impls._right(x.float(), bias.float())

    def scribbles(x, bias=None):
        y = fake_impls._right(x, bias)
        x.data.zero_()
        return y
    r = check(spec, in_fp32, dict(M=9, C=13), "bf16", "fwd", "cpu")
    assert not r.ok and "dtype float32 != eager's bfloat16" in r.message
    r = check(spec, scribbles, dict(M=9, C=13), "fp32", "fwd", "cpu")
    assert not r.ok and "written in place" in r.message
    assert torch.isfinite(torch.tensor(r.max_err_ratio))
