"""Stress verdicts kept across runs: taken without a call where nothing that could change them changed, judged again
where anything did, and never taken from a run whose failure may belong to the moment."""
import dataclasses
import io
import json
import os
import sys
import time

import pytest

import bench
from bench.measure import runner, stress, verdict_store
from kernels.gelu.spec import SPEC
from tests import fake_impls
from tests.test_runner import _point

SHAPE = SPEC.full_shape({"M": 33, "C": 65})
EAGER = "kernels.gelu.eager:IMPL"   # a ref into kernels/: what the fingerprint covers, so its verdicts are kept
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


@pytest.fixture(autouse=True)
def names_in_kernels(monkeypatch):
    """The test impls "f" and "ct" registered as if loaded from kernels/ (their calls are recorded here)."""
    import kernels.gelu as pkg
    for name in ("f", "ct"):
        monkeypatch.setitem(pkg.IMPLS, name, EAGER)
    verdict_store.keepable.cache_clear()
    yield
    verdict_store.keepable.cache_clear()


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


def test_impls_whose_code_is_outside_kernels_are_judged_every_run(tmp_path, monkeypatch):
    # a plugin's, a test's or a zoo member's file is no part of the fingerprint: an edit there would go unseen
    import kernels.gelu as pkg
    monkeypatch.setitem(pkg.IMPLS, "plugin", "my_pkg.gelu:IMPL")
    monkeypatch.setitem(pkg.IMPLS, "f_right", "tests.fake_impls:RIGHT")
    impl, calls = _recording(fake_impls._right)
    for name in ("plugin", "f_right", "never_registered"):
        _battery(impl, tmp_path, name=name)
        calls.clear()
        assert all(v.kept is None for v in _battery(impl, tmp_path, name=name)) and calls, name
    assert not list(tmp_path.glob("*.jsonl"))
    # nor is a `kernels` package found outside this copy's kernels/ (an older install on the path, say)
    monkeypatch.setattr(bench, "SOURCE_ROOT", str(tmp_path / "another_copy"))
    verdict_store.keepable.cache_clear()
    assert not verdict_store.keepable("gelu", "f")


def _fake_tree(root, monkeypatch):
    """A source root of one kernel file and one of the gate's, as bench.SOURCE_ROOT, stamped as at import."""
    (root / "kernels" / "op").mkdir(parents=True)
    (root / "bench" / "measure").mkdir(parents=True)
    (root / "bench" / "measure" / "check.py").write_text("# gate\n")
    (root / "kernels" / "op" / "kernel.py").write_text("BLOCK = 64\n")
    monkeypatch.setattr(bench, "SOURCE_ROOT", str(root))
    monkeypatch.setattr(bench, "STAMPS_AT_IMPORT", bench.verdict_source_stamps())
    return root / "kernels" / "op" / "kernel.py"


def test_an_edit_during_the_run_stops_both_keeping_and_taking(tmp_path, monkeypatch):
    kernel = _fake_tree(tmp_path / "src", monkeypatch)
    store = verdict_store.open_store(str(tmp_path / "v"), "cpu", 0)
    assert not store.off
    store.put("k1", {"regime": "r", "case": "c", "status": "ok", "message": ""})
    kernel.write_text("BLOCK = 128\n")     # edited while the run goes on: the code in memory is the old one
    store.flush()
    assert store.off and not list((tmp_path / "v").glob("*.jsonl"))        # nothing written
    again = verdict_store.open_store(str(tmp_path / "v"), "cpu", 0)         # the same process: still not its code
    assert again.off and not again.kept and again.get("k1") is None


@pytest.mark.parametrize("edit", ["BLOCK = 64  # tuned\n", "BLOCK = 32\n"])   # a new size; the same size
def test_an_edit_that_keeps_the_old_mtime_is_seen(tmp_path, monkeypatch, edit):
    # rsync -a, cp -p and tar restore mtimes (Python's own .pyc check reads size and mtime alone); the ctime moves
    kernel = _fake_tree(tmp_path / "src", monkeypatch)
    st = kernel.stat()
    time.sleep(0.01)
    kernel.write_text(edit)
    os.utime(kernel, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert kernel.stat().st_mtime_ns == st.st_mtime_ns
    assert verdict_store.edited() == [os.path.join("kernels", "op", "kernel.py")]


def test_a_kernel_edited_after_the_store_opened_gets_no_kept_verdict(tmp_path, monkeypatch):
    impl, calls = _recording(fake_impls._right)
    _battery(impl, tmp_path)
    store = verdict_store.open_store(str(tmp_path), "cpu", 0)   # opened with the code as imported
    assert not store.off and len(store.kept) == N_CASES
    stress.use_store(store)
    try:
        # then a kernel file moves (saved from an editor mid-sweep), before this point's battery
        stamps = dict(bench.STAMPS_AT_IMPORT)
        path = next(p for p in stamps if p.endswith(os.path.join("gelu", "eager.py")))
        stamps[path] = (stamps[path][0] + 1,) + stamps[path][1:]
        monkeypatch.setattr(bench, "STAMPS_AT_IMPORT", stamps)
        calls.clear()
        verdicts = stress.run(SPEC, "f", impl, {}, SHAPE, "fp32", "fwd", "cpu", 0, classify=None)
    finally:
        stress.use_store(None)
        stress.clear()
    assert all(v.kept is None for v in verdicts) and calls


def test_the_run_writes_its_verdicts_as_it_goes(tmp_path, monkeypatch):
    _fake_tree(tmp_path / "src", monkeypatch)
    store = verdict_store.open_store(str(tmp_path / "v"), "cpu", 0)
    for status in ("ok", "wrong", "declined", "error", "oom", "compile_error"):
        store.put(status, {"regime": "r", "case": "c", "status": status, "message": ""})
    assert not list((tmp_path / "v").glob("*.jsonl"))
    store.flush()
    again = verdict_store.open_store(str(tmp_path / "v"), "cpu", 0)
    assert set(again.kept) == {"ok", "wrong", "declined"}


def test_a_pick_made_by_timing_is_never_kept(tmp_path):
    store = verdict_store.open_store(str(tmp_path), "cpu", 0)
    assert store.key("case", "gelu", "f", {}, "triton") is not None
    assert store.key("case", "gelu", "f", {"autotune": True}, "triton") is None   # an autotuned config
    assert store.key("case", "gelu", "f", {"mode": "default"}, "compile") is None   # inductor's first launch


def test_verdicts_are_written_after_each_point(tmp_path):
    # a sweep killed later (SIGKILL, the OOM killer) keeps what its finished points judged
    impl, _ = _recording(fake_impls._right)
    stress.clear()
    stress.use_store(verdict_store.open_store(str(tmp_path), "cpu", 0))
    try:
        stress.run(SPEC, "f", impl, {}, SHAPE, "fp32", "fwd", "cpu", 0, classify=None)
        (path,) = tmp_path.glob("*.jsonl")
        assert len(path.read_text().splitlines()) == N_CASES      # before the store is closed
    finally:
        stress.use_store(None)
        stress.clear()


def test_a_short_write_is_finished(tmp_path, monkeypatch):
    # a full disk, a quota or NFS may take part of a write; the rest must follow, or the line is cut
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:7])))
    store = verdict_store.open_store(str(tmp_path), "cpu", 0)
    store.put("k", {"regime": "r", "case": "c", "status": "ok", "message": ""})
    store.flush()
    monkeypatch.undo()
    assert set(verdict_store.open_store(str(tmp_path), "cpu", 0).kept) == {"k"}


def test_only_the_stores_own_files_are_pruned(tmp_path):
    old = time.time() - (verdict_store.UNUSED_DAYS + 1) * 86400
    ours, results = tmp_path / ("ab" * 12 + ".jsonl"), tmp_path / "results.jsonl"
    for f in (ours, results):
        f.write_text("{}\n")
        os.utime(f, (old, old))
    verdict_store.open_store(str(tmp_path), "cpu", 0)
    assert not ours.exists() and results.exists()


def test_the_kernels_import_nothing_the_fingerprint_does_not_read():
    # kernels/ may import kernels/, torch, triton, cuda.tile and peers; an import of bench/, model/ or tests/ would be
    # code that changes a verdict without moving the fingerprint
    import ast
    bad = []
    for path in bench.verdict_source_files():
        if os.sep + "kernels" + os.sep not in path:
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            bad += [f"{path}: {n}" for n in names if n.split(".")[0] in ("bench", "model", "tests")]
    assert not bad


def test_the_fingerprint_moves_with_the_kernels_the_gate_the_settings_and_the_seed(tmp_path, monkeypatch):
    kernel = _fake_tree(tmp_path, monkeypatch)
    gate = tmp_path / "bench" / "measure" / "check.py"
    base = verdict_store.fingerprint("cpu", 0)
    assert verdict_store.fingerprint("cpu", 0) == base
    assert verdict_store.fingerprint("cpu", 1) != base
    for f, edit in ((kernel, "BLOCK = 128\n"), (gate, "# a looser gate\n")):
        old = f.read_text()
        f.write_text(edit)
        assert verdict_store.fingerprint("cpu", 0) != base, f
        f.write_text(old)
    for var in ("TILEBENCH_GPU_DEFAULTS", "TORCHINDUCTOR_MAX_AUTOTUNE", "NVIDIA_TF32_OVERRIDE", "CUDA_TILE_OPT",
                "TILEGYM_DISABLE_AUTOTUNE"):
        monkeypatch.setenv(var, "1")
        assert verdict_store.fingerprint("cpu", 0) != base, var
        monkeypatch.delenv(var)
    for part, value in (("_tree_stamp", lambda root: "an edited liger"),
                        ("_module_dir", lambda name: str(tmp_path))):
        with monkeypatch.context() as m:
            m.setattr(verdict_store, part, value)
            assert verdict_store.fingerprint("cpu", 0) != base, part
    with monkeypatch.context() as m:
        m.setattr(verdict_store.devinfo, "package_version", lambda p: "9.9" if p.startswith("nvidia-cublas") else None)
        assert verdict_store.fingerprint("cpu", 0) != base
    monkeypatch.setenv("TILEBENCH_VERDICTS", str(tmp_path / "elsewhere"))   # where they live is no part of them
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "tc"))
    assert verdict_store.fingerprint("cpu", 0) == base


def test_a_peers_installed_files_are_stamped(tmp_path):
    # an editable install (pip install -e) keeps its version through an edit; its files' sizes and times do not
    (tmp_path / "ops").mkdir()
    src = tmp_path / "ops" / "cross_entropy.py"
    src.write_text("def loss(x): ...\n")
    before = verdict_store._tree_stamp(str(tmp_path))
    src.write_text("def loss(x): ...  # in bf16\n")
    assert before is not None and verdict_store._tree_stamp(str(tmp_path)) != before
    assert verdict_store._tree_stamp(str(tmp_path / "absent")) is None


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
    for run, o in (("first", opts), ("second", opts), ("fresh", dataclasses.replace(opts, fresh_verdicts=True)),
                   ("off", dataclasses.replace(opts, verdicts=None))):
        stress.clear()   # each run a new process
        store = ResultStore(str(tmp_path / f"{run}.jsonl"))
        rows[run] = runner.run([_point("eager")], "cpu", store, opts=o, progress=False)[0]
    stress.clear()
    assert all(r["status"] == "ok" for r in rows.values())
    assert rows["first"]["stress_kept"] == 0 and rows["second"]["stress_kept"] == N_CASES
    assert rows["fresh"]["stress_kept"] == 0 and rows["off"]["stress_kept"] == 0
    assert rows["second"]["stress"] == rows["first"]["stress"]
    lines = [json.loads(x) for x in next((tmp_path / "v").glob("*.jsonl")).read_text().splitlines()]
    assert len(lines) == 2 * N_CASES and {x["status"] for x in lines} == {"ok"}   # first and fresh wrote


def test_a_gpus_worker_takes_and_keeps_verdicts_too(tmp_path, monkeypatch, capsys):
    from bench.scale import worker
    opts = json.dumps({"budget_s": 0.05, "measure_peaks": False, "verdicts": str(tmp_path / "v")})
    kept, stdout = [], sys.stdout
    for _ in range(2):
        stress.clear()   # each worker a new process
        monkeypatch.setattr(sys, "stdout", stdout)   # the worker keeps its stdout for rows, and prints elsewhere
        monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(_point("eager")) + "\n"))
        assert worker.main(["--device", "cpu", "--gpu", "0", "--opts", opts]) == 0
        row = json.loads(next(x for x in capsys.readouterr().out.splitlines() if x.startswith("ROW "))[4:])
        kept.append((row["status"], row["stress_kept"]))
    stress.clear()
    assert kept == [("ok", 0), ("ok", N_CASES)]
