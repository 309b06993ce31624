"""A non-editable install runs from any directory: `tilebench` (the console script) reads the sweeps it shipped, writes
results and reports under the working directory, records the commit it was built from, and the model's `--backend
auto` finds the harness from there. The installed copy goes into a prefix of its own, first on PYTHONPATH, with the
working directory elsewhere, so nothing of the checkout is imported."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("prefix")
    import importlib.util
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]   # no download
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *isolation, "--prefix", str(prefix), ROOT],
                   check=True, capture_output=True, timeout=600)
    site = next(prefix.glob("lib/python*/site-packages"))
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONUNBUFFERED": "1"}
    env.pop("TILEBENCH_GIT_COMMIT", None)
    return prefix, site, env


@pytest.mark.slow   # ~1 min: a wheel build, a quick CPU sweep and two training steps
def test_a_non_editable_install_runs_from_another_directory(installed, tmp_path):
    prefix, site, env = installed
    work = tmp_path / "work"
    work.mkdir()
    where = subprocess.run([sys.executable, "-c", "import bench, model; print(bench.__file__, model.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert where.count(str(site)) == 2, where                   # the installed copy, not the checkout
    r = subprocess.run([str(prefix / "bin" / "tilebench"), "--sweep", "fmha", "--quick", "--impl", "eager",
                        "--device", "cpu"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    results = list((work / "results").glob("*/results.jsonl"))
    assert len(results) == 1 and list((work / "reports").glob("*/index.html"))
    rows = [json.loads(line) for line in results[0].read_text().splitlines()]
    assert rows and all(r["status"] == "ok" for r in rows)
    assert all(r.get("git_commit") for r in rows)               # bench/data/build.json: the commit built from

    # the model's auto backend, run from there: it measures through the installed harness into ./results
    text = work / "input.txt"
    text.write_text("".join("abcdefgh \n"[(i * 7) % 10] for i in range(3000)))
    subprocess.run([sys.executable, "-m", "model.data", "shakespeare_char", "--input", str(text), "--out",
                    "data/tiny"], cwd=work, env=env, check=True, capture_output=True, timeout=300)
    t = subprocess.run([sys.executable, "-m", "model.train", "--model", "tiny", "--n-layer", "1", "--n-head", "2",
                        "--n-embd", "32", "--block-size", "8", "--batch-size", "1", "--dtype", "fp32", "--device",
                        "cpu", "--data-dir", "data/tiny", "--out-dir", "out", "--max-iters", "2", "--eval-interval",
                        "0", "--backend", "auto"], cwd=work, env=env, capture_output=True,
                       text=True, timeout=900)
    assert t.returncode == 0, (t.stdout[-1500:], t.stderr[-1500:])
    assert list((work / "results").glob("**/auto/results.jsonl")), t.stderr[-1500:]


def test_the_wheel_ships_the_sweeps_and_the_commit(installed):
    _, site, _ = installed
    data = site / "bench" / "data"
    assert (data / "sweeps.yaml").read_text() == open(os.path.join(ROOT, "sweeps.yaml")).read()
    assert {p.name for p in (data / "tuning").iterdir()} == set(os.listdir(os.path.join(ROOT, "tuning")))
    assert "git_commit" in json.loads((data / "build.json").read_text())
