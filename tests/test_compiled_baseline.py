"""The e2e torch.compile baseline is nanoGPT's model captured whole: one graph, the eager model's function,
really compiled (or compile_error), and reports name the fastest compile mode "the" compiled peer."""
import pytest
import torch

from bench.measure import compiled_baseline
from bench.measure.e2e import run_e2e_point
from model.config import preset
from model.gpt import GPT
from model.ops import EAGER_SDPA, Backend
from model.plain_gpt import PlainGPT

POINT = {"model": "tiny", "B": 2, "T": 32, "dtype": "fp32", "steps": 1, "warmup": 1, "profile_steps": 0}


def _batch(cfg, B=2, T=16):
    g = torch.Generator().manual_seed(1)
    return torch.randint(cfg.vocab_size, (B, T), generator=g), torch.randint(cfg.vocab_size, (B, T), generator=g)


def test_dynamo_captures_the_forward_as_one_graph():
    cfg = preset("tiny")
    x, y = _batch(cfg)
    ex = torch._dynamo.explain(PlainGPT(cfg))(x, y)
    assert (ex.graph_count, ex.graph_break_count) == (1, 0), ex.break_reasons
    # the Backend-dispatched model traces whole too since its decisions run at trace time (model/ops.py)
    ours = torch._dynamo.explain(GPT(cfg, Backend(EAGER_SDPA, annotate=False)))(x, y)
    assert (ours.graph_count, ours.graph_break_count) == (1, 0), ours.break_reasons


def test_same_function_and_weights_as_the_eager_model():
    cfg = preset("tiny")
    x, y = _batch(cfg)
    torch.manual_seed(3)
    ref = GPT(cfg, "eager")
    torch.manual_seed(3)
    plain = PlainGPT(cfg)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), plain.state_dict().values()))
    assert plain.lm_head.weight is plain.transformer.wte.weight        # tied, as nanoGPT
    (lr, r), (lp, p) = ref(x, y), plain(x, y)
    torch.testing.assert_close(lp, lr, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p, r)
    r.backward()
    p.backward()
    for (n, a), b in zip(ref.named_parameters(), plain.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_graph_break_in_the_baseline_is_a_compile_error(monkeypatch):
    monkeypatch.setenv("TILEBENCH_COMPILE_ON_CPU", "1")
    attention = PlainGPT._attention

    def breaking(self, attn, x):
        torch._dynamo.graph_break()
        return attention(self, attn, x)
    monkeypatch.setattr(PlainGPT, "_attention", breaking)
    r = run_e2e_point({**POINT, "backend": "torch_compile"}, "cpu")
    assert r["status"] == "compile_error" and "would run eager" in r["message"], r["message"]
    assert "ms_per_step" not in r


def test_compiled_baseline_needs_cuda_unless_forced(monkeypatch):
    monkeypatch.delenv("TILEBENCH_COMPILE_ON_CPU", raising=False)
    r = run_e2e_point({**POINT, "backend": "torch_compile_max_autotune"}, "cpu")
    assert r["status"] == "unsupported" and "TILEBENCH_COMPILE_ON_CPU" in r["message"]


@pytest.mark.slow
def test_compiled_step_really_compiles_and_matches_eager(monkeypatch):
    monkeypatch.setenv("TILEBENCH_COMPILE_ON_CPU", "1")
    r = run_e2e_point({**POINT, "backend": "torch_compile"}, "cpu")
    assert r["status"] == "ok", r["message"] + r.get("traceback", "")
    assert r["graphs_compiled"] == 1                         # the forward, whole (AOTAutograd adds the backward)
    assert r["loss_check"]["ok"] and r["loss_check"]["reference"] == "eager"
    assert r["backend_choice"] == "nanoGPT's model, torch_compile" and r["ms_per_step"] > 0


@pytest.mark.slow
@torch._dynamo.config.patch(recompile_limit=1)
def test_each_point_compiles_afresh(monkeypatch):
    """A sweep runs many compiled points in one process: none may hit dynamo's per-code recompile limit."""
    monkeypatch.setenv("TILEBENCH_COMPILE_ON_CPU", "1")
    for B in (2, 3):
        r = run_e2e_point({**POINT, "B": B, "backend": "torch_compile", "check_steps": 2}, "cpu")
        assert r["status"] == "ok" and r["graphs_compiled"] == 1, r["message"]


def test_best_rows_pick_the_fastest_mode_per_point():
    base = {"op": "e2e", "status": "ok", "device_name": "H200", "model": "gpt2_124m", "B": 16, "T": 1024,
            "dtype": "bf16", "cuda_graph": False}
    rows = [{**base, "impl": "torch_compile", "tokens_per_s": 100.0},
            {**base, "impl": "torch_compile_max_autotune", "tokens_per_s": 120.0},
            {**base, "impl": "torch_compile_graphs", "status": "compile_error", "tokens_per_s": None},
            {**base, "impl": "triton", "tokens_per_s": 500.0},
            {**base, "impl": "torch_compile", "model": "tiny", "tokens_per_s": 7.0}]
    best = sorted(compiled_baseline.best_rows(rows), key=lambda r: r["tokens_per_s"])
    assert [(r["model"], r["best_of"], r["tokens_per_s"], r["impl"]) for r in best] == [
        ("tiny", "torch_compile", 7.0, "torch_compile_best"),
        ("gpt2_124m", "torch_compile_max_autotune", 120.0, "torch_compile_best")]


def test_report_compares_against_the_fastest_compile_mode(tmp_path):
    import json

    from bench.report import pages
    base = {"op": "e2e", "status": "ok", "device_name": "H200", "model": "gpt2_124m", "B": 16, "T": 1024,
            "dtype": "bf16", "cuda_graph": False, "shape_label": "model=gpt2_124m B=16 T=1024", "mode": "kernel",
            "pass": "train_step", "date": "2026-12-01T00:00:00Z"}
    rows = [{**base, "impl": "torch_compile", "tokens_per_s": 100.0, "ms_per_step": 2.0},
            {**base, "impl": "torch_compile_max_autotune", "tokens_per_s": 125.0, "ms_per_step": 1.6},
            {**base, "impl": "triton", "tokens_per_s": 250.0, "ms_per_step": 0.8}]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pages.build([str(tmp_path / "r.jsonl")], str(tmp_path / "rep"))
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "triton / torch_compile_best" in page and "torch_compile_max_autotune" in page
    assert "torch_compile / torch_compile_graphs" not in page
