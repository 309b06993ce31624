"""Whole-step CUDA graphs (model/cuda_graph.py): on the CPU only the host side can be checked, i.e. the
refusals (one line each), the option plumbing through model.train, bench.measure.e2e and sweeps.yaml, and the
optimizer made capturable. tools/cuda_graph_check.sh runs the real thing on a GPU."""
import textwrap

import pytest
import torch

from bench import sweeps as sw
from bench.measure.e2e import run_e2e_point
from model import cuda_graph, train
from model.config import GPTConfig
from model.gpt import GPT


def test_refuses_cpu():
    why = cuda_graph.refusal("cpu", "bf16")
    assert why == "--cuda-graph needs a CUDA device (device is cpu)"


@pytest.mark.parametrize("kw,needle", [
    (dict(dtype="fp16"), "GradScaler"),
    (dict(dtype="bf16", world=2), "DDP (2 processes)"),
    (dict(dtype="bf16", compile=True), "--compile"),
])
def test_refuses_what_cannot_be_captured(monkeypatch, kw, needle):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    why = cuda_graph.refusal("cuda:0", **kw)
    assert why and needle in why and "\n" not in why


def test_accepts_bf16_fp32_and_grad_accum(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cuda_graph.refusal("cuda", "bf16") is None and cuda_graph.refusal("cuda:1", "fp32") is None


def test_trainer_refuses_before_touching_anything(tmp_path):
    cfg = train.load_config("tiny", {"cuda_graph": True, "out_dir": str(tmp_path / "o"), "data_dir": str(tmp_path)})
    with pytest.raises(ValueError, match="needs a CUDA device"):
        train.Trainer(cfg, log=lambda m: None)
    assert not (tmp_path / "o").exists()


def test_cli_exits_2_with_one_line(capsys):
    assert train.main(["--config", "tiny", "--cuda-graph"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --cuda-graph needs a CUDA device (device is cpu)"]


def test_options_parse():
    cfg = train.parse_args(["--config", "tiny", "--cuda-graph", "--graph-warmup", "5"])
    assert cfg.cuda_graph is True and cfg.graph_warmup == 5
    assert train.parse_args(["--config", "tiny"]).cuda_graph is False


def test_optimizer_made_capturable():
    m = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11))
    opt = m.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu", capturable=True)
    assert all(g["capturable"] for g in opt.param_groups)
    cuda_graph.make_capturable(opt, "cpu")
    for g in opt.param_groups:   # a tensor the schedule fills in place; the graph reads its memory
        assert isinstance(g["lr"], torch.Tensor) and g["lr"].item() == pytest.approx(1e-3)


def test_e2e_point_is_unsupported_on_cpu():
    r = run_e2e_point({"model": "tiny", "backend": "eager", "B": 2, "T": 16, "dtype": "fp32", "steps": 1,
                       "cuda_graph": True}, "cpu")
    assert r["status"] == "unsupported" and "needs a CUDA device" in r["message"] and r["cuda_graph"] is True


def test_sweep_key(tmp_path):
    s = sw.load("sweeps.yaml")
    plain = sw.points(s["e2e"], "cuda", impl_filter=["eager"])
    graph = sw.points(s["e2e_graph"], "cuda", impl_filter=["eager"])
    assert graph and all(p["extra"]["cuda_graph"] is True and p["config_label"] == "cuda_graph" for p in graph)
    assert not {p["point_id"] for p in plain} & {p["point_id"] for p in graph}
    bad = tmp_path / "sweeps.yaml"
    bad.write_text(textwrap.dedent("""
        sweeps:
          g:
            op: gelu
            cuda_graph: true
            shapes: [{M: 8, C: 8}]
    """))
    with pytest.raises(sw.SweepError, match="cuda_graph"):
        sw.load(str(bad))
