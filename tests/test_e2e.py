"""bench/e2e.py on CPU: a tiny model's training step gives a sane row, with breakdown and fallbacks."""
import json
from pathlib import Path

import pytest

from bench.e2e import run_e2e_point
from model.op_list import OPS as MODEL_OPS
from model import data
from kernels.device import name as device_name

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare/input.txt"
POINT = {"model": "tiny", "B": 2, "T": 32, "dtype": "fp32", "steps": 3, "warmup": 1}


def test_eager_row_is_sane():
    r = run_e2e_point({**POINT, "backend": "eager", "peak_tflops": 1.0}, "cpu")
    assert r["status"] == "ok", r["message"]
    assert 0 < r["ms_q1"] <= r["ms_per_step"] <= r["ms_q3"]
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
