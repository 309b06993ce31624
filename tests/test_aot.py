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


# --- run_bench.py --static: what it compiles, in worker processes ------------------------------------------

def test_static_compiles_each_impls_default_unless_asked():
    """The default config alone (each arch resolves it to its generation's preset); --preset adds a preset or
    tuning config to the impls that have it, `all` every preset (no tuning config); --quick the default alone."""
    from bench.machine import static
    targets = [(op, name, impl) for op, name, impl, why in static.targets() if impl is not None and not why]
    assert {(op, name) for op, name, _ in targets} >= {("linear", "triton"), ("fmha", "triton")}
    for op, name, impl in targets:
        assert static.configs(impl) == [("default", {})], (op, name)
        labels = [label for label, _ in static.configs(impl, ["tma_streamk", "hopper"])]
        want = ["default", "tma_streamk", "hopper"] if (op, name) == ("linear", "triton") else ["default", "hopper"]
        assert labels == want, (op, name, labels)
        every = dict(static.configs(impl, ["all"]))
        assert set(every) == {"default", *impl.presets} and not set(every) & set(impl.tuning)
        assert static.configs(impl, ["all", "hopper"], quick=True) == [("default", {})]
    lt = next(impl for op, name, impl in targets if (op, name) == ("linear", "triton"))
    assert dict(static.configs(lt, ["tma_streamk"]))["tma_streamk"] == lt.tuning["tma_streamk"]
    assert static.unknown_names(["tma_streamk", "all", "no_such"]) == ["no_such"]
    assert static.unknown_names(["tma_streamk"], impls=["cutile"]) == ["tma_streamk"]


def test_static_cli_appends_rows_and_ends_with_the_summary(tmp_path, monkeypatch, capsys):
    """Rows per (op, impl, config, arch) in the store, the default and the asked tuning config only, and the last
    line says how many kernels, for which archs, in how long, on how many jobs. (Kernels stood in: in-process.)"""
    from bench import cli
    from bench.machine import static
    from kernels.rows import read_file
    calls = []

    def fake(op, name, cfg, arch):
        calls.append((op, name, arch, cfg.get("SPLIT_K")))
        return [{**aot.row(f"{op}_k", arch), "compile_s": 0.01}]
    monkeypatch.setattr(static, "compile_one", fake)
    rc = cli.main(["--static", "--arch", "sm_80,sm_90", "--impl", "triton", "--preset", "tma_streamk", "--jobs", "1",
                   "--out", str(tmp_path), "--no-report"])
    assert rc == 0
    rows = read_file(str(tmp_path / "results.jsonl"))
    labels = {(r["op"], r["preset"]) for r in rows}
    assert ("linear", "tma_streamk") in labels and ("linear", "default") in labels
    assert {p for op, p in labels if op != "linear"} == {"default"}
    assert len(rows) == len(calls) == 2 * (len({r["op"] for r in rows}) + 1)
    assert len({r["point_id"] for r in rows}) == len(rows) and all(r["compile_s"] == 0.01 for r in rows)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"static: {len(rows)} kernels compiled for sm_80,sm_90 in ") and last.endswith(" s (1 jobs)")


def test_static_interrupted_keeps_what_it_compiled(tmp_path, monkeypatch):
    """Rows are appended as each task finishes: Ctrl-C after two tasks leaves their rows in the store, exit 130."""
    from bench import cli
    from bench.machine import static
    from kernels.rows import read_file
    calls = []

    def fake(op, name, cfg, arch):
        calls.append(op)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return [aot.row(f"{op}_k", arch)]
    monkeypatch.setattr(static, "compile_one", fake)
    assert cli.main(["--static", "--arch", "sm_90", "--impl", "triton", "--jobs", "1", "--out", str(tmp_path),
                     "--no-report"]) == 130
    assert [r["kernel"] for r in read_file(str(tmp_path / "results.jsonl"))] == [f"{op}_k" for op in calls[:2]]


@pytest.mark.parametrize("args, words", [
    (["--static", "--preset", "no_such"], "--preset 'no_such'"),
    (["--static", "--impl", "cutile", "--preset", "tma_streamk"], "--preset 'tma_streamk'"),
    (["--static", "--jobs", "0"], "--jobs 0"),
    (["--static", "--quick", "--preset", "hopper"], "--quick"),
    (["--preset", "hopper", "--sweep", "gelu"], "go with --static"),
])
def test_static_bad_flags_exit_2_with_one_line(tmp_path, capsys, args, words):
    from bench import cli
    assert cli.main([*args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err
    assert not (tmp_path / "results.jsonl").exists()


@pytest.mark.slow
def test_static_compiles_in_worker_processes(tmp_path):
    """The real thing on two workers: Triton's GELU for two archs, every row stored once, all ok."""
    from bench.machine import static
    from bench.measure.store import ResultStore
    store = ResultStore(str(tmp_path / "results.jsonl"))
    rows = static.run(["sm_80", "sm_90"], store, ops=["gelu"], impls=["triton"], jobs=2, progress=False)
    assert rows and {r["arch"] for r in rows} == {"sm_80", "sm_90"} and {r["preset"] for r in rows} == {"default"}
    assert all(r["status"] == "ok" and r["cubin_bytes"] for r in rows), [(r["kernel"], r["message"]) for r in rows]
    assert len(store.rows()) == len(rows) == len({r["point_id"] for r in rows})
    assert static.summary(rows, ["sm_80", "sm_90"], 3.21, 2) == \
        f"static: {len(rows)} kernels compiled for sm_80,sm_90 in 3.2 s (2 jobs)"
