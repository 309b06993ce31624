"""One shard of a sweep as a submitit job: `run_bench.py --shard I/N --resume` in the job's process.

Preemption or a coming time limit (submitit's signal, USR2) stops the point being measured at once (its row
is never written), then submitit's checkpoint requeues the job; the requeued run resumes from the shard's
results file, so finished points are skipped and the stopped one is measured again. A task that dies
outright is resubmitted by bench.scale.cluster. Runs where submitit runs: nothing here imports it at module level."""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import time

STATE = "state.json"


class Preempted(KeyboardInterrupt):
    """Raised from the signal handler: a KeyboardInterrupt, so the runner stops without recording the point
    it was measuring as failed (it records nothing for it) and run_bench.py returns 130."""


def shard_dir(run_dir: str, shard: int, shards: int) -> str:
    return os.path.join(run_dir, f"shard-{shard}-of-{shards}")


def read_state(folder: str) -> dict:
    try:
        with open(os.path.join(folder, STATE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


class ShardTask:
    """submitit calls it (the job) and its `checkpoint` (on preemption/timeout: what to requeue)."""

    def __init__(self, args: argparse.Namespace, shard: int, shards: int, run_dir: str, attempt: int = 1,
                 run=None, defaults: dict | None = None):
        """run(args) -> exit code: run_bench.py's main (the submitter passes it, so nothing here imports the CLI);
        defaults: the cluster flags at their defaults, which a shard's own run must see (it must not submit)."""
        self.args, self.shard, self.shards, self.attempt = args, shard, shards, attempt
        self.run, self.defaults = run, defaults or {}
        self.folder = shard_dir(run_dir, shard, shards)
        self.requeues = 0
        self._signum = None

    def shard_args(self) -> argparse.Namespace:
        a = argparse.Namespace(**{**vars(self.args), **self.defaults})
        a.shard, a.out = f"{self.shard}/{self.shards}", self.folder
        a.resume, a.no_report, a.strict = True, True, False   # the merge reports; --strict is judged there
        return a

    def _write_state(self, status: str, **extra) -> None:
        os.makedirs(self.folder, exist_ok=True)
        state = {"shard": self.shard, "shards": self.shards, "status": status, "attempt": self.attempt,
                 "requeues": self.requeues, "host": socket.gethostname(), "pid": os.getpid(),
                 "job_id": os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID",
                                          os.environ.get("SUBMITIT_LOCAL_JOB_ID"))),
                 "updated": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), **extra}
        tmp = os.path.join(self.folder, STATE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, os.path.join(self.folder, STATE))

    def _interrupt(self, signum, frame):
        self._signum = signum
        raise Preempted()

    def __call__(self) -> dict:
        import submitit
        sig = getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)
        requeue = signal.getsignal(sig)      # submitit's: checkpoint, requeue, exit
        self._signum = None
        signal.signal(sig, self._interrupt)
        self._write_state("running")
        try:
            code = self.run(self.shard_args())
        except Preempted:
            code = 130
        except Exception as e:               # a bug, not a point's failure: say so where --collect looks
            self._write_state("failed", error=f"{type(e).__name__}: {e}"[:300])
            raise
        signal.signal(sig, requeue)          # a signal from now on finds the shard finished or failed
        if self._signum is not None and code == 130:
            self._write_state("requeued")
            if callable(requeue):
                requeue(self._signum, None)  # exits the process when it requeues
            raise RuntimeError(f"shard {self.shard}/{self.shards}: interrupted by signal {self._signum}, not requeued")
        if code != 0:
            self._write_state("failed", exit_code=code)
            raise RuntimeError(f"shard {self.shard}/{self.shards}: run_bench.py exited {code} (see this job's log)")
        self._write_state("done")
        return {"shard": self.shard, "folder": self.folder}

    def checkpoint(self, *args, **kwargs):
        """submitit's checkpointing protocol: the same task again; its progress is the results file."""
        from submitit.helpers import DelayedSubmission
        self.requeues += 1
        return DelayedSubmission(self, *args, **kwargs)
