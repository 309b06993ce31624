"""CPU-side logic of the cuTile backend: stale CUDA_HOME detection and self-fix, the compile timeout
setting, the doctor's rows, per-generation config selection and supports()."""
import json
import os
import stat

import pytest

from kernels import cutile_aot, cutile_env, registry


def _script(path, text):
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.fixture
def fake_toolkits(tmp_path):
    old = tmp_path / "cuda-13.0"
    (old / "bin").mkdir(parents=True)
    (old / "version.json").write_text(json.dumps({"cuda": {"version": "13.0.88"}}))
    new = tmp_path / "tileiras-13.4" / "bin"
    new.mkdir(parents=True)
    tileiras = _script(new / "tileiras", 'echo "Cuda compilation tools, release 13.4, V13.4.92"\n')
    cutile_env.tileiras_version.cache_clear()
    yield str(old), tileiras
    cutile_env.tileiras_version.cache_clear()


def test_stale_cuda_home_detected(fake_toolkits):
    home, tileiras = fake_toolkits
    msg = cutile_env.stale_cuda_home(home=home, tileiras=tileiras, passes_cuda_home=True)
    assert msg and "13.0" in msg and "13.4" in msg and home in msg


def test_stale_cuda_home_not_when_not_passed_or_same_toolkit(fake_toolkits, tmp_path):
    home, tileiras = fake_toolkits
    assert cutile_env.stale_cuda_home(home=home, tileiras=tileiras, passes_cuda_home=False) is None
    same = os.path.dirname(os.path.dirname(tileiras))
    assert cutile_env.stale_cuda_home(home=same, tileiras=tileiras, passes_cuda_home=True) is None
    newer = tmp_path / "cuda-13.5"
    newer.mkdir()
    (newer / "version.json").write_text(json.dumps({"cuda": {"version": "13.5.1"}}))
    assert cutile_env.stale_cuda_home(home=str(newer), tileiras=tileiras, passes_cuda_home=True) is None


def test_toolkit_version_from_nvcc(tmp_path):
    (tmp_path / "bin").mkdir()
    _script(tmp_path / "bin" / "nvcc", 'echo "Cuda compilation tools, release 13.0, V13.0.88"\n')
    assert cutile_env.toolkit_version(str(tmp_path)) == "13.0"


class _FakeBin:
    path = "/opt/cutile/bin/tileiras"
    pass_cuda_home_var = True


@pytest.fixture
def fresh_env(monkeypatch):
    monkeypatch.setattr(cutile_env, "_configured", False)
    monkeypatch.setattr(cutile_env, "_fixes", [])
    yield
    cutile_env._configured = False


def test_self_fix_runs_compiler_without_cuda_home(monkeypatch, fresh_env, capsys):
    if cutile_env.import_error():
        pytest.skip(cutile_env.import_error())
    fake = _FakeBin()
    monkeypatch.setattr(cutile_env, "_compiler_bin", lambda: fake)
    monkeypatch.setattr(cutile_env, "stale_cuda_home", lambda *a, **k: "CUDA_HOME=/x is CUDA 13.0, older than 13.4")
    fixes = cutile_env.configure()
    assert fake.pass_cuda_home_var is False
    assert fixes and "without CUDA_HOME" in fixes[0]
    assert cutile_env.configure() == fixes                        # applied and said once
    assert capsys.readouterr().err.count("without CUDA_HOME") == 1
    # fixed: no longer a reason not to run (on CPU the reason is the missing GPU)
    assert "older than" not in (cutile_env.why_not_runnable("cpu") or "")


def test_compile_timeout_setting(monkeypatch, fresh_env):
    if cutile_env.import_error():
        pytest.skip(cutile_env.import_error())
    from cuda.tile._cext import default_tile_context
    monkeypatch.setattr(default_tile_context.config, "compiler_timeout_sec", None)
    monkeypatch.setenv(cutile_env.TIMEOUT_ENV, "77")
    monkeypatch.setattr(cutile_env, "stale_cuda_home", lambda *a, **k: None)
    cutile_env.configure()
    assert default_tile_context.config.compiler_timeout_sec == 77.0
    monkeypatch.setenv(cutile_env.TIMEOUT_ENV, "nonsense")
    assert cutile_env.compile_timeout_s() == cutile_env.DEFAULT_TIMEOUT_S > 5


def test_doctor_on_cpu():
    from bench.machine import doctor
    rows = doctor.diagnose("cpu")
    names = [r["check"] for r in rows]
    for want in ("gpu", "cuda-tile", "triton", "tilegym", "liger"):
        assert want in names
    assert all(r["status"] in ("ok", "warn", "fail") for r in rows)
    assert all(r["fix"] for r in rows if r["status"] != "ok"), "every failure comes with its fix"
    if cutile_env.why_not_compilable() is None:
        smoke = next(r for r in rows if r["check"] == "smoke test")
        assert smoke["status"] == "ok" and "sm_90" in smoke["detail"]
        assert {"tileiras", "tileiras arch", "CUDA_HOME", "compile timeout"} <= set(names)
    assert doctor.main(["--device", "cpu"]) in (0, 1)


def test_doctor_names_failing_module(monkeypatch, tmp_path):
    from bench.machine import doctor
    pkg = tmp_path / "brokenpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import inner\n")
    (pkg / "inner.py").write_text("import module_that_does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    why = doctor._import_failure("brokenpkg")
    assert "module_that_does_not_exist" in why and "brokenpkg" in why


# --- per-generation configs and supports() -----------------------------------------------------

needs_cutile = pytest.mark.skipif(cutile_env.import_error() is not None, reason=str(cutile_env.import_error()))


@needs_cutile
def test_presets_per_family():
    from kernels.fmha import cutile as f
    assert cutile_aot.family("sm_90") == "hopper" and cutile_aot.family("sm_100") == "blackwell"
    assert cutile_aot.family("sm_89") == cutile_aot.family("sm_120") == "consumer"
    bw = f._config("sm_100", {})
    assert (bw["TILE_M"], bw["TILE_N"], bw["K_LATENCY"], bw["V_LATENCY"]) == (64, 64, 2, 5)
    assert f._config("sm_90", {"TILE_M": 64})["TILE_M"] == 64          # an explicit value wins
    assert "autotune" not in f._config("sm_90", {"autotune": True})


@needs_cutile
def test_fmha_supports_and_params():
    impl = registry._import_impl("fmha", "cutile")[0]
    assert impl.supports({"B": 1, "H": 1, "T": 100, "D": 96}, "bf16", "cuda")
    assert impl.supports({"B": 1, "H": 1, "T": 100, "D": 64}, "bf16", "cuda") is None
    names = {p.name for p in impl.params}
    assert {"TILE_M", "TILE_N", "K_LATENCY", "V_LATENCY", "occupancy", "num_ctas", "autotune"} <= names
    with pytest.raises(ValueError):
        impl.config({"TILE_M": 48})
    assert impl.picked is not None and isinstance(impl.picked(), dict)


@needs_cutile
def test_fmha_tune_variants():
    """The fmha_tune variants are valid configs; the defaults keep every variant switch off but Hopper's fused
    backward above T=256 (where it was timed); LPT swaps the grid's axes; a fused backward whose key tile is not
    its dQ query tile is refused before any launch."""
    from kernels.fmha import cutile as f
    impl = registry._import_impl("fmha", "cutile")[0]
    assert set(f._TUNE) == set(impl.tuning) and not set(impl.tuning) & set(impl.presets)
    for name in f._TUNE:
        impl.config(impl.tuning[name])
    for arch in ("sm_80", "sm_89", "sm_90", "sm_100"):
        c = f._config(arch, {})
        assert not (c["SPLIT_LOOPS"] or c["LPT"] or c["num_worker_warps"])
        assert c["BWD_FUSED"] == (arch == "sm_90") and not f._config(arch, {}, T=256)["BWD_FUSED"]
        assert (c["DQ_TILE_M"], c["DQ_TILE_N"]) == (c["BWD_TILE_M"], c["BWD_TILE_N"])
    assert f._fwd_grid(16, 12, 1000, {"TILE_M": 128, "LPT": False}) == (8, 192, 1)
    assert f._fwd_grid(16, 12, 1000, {"TILE_M": 128, "LPT": True}) == (192, 8, 1)
    assert f._hints(2, 1, 0) == {"occupancy": 2, "num_ctas": 1}
    import torch
    q = torch.randn(1, 2, 16, 64)
    with pytest.raises(registry.Unsupported, match="BWD_TILE_N .* DQ_TILE_M"):
        f.fmha(q, q, q, BWD_FUSED=True, BWD_TILE_N=64, DQ_TILE_M=128)


@needs_cutile
def test_layer_norm_wide_rows_config():
    from kernels.layer_norm import cutile as ln
    narrow, wide = ln._config("sm_90", 768, {}), ln._config("sm_90", 4096, {})
    assert wide["ROWS"] * 4096 <= 8192 and narrow["ROWS"] >= wide["ROWS"]
    impl = registry._import_impl("layer_norm", "cutile")[0]
    assert impl.supports({"M": 4, "C": 65536}, "bf16", "cuda")


@needs_cutile
def test_every_op_has_cutile_impl_with_presets():
    for op in ("fmha", "layer_norm", "gelu", "linear", "cross_entropy"):
        impl, err = registry._import_impl(op, "cutile")
        assert impl is not None, err
        assert impl.backend == "cutile" and impl.kind == "ours"
        assert {"hopper", "blackwell"} <= set(impl.presets)
        assert "autotune" in {p.name for p in impl.params}
        for preset in impl.presets.values():
            impl.config(preset)                      # every preset value is a valid choice


@needs_cutile
def test_gelu_backward_grid(monkeypatch):
    """BWD_PROGS=0: one block per row tile, with or without the bias gradient's partials; else a bounded
    grid walking the row tiles."""
    import torch
    from kernels.gelu import cutile as g
    grids = []
    monkeypatch.setattr(g.aot, "launch", lambda kernel, grid, args, **h: grids.append(grid))
    monkeypatch.setattr(g.aot, "sm_count", lambda t: 132)
    monkeypatch.setattr("kernels.layer_norm.cutile.colsum", lambda p, dtype: p.sum(0).to(dtype))
    x = torch.randn(1000, 3072)
    c = {**g._config("sm_90", {}), "BWD_PROGS": 0, "BWD_BM": 8, "BWD_BC": 256}
    g.gelu_backward(x, None, x, c, need_db=False)
    g.gelu_backward(x, torch.zeros(3072), x, c, need_db=True)
    g.gelu_backward(x, torch.zeros(3072), x, {**c, "BWD_PROGS": 4}, need_db=True)
    assert grids == [(125, 12), (125, 12), (44, 12)]
