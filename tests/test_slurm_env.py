"""`srun python -m model.train`: DDP set up from Slurm's environment as torchrun would, checked on the CPU
with gloo and two processes given a faked srun environment."""
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model import slurm_env

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("hostlist, hosts", [
    ("node07", ["node07"]),
    ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
    ("gpu[9-11],login-a", ["gpu9", "gpu10", "gpu11", "login-a"]),
    ("r[1-2]n[08-09]-ib", ["r1n08-ib", "r1n09-ib", "r2n08-ib", "r2n09-ib"]),
    ("a[1,3],b2", ["a1", "a3", "b2"]),
])
def test_expand_hostlist(hostlist, hosts):
    assert slurm_env.expand_hostlist(hostlist) == hosts


def test_bad_hostlist_range_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot read range 'x-2'"):
        slurm_env.expand_hostlist("node[x-2]")


SRUN = {"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
        "SLURM_STEP_NODELIST": "node[03-06]", "SLURM_JOB_NODELIST": "node[01-06]"}


def test_srun_task_gets_torchrun_variables():
    assert slurm_env.from_slurm(SRUN) == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node03",
                                          "MASTER_PORT": str(20000 + 123456 % 10000)}


def test_not_a_step_or_under_torchrun_sets_nothing():
    batch_shell = {k: v for k, v in SRUN.items() if k != "SLURM_STEP_NUM_TASKS"}   # sbatch's own shell
    assert slurm_env.from_slurm(batch_shell) == {}
    assert slurm_env.from_slurm({**SRUN, "RANK": "0", "WORLD_SIZE": "2"}) == {}      # torchrun's win
    assert slurm_env.from_slurm({}) == {}


def test_given_master_address_and_port_are_kept():
    got = slurm_env.from_slurm({**SRUN, "MASTER_ADDR": "node03-ib", "MASTER_PORT": "29999"})
    assert (got["MASTER_ADDR"], got["MASTER_PORT"]) == ("node03-ib", "29999")


def _free_derived_port() -> int:
    """A job id whose derived MASTER_PORT is free now, so the real default path is what the test uses."""
    for _ in range(200):
        job = random.randrange(slurm_env.PORT_SPAN)
        with socket.socket() as s:
            try:
                s.bind(("localhost", slurm_env.PORT_BASE + job))
                return job
            except OSError:
                continue
    pytest.skip("no free port in the derived range")


# `python -m model.train`, and at interpreter exit a count of DDP wrappers still alive: one alive then keeps its gloo
# group's worker threads into the interpreter's teardown, which aborted a rank now and then after a good run (-6)
MAIN_THEN_COUNT_DDP = """
import atexit, gc, sys
from torch.nn.parallel import DistributedDataParallel
from model import train
atexit.register(lambda: print("DDP wrappers alive at exit:",
                              sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects()), file=sys.stderr))
sys.exit(train.main(sys.argv[1:]))
"""


def test_two_srun_tasks_train_as_one_ddp_job_on_cpu(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 20000), ("val", 2000)):
        rng.integers(0, 65, n).astype(np.uint16).tofile(data / f"{split}.bin")
    (data / "meta.json").write_text(json.dumps({"vocab_size": 65}))
    job = _free_derived_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    procs = []
    for rank in range(2):
        fake = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
                "SLURM_JOB_ID": str(job), "SLURM_STEP_NODELIST": "localhost", "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-c", MAIN_THEN_COUNT_DDP, "--config", "tiny", "--device", "cpu", "--data-dir", str(data),
               "--out-dir", str(tmp_path / "out"), "--max-iters", "4", "--grad-accum", "2", "--eval-interval", "0",
               "--eval-iters", "1", "--log-interval", "1", "--log-json", str(tmp_path / "log.json")]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env={**env, **fake}, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out[-2000:] + err[-3000:]
        assert "DDP wrappers alive at exit: 0" in err, err[-3000:]
    assert "2 process(es)" in outs[0][0] and "done:" in outs[0][0]   # rank 0 speaks for the job
    assert "done:" not in outs[1][0]                                  # rank 1 knows it is rank 1
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["status"] == "ok" and log["world_size"] == 2
    assert log["tokens_per_iter"] == 1 * 2 * 8 * 32            # grad_accum 2 split over 2 ranks, B=8, T=32
