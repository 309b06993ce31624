"""The battery's compiles ahead of the sweep: cuda.tile impls' cases run once, unjudged, in a thread pool, with
cuTile's process-wide compile lock let go while tileiras runs, so the compiles overlap."""
import dataclasses
import threading

import pytest

from bench.measure import stress
from kernels import cutile_env
from kernels.gelu.spec import SPEC
from tests import fake_impls

SHAPE = SPEC.full_shape({"M": 33, "C": 65})
CASES = {(2, 151, 65), (1, 65), (302, 65)}    # the gelu battery's shapes at C=65


def _recording(backend, fn=None):
    threads, shapes = set(), []

    def record(x, bias=None):
        threads.add(threading.current_thread().name)
        shapes.append(tuple(x.shape))
        return (fn or fake_impls._right)(x, bias)
    return dataclasses.replace(fake_impls.RIGHT, fn=record, backend=backend), threads, shapes


def test_cuda_tile_impls_run_each_case_once_in_the_pool_and_the_judged_battery_still_runs():
    stress.clear()
    impl, threads, shapes = _recording("cutile")
    points = [(SPEC, "ct", impl, {}, SHAPE, "fp32", "fwd"), (SPEC, "ct", impl, {}, {**SHAPE, "M": 47}, "fp32", "fwd")]
    warm = stress.prewarm(points, "cpu", seed=0)
    assert warm["cases"] == 3 and sorted(shapes) == sorted(CASES)       # a case shared by two points: once
    assert warm["impls"] == {stress.ahead_key("ct", {}, "fp32")}      # its rows will say compile_ahead
    assert threads and all(t.startswith("battery-prewarm") for t in threads)
    shapes.clear()
    verdicts = stress.run(SPEC, "ct", impl, {}, SHAPE, "fp32", "fwd", "cpu", 0, classify=None)
    assert [v.status for v in verdicts] == ["ok"] * 3 and CASES <= set(shapes)   # prewarm judges nothing
    assert stress.prewarm(points, "cpu", seed=0)["cases"] == 0           # judged already: nothing left to warm


def test_other_backends_autotuning_configs_and_raising_kernels_are_left_to_the_judged_battery():
    stress.clear()
    triton, _, t_shapes = _recording("triton")
    tuned, _, a_shapes = _recording("tilegym")
    broken, _, _ = _recording("cutile", fn=fake_impls._raises)
    warm = stress.prewarm([(SPEC, "tr", triton, {}, SHAPE, "fp32", "fwd"),
                           (SPEC, "tg", tuned, {"autotune": True}, SHAPE, "fp32", "fwd")], "cpu", seed=0)
    assert warm["cases"] == 0 and not t_shapes and not a_shapes
    assert stress.prewarm([(SPEC, "bad", broken, {}, SHAPE, "fp32", "fwd+bwd")], "cpu", seed=0)["cases"] == 3
    verdicts = stress.run(SPEC, "bad", broken, {}, SHAPE, "fp32", "fwd+bwd", "cpu", 0,
                          classify=lambda e: ("error", str(e)))
    assert verdicts[0].status == "error" and "kernel exploded" in verdicts[0].message   # judged, and said, later


def test_the_runner_compiles_ahead_only_what_its_points_battery_would_run():
    from bench.measure import runner
    from tests.helpers import fake_gelu_impls
    from tests.test_runner import _point
    with fake_gelu_impls():
        pts = runner._battery_points([_point("f_right"), _point("f_nofp32"), _point("f_gone"),
                                      _point("f_tiled", config={"__missing_preset__": "x"}),
                                      {"op": "e2e", "impl": "triton"}], "cpu")
    assert [(p[1], p[3], p[5], p[6]) for p in pts] == [("f_right", {}, "fp32", "fwd")]


def test_the_lock_patch_is_undone_when_the_body_raises():
    ctc = pytest.importorskip("cuda.tile._compile")
    real = ctc.compile_cubin
    with pytest.raises(RuntimeError):
        with cutile_env.parallel_compiles():
            assert ctc.compile_cubin is not real
            raise RuntimeError("a case that raised")
    assert ctc.compile_cubin is real


def test_tileiras_runs_outside_cuda_tiles_compile_lock_and_the_kernels_still_compile(monkeypatch):
    pytest.importorskip("cuda.tile")
    if cutile_env.why_not_compilable():
        pytest.skip(cutile_env.why_not_compilable())
    from cuda.tile import _compile as ctc
    from kernels.gelu import cutile as g
    seen = []
    real = ctc.compile_cubin

    def spy(*args, **kwargs):   # the compile lock, as another thread finds it while this one's tileiras runs
        got = []

        def probe():
            free = ctc._compiler_lock.acquire(blocking=False)
            if free:
                ctc._compiler_lock.release()
            got.append(free)
        t = threading.Thread(target=probe)
        t.start()
        t.join()
        seen.append(got[0])
        return real(*args, **kwargs)
    monkeypatch.setattr(ctc, "compile_cubin", spy)
    monkeypatch.setenv("TILEBENCH_CUTILE_AOT_CACHE", "0")
    with cutile_env.parallel_compiles() as parallel:
        rows = g.IMPL.aot({}, "sm_90")
    assert parallel and rows and all(r["status"] == "ok" for r in rows)
    assert seen and all(seen)
    assert ctc.compile_cubin is spy                                          # put back as it was
    seen.clear()
    g.IMPL.aot({}, "sm_90")
    assert seen and not any(seen)                                            # outside: the lock held, as shipped


def test_the_pool_threads_take_the_sweeps_gpu_by_index(monkeypatch):
    """torch.cuda.set_device refuses a device without an index ("cuda"): the pool's initializer once passed one,
    every thread died and no case was compiled ahead (an H100 run, 2026-12-06). Each thread now takes the
    caller's current GPU by number."""
    import torch
    set_to = []

    def set_device(d):
        if isinstance(d, torch.device) and d.index is None:
            raise ValueError("Expected a torch.device with a specified index or an integer")
        set_to.append(d)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    stress.clear()
    impl, threads, _ = _recording("cutile")
    warm = stress.prewarm([(SPEC, "ct", impl, {}, SHAPE, "fp32", "fwd")], "cuda", seed=0, workers=2)
    assert warm["cases"] == 3 and set_to and set(set_to) == {3}


def test_triton_and_torch_compile_cases_compile_in_the_calling_thread_while_the_pool_works():
    stress.clear()
    ct, ct_threads, _ = _recording("cutile")
    triton, t_threads, t_shapes = _recording("triton")
    compiled, c_threads, c_shapes = _recording("compile")
    eager, _, e_shapes = _recording("eager")
    points = [(SPEC, n, impl, {}, SHAPE, "fp32", "fwd") for n, impl in
              (("ct", ct), ("tr", triton), ("tc", compiled), ("eg", eager))]
    points.append((SPEC, "tc", compiled, {}, {**SHAPE, "M": 302}, "fp32", "fwd"))   # at the size of 2 of its cases
    warm = stress.prewarm(points, "cpu", seed=0)
    assert warm["cases"] == 3 and warm["here_cases"] == 4 and warm["s"] >= warm["here_s"] and warm["failed"] == {}
    assert ct_threads and all(t.startswith("battery-prewarm") for t in ct_threads)
    assert t_threads == {threading.current_thread().name} and set(t_shapes) == CASES
    # inductor tunes on a graph's first launch: the cases at a size a point times (rows_3d and large_x, M=302) wait
    # for the judged battery, so that point does not reuse a pick the pool's kernels disturbed
    assert c_threads == {threading.current_thread().name} and c_shapes == [(1, 65)]
    assert not e_shapes     # eager compiles nothing: its cases wait for its points
    assert warm["impls"] == {stress.ahead_key(n, {}, "fp32") for n in ("ct", "tr", "tc")}   # rows: compile_ahead
    t_shapes.clear()
    verdicts = stress.run(SPEC, "tr", triton, {}, SHAPE, "fp32", "fwd", "cpu", 0, classify=None)
    assert [v.status for v in verdicts] == ["ok"] * 3 and CASES <= set(t_shapes)   # judged later, not here
    stress.clear()
    t_shapes.clear()
    assert stress.prewarm(points[1:], "cpu", seed=0)["here_cases"] == 0 and not t_shapes   # no pool: nothing ahead


def test_an_impl_that_raises_while_compiling_ahead_is_named():
    """A fault there can leave the GPU unusable; the next point's row would carry it, so the run names the impl."""
    stress.clear()
    ct, _, _ = _recording("cutile")
    broken, _, _ = _recording("triton", fn=fake_impls._raises)
    warm = stress.prewarm([(SPEC, "ct", ct, {}, SHAPE, "fp32", "fwd"), (SPEC, "bad", broken, {}, SHAPE, "fp32", "fwd")],
                          "cpu", seed=0)
    assert set(warm["failed"]) == {"bad"} and "kernel exploded" in warm["failed"]["bad"]


def test_torch_compile_cases_ahead_leave_nothing_in_inductors_disk_cache():
    """Their first-launch picks, made while the pool's kernels run, must not reach a later run timing that size."""
    from torch._inductor import config
    seen = []
    stress.clear()
    ct, _, _ = _recording("cutile")

    def record(x, bias=None):
        seen.append((config.autotune_local_cache, config.fx_graph_cache))
        return fake_impls._right(x, bias)
    compiled = dataclasses.replace(fake_impls.RIGHT, fn=record, backend="compile")
    before = (config.autotune_local_cache, config.fx_graph_cache)
    stress.prewarm([(SPEC, "ct", ct, {}, SHAPE, "fp32", "fwd"), (SPEC, "tc", compiled, {}, SHAPE, "fp32", "fwd")],
                   "cpu", seed=0)
    assert seen and set(seen) == {(False, False)} and (config.autotune_local_cache, config.fx_graph_cache) == before
