"""The torch_compile peer really compiles at every point, and a compile that would fall back to eager is a
compile_error row with its reason (never `ok`). CPU: inductor's C++ backend, tiny gelu shapes, mode default."""
import contextlib

import pytest
import torch

import kernels.gelu as gelu_pkg
from bench.measure import runner
from bench import sweeps
from kernels import compiled, registry
from kernels.gelu.eager import gelu
from tests.helpers import _clear

OPTS = runner.Options(budget_s=0.02, measure_peaks=False)


def _gelu_with_break(x, bias=None):
    y = gelu(x, bias)
    torch._dynamo.graph_break()   # what an untraceable line in an eager op does to the compile
    return y * 1.0


BREAKS = compiled.compiled_impl(_gelu_with_break)


@contextlib.contextmanager
def _compile_on_cpu(monkeypatch):
    monkeypatch.setenv("TILEBENCH_COMPILE_ON_CPU", "1")
    saved = dict(gelu_pkg.IMPLS)
    gelu_pkg.IMPLS["compile_breaks"] = "tests.test_compiled:BREAKS"
    _clear()
    try:
        yield
    finally:
        gelu_pkg.IMPLS.clear()
        gelu_pkg.IMPLS.update(saved)
        _clear()


def _point(impl, shape, config=None):
    p = {"sweep": "t", "op": "gelu", "impl": impl, "shape": shape, "dtype": "fp32", "pass": "fwd",
         "config": config or {}, "config_label": "default"}
    p["point_id"] = sweeps.point_id(p)
    return p


def test_every_shape_compiles_past_the_recompile_limit(monkeypatch):
    shapes = [{"M": m, "C": 8} for m in range(3, 14)]
    assert len(shapes) > torch._dynamo.config.recompile_limit   # the limit that used to turn the peer eager
    with _compile_on_cpu(monkeypatch):
        for shape in shapes:
            before = compiled.graphs_compiled()
            row = runner.run_point(_point("torch_compile", shape), "cpu", OPTS)
            assert row["status"] == "ok", (shape, row["message"])
            assert row["picked_config"] == {"mode": "default", "graphs_compiled": 1}, shape
            assert compiled.graphs_compiled() > before, shape


def test_graph_break_is_a_compile_error(monkeypatch):
    with _compile_on_cpu(monkeypatch):
        row = runner.run_point(_point("compile_breaks", {"M": 5, "C": 8}), "cpu", OPTS)
    assert row["status"] == "compile_error", row["message"]
    assert "would run eager" in row["message"] and "graph_break" in row["message"]
    assert "median_ms" not in row


def test_dynamo_disabled_is_a_compile_error(monkeypatch):
    # torch.compile then runs eager code
    with torch._dynamo.config.patch(disable=True), _compile_on_cpu(monkeypatch):
        row = runner.run_point(_point("torch_compile", {"M": 17, "C": 8}), "cpu", OPTS)
    assert row["status"] == "compile_error" and "eager" in row["message"], row["message"]


def test_no_graph_compiled_is_a_compile_error(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)   # a compile that quietly hands back eager code
    with _compile_on_cpu(monkeypatch):
        row = runner.run_point(_point("torch_compile", {"M": 18, "C": 8}), "cpu", OPTS)
    assert row["status"] == "compile_error" and "compiled no graph" in row["message"], row["message"]


@torch._dynamo.config.patch(recompile_limit=1)
def test_recompile_limit_raises_instead_of_running_eager():
    x, b = torch.randn(4, 8, requires_grad=True), torch.randn(8)
    impl = compiled.compiled_impl(gelu)
    impl.fn(x, b)
    with torch.no_grad(), pytest.raises(compiled.CompileFallback, match="would run eager"):
        impl.fn(x, b)             # grad mode is guarded: a second compile of the same signature
    assert runner.classify(compiled.CompileFallback("x"))[0] == "compile_error"


def test_modes_are_configs_and_reduce_overhead_needs_graph_timing(monkeypatch):
    impl = registry._import_impl("gelu", "torch_compile")[0]
    assert {p.name: p.choices for p in impl.params} == {"mode": compiled.MODES}
    with _compile_on_cpu(monkeypatch):
        row = runner.run_point(_point("torch_compile", {"M": 4, "C": 8}, {"mode": "reduce-overhead"}), "cpu", OPTS)
    assert row["status"] == "unsupported" and "--cuda-graph" in row["message"]
    assert impl.timer_refusal({"mode": "reduce-overhead"}, "graph") is None
    assert impl.timer_refusal({"mode": "default"}, "events") is None


def test_a_failed_first_call_is_not_kept_so_the_next_call_of_that_signature_fails_too(monkeypatch):
    """The battery's compile ahead makes a signature's first call and ignores its failure; the judged call that
    follows must meet the failure again, not a callable left behind that runs eager."""
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)   # eager code under the compile's name
    impl = compiled.compiled_impl(gelu)
    x, b = torch.randn(4, 8), torch.randn(8)
    for _ in range(2):
        with pytest.raises(compiled.CompileFallback, match="compiled no graph"):
            impl.fn(x, b)
