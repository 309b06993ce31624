"""Stress verdicts kept across runs: taken without a call where nothing that could change them changed, judged again
where anything did, and never taken from a run whose failure may belong to the moment."""
import dataclasses
import importlib.util
import json

import bench
from bench.measure import runner, stress, verdict_store
from kernels.gelu.spec import SPEC
from tests import fake_impls
from tests.helpers import fake_gelu_impls
from tests.test_runner import _point

SHAPE = SPEC.full_shape({"M": 33, "C": 65})
N_CASES = 3    # the gelu battery at C=65: (B, T, C) activations, large |x| over 302 rows, one row


def _recording(fn):
    calls = []

    def record(x, bias=None):
        calls.append(tuple(x.shape))
        return fn(x, bias)
    return dataclasses.replace(fake_impls.RIGHT, fn=record), calls


def _wrong_on_one_row(x, bias=None):
    y = fake_impls._right(x, bias)
    return y * 1.01 if x.shape[0] == 1 else y


def _battery(impl, folder, fresh=False, name="f"):
    """One run's battery for the gelu point: a new process's view (nothing in memory), the store at folder."""
    stress.clear()
    stress.use_store(verdict_store.open_store(str(folder), "cpu", 0, fresh))
    try:
        return stress.run(SPEC, name, impl, {}, SHAPE, "fp32", "fwd", "cpu", 0, classify=lambda e: ("error", str(e)))
    finally:
        stress.use_store(None)
        stress.clear()


def test_a_verdict_is_taken_in_the_next_run_without_calling_the_impl(tmp_path):
    impl, calls = _recording(fake_impls._right)
    first = _battery(impl, tmp_path)
    assert [v.status for v in first] == ["ok"] * N_CASES and len(calls) > 0 and all(v.kept is None for v in first)
    calls.clear()
    again = _battery(impl, tmp_path)
    assert not calls and [(v.regime, v.status) for v in again] == [(v.regime, v.status) for v in first]
    assert all(v.kept for v in again)
    row = {}
    stress.into_row(row, again)
    assert row["stress_kept"] == N_CASES


def test_a_wrong_verdict_is_kept_as_wrong_with_its_message(tmp_path):
    impl, calls = _recording(_wrong_on_one_row)
    first = _battery(impl, tmp_path)
    assert first[-1].status == "wrong" and first[-1].regime == "one_row"
    calls.clear()
    again = _battery(impl, tmp_path)
    assert not calls and (again[-1].status, again[-1].message) == ("wrong", first[-1].message)


def test_a_failure_of_the_moment_is_judged_again(tmp_path):
    impl, calls = _recording(fake_impls._raises)
    assert _battery(impl, tmp_path)[0].status == "error"
    calls.clear()
    assert _battery(impl, tmp_path)[0].status == "error" and calls     # called again: not kept


def test_fresh_judges_again_and_keeps_the_new_verdicts(tmp_path):
    impl, calls = _recording(fake_impls._right)
    _battery(impl, tmp_path)
    calls.clear()
    assert all(v.kept is None for v in _battery(impl, tmp_path, fresh=True)) and calls
    calls.clear()
    assert all(v.kept for v in _battery(impl, tmp_path)) and not calls


def test_a_line_cut_by_a_crash_is_skipped_and_the_rest_are_taken(tmp_path):
    impl, calls = _recording(fake_impls._right)
    _battery(impl, tmp_path)
    (path,) = tmp_path.glob("*.jsonl")
    with open(path, "a") as f:
        f.write('{"key": "3f2a", "regime": "one_r')
    calls.clear()
    assert all(v.kept for v in _battery(impl, tmp_path)) and not calls


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_an_edit_to_the_impls_own_file_judges_it_again(tmp_path):
    # an impl registered from outside kernels/ (a plugin, a zoo member) is keyed by its own file's content
    src = tmp_path / "my_gelu.py"
    body = "from tests.fake_impls import _right\n\ndef gelu(x, bias=None):\n    return _right(x, bias)\n"
    src.write_text(body)
    impl = dataclasses.replace(fake_impls.RIGHT, fn=_load(src, "my_gelu_a").gelu)
    _battery(impl, tmp_path / "v")
    assert all(v.kept for v in _battery(impl, tmp_path / "v"))
    src.write_text(body + "# edited\n")
    edited = dataclasses.replace(impl, fn=_load(src, "my_gelu_b").gelu)
    assert all(v.kept is None for v in _battery(edited, tmp_path / "v"))


def test_the_fingerprint_moves_with_the_kernels_source_the_settings_and_the_seed(tmp_path, monkeypatch):
    (tmp_path / "kernels" / "op").mkdir(parents=True)
    (tmp_path / "bench" / "measure").mkdir(parents=True)
    kernel = tmp_path / "kernels" / "op" / "kernel.py"
    kernel.write_text("BLOCK = 64\n")
    monkeypatch.setattr(bench, "SOURCE_ROOT", str(tmp_path))
    base = verdict_store.fingerprint("cpu", 0)
    assert verdict_store.fingerprint("cpu", 0) == base
    assert verdict_store.fingerprint("cpu", 1) != base
    kernel.write_text("BLOCK = 128\n")
    assert verdict_store.fingerprint("cpu", 0) != base
    kernel.write_text("BLOCK = 64\n")
    monkeypatch.setenv("TILEBENCH_GPU_DEFAULTS", "off")
    assert verdict_store.fingerprint("cpu", 0) != base
    monkeypatch.delenv("TILEBENCH_GPU_DEFAULTS")
    monkeypatch.setenv("TILEBENCH_VERDICTS", str(tmp_path / "elsewhere"))   # where they live is no part of them
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "tc"))
    assert verdict_store.fingerprint("cpu", 0) == base


def test_the_store_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("TILEBENCH_VERDICTS", "off")
    assert verdict_store.folder() is None
    monkeypatch.setenv("TILEBENCH_VERDICTS", str(tmp_path))
    assert verdict_store.folder() == str(tmp_path)
    monkeypatch.delenv("TILEBENCH_VERDICTS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    assert verdict_store.folder() == str(tmp_path / "c" / "tilebench" / "verdicts")


def test_kept_cases_are_not_compiled_ahead(tmp_path):
    impl, calls = _recording(fake_impls._right)
    impl = dataclasses.replace(impl, backend="cutile")
    _battery(impl, tmp_path, name="ct")
    calls.clear()
    stress.use_store(verdict_store.open_store(str(tmp_path), "cpu", 0))
    try:
        warm = stress.prewarm([(SPEC, "ct", impl, {}, SHAPE, "fp32", "fwd")], "cpu", seed=0)
    finally:
        stress.use_store(None)
        stress.clear()
    assert warm["cases"] == 0 and not calls


def test_the_runner_counts_kept_verdicts_in_each_row(tmp_path):
    from bench.measure.store import ResultStore
    opts = runner.Options(budget_s=0.05, measure_peaks=False, verdicts=str(tmp_path / "v"))
    rows = {}
    with fake_gelu_impls():
        for run, o in (("first", opts), ("second", opts), ("fresh", dataclasses.replace(opts, fresh_verdicts=True)),
                       ("off", dataclasses.replace(opts, verdicts=None))):
            stress.clear()   # each run a new process
            store = ResultStore(str(tmp_path / f"{run}.jsonl"))
            rows[run] = runner.run([_point("f_right")], "cpu", store, opts=o, progress=False)[0]
    stress.clear()
    assert all(r["status"] == "ok" for r in rows.values())
    assert rows["first"]["stress_kept"] == 0 and rows["second"]["stress_kept"] == N_CASES
    assert rows["fresh"]["stress_kept"] == 0 and rows["off"]["stress_kept"] == 0
    assert rows["second"]["stress"] == rows["first"]["stress"]
    lines = [json.loads(x) for x in next((tmp_path / "v").glob("*.jsonl")).read_text().splitlines()]
    assert len(lines) == 2 * N_CASES and {x["status"] for x in lines} == {"ok"}   # first and fresh wrote
