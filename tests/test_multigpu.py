"""Worker-per-GPU scheduling, exercised with CPU workers: a dead worker costs only its point."""
import os

from bench.scale import multigpu

from bench.measure import runner

from bench import sweeps
from bench.measure.store import ResultStore


def _points(impls, shapes):
    out = []
    for impl in impls:
        for m in shapes:
            p = {"sweep": "t", "op": "gelu", "impl": impl, "shape": {"M": m, "C": 17}, "dtype": "fp32", "pass": "fwd",
                 "config": {}, "config_label": "default"}
            p["point_id"] = sweeps.point_id(p)
            out.append(p)
    return out


def test_dead_worker_loses_only_its_point(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEBENCH_PLUGINS", "gelu:f_die=tests.fake_impls:DIE")
    pts = _points(["eager"], [3, 5, 7, 9]) + _points(["f_die"], [11]) + _points(["eager"], [13, 15])
    store = ResultStore(str(tmp_path / "r.jsonl"))
    opts = runner.Options(budget_s=0.02, measure_peaks=False)
    multigpu.run(pts, [0, 1], store, opts, log_dir=str(tmp_path), progress=False, worker_device="cpu")
    rows = store.rows()
    assert sorted(r["point_id"] for r in rows) == sorted(p["point_id"] for p in pts)   # every point once
    died = [r for r in rows if r["impl"] == "f_die"]
    assert len(died) == 1 and died[0]["status"] == "error" and "died (signal 9)" in died[0]["message"], died
    assert all(r["status"] == "ok" for r in rows if r["impl"] == "eager")
    assert {r["gpu_index"] for r in rows if r["impl"] == "eager"} <= {0, 1}
    assert os.path.exists(tmp_path / "worker-gpu0.log")


def test_replicate_runs_every_point_on_each_gpu(tmp_path):
    pts = _points(["eager"], [3, 5])
    store = ResultStore(str(tmp_path / "r.jsonl"))
    multigpu.run(pts, [0, 1], store, runner.Options(budget_s=0.02, measure_peaks=False), log_dir=str(tmp_path),
                 replicate=True, progress=False, worker_device="cpu")
    got = sorted((r["point_id"], r["gpu_index"]) for r in store.rows())
    assert got == sorted((p["point_id"], g) for p in pts for g in (0, 1))


def test_cost_order_puts_big_points_first():
    small = {"op": "gelu", "shape": {"M": 8, "C": 8}, "pass": "fwd", "dtype": "bf16"}
    big = {"op": "linear", "shape": {"M": 16384, "N": 3072, "K": 768}, "pass": "fwd+bwd", "dtype": "bf16"}
    assert multigpu.expected_cost(big) > multigpu.expected_cost(small)
    # a malformed point only loses its place in the order (it reports its own error when it runs)
    assert multigpu.expected_cost({**small, "shape": {"M": 8}}) == multigpu.expected_cost({**small, "op": "nope"}) == 0.2
