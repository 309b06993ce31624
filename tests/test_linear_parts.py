"""The linear op's `part` and `gelu` shape keys (kernels.linear.parts): each matmul alone through the gate,
its shapes and work, per-part configs; the Triton parts run under the interpreter in test_triton_kernels."""
import pytest

from bench.measure.check import check
from kernels import registry
from kernels.linear import parts

SPEC = registry.spec_of("linear")


@pytest.mark.parametrize("part", [1, 2, 3])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_eager_parts_pass_the_gate(part, dtype):
    shape = {"M": 37, "N": 20, "K": 13, "part": part}
    impl = registry.get("linear", "eager", "cpu")
    r = check(SPEC, SPEC.wrap(impl.fn, shape), shape, dtype, "fwd", "cpu", impl.config())
    assert r.ok, r.message


def test_a_wrong_part_fails_the_gate():
    """dX computed as the forward's product: the right shape only when N == K, and wrong values."""
    shape = {"M": 37, "N": 16, "K": 16, "part": 2}
    r = check(SPEC, lambda a, b, part: parts.reference(a, b, 1), shape, "fp32", "fwd", "cpu", {})
    assert not r.ok


def test_part_shapes_work_and_labels():
    s = {"M": 16384, "N": 768, "K": 3072}
    outs = [parts.operand_shapes(16384, 768, 3072, p)[2] for p in (1, 2, 3)]
    assert outs == [(16384, 768), (16384, 3072), (768, 3072)]
    for p in (1, 2, 3):
        assert SPEC.flops({**s, "part": p}, "fwd") == 2.0 * 16384 * 768 * 3072
    assert SPEC.flops(s, "fwd+bwd") == 3 * SPEC.flops({**s, "part": 1}, "fwd")
    assert SPEC.label({**s, "part": 3}) == "M16384 N768 K3072 dW"
    assert SPEC.label({**s, "gelu": True}) == "M16384 N768 K3072 gelu"
    assert SPEC.label(s) == "M16384 N768 K3072"
    with pytest.raises(ValueError):
        SPEC.full_shape({**s, "part": 4})
    with pytest.raises(ValueError):
        SPEC.full_shape({**s, "part": 1, "gelu": True})


def test_impl_without_a_matmul_is_unsupported_for_parts():
    fn = SPEC.wrap(lambda x, w, b=None, activation=None: x, {"M": 4, "N": 4, "K": 4, "part": 1})
    with pytest.raises(registry.Unsupported):
        fn(None, None)


def test_config_for_part_takes_the_named_preset():
    presets = {"small": {"BLOCK_M": 16}}
    cfg = {"BLOCK_M": 128, "DX_CONFIG": "small", "DW_CONFIG": parts.SAME}
    assert parts.config_for_part(cfg, 2, presets)["BLOCK_M"] == 16
    assert parts.config_for_part(cfg, 3, presets) is cfg and parts.config_for_part(cfg, 1, presets) is cfg
    assert parts.config_for_part({"BLOCK_M": 8}, 2, presets) == {"BLOCK_M": 8}   # unset: the forward's
    names = {p.name: p for p in parts.part_params(presets)}
    assert names["DX_CONFIG"].validate("small") is None and names["DW_CONFIG"].validate("nope")
