"""docs/results.md documents every column a row carries, and every row a writer finishes carries the schema version:
real H100 rows (tests/fixtures/h100_first_look.jsonl: the fmha first look and model_ops points, trimmed) and rows
written here by a tiny CPU sweep, an e2e step and a --static pass."""
import json
import os
import re

import pytest

from kernels.rows import SCHEMA_VERSION, flatten, frame, read_rows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "h100_first_look.jsonl")


def documented() -> set[str]:
    text = open(os.path.join(ROOT, "docs", "results.md")).read()
    return set(re.findall(r"^\| `([A-Za-z0-9_]+)` \|", text, flags=re.M))


def undocumented(rows) -> set[str]:
    return {k for r in rows for k in r} - documented()


def test_real_gpu_rows_are_documented():
    rows = read_rows(FIXTURE)
    assert len(rows) >= 40 and {r["device_name"] for r in rows} == {"NVIDIA H100 80GB HBM3"}
    assert undocumented(rows) == set()
    assert os.path.getsize(FIXTURE) < 200_000


def test_the_flat_frame():
    df = frame(FIXTURE)
    assert len(df) == len(read_rows(FIXTURE))
    for col in ("shape.B", "shape.causal", "errors.out", "stress.qkv_view", "config_full.TILE_M", "median_ms"):
        assert col in df, col
    assert not any(isinstance(v, dict) for v in df["shape.B"])
    assert flatten([]).empty


def _fresh_rows(tmp_path, monkeypatch):
    from bench import cli
    from bench.machine import static
    from bench.measure import runner
    from bench.measure.store import ResultStore
    # a tiny CPU sweep: kernel rows as the runner finishes them (ok, and unavailable ones)
    out = tmp_path / "sweep"
    assert cli.main(["--sweep", "gelu", "--quick", "--impl", "eager", "--impl", "cutile", "--device", "cpu",
                     "--out", str(out), "--no-report", "--budget", "0.02"]) == 0
    rows = read_rows(str(out))
    # an e2e step, through the runner as a sweep runs it
    point = {"sweep": "t", "op": "e2e", "impl": "eager", "shape": {"model": "tiny", "B": 2, "T": 16}, "dtype": "fp32",
             "pass": "train_step", "config": {}, "config_label": "default", "extra": {"steps": 2},
             "timer": "cpu_clock", "point_id": "e2e-tiny"}
    rows.append(runner.run_point(point, "cpu", runner.Options(budget_s=0.02, measure_peaks=False)))
    # --static rows (an impl that cannot compile here: the row is written all the same)
    monkeypatch.setattr(static, "targets", lambda ops=None, impls=None: iter([("gelu", "cutile", None, "no tileiras")]))
    store = ResultStore(str(tmp_path / "static" / "results.jsonl"))
    rows += static.run(["sm_90"], store, progress=False)
    assert read_rows(store.path)[0]["schema_version"] == SCHEMA_VERSION
    return rows


def test_every_new_row_has_the_schema_version_and_is_documented(tmp_path, monkeypatch):
    rows = _fresh_rows(tmp_path, monkeypatch)
    kinds = {(r["op"], r.get("mode"), r["status"]) for r in rows}
    assert ("gelu", None, "ok") in kinds and ("gelu", None, "unavailable") in kinds
    assert any(r["op"] == "e2e" for r in rows) and any(r.get("mode") == "static" for r in rows)
    assert all(r.get("schema_version") == SCHEMA_VERSION for r in rows), \
        [(r["op"], r.get("mode")) for r in rows if r.get("schema_version") != SCHEMA_VERSION]
    assert undocumented(rows) == set()
    json.dumps(rows, default=str)


@pytest.mark.parametrize("key", ["schema_version", "median_ms", "stress_declined", "roofline_frac", "git_commit"])
def test_key_columns_are_documented(key):
    assert key in documented()
