"""The results history (bench/history.py): rows of many runs in one store, added safely twice, a point's time across
commits with exactly the real step flagged in a noisy series, and --compare between two commits of the store."""
import json
import random

import pytest

pytest.importorskip("duckdb")

from bench import cli, history  # noqa: E402
from bench.report import history_page, steps  # noqa: E402

COMMITS = ["a1b2c3d", "b2c3d4e", "c3d4e5f", "d4e5f60", "e5f6071", "f607182", "0718293", "1829304"]
STEP_AT = 5          # cutile is 20 % slower from the sixth commit on; triton has one 4 % outlier commit
DEVICE = "NVIDIA H100 80GB HBM3"


def _runs(root, seed=0, commits=COMMITS):
    """One run folder per commit: three impls of one fmha point, ~1.2 % run-to-run noise, ~1 % within a run."""
    rnd = random.Random(seed)
    folders = []
    for n, c in enumerate(commits):
        rows = []
        for impl, base in (("cutile", 0.100), ("triton", 0.114), ("sdpa_flash", 0.139)):
            level = base * (1.2 if impl == "cutile" and n >= STEP_AT else 1.0) * \
                (1.04 if impl == "triton" and n == 3 else 1.0) * rnd.gauss(1, 0.012)
            s = sorted(level * rnd.gauss(1, 0.01) for _ in range(16))
            rows.append({"op": "fmha", "impl": impl, "shape": {"B": 16, "H": 12, "T": 1024, "D": 64, "causal": True},
                         "dtype": "bf16", "pass": "fwd", "config": {}, "config_label": "default",
                         "timer": "cuda_events", "shape_label": "B16 H12 T1024 D64 causal", "status": "ok",
                         "median_ms": s[8], "q1_ms": s[4], "q3_ms": s[12], "iqr_rel": (s[12] - s[4]) / s[8],
                         "samples_ms": s, "point_id": f"p-{impl}", "git_commit": c, "device_name": DEVICE,
                         "host": "vm", "date": f"2026-12-{n + 1:02d}T10:00:00+00:00", "schema_version": 1})
        d = root / c
        d.mkdir(parents=True)
        (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        folders.append(str(d))
    return folders


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exactly_the_real_step_is_flagged(tmp_path, seed):
    runs = _runs(tmp_path / "runs", seed)
    store = str(tmp_path / "store")
    history.add(runs, store)
    s = history_page.flag(history_page.series(history.load(store)))
    assert len(s) == 3 * len(COMMITS)
    flagged = s[s["step"] != ""]
    assert [(r["impl"], r["git_commit"], r["step"], r["confirmed"]) for r in flagged.to_dict("records")] == \
        [("cutile", COMMITS[STEP_AT], "slower", True)]
    assert flagged.iloc[0]["step_ratio"] == pytest.approx(1.2, abs=0.04)


def test_step_rule():
    quiet = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0]
    assert steps.detect(quiet) == []
    assert steps.detect([1.0, 1.0, 1.3, 1.0, 1.0, 1.0]) == []                     # one outlier commit is no step
    got = steps.detect([1.0, 1.01, 0.99, 0.8, 0.81, 0.79])
    assert [(s.index, s.direction, s.confirmed) for s in got] == [(3, "faster", True)]
    newest = steps.detect([1.0, 1.01, 0.99, 1.0, 1.3])                              # at the newest commit
    assert [(s.index, s.confirmed) for s in newest] == [(4, False)]
    # a change within the series' noise (here: its repetitions' IQR of 20 %) is no step
    assert steps.detect([1.0, 1.0, 1.0, 1.1, 1.1, 1.1], iqr_rel=[0.2] * 6) == []
    assert len(steps.detect([1.0, 1.0, 1.0, 1.1, 1.1, 1.1], iqr_rel=[0.01] * 6)) == 1


def test_adding_the_same_results_twice_adds_nothing(tmp_path, capsys):
    runs = _runs(tmp_path / "runs")
    store = str(tmp_path / "store")
    assert history.add(runs, store) == (24, 0)
    assert history.add(runs, store) == (0, 24)
    assert history.add([runs[0] + "/results.jsonl"], store) == (0, 3)       # the file a folder named: the same rows
    assert cli.main(["--history-add", *runs, "--history-dir", store]) == 0
    assert "0 row(s) added, 24 already there" in capsys.readouterr().out
    df = history.load(store)
    assert len(df) == 24 and "shape.B" in df and "samples_ms" in df                  # one flat DataFrame
    assert set(history.load(store, impl="cutile", gpu="h100")["impl"]) == {"cutile"}
    # a later measurement of the same point by the same commit is a new row
    later = json.loads(open(runs[0] + "/results.jsonl").readline())
    later["date"] = "2026-12-01T11:00:00+00:00"
    (tmp_path / "later.jsonl").write_text(json.dumps(later) + "\n")
    assert history.add([str(tmp_path / "later.jsonl")], store) == (1, 0)


def test_history_command_prints_and_writes_a_page(tmp_path, capsys):
    store = str(tmp_path / "store")
    history.add(_runs(tmp_path / "runs"), store)
    assert cli.main(["--history", "--op", "fmha", "--impl", "cutile", "--gpu", "H100", "--shape", "T1024",
                     "--history-dir", store, "--report-dir", str(tmp_path / "page")]) == 0
    out = capsys.readouterr().out
    assert out.count("STEP") == 1 and "f607182" in out and "1 series, 1 step(s) flagged" in out
    page = (tmp_path / "page" / "index.html").read_text()
    assert "Steps" in page and "f607182" in page and list((tmp_path / "page").glob("history_*.png"))
    from bench.report.colors import impl_color
    assert impl_color("cutile") in page                    # the legend: the report's colour for the impl
    assert cli.main(["--history", "--op", "gelu", "--history-dir", store]) == 2


def test_compare_two_commits_from_the_store(tmp_path, capsys):
    store = str(tmp_path / "store")
    history.add(_runs(tmp_path / "runs"), store)
    args = ["--history-dir", store, "--report-dir", str(tmp_path / "page")]
    assert cli.main(["--compare", "a1b2c3d", "latest", "--fail-above", "5%", *args]) == 1
    out = capsys.readouterr().out
    cutile = [ln for ln in out.splitlines() if "fmha/cutile" in ln and "fmha/cutile " in ln]
    assert cutile and cutile[0].rstrip().endswith("slower")
    assert "a1b2c3d on NVIDIA H100" in out and "1829304 on NVIDIA H100" in out
    assert cli.main(["--compare", "a1b2c3d", "b2c3d4e", *args]) == 0          # before the step
    assert cli.main(["--compare", "a1b2c3d", "c3d4e5f", "--fail-above", "5%", *args]) == 0
    assert cli.main(["--compare", "a1b2", "1829304abcdef", *args]) == 0       # prefixes either way
    capsys.readouterr()
    assert cli.main(["--compare", "a1b2c3d", "deadbee", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'deadbee' is not in the results history" in err[0]


def test_without_duckdb_it_is_one_line(tmp_path, monkeypatch, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "duckdb", None)        # import duckdb raises ImportError
    assert cli.main(["--history-add", *_runs(tmp_path / "runs", commits=COMMITS[:1]),
                     "--history-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install -e ".[history]"' in err[0]
