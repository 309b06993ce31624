"""auto's last word: a few whole training steps of each candidate, the fastest kept.

The per-op ranking (model/ranking.py) picks each op's fastest impl on its own; the step those picks add up to can
still lose to one backend throughout (its fused paths, fewer layout changes between ops, its launch cost): on an
H100 a per-op auto ran a shakespeare step at 17.4 ms where the best hand-picked mix ran 12.3. So once the per-op
choice is made, auto times whole steps of each candidate on the model it is about to train, on the path it will
run (plain steps, or replays of a whole-step CUDA graph), and trains with the fastest: its per-op mix, triton
alone, cutile alone, eager. A single backend replaces the mix only when it is faster by more than the trials' own
noise (MARGIN).

The trials run on copies of the model (same weights) with optimizers of their own and random batches, with the
RNG state put back after, so the run itself, its losses included, is what it would be without them. Their time
is reported (`trial_s`), never counted in a step. On plain steps the winner is also replayed once as a CUDA graph,
and a faster graph is said (the user's `--cuda-graph`): auto does not change the path it was asked to run."""
from __future__ import annotations

import dataclasses
import gc
import statistics
import time

import torch

from kernels import registry
from model import cuda_graph
from model import step as step_lib
from model.op_list import OPS
from model.ops import Backend

SINGLES = ("triton", "cutile", "eager")
WARMUP, STEPS, WINDOWS = 3, 4, 3   # steps: JIT and autotuning in the warm-up, then the median of 3 windows of 4
MARGIN = 0.01                      # trial-to-trial spread of a step's median on an H100 is under 1 %
GRAPH_HINT = 0.03                  # a graph this much faster is worth telling


@dataclasses.dataclass
class Trials:
    ms: dict                       # candidate -> ms per step (None: it failed; errors says why)
    winner: str
    trial_s: float
    path: str                      # "plain" or "graph"
    errors: dict = dataclasses.field(default_factory=dict)
    graph_ms: float | None = None  # plain path: the winner replayed as a graph

    def as_row(self) -> dict:
        return {"auto_trials_ms": self.ms, "auto_winner": self.winner, "auto_trial_s": round(self.trial_s, 2),
                "auto_trial_path": self.path, "auto_trial_errors": self.errors or None,
                "auto_graph_ms": self.graph_ms}


def candidates(mix: Backend, device: str) -> list[str]:
    """"mix" (auto's per-op choice), then each single backend that runs some op here and is not the mix."""
    out = ["mix"]
    mix_impls = {mix.choice[op] for op in OPS}
    for name in SINGLES:
        if mix_impls == {name} and not mix._by_shape:
            continue
        if name == "eager" or any(_runs(op, name, device) for op in OPS):
            out.append(name)
    return out


def _runs(op, name, device) -> bool:
    try:
        return registry.resolve(op, name, device).ok
    except KeyError:
        return False


def choose(model, mix: Backend, B: int, T: int, dtype: str, device: str, graphed: bool, clip: float = 1.0,
           singles=SINGLES) -> tuple[Backend, Trials]:
    """The backend to train `model` with (mix itself, or a fresh single backend) and the trials that chose it.
    The model's own weights, optimizer state and RNG streams are untouched."""
    t0 = time.perf_counter()
    rng = _rng_state(device)
    try:
        return _choose(model, mix, B, T, dtype, device, graphed, clip, singles, t0)
    finally:
        _set_rng_state(device, rng)


def _choose(model, mix, B, T, dtype, device, graphed, clip, singles, t0):
    names = [n for n in candidates(mix, device) if n == "mix" or n in singles]
    ms, errors = {}, {}
    for name in names:
        backend = mix if name == "mix" else single(name, mix)
        try:
            ms[name] = _time(model, backend, B, T, dtype, device, graphed, clip)
        except Exception as e:  # noqa: BLE001 - a candidate that fails is out of the running, and said
            ms[name], errors[name] = None, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:200]
        finally:
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    ran = {n: v for n, v in ms.items() if v is not None}
    winner = "mix"
    if ran:
        best = min(ran, key=ran.get)
        if "mix" not in ran or ran[best] < ran["mix"] * (1 - MARGIN):
            winner = best
    chosen = mix if winner == "mix" else single(winner, mix)
    trials = Trials(ms, winner, 0.0, "graph" if graphed else "plain", errors)
    if not graphed and device.startswith("cuda") and cuda_graph.refusal(device, dtype) is None:
        try:
            trials.graph_ms = _time(model, chosen, B, T, dtype, device, True, clip)
        except Exception:  # noqa: BLE001 - only a hint: no graph, nothing to say
            trials.graph_ms = None
    trials.trial_s = time.perf_counter() - t0
    _say(mix if chosen is mix else chosen, trials)
    if chosen is not mix:
        chosen.notes[:0] = mix.notes   # the per-op picks stay on record
    return chosen, trials


def single(name: str, mix: Backend) -> Backend:
    """The single backend `name` with mix's settings (dtype, fused GELU, log, graphed)."""
    return Backend(name, dtype=mix.dtype, fuse_gelu=mix.fuse_gelu, log=mix.log, graphed=mix.graphed)


def _say(backend: Backend, t: Trials) -> None:
    times = ", ".join(f"{n} {v:.2f}" if v is not None else f"{n} failed" for n, v in t.ms.items())
    msg = (f"auto: whole-step trials ({'graph replays' if t.path == 'graph' else 'plain steps'}, ms/step): {times} "
           f"-> {t.winner} ({t.trial_s:.1f} s of trials, not counted)")
    backend.notes.append(msg)
    backend.log(msg)
    best = t.ms.get(t.winner)
    if t.graph_ms and best and t.graph_ms < best * (1 - GRAPH_HINT):
        hint = (f"auto: the same step replayed as a whole-step CUDA graph ran {t.graph_ms:.2f} ms/step "
                f"({best / t.graph_ms:.2f}x faster): --cuda-graph")
        backend.notes.append(hint)
        backend.log(hint)


def _time(model, backend: Backend, B, T, dtype, device, graphed, clip) -> float:
    """Median ms per step over WINDOWS windows of STEPS steps, after WARMUP, of a copy of model on backend."""
    from model.gpt import GPT
    trial = GPT(model.config, backend).to(device)
    trial.load_state_dict(model.state_dict())
    opt = trial.configure_optimizers(0.1, 6e-4, (0.9, 0.95), torch.device(device).type, capturable=graphed)
    data = step_lib.batches(model.config.vocab_size, B, T, device, seed=1234)
    if graphed:
        g = cuda_graph.GraphedStep(trial, opt, trial.parameters(), B, T, 1, clip, dtype, device, warmup=WARMUP - 1)

        def step(i):
            g([data[i % 2]], 6e-4)
    else:
        step = step_lib.train_step_fn(trial, trial, opt, step_lib.autocast(device, dtype), clip, data)
    for i in range(WARMUP):
        step(i)
    windows = []
    for w in range(WINDOWS):
        _sync(device)
        t = time.perf_counter()
        if device.startswith("cuda"):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for i in range(STEPS):
                step(i)
            b.record()
            b.synchronize()
            windows.append(a.elapsed_time(b) / STEPS)
        else:
            for i in range(STEPS):
                step(i)
            windows.append((time.perf_counter() - t) * 1e3 / STEPS)
    return statistics.median(windows)


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _rng_state(device):
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.startswith("cuda") else None)


def _set_rng_state(device, state):
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
