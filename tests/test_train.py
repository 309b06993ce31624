"""Training loop on CPU: convergence of a tiny model, exact resume, NaN stop, the CLI and sampling."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
from model import data, sample, train

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare/input.txt"


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory):
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} absent")
    out = tmp_path_factory.mktemp("shakespeare_char")
    data.prepare_char(out, SHAKESPEARE)
    return str(out)


def cfg(char_dir, out_dir, **kw):
    return train.load_config("tiny", {"data_dir": char_dir, "out_dir": str(out_dir), **kw})


def quiet(msg):
    pass


def test_tiny_model_converges(char_dir, tmp_path):
    res = train.run(cfg(char_dir, tmp_path, max_iters=40, eval_interval=0, eval_iters=2), log=quiet)
    assert res["status"] == "ok"
    losses = [l for _, l in res["train"]]
    assert len(losses) == 40 and losses[0] > 4.0                      # ~ln(65) at init
    assert sum(losses[-5:]) / 5 < losses[0] - 0.8, losses            # falls clearly
    assert res["eval"][-1]["val"] < 3.5


def test_resume_is_exact(char_dir, tmp_path):
    common = dict(max_iters=12, lr_decay_iters=12, eval_interval=6, eval_iters=2, dropout=0.1, grad_accum=2)
    full = train.run(cfg(char_dir, tmp_path / "a", **common), log=quiet)
    first = train.run(cfg(char_dir, tmp_path / "b", **{**common, "max_iters": 7}), log=quiet)
    ck = torch.load(tmp_path / "b/ckpt.pt", weights_only=True)
    assert ck["iter"] == 7 and ck["model_config"]["dropout"] == 0.1
    rest = train.run(cfg(char_dir, tmp_path / "b", **{**common, "resume": True}), log=quiet)
    assert first["status"] == rest["status"] == "ok"
    a = dict((it, l) for it, l in full["train"])
    b = dict((it, l) for it, l in rest["train"])
    assert sorted(b) == list(range(12))                    # history carried over from the checkpoint
    for it in range(7, 12):
        assert abs(a[it] - b[it]) <= 1e-6, (it, a[it], b[it])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(char_dir, tmp_path):
    log = tmp_path / "log.json"
    res = train.run(cfg(char_dir, tmp_path, max_iters=20, eval_interval=5, eval_iters=1, log_interval=1,
                        debug_nan_at=7, log_json=str(log)), log=quiet)
    assert res["status"] == "nonfinite"
    assert "iter 7" in res["message"] and "last good checkpoint" in res["message"]
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter"] == 5
    assert json.loads(log.read_text())["status"] == "nonfinite"


def test_nan_weights_never_replace_the_last_good_checkpoint(char_dir, tmp_path):
    """A step whose loss was finite but whose update left NaN in the weights: the next save refuses."""
    res = train.run(cfg(char_dir, tmp_path, max_iters=20, eval_interval=5, eval_iters=1, log_interval=1,
                        debug_nan_weights_at=9), log=quiet)
    assert res["status"] == "nonfinite"
    assert "non-finite weights at iter 10" in res["message"] and "last good checkpoint" in res["message"]
    ck = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ck["iter"] == 5
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if torch.is_tensor(v))


def test_lr_schedule(char_dir, tmp_path):
    t = train.Trainer(cfg(char_dir, tmp_path, warmup_iters=10, max_iters=100, learning_rate=1.0, min_lr=0.1))
    lrs = [t.get_lr(i) for i in range(120)]
    assert lrs[0] < lrs[5] < lrs[9] <= 1.0
    assert lrs[10] == pytest.approx(1.0) and lrs[55] == pytest.approx(0.55) and lrs[100] == lrs[119] == 0.1
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_cli_train_resume_and_sample(char_dir, tmp_path):
    out = tmp_path / "run"
    base = [sys.executable, "-m", "model.train", "--config", "tiny", "--data-dir", char_dir, "--out-dir", str(out)]
    p = subprocess.run(base + ["--max-iters", "6", "--eval-interval", "3", "--eval-iters", "1", "--dtype", "bf16",
                               "--log-json", str(out / "log.json")], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "ms/step" in p.stdout and "tok/s" in p.stdout
    log = json.loads((out / "log.json").read_text())
    assert log["status"] == "ok" and len(log["train"]) == 6 and log["fallbacks"] == []
    # resume with nothing but the folder and a new horizon; a NaN at iter 8 exits 3
    p = subprocess.run([sys.executable, "-m", "model.train", "--out-dir", str(out), "--resume", "--max-iters", "10",
                        "--debug-nan-at", "8", "--log-interval", "1"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 3, p.stdout[-2000:] + p.stderr[-2000:]
    assert "resumed from" in p.stdout and "STOP: loss is nan at iter 8" in p.stdout
    texts = sample.sample(out, start="ROMEO:", num_samples=2, max_new_tokens=20)
    assert len(texts) == 2 and all(t.startswith("ROMEO:") and len(t) == 26 for t in texts)


@pytest.fixture(scope="module")
def random_char_dir(tmp_path_factory):
    """A char dataset of random text: enough for tests that need batches, not a language."""
    out = tmp_path_factory.mktemp("random_char")
    g = torch.Generator().manual_seed(0)
    text = "".join("abcdefgh \n"[i] for i in torch.randint(0, 10, (4000,), generator=g).tolist())
    (out / "input.txt").write_text(text)
    data.prepare_char(out, out / "input.txt")
    return str(out)


def test_fp16_autocast_with_grad_scaler(random_char_dir, tmp_path):
    res = train.run(cfg(random_char_dir, tmp_path, max_iters=3, eval_interval=0, eval_iters=1, dtype="fp16"),
                    log=quiet)
    assert res["status"] == "ok"
    sc = torch.load(tmp_path / "ckpt.pt", weights_only=True)["scaler"]
    # the GradScaler updated after every step: its growth tracker counts the clean steps since the last
    # overflow, which halves the scale from its initial 2**16 (a scaler never updated keeps both at the start)
    assert sc["_growth_tracker"] == 3 or sc["scale"] < 2.0 ** 16, sc
