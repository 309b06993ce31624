"""Honest timing. On CUDA: device events around each call, the L2 flushed before each, warm-up first,
repetitions until the spread is small or the budget runs out, median with quartiles. On CPU: a
monotonic clock with the same statistics. Optional CUDA-graph replay timing for launch-bound work."""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

import torch


@dataclasses.dataclass
class Stats:
    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    max_ms: float
    reps: int
    method: str          # cuda_events | cuda_graph | cpu_clock

    @property
    def iqr_rel(self) -> float:
        return (self.q3_ms - self.q1_ms) / self.median_ms if self.median_ms > 0 else 0.0

    def as_row(self) -> dict:
        return {"median_ms": self.median_ms, "q1_ms": self.q1_ms, "q3_ms": self.q3_ms, "min_ms": self.min_ms,
                "max_ms": self.max_ms, "reps": self.reps, "timer": self.method, "iqr_rel": self.iqr_rel}


def summarize(times_ms: list[float], method: str) -> Stats:
    ts = sorted(times_ms)
    if len(ts) >= 4:
        q1, _, q3 = statistics.quantiles(ts, n=4, method="inclusive")
    else:
        q1, q3 = ts[0], ts[-1]
    return Stats(statistics.median(ts), q1, q3, ts[0], ts[-1], len(ts), method)


def _settled(times: list[float], min_reps: int, rel_spread: float) -> bool:
    if len(times) < min_reps:
        return False
    s = summarize(times, "")
    return s.iqr_rel <= rel_spread


_flush_buf: dict = {}


def _l2_flush_buffer(device) -> torch.Tensor:
    """A buffer bigger than any current L2 (Hopper: 50-60 MB); writing it evicts the op's data."""
    key = str(device)
    if key not in _flush_buf:
        idx = torch.device(device).index or 0
        l2 = getattr(torch.cuda.get_device_properties(idx), "L2_cache_size", 64 << 20)
        _flush_buf[key] = torch.empty(max(256 << 20, 4 * l2), dtype=torch.int8, device=device)
    return _flush_buf[key]


def measure(fn: Callable[[], object], device: str, *, setup: Callable[[], None] | None = None,
            warmup: int = 3, min_reps: int = 10, max_reps: int = 2000, rel_spread: float = 0.03,
            budget_s: float = 2.0, flush_l2: bool = True, cuda_graph: bool = False) -> Stats:
    """Median time of fn() in ms. setup() runs before each rep, outside the timed region."""
    if device.startswith("cuda"):
        if cuda_graph:
            return _measure_graph(fn, device, warmup, min_reps, max_reps, rel_spread, budget_s, flush_l2)
        return _measure_cuda(fn, device, setup, warmup, min_reps, max_reps, rel_spread, budget_s, flush_l2)
    return _measure_cpu(fn, setup, warmup, min_reps, max_reps, rel_spread, budget_s)


def _measure_cpu(fn, setup, warmup, min_reps, max_reps, rel_spread, budget_s) -> Stats:
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    times: list[float] = []
    deadline = time.monotonic() + budget_s
    while len(times) < max_reps:
        if setup:
            setup()
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
        if _settled(times, min_reps, rel_spread) or (time.monotonic() > deadline and len(times) >= 3):
            break
    return summarize(times, "cpu_clock")


def _measure_cuda(fn, device, setup, warmup, min_reps, max_reps, rel_spread, budget_s, flush_l2) -> Stats:
    buf = _l2_flush_buffer(device) if flush_l2 else None
    with torch.cuda.device(torch.device(device)):
        for _ in range(warmup):
            if setup:
                setup()
            fn()
        torch.cuda.synchronize()
        times: list[float] = []
        deadline = time.monotonic() + budget_s
        batch = 5
        while len(times) < max_reps:
            events = []
            for _ in range(batch):
                if setup:
                    setup()
                if buf is not None:
                    buf.zero_()
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                fn()
                e.record()
                events.append((s, e))
            torch.cuda.synchronize()
            times += [s.elapsed_time(e) for s, e in events]
            if _settled(times, min_reps, rel_spread) or (time.monotonic() > deadline and len(times) >= 3):
                break
            batch = min(50, batch * 2)
    return summarize(times, "cuda_events")


def _measure_graph(fn, device, warmup, min_reps, max_reps, rel_spread, budget_s, flush_l2) -> Stats:
    """Capture fn once in a CUDA graph and time replays: what launch-bound code costs without launch gaps."""
    buf = _l2_flush_buffer(device) if flush_l2 else None
    with torch.cuda.device(torch.device(device)):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(1, warmup)):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        for _ in range(warmup):
            g.replay()
        torch.cuda.synchronize()
        times: list[float] = []
        deadline = time.monotonic() + budget_s
        while len(times) < max_reps:
            events = []
            for _ in range(10):
                if buf is not None:
                    buf.zero_()
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                g.replay()
                e.record()
                events.append((s, e))
            torch.cuda.synchronize()
            times += [s.elapsed_time(e) for s, e in events]
            if _settled(times, min_reps, rel_spread) or (time.monotonic() > deadline and len(times) >= 3):
                break
    return summarize(times, "cuda_graph")


def first_call_s(fn: Callable[[], object], device: str) -> float:
    """Wall time of the first call, synchronised: JIT compile / autotune / module load, apart from run time."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0
