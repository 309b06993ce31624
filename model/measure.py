"""Backend("auto") on a GPU with no results yet: measure the ops this model calls, at the shapes it calls them,
once, through the harness (run_bench.py in a child process), into results/<gpu>/auto/; later runs read them
from there like any other results. The choice is never a silent all-eager run.

model/ reaches the harness only through its command line (a sweeps file and run_bench.py), not its modules."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from kernels import device as devices
from kernels.rows import results_root, timer_for
from model import ranking
from model.ops import Backend

BUDGET_S = 0.1   # timing budget per point: enough to rank impls (most settle within 3 % long before)


class _ShapeRecorder(Backend):
    """The eager backend, noting every (op, shape) the model asks for, the fused ops' candidate calls included."""

    def __init__(self):
        super().__init__("eager", log=lambda msg: None)
        self.seen: dict[str, dict[str, dict]] = {}

    def impl_for(self, op, shape):
        self.seen.setdefault(op, {})[ranking.shape_key(shape)] = dict(shape)
        return super().impl_for(op, shape)


def op_shapes(model, batch_size: int, T: int, device: str) -> dict[str, list[dict]]:
    """op -> the shapes one forward of `model` on a (batch_size, T) batch calls it at (as sweep shapes)."""
    rec, saved, training = _ShapeRecorder(), model.ops, model.training
    model.ops = rec
    model.eval()   # no dropout: the training run's random stream stays as it was (shapes are the same)
    try:
        with torch.no_grad():
            idx = torch.zeros((batch_size, T), dtype=torch.long, device=device)
            model(idx, idx)
    finally:
        model.ops = saved
        model.train(training)
    return {op: list(shapes.values()) for op, shapes in rec.seen.items()}


def cache_dir(device: str, graphed: bool) -> str:
    """Where auto's own measurements go: results/<gpu>/auto (graph-replay rows in its graph/ folder)."""
    return os.path.join(results_root(), devices.slug(device), "auto", *(["graph"] if graphed else []))


def ensure_results(backend: Backend, model, batch_size: int, T: int, device: str, impls=None) -> str | None:
    """When auto reads the default results and this GPU has no usable rows (for this step's timer) for some op
    the model calls, measure those ops at the model's shapes into cache_dir() and say so on stderr. Returns
    the folder measured into, or None when nothing was missing (or the user named the results to use).
    impls: only these impls (default every impl of each op)."""
    if backend.mode != "auto" or backend.results_given:
        return None
    shapes = op_shapes(model, batch_size, T, device)
    name = devices.name(device)
    timer = timer_for(str(device), "graph" if backend.graphed else "events")
    ranked = ranking.rank_impls(ranking.read_results(backend.results), name, backend.dtype, timer=timer)
    missing = {op: s for op, s in shapes.items() if op not in ranked}
    if not missing:
        return None
    out = cache_dir(device, backend.graphed)
    timer = "graph-replay" if backend.graphed else "launch-timed"
    _say(backend, f"auto: no {timer} results on {name} for {', '.join(missing)}: measuring the "
                  f"{sum(map(len, missing.values()))} shapes this model calls them at, once, into {out} "
                  f"(later runs reuse them)")
    rc = _run_harness(missing, backend.dtype, device, backend.graphed, out, impls)
    if rc:
        _say(backend, f"auto: the measurement exited with status {rc}; ranking the rows it wrote")
    return out


def _say(backend: Backend, msg: str) -> None:
    print(f"[tilebench.model] {msg}", file=sys.stderr, flush=True)
    backend.notes.append(msg)


def _run_harness(shapes: dict[str, list[dict]], dtype: str, device: str, graphed: bool, out: str, impls) -> int:
    os.makedirs(out, exist_ok=True)
    names = [f"auto_{op}" for op in shapes]
    sweeps = {f"auto_{op}": {"op": op, "dtypes": [dtype], "cpu_dtypes": [dtype], "passes": ["fwd+bwd"],
                             "shapes": s, "cpu_shapes": s} for op, s in shapes.items()}
    sweeps["auto"] = {"include": names}
    path = os.path.join(out, "sweeps.yaml")
    with open(path, "w") as f:
        json.dump({"sweeps": sweeps}, f, indent=1)   # JSON is YAML: `--sweeps-file` reads it as is
    cmd = [sys.executable, "-m", "bench.cli", "--sweeps-file", path, "--sweep", "auto",
           "--out", out, "--resume", "--budget", str(BUDGET_S), "--no-report", "--device", device]
    cmd += ["--cuda-graph"] if graphed else []
    for i in impls or ():
        cmd += ["--impl", i]
    # the harness from wherever this copy of the model lives (a checkout or site-packages), in this working directory;
    # its progress and summary go to our stderr: stdout stays the training log
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": here + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}
    return subprocess.run(cmd, env=env, stdout=2).returncode   # fd 2: our stderr, even when sys.stderr is wrapped
