"""DDP's environment from Slurm's, as torchrun would set it: `srun python -m model.train ...` on N tasks.

torchrun's variables win where they are set. Inside an srun step (SLURM_STEP_NUM_TASKS is set only there:
an sbatch script's own shell is not a step, and starts one process, not N) each task gets
RANK = SLURM_PROCID, WORLD_SIZE = the step's task count, LOCAL_RANK = SLURM_LOCALID, and the rendezvous
MASTER_ADDR = the step's first node, MASTER_PORT = a port derived from the job id (two jobs sharing a node
must not pick the same one)."""
from __future__ import annotations

import os
import re

DEFAULT_PORT = 29500          # torchrun's, when there is no job id
PORT_BASE, PORT_SPAN = 20000, 10000   # below Linux's ephemeral range (32768+), so no client socket holds it


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compressed host list, e.g. 'node[01-03,07],gpu-a1' -> node01 node02 node03 node07 gpu-a1;
    several bracket groups in one name expand as a product ('r[1-2]n[1-2]' -> r1n1 r1n2 r2n1 r2n2)."""
    names = []
    for part in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", hostlist):
        names += _expand_one(part.strip())
    return names


def _expand_one(name: str) -> list[str]:
    m = re.match(r"([^\[]*)\[([^\]]*)\](.*)", name)
    if not m:
        return [name] if name else []
    head, ranges, tail = m.groups()
    out = []
    for r in ranges.split(","):
        lo, _, hi = r.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"host list {name!r}: cannot read range {r!r}")
        width = len(lo)         # zero padding is the width of the range's first number: 01-03
        for i in range(int(lo), int(hi or lo) + 1):
            out += [f"{head}{i:0{width}d}{t}" for t in (_expand_one(tail) if tail else [""])]
    return out


def from_slurm(env: dict | None = None) -> dict[str, str]:
    """The variables to set for this process (empty when not a task of an srun step, or under torchrun)."""
    env = os.environ if env is None else env
    if "SLURM_STEP_NUM_TASKS" not in env or "RANK" in env or "WORLD_SIZE" in env:
        return {}
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", "")
    job = env.get("SLURM_JOB_ID", "")
    out = {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env["SLURM_STEP_NUM_TASKS"],
           "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
           "MASTER_ADDR": env.get("MASTER_ADDR") or (expand_hostlist(nodes) or ["localhost"])[0],
           "MASTER_PORT": env.get("MASTER_PORT") or str(PORT_BASE + int(job) % PORT_SPAN if job.isdigit()
                                                        else DEFAULT_PORT)}
    return out


def setup() -> dict[str, str]:
    """Put from_slurm()'s variables into os.environ; returns what it set."""
    found = from_slurm()
    os.environ.update(found)
    return found
