"""Sweeps as submitit job arrays, on the CPU through submitit's local executor (and a stand-in sbatch):
every point lands exactly once after the merge, and a task stopped mid-point (preempted, or killed) is
requeued or resubmitted and loses nothing."""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import cli, sweeps

from bench.scale import cluster
from bench.scale.shard_task import ShardTask, shard_dir
from bench.measure.store import read_rows
from tests.helpers import gelu_sweeps_file

needs_submitit = pytest.mark.skipif(not cluster._submitit(), reason="submitit not installed (pip install submitit)")
REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300     # generous: each task imports torch on a loaded 2-CPU machine


def sweep_file(tmp_path, impls=("eager",), ms=(11, 12, 13, 14, 15, 16)):
    return gelu_sweeps_file(tmp_path, impls, ms)


def expected_ids(path, also_impls=()):
    """Point ids of sweep g; also_impls: the same points for plugin impls this process does not register."""
    pts = sweeps.points(sweeps.load(str(path))["g"], "cpu")
    return sorted([p["point_id"] for p in pts] + [sweeps.point_id({**p, "impl": i}) for p in pts for i in also_impls])


def env_with(**extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    env.pop("TRITON_INTERPRET", None)
    return env


def run_bench(*args, env=None, timeout=TIMEOUT_S):
    return subprocess.run([sys.executable, "run_bench.py", *map(str, args)], cwd=REPO, env=env or env_with(),
                          capture_output=True, text=True, timeout=timeout)


def wait_for(what, cond, timeout=TIMEOUT_S, log=None):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}" + (f"\n{log()}" if log else ""))


def merged_ids(run):
    return sorted(r["point_id"] for f in sorted(run.glob("shard-*/results.jsonl")) for r in read_rows(str(f)))


@needs_submitit
def test_no_wait_then_collect_has_every_point_once(tmp_path):
    s, run, rep = sweep_file(tmp_path), tmp_path / "run", tmp_path / "rep"
    r = run_bench("--sweeps-file", s, "--sweep", "g", "--submit", "local", "--shards", 3, "--no-wait",
                  "--out", run, "--budget", 0.02)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"--collect {run}" in r.stdout
    wait_for("3 shards done", lambda: all(json.loads(p.read_text())["status"] == "done"
                                            for p in run.glob("shard-*/state.json")) and
             len(list(run.glob("shard-*/state.json"))) == 3,
             log=lambda: "\n".join(p.read_text()[-2000:] for p in run.glob("submitit/*.err")))
    r = run_bench("--collect", run, "--report-dir", rep)
    assert r.returncode == 0, r.stderr[-3000:]
    assert merged_ids(run) == expected_ids(s)           # every point, exactly once
    pts = sweeps.points(sweeps.load(str(s))["g"], "cpu")
    for i in range(3):                                   # each task ran its own shard
        got = sorted(r["point_id"] for r in read_rows(str(Path(shard_dir(str(run), i, 3)) / "results.jsonl")))
        assert got == sorted(p["point_id"] for p in sweeps.shard(pts, i, 3))
    assert "fastest" in r.stdout and "shard-2-of-3: done" in r.stderr
    assert (rep / "index.html").is_file()


@needs_submitit
def test_preempted_then_killed_task_loses_nothing(tmp_path):
    """Shard 0 blocks in a gated point: a preemption signal there requeues it (submitit checkpoint), a
    SIGKILL of the requeued process fails the job and the launcher resubmits it; then the gate opens."""
    gate = tmp_path / "gate"
    gate.mkdir()
    s, run = sweep_file(tmp_path, impls=("eager", "f_gate"), ms=(11, 12, 13)), tmp_path / "run"
    ids = expected_ids(sweep_file(tmp_path / "eager_only", ms=(11, 12, 13)), also_impls=("f_gate",))
    env = env_with(TILEBENCH_PLUGINS="gelu:f_gate=tests.fake_impls:GATED", TILEBENCH_GATE=str(gate))
    out, err = open(tmp_path / "out.txt", "w"), open(tmp_path / "err.txt", "w")
    proc = subprocess.Popen([sys.executable, "run_bench.py", "--sweeps-file", str(s), "--sweep", "g", "--submit",
                             "local", "--shards", "1", "--out", str(run), "--budget", "0.02", "--no-report"],
                            cwd=REPO, env=env, stdout=out, stderr=err)
    logs = lambda: (tmp_path / "err.txt").read_text()[-3000:] + "".join(
        p.read_text()[-3000:] for p in sorted(run.glob("submitit/*_log.*")))

    def entered(seen):
        new = [int(p.name.split("-")[1]) for p in gate.glob("entered-*")]
        return next((pid for pid in new if pid not in seen), None)
    try:
        first = wait_for("the gated point", lambda: entered(set()), log=logs)
        results = run / "shard-0-of-1" / "results.jsonl"
        eager_rows = read_rows(str(results))
        assert len(eager_rows) == 3 and {r["impl"] for r in eager_rows} == {"eager"}   # done before the gate
        os.kill(first, signal.SIGUSR2)                        # what Slurm sends on preemption / near the limit
        second = wait_for("the requeued task", lambda: entered({first}), log=logs)
        os.kill(second, signal.SIGKILL)                       # a crash: no checkpoint, the job fails
        wait_for("the resubmitted task", lambda: entered({first, second}), log=logs)
    finally:
        (gate / "open").touch()                               # never leave a task blocked
        try:
            proc.wait(timeout=TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
            out.close()
            err.close()
    assert proc.returncode == 0, logs()
    rows = read_rows(str(results))
    assert sorted(r["point_id"] for r in rows) == ids     # nothing lost, nothing measured twice
    assert all(r["status"] == "ok" for r in rows)
    assert [r["date"] for r in rows[:3]] == [r["date"] for r in eager_rows]   # finished points kept, not redone
    log = logs()
    assert "Requeued job" in log                                      # submitit's checkpoint path
    assert "died without a result" in log and "(attempt 2 of 3)" in log  # the launcher's retry
    state = json.loads((run / "shard-0-of-1" / "state.json").read_text())
    assert state["status"] == "done" and state["attempt"] == 2


@needs_submitit
def test_slurm_array_script(tmp_path):
    """With a stand-in sbatch: one array of N tasks, the flags in the script, --collect before any result."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncat "$1" >> {tmp_path}/sbatch.txt\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    s, run = sweep_file(tmp_path), tmp_path / "run"
    env = env_with(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    r = run_bench("--sweeps-file", s, "--sweep", "g", "--submit", "slurm", "--shards", 3, "--slurm-partition",
                  "gpu", "--slurm-account", "acct", "--slurm-time", 30, "--slurm-opt", "qos=high", "--no-wait",
                  "--out", run, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "job 4242_0, 4242_1, 4242_2" in r.stderr
    script = (tmp_path / "sbatch.txt").read_text()
    assert script.count("#!/bin/bash") == 1                  # one submission: an array
    for line in ("--array=0-2%3", "--partition=gpu", "--account=acct", "--time=30", "--gpus-per-task=1",
                 "--ntasks-per-node=1", "--qos=high", "--signal=USR2@"):
        assert f"#SBATCH {line}" in script, (line, script)
    assert "srun " in script and "submitit.core._submit" in script
    r = run_bench("--collect", run)
    assert r.returncode == 1 and "no results yet" in r.stderr and "shard-1-of-3: not started" in r.stderr


@pytest.mark.parametrize("flags, message", [
    (["--shards", "3"], "need --submit"),
    (["--submit", "local", "--shards", "0"], "--shards 0: need at least 1"),
    (["--submit", "local", "--shard", "0/2"], "drop --shard"),
    (["--submit", "local", "--slurm-partition", "gpu"], "--slurm-partition applies to --submit slurm"),
    (["--submit", "slurm", "--slurm-opt", "qos"], "expected KEY=VALUE"),
])
def test_bad_cluster_flags_exit_2_with_one_line(tmp_path, capsys, flags, message):
    assert cli.main(["--sweeps-file", str(sweep_file(tmp_path)), "--sweep", "g", "--device", "cpu", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_without_submitit_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)      # import submitit -> ImportError
    assert cli.main(["--sweeps-file", str(sweep_file(tmp_path)), "--sweep", "g", "--device", "cpu",
                     "--submit", "local", "--shards", "2", "--out", str(tmp_path / "run")]) == 2
    assert "pip install 'tilebench[cluster]'" in capsys.readouterr().err


def test_a_shard_runs_plain_run_bench_and_never_submits_again(tmp_path):
    args = cli.parse_args(["--sweep", "g", "--submit", "slurm", "--shards", "4", "--slurm-partition", "gpu",
                           "--slurm-opt", "qos=high", "--no-wait", "--strict"])
    a = ShardTask(args, 2, 4, str(tmp_path), run=cli.main, defaults=cluster.flag_defaults()).shard_args()
    assert not cluster.requested(a) and a.collect is None
    assert (a.shard, a.out, a.resume, a.no_report, a.strict) == ("2/4", shard_dir(str(tmp_path), 2, 4), True, True,
                                                                  False)
    assert a.sweep == ["g"] and isinstance(a, argparse.Namespace)


def test_empty_shard_is_nothing_to_do_not_an_error(tmp_path):
    s = sweep_file(tmp_path, ms=(11,))                        # one point: one of two shards is empty
    pid = expected_ids(s)[0]
    empty = 1 - int(pid, 16) % 2
    assert cli.main(["--sweeps-file", str(s), "--sweep", "g", "--device", "cpu", "--shard", f"{empty}/2",
                     "--out", str(tmp_path / "res"), "--no-report"]) == 0
    assert read_rows(str(tmp_path / "res" / "results.jsonl")) == []
