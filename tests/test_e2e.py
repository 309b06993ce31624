"""bench/measure/e2e.py on CPU: a tiny model's training step gives a sane row, with breakdown and fallbacks."""
import json
from pathlib import Path

import pytest

from bench.measure.e2e import run_e2e_point
from model.op_list import OPS as MODEL_OPS
from model import data
from kernels.device import name as device_name
from tests.helpers import fake_gelu_impls

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare/input.txt"
POINT = {"model": "tiny", "B": 2, "T": 32, "dtype": "fp32", "steps": 3, "warmup": 1}


def test_eager_row_is_sane():
    r = run_e2e_point({**POINT, "backend": "eager", "peak_tflops": 1.0}, "cpu")
    assert r["status"] == "ok", r["message"]
    assert 0 < r["ms_q1"] <= r["ms_per_step"] <= r["ms_q3"]
    assert r["median_ms"] == r["ms_per_step"] and r["timer"] == "cpu_clock" and len(r["samples_ms"]) == 3
    assert r["host_median_ms"] > 0 and r["host_reps"] == 3 and len(r["host_samples_ms"]) == 3
    assert r["loss_check"]["ok"] and r["loss_check"]["reference"] == "itself" and len(r["loss_check"]["losses"]) == 3
    assert r["tokens_per_s"] == pytest.approx(2 * 32 / (r["ms_per_step"] * 1e-3))
    assert r["model_tflops"] > 0 and r["mfu"] == pytest.approx(r["model_tflops"])
    assert r["compile_s"] > 0 and r["fallbacks"] == [] and r["peak_mem_bytes"] is None
    for op in MODEL_OPS:
        if op in ("linear_cross_entropy", "add_layer_norm"):   # eager: unfused, as nanoGPT
            assert op not in r["breakdown"]
            continue
        assert r["breakdown"][op] > 0, (op, r["breakdown"])
        assert r["breakdown_detail"][f"{op}:fwd"] > 0 and r["breakdown_detail"][f"{op}:bwd"] > 0
    assert r["breakdown"]["optimizer"] > 0
    json.dumps(r)   # a JSONL row


def test_unavailable_backend_is_unsupported_not_mislabelled_eager():
    r = run_e2e_point({**POINT, "backend": "cutile"}, "cpu")
    assert r["status"] == "unsupported"
    assert len(r["fallbacks"]) == len(MODEL_OPS) and "ms_per_step" not in r


def test_partial_backend_reports_its_fallbacks():
    r = run_e2e_point({**POINT, "backend": "sdpa_math"}, "cpu")
    assert r["status"] == "ok" and any(f.startswith("linear: sdpa_math -> eager") for f in r["fallbacks"])
    assert r["ops_ran"] == ["fmha"] and "linear" in r["ops_fell_back"] and "fmha" not in r["ops_fell_back"]
    assert r["message"].startswith("1 of 7 ops ran sdpa_math; fell back to eager: ")
    # checked against eager from the same init and batches
    assert r["loss_check"]["ok"] and r["loss_check"]["reference"] == "eager"
    assert r["loss_check"]["max_rel_diff"] <= r["loss_check"]["tol"]


def test_backend_with_a_wrong_op_is_wrong_and_keeps_its_timing():
    with fake_gelu_impls():
        r = run_e2e_point({**POINT, "backend": "f_wrong"}, "cpu")   # gelu 5 % high
    assert r["status"] == "wrong", r["message"]
    assert "loss off eager's" in r["message"] and r["loss_check"]["max_rel_diff"] > r["loss_check"]["tol"]
    assert r["ops_ran"] == ["gelu"] and r["ms_per_step"] > 0


def test_backend_that_ran_none_of_its_ops_is_unsupported():
    with fake_gelu_impls():
        r = run_e2e_point({**POINT, "backend": "f_unsup"}, "cpu")   # gelu raises Unsupported at run time
    assert r["status"] == "unsupported" and r["message"].startswith("no op ran on f_unsup")
    assert r["ops_ran"] == [] and "gelu" in r["ops_fell_back"] and "ms_per_step" not in r


def test_bad_point_is_an_error_row():
    r = run_e2e_point({**POINT, "model": "nope", "backend": "eager"}, "cpu")
    assert r["status"] == "error" and "nope" in r["message"]


def test_auto_and_convergence(tmp_path):
    if not SHAKESPEARE.is_file():
        pytest.skip(f"{SHAKESPEARE} absent")
    data.prepare_char(tmp_path / "sc", SHAKESPEARE)
    res = tmp_path / "res.jsonl"
    res.write_text(json.dumps({"op": "fmha", "impl": "sdpa_math", "status": "ok", "pass": "fwd+bwd", "dtype": "fp32",
                               "median_ms": 1.0, "shape": {}, "device_name": device_name("cpu")}) + "\n")
    r = run_e2e_point({**POINT, "backend": "auto", "results": str(res), "converge_iters": 12,
                       "data_dir": str(tmp_path / "sc")}, "cpu")
    assert r["status"] == "ok", r["message"]
    assert "fmha=sdpa_math" in r["backend_choice"]
    assert [it for it, _ in r["losses"]] == list(range(12)) and r["converge_status"] == "ok"
    assert r["losses"][-1][1] < r["losses"][0][1]


def test_a_convergence_run_leaves_tf32_as_it_found_it(tmp_path, monkeypatch):
    # the trainer turns TF32 on for itself; the sweep's later fp32 points in this process must not run under it
    import torch
    from bench.measure import e2e
    from model import train
    (tmp_path / "train.bin").write_bytes(b"")
    done = {"train": [(0, 4.0)], "status": "ok", "message": "", "summary": {"median_tokens_per_s": 1.0},
            "fallbacks": []}

    def trains(cfg, log):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        return done
    monkeypatch.setattr(train, "run", trains)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        out = e2e._converge({**POINT, "backend": "eager", "converge_iters": 2, "data_dir": str(tmp_path)}, "cpu", 1,
                            8, "fp32")
        assert out["converge_status"] == "ok"
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_cli_backends_keep_a_mix_together():
    """--backends "eager,cutile,linear=eager": the override rides with cutile (it once ran as a backend of its
    own, 'linear=eager', on the GPU)."""
    from bench.measure.e2e import split_backends
    assert split_backends("eager,cutile,linear=eager,fmha=sdpa_cudnn,triton") == \
        ["eager", "cutile,linear=eager,fmha=sdpa_cudnn", "triton"]
    assert split_backends(" triton , ") == ["triton"]
