"""kernels/aot.py and its two adapters: one family table, the autotuner's pick and its rejected candidates."""
import pytest
import torch

from kernels import aot, cutile_aot, triton_aot

pytest.importorskip("triton")


def test_both_toolchains_read_one_family_table():
    """Triton and cuTile once kept separate tables: sm_110/sm_121 were blackwell/consumer for one, not the other."""
    for arch in list(aot.FAMILY) + ["sm_75", "sm_87", "sm_101", "sm_122"]:
        assert triton_aot.family(arch) == cutile_aot.family(arch), arch
    assert triton_aot.family("sm_121") == "consumer" and triton_aot.family("sm_110") == "blackwell"


def _fake_bench(times):
    def bench(fn):
        return times[fn()]
    return bench


def test_triton_tuner_keeps_the_fastest_and_records_rejects(monkeypatch, capsys):
    from triton.runtime.errors import OutOfResources
    monkeypatch.setattr(triton_aot, "interpreting", lambda: False)
    times = {1: 3.0, 2: 1.0, 3: 2.0}
    t = triton_aot.Tuner(bench=_fake_bench(times))
    ran = []

    def run(cfg):
        ran.append(cfg["B"])
        if cfg["B"] == 4:
            raise OutOfResources(300000, 232448, "shared memory")
        return cfg["B"]
    cands = [{"B": b} for b in (1, 4, 2, 3)]
    assert t.choose("k", cands, run) == {"B": 2}
    assert t.picked() == {"B": 2}
    assert t.rejected["k"] == [{"config": {"B": 4}, "status": "oom", "message": t.rejected["k"][0]["message"]}]
    assert "OutOfResources" in t.rejected["k"][0]["message"] and "dropped" in capsys.readouterr().err
    n = len(ran)
    assert t.choose("k", cands, run) == {"B": 2} and len(ran) == n      # searched once per key


def test_triton_tuner_does_not_swallow_a_bug(monkeypatch):
    """Only compile/launch failures reject a candidate; a bug in the kernel's Python raises."""
    monkeypatch.setattr(triton_aot, "interpreting", lambda: False)
    t = triton_aot.Tuner(bench=lambda fn: fn())

    def run(cfg):
        raise TypeError("wrong argument")
    with pytest.raises(TypeError):
        t.choose("k", [{"B": 1}, {"B": 2}], run)


def test_triton_tuner_all_rejected_keeps_the_first(monkeypatch):
    from triton.compiler.errors import CompilationError
    monkeypatch.setattr(triton_aot, "interpreting", lambda: False)

    def run(cfg):
        raise CompilationError(None, None, "bad tile")
    t = triton_aot.Tuner(bench=lambda fn: fn())
    assert t.choose("k", [{"B": 1}, {"B": 2}], run) == {"B": 1}
    assert [r["status"] for r in t.rejected["k"]] == ["compile_error", "compile_error"]


def test_cutile_tuner_records_failed_candidates(monkeypatch):
    pytest.importorskip("cuda.tile")
    import cuda.tile.tune as tune
    from cuda.tile.tune import Measurement, TuningResult
    best = Measurement(config={"T": 64}, mean_us=1.0, num_samples=3, error_margin_us=0.1)
    res = TuningResult(best=best, successes=[best], failures=[({"T": 256}, RuntimeError, "out of shared memory")])
    monkeypatch.setattr(tune, "exhaustive_search", lambda *a, **k: res)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: None)
    t = cutile_aot.Tuner()
    assert t.choose("k", [{"T": 64}, {"T": 256}], None, None, None, None) == {"T": 64}
    assert t.rejected["k"][0]["config"] == {"T": 256} and "out of shared memory" in t.rejected["k"][0]["message"]


def test_rows_have_every_key_and_smem_over_the_limit_is_an_error():
    r = aot.check_smem({**aot.row("k", "sm_89"), "smem_bytes": 150_000})
    assert set(aot.ROW_KEYS) <= set(r) and r["status"] == "compile_error" and "101376" in r["message"]
    assert aot.check_smem({**aot.row("k", "sm_90"), "smem_bytes": 150_000})["status"] == "ok"
    assert aot.unsupported("k", "sm_70", "too old")["status"] == "unsupported"
