"""auto's whole-step trials (model/auto_step.py): the fastest candidate trains, the mix unless a single backend beats
it by more than the trials' noise; the model, its optimizer-to-be and the RNG streams come out untouched."""
import json

import pytest
import torch

from bench.measure.e2e import run_e2e_point
from kernels.device import name as device_name
from model import auto_step
from model.config import GPTConfig
from model.gpt import GPT
from model.ops import Backend

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=65)


def _mix(tmp_path, impl="sdpa_math"):
    """An auto backend whose per-op ranking picked fmha=impl (from one result row)."""
    res = tmp_path / "res.jsonl"
    res.write_text(json.dumps({"op": "fmha", "impl": impl, "status": "ok", "pass": "fwd+bwd", "dtype": "fp32",
                               "median_ms": 1.0, "shape": {}, "device_name": device_name("cpu")}) + "\n")
    b = Backend("auto", results=str(res), dtype="fp32", log=lambda m: None)
    b.resolve_auto("cpu")
    return b


def _fake_times(monkeypatch, times, fail=()):
    def fake(model, backend, *a):
        name = "mix" if backend.mode == "auto" else backend.spec
        if name in fail:
            raise RuntimeError(f"{name} broke\nsecond line")
        return times[name]
    monkeypatch.setattr(auto_step, "_time", fake)


def test_a_single_backend_replaces_the_mix_only_beyond_the_margin(tmp_path, monkeypatch):
    model = GPT(CFG, "eager")
    mix = _mix(tmp_path)
    assert auto_step.candidates(mix, "cpu")[0] == "mix" and "eager" in auto_step.candidates(mix, "cpu")
    _fake_times(monkeypatch, {"mix": 10.0, "eager": 9.95, "triton": 10.5, "cutile": 11.0})
    chosen, t = auto_step.choose(model, mix, 2, 16, "fp32", "cpu", False)
    assert chosen is mix and t.winner == "mix"                     # 0.5 % faster: noise, the mix stays
    _fake_times(monkeypatch, {"mix": 10.0, "eager": 9.5, "triton": 10.5, "cutile": 11.0})
    chosen, t = auto_step.choose(model, _mix(tmp_path), 2, 16, "fp32", "cpu", False)
    assert t.winner == "eager" and chosen.spec == "eager" and chosen.mode == "single"
    assert any("whole-step trials" in n and "-> eager" in n for n in chosen.notes)
    assert any(n.startswith("auto: fmha -> sdpa_math") for n in chosen.notes)   # the per-op picks stay on record
    row = t.as_row()
    assert row["auto_winner"] == "eager" and row["auto_trials_ms"]["mix"] == 10.0 and row["auto_trial_path"] == "plain"


def test_a_failing_candidate_is_out_and_said(tmp_path, monkeypatch):
    _fake_times(monkeypatch, {"mix": 10.0, "eager": 12.0}, fail=("mix",))
    chosen, t = auto_step.choose(GPT(CFG, "eager"), _mix(tmp_path), 2, 16, "fp32", "cpu", False)
    assert t.ms["mix"] is None and t.errors["mix"] == "RuntimeError: mix broke" and t.winner == "eager"


def test_graph_hint_names_the_faster_path(tmp_path, monkeypatch):
    mix = _mix(tmp_path)
    t = auto_step.Trials({"mix": 10.0}, "mix", 1.0, "plain", graph_ms=7.0)
    auto_step._say(mix, t)
    assert any("CUDA graph ran 7.00 ms/step (1.43x faster): --cuda-graph" in n for n in mix.notes)
    mix2 = _mix(tmp_path)
    auto_step._say(mix2, auto_step.Trials({"mix": 10.0}, "mix", 1.0, "plain", graph_ms=9.9))
    assert not any("CUDA graph" in n for n in mix2.notes)            # within 3 %: nothing to tell


def test_trials_leave_the_model_and_rng_as_they_were(tmp_path):
    torch.manual_seed(0)
    model = GPT(CFG, "eager")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    chosen, t = auto_step.choose(model, _mix(tmp_path), 2, 16, "fp32", "cpu", False, singles=("eager",))
    assert torch.equal(torch.rand(3), expected)                      # the run's random stream goes on as before
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(t.ms) == {"mix", "eager"} and all(v > 0 for v in t.ms.values()) and t.trial_s > 0


def test_e2e_auto_row_carries_its_trials(tmp_path):
    res = tmp_path / "res.jsonl"
    res.write_text(json.dumps({"op": "fmha", "impl": "sdpa_math", "status": "ok", "pass": "fwd+bwd", "dtype": "fp32",
                               "median_ms": 1.0, "shape": {}, "device_name": device_name("cpu")}) + "\n")
    point = {"model": "tiny", "B": 2, "T": 32, "dtype": "fp32", "steps": 2, "warmup": 1, "backend": "auto",
             "results": str(res), "auto_trials": True}
    r = run_e2e_point(point, "cpu")
    assert r["status"] == "ok", r["message"]
    assert r["loss_check"]["ok"]                                     # trials on copies: the checked losses unchanged
    assert r["auto_winner"] in r["auto_trials_ms"] and r["auto_trial_s"] > 0
    assert any("whole-step trials" in n for n in r["notes"])
    plain = run_e2e_point({**point, "auto_trials": False}, "cpu")
    assert "auto_winner" not in plain
    assert plain["loss_check"]["losses"] == pytest.approx(r["loss_check"]["losses"], rel=1e-4)   # same init, batches


def test_a_single_backend_equal_to_the_mix_is_not_tried_twice():
    b = Backend("eager", log=lambda m: None)
    b.mode = "auto"                       # an auto whose ranking picked eager for every op
    assert "eager" not in auto_step.candidates(b, "cpu")


def test_a_resumed_run_keeps_what_its_trials_chose(tmp_path, monkeypatch):
    import random
    from model import data, train
    rnd = random.Random(0)
    text = tmp_path / "input.txt"
    text.write_text("".join(rnd.choice("abcdefgh \n") for _ in range(4000)))
    data.prepare_char(tmp_path / "data", text)
    res = tmp_path / "res.jsonl"
    res.write_text(json.dumps({"op": "fmha", "impl": "sdpa_math", "status": "ok", "pass": "fwd+bwd", "dtype": "fp32",
                               "median_ms": 1.0, "shape": {}, "device_name": device_name("cpu")}) + "\n")
    _fake_times(monkeypatch, {"mix": 10.0, "eager": 5.0, "triton": 20.0, "cutile": 20.0})
    common = dict(model="tiny", n_layer=1, n_head=2, n_embd=32, block_size=8, batch_size=2, dtype="fp32",
                  device="cpu", data_dir=str(tmp_path / "data"), out_dir=str(tmp_path / "out"), backend="auto",
                  results=str(res), eval_interval=2, eval_iters=1, lr_decay_iters=4)
    logs = []
    first = train.run(train.load_config(None, {**common, "max_iters": 2, "auto_trials": True}), log=logs.append)
    assert first["status"] == "ok" and first["auto_trials"]["auto_winner"] == "eager"
    assert torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)["auto_winner"] == "eager"
    _fake_times(monkeypatch, {"mix": 1.0, "eager": 5.0, "triton": 20.0, "cutile": 20.0})   # would pick the mix now
    rest = train.run(train.load_config(None, {**common, "max_iters": 4, "auto_trials": True, "resume": True}),
                     log=logs.append)
    assert rest["status"] == "ok" and rest["auto_trials"] is None and rest["backend_choice"].startswith("fmha=eager")
    assert any("as the trials of the run resumed chose" in m for m in logs)
    logs.clear()                              # a backend named on resume is that backend, whatever auto chose
    named = train.run(train.load_config(None, {**common, "backend": "triton", "max_iters": 5, "resume": True}),
                      log=logs.append)
    assert named["status"] == "ok" and not any("resumed chose" in m for m in logs)
    assert torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)["auto_winner"] is None


def test_auto_trials_under_ddp_are_refused_in_one_line(monkeypatch, capsys):
    from model import train
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert train.main(["--config", "tiny", "--backend", "auto", "--auto-trials"]) == 2
    assert "--auto-trials under DDP" in capsys.readouterr().err
