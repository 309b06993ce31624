"""cuTile kernels compile for every GPU generation with no GPU (export_kernel), and a failure is a status.

The default run compiles each impl's kernels in its own per-arch preset for all five archs (~1.7 min on
2 CPUs); the full preset x arch matrix, with the tuning configs for sm_90, is marked `slow` (~5 min more): deselect
it with -m "not slow"."""
import pytest

from kernels import aot, cutile_aot, cutile_env, registry

pytestmark = pytest.mark.skipif(cutile_env.why_not_compilable() is not None,
                                reason=f"cuTile cannot compile here: {cutile_env.why_not_compilable()}")

OPS = [op for op in registry.OPS if "cutile" in registry.impl_names(op)]   # the ops with a cutile impl
ARCHS = ("sm_80", "sm_89", "sm_90", "sm_100", "sm_120")


def _impl(op):
    impl, err = registry._import_impl(op, "cutile")
    assert impl is not None, err
    return impl


def _assert_ok(rows, what):
    assert rows, what
    bad = [r for r in rows if r["status"] != "ok"]
    assert not bad, f"{what}: " + "; ".join(f"{r['kernel']}: {r['status']} {r['message']}" for r in bad)
    for r in rows:
        assert r["compile_s"] is not None and r["compile_s"] >= 0
        assert r["cubin_bytes"] and r["cubin_bytes"] > 1000
        assert set(r) >= {"kernel", "status", "message", "compile_s", "cubin_bytes", "registers", "smem_bytes",
                          "spills"}


@pytest.mark.parametrize("op", OPS)
def test_aot_native_preset_every_arch(op):
    impl = _impl(op)
    assert impl.backend == "cutile" and impl.aot is not None
    for arch in ARCHS:
        _assert_ok(impl.aot(impl.config({}), arch), f"{op} {arch}")


@pytest.mark.slow
@pytest.mark.parametrize("op", OPS)
def test_aot_every_preset_every_arch(op):
    impl = _impl(op)
    assert {"hopper", "blackwell"} <= set(impl.presets)
    for name, preset in impl.presets.items():
        for arch in ARCHS:
            _assert_ok(impl.aot(impl.config(preset), arch), f"{op} preset {name} {arch}")
    for name, cfg in impl.tuning.items():   # the tuning sweeps' configs: Hopper experiments
        _assert_ok(impl.aot(impl.config(cfg), "sm_90"), f"{op} tuning config {name} sm_90")


def test_fmha_blackwell_preset_is_the_design_notes_one():
    p = _impl("fmha").presets["blackwell"]
    assert (p["TILE_M"], p["TILE_N"], p["K_LATENCY"], p["V_LATENCY"]) == (64, 64, 2, 5)


def test_resource_usage_read_when_cuobjdump_present():
    rows = _impl("gelu").aot({}, "sm_90")
    if aot.cuobjdump_path() is None:
        pytest.skip("no cuobjdump to read registers")
    assert all(isinstance(r["registers"], int) and r["registers"] > 0 for r in rows)
    assert all(r["spills"] is not None for r in rows)


def test_compile_failure_is_a_status(monkeypatch):
    """A config that cannot compile (here: a 1 ms tileiras timeout) is a row with a status, not a raise."""
    from cuda.tile._cext import default_tile_context
    monkeypatch.setattr(default_tile_context.config, "compiler_timeout_sec", 0.001)
    monkeypatch.setattr(cutile_env, "_configured", True)
    rows = _impl("layer_norm").aot({}, "sm_90")
    assert rows and all(r["status"] == "compile_error" for r in rows)
    assert all("timeout" in r["message"].lower() or "exceeded" in r["message"] for r in rows)


def test_bad_signature_is_a_status():
    from kernels.gelu import cutile as g
    row = cutile_aot.compile_kernel(g._gelu_fwd, "bad", [cutile_aot.array("bf16", 2)], "sm_90")
    assert row["status"] == "compile_error" and row["message"]


def test_unknown_arch_is_unsupported():
    row = cutile_aot.compile_kernel(_impl("gelu").aot.__globals__["_gelu_fwd"], "x", [], "sm_70")
    assert row["status"] == "unsupported" and "sm_70" in row["message"]
