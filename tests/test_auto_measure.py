"""Backend("auto") with no results yet (model/measure.py): the trainer measures the op shapes its model calls,
once, through the harness, caches them under results/<gpu>/auto/, says so on stderr, then picks from them."""
import os
import random
import subprocess
import sys

import pytest

from kernels import registry
from kernels.device import slug
from model import data, measure, ranking, train
from model.config import GPTConfig
from model.gpt import GPT
from model.op_list import OPS as MODEL_OPS
from model.ops import Backend

TINY = dict(model="tiny", n_layer=1, n_head=2, n_embd=32, block_size=8, batch_size=1, dtype="fp32", device="cpu")


@pytest.fixture
def results_root(tmp_path, monkeypatch):
    root = tmp_path / "results"
    monkeypatch.chdir(tmp_path)       # results/ under the working directory
    return root


CHILD = "TILEBENCH_AUTO_MEASURE_CHILD"


def test_op_shapes_are_the_calls_of_one_forward():
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=8, vocab_size=65)
    shapes = measure.op_shapes(GPT(cfg, Backend("eager")), 3, 8, "cpu")
    assert set(shapes) == set(MODEL_OPS)     # the fused ops' candidate calls too
    M = 3 * 8
    assert {"M": M, "N": 96, "K": 32} in shapes["linear"] and {"M": M, "N": 32, "K": 128} in shapes["linear"]
    assert shapes["linear_cross_entropy"] == [{"M": M, "K": 32, "V": 65}]
    assert shapes["fmha"] == [{"B": 3, "H": 2, "T": 8, "D": 16, "causal": True, "qkv": True}]


@pytest.mark.slow   # ~40 s: the child process measures eager and the Triton interpreter at 11 shapes
def test_auto_without_results_measures_once_then_picks(results_root, tmp_path, capfd):
    if os.environ.get(CHILD) != "1":
        # Triton defines its kernels interpreted or compiled at import, for the whole process: the case that needs
        # the interpreter in-process runs in a child pytest, so this process's later tests see Triton as it is
        env = {**os.environ, "TRITON_INTERPRET": "1", CHILD: "1"}
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            f"{__file__}::test_auto_without_results_measures_once_then_picks"],
                           env=env, cwd=os.path.dirname(os.path.dirname(__file__)), capture_output=True, text=True,
                           timeout=1200)
        assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
        return
    rnd = random.Random(0)
    text = tmp_path / "input.txt"
    text.write_text("".join(rnd.choice("abcdefgh \n") for _ in range(4000)))
    data.prepare_char(tmp_path / "data", text)
    cfg = train.load_config(None, {**TINY, "data_dir": str(tmp_path / "data"), "out_dir": str(tmp_path / "out"),
                                   "backend": "auto"})
    t = train.Trainer(cfg, log=lambda m: None)
    cache = results_root / slug("cpu") / "auto"
    rows = ranking.read_results(str(cache / "results.jsonl"))
    ok = {(r["op"], r["impl"]) for r in rows if r["status"] == "ok"}
    for op in MODEL_OPS:              # every op the model calls, at its shapes, eager and Triton both timed
        assert (op, "eager") in ok and (op, "triton") in ok, op
    assert {r["dtype"] for r in rows} == {"fp32"} and {r["pass"] for r in rows} == {"fwd+bwd"}
    err = capfd.readouterr().err
    assert "auto: no launch-timed results" in err and str(cache) in err
    b = t.backend                         # picked from the measured rows: no op fell back for want of them
    assert not [f for f in b.fallbacks if "no usable" in f], b.fallbacks
    assert all(any(n.startswith(f"auto: {op} -> ") for n in b.notes) for op in MODEL_OPS), b.notes
    # a second run finds them: nothing is measured again
    n = len(rows)
    t2 = train.Trainer(cfg, log=lambda m: None)
    assert len(ranking.read_results(str(cache / "results.jsonl"))) == n
    assert "measuring" not in capfd.readouterr().err and t2.backend.choice == b.choice


def test_named_results_are_not_measured_into(results_root, tmp_path):
    b = Backend(f"auto:{tmp_path / 'none.jsonl'}", log=lambda m: None)
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=8, vocab_size=65)
    assert measure.ensure_results(b, GPT(cfg, b), 1, 8, "cpu") is None
    assert not results_root.exists()
