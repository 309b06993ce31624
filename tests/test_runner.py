"""The runner: every status is reachable, a bad point never stops the sweep, wrong points are never timed."""
import pytest

from bench.measure import runner

from bench import sweeps
from bench.measure.store import ResultStore
from tests.helpers import fake_gelu_impls


def _point(impl, shape=None, dtype="fp32", pass_="fwd", config=None, label="default"):
    p = {"sweep": "t", "op": "gelu", "impl": impl, "shape": shape or {"M": 33, "C": 65}, "dtype": dtype,
         "pass": pass_, "config": config or {}, "config_label": label}
    p["point_id"] = sweeps.point_id(p)
    return p


OPTS = runner.Options(budget_s=0.05, measure_peaks=False)


@pytest.mark.parametrize("impl,status,needle", [
    ("f_right", "ok", ""),
    ("f_wrong", "wrong", "rel-L2"),
    ("f_half", "wrong", "NaN"),
    ("f_nan", "wrong", "NaN"),
    ("f_raises", "error", "kernel exploded"),
    ("f_oom", "oom", "out of memory"),
    ("f_compile", "compile_error", "bad tile shape"),
    ("f_unsup", "unsupported", "multiple of 8"),
    ("f_nofp32", "unsupported", "dtype fp32"),
    ("f_gone", "import", "failed"),
])
def test_statuses(impl, status, needle):
    with fake_gelu_impls():
        row = runner.run_point(_point(impl), "cpu", OPTS)
    if status == "import":
        assert row["status"] == "unavailable" and "fake_impls_does_not_exist" in row["message"]
        return
    assert row["status"] == status, row["message"]
    assert needle in row["message"]
    if status == "ok":
        assert row["median_ms"] > 0 and row["reps"] >= 3 and row["gbps"] > 0 and row["compile_s"] >= 0
    else:
        assert "median_ms" not in row        # a wrong or failed point is never timed


@pytest.mark.parametrize("impl,status,needle", [
    ("f_flat_only", "error", "stress:rows_3d (M302 C65 fp32): RuntimeError: expected a 2-D input"),
    ("f_nan_past_50", "wrong", "stress:large_x (M302 C65 fp32): out:"),
])
def test_the_stress_battery_fails_what_the_timed_shape_cannot_show(impl, status, needle):
    from bench.measure import stress
    stress.clear()
    with fake_gelu_impls():
        row = runner.run_point(_point(impl), "cpu", OPTS)
    assert row["status"] == status and needle in row["message"], row["message"]
    assert "median_ms" not in row


def test_a_declined_stress_case_is_listed_and_the_rest_still_run():
    from bench.measure import stress
    stress.clear()
    with fake_gelu_impls():
        row = runner.run_point(_point("f_no_single_row"), "cpu", OPTS)
    assert row["status"] == "ok" and row["stress_declined"] == ["one_row"]
    assert row["stress"] == {"rows_3d": "ok", "one_row": "declined: needs 2 rows or more", "large_x": "ok"}


def test_the_battery_runs_once_per_impl_config_and_pass_and_can_be_switched_off():
    from bench.measure import stress
    from tests import fake_impls
    stress.clear()
    with fake_gelu_impls():
        runner.run_point(_point("f_counting", shape={"M": 33, "C": 65}), "cpu", OPTS)
        first = list(fake_impls.CALLS)
        fake_impls.CALLS.clear()
        row = runner.run_point(_point("f_counting", shape={"M": 47, "C": 65}), "cpu", OPTS)
        off = runner.run_point(_point("f_counting", shape={"M": 49, "C": 65}), "cpu",
                               runner.Options(budget_s=0.05, measure_peaks=False, stress=False))
    assert {(2, 151, 65), (1, 65), (302, 65)} <= set(first)         # the cases ran at the first point
    assert not {(2, 151, 65), (1, 65), (302, 65)} & set(fake_impls.CALLS)   # and not again
    assert row["stress"] == {"rows_3d": "ok", "one_row": "ok", "large_x": "ok"}
    assert off["status"] == "ok" and off["stress"] == "off"
    assert first.count((33, 65)) >= 1 + 8                               # first call, then 8 judged


def test_fwd_bwd_point_times_backward():
    with fake_gelu_impls():
        row = runner.run_point(_point("eager", pass_="fwd+bwd"), "cpu", OPTS)
    assert row["status"] == "ok" and "dx" in row["errors"] and row["median_ms"] > 0


def test_tile_configs_and_presets():
    with fake_gelu_impls():
        ok = runner.run_point(_point("f_tiled", config={"BLOCK": 128}, label="BLOCK=128"), "cpu", OPTS)
        bad = runner.run_point(_point("f_tiled", config={"BLOCK": 7}), "cpu", OPTS)
        unknown = runner.run_point(_point("f_tiled", config={"WARPS": 4}), "cpu", OPTS)
        missing = runner.run_point(_point("f_tiled", config={"__missing_preset__": "hopper"}), "cpu", OPTS)
    assert ok["status"] == "ok" and ok["config_full"] == {"BLOCK": 128}
    assert bad["status"] == "error" and "not in" in bad["message"]
    assert unknown["status"] == "error" and "unknown tile parameter" in unknown["message"]
    assert missing["status"] == "error" and "no preset 'hopper'" in missing["message"] and "small" in missing["message"]


def test_one_bad_point_never_stops_the_sweep(tmp_path):
    store = ResultStore(str(tmp_path / "r.jsonl"))
    with fake_gelu_impls():
        pts = [_point(i) for i in ("f_right", "f_raises", "f_wrong", "f_right")]
        pts[-1]["shape"] = {"M": 7, "C": 9}
        pts[-1]["point_id"] = sweeps.point_id(pts[-1])
        runner.run(pts, "cpu", store, runner.Options(budget_s=0.05, measure_peaks=False), progress=False)
    rows = store.rows()
    assert [r["status"] for r in rows] == ["ok", "error", "wrong", "ok"]
    for r in rows:      # run metadata on every row
        assert r["device_name"].startswith("CPU") and r["torch"] and "date" in r and "host" in r


def test_classify():
    import torch
    assert runner.classify(torch.cuda.OutOfMemoryError("CUDA out of memory"))[0] == "oom"
    assert runner.classify(RuntimeError("x"))[0] == "error"
