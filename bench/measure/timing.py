"""Honest timing: two timers that answer different questions, each labelled in the row.

Kernel time (`measure`): on CUDA, device events around each call with the L2 flushed before each and the
stream held on a GPU spin while the host queues the call, so host launch gaps stay out (`cuda_events`), or replays of the call captured in a CUDA graph (`cuda_graph`): the GPU's own time, which is
what a graphed step pays. Host-inclusive time (`measure_host`): a synchronised wall clock around each call,
launch cost in Python included: what an eager step pays. On CPU both are one monotonic clock (`cpu_clock`).
Each: warm-up first, repetitions until the spread is small or the budget runs out, median with quartiles,
and the raw samples (at most MAX_SAMPLES kept) for comparisons between runs."""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

import torch

from kernels.rows import SPREAD_TARGET


@dataclasses.dataclass
class Stats:
    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    max_ms: float
    reps: int
    method: str          # cuda_events | cuda_graph | cpu_clock | host_wall
    samples: list = dataclasses.field(default_factory=list)   # per-repetition ms, evenly thinned to MAX_SAMPLES

    @property
    def iqr_rel(self) -> float:
        return (self.q3_ms - self.q1_ms) / self.median_ms if self.median_ms > 0 else 0.0

    def as_row(self, prefix: str = "") -> dict:
        """Kernel time as median_ms ... timer; host-inclusive time with prefix "host_"."""
        row = {"median_ms": self.median_ms, "q1_ms": self.q1_ms, "q3_ms": self.q3_ms, "min_ms": self.min_ms,
               "max_ms": self.max_ms, "reps": self.reps, "timer": self.method, "iqr_rel": self.iqr_rel,
               "samples_ms": [round(t, 6) for t in self.samples]}
        return {prefix + k: v for k, v in row.items()}


MAX_SAMPLES = 256     # raw samples kept per row (as nvbench's JSON keeps them): enough for a CI of the median


def summarize(times_ms: list[float], method: str) -> Stats:
    ts = sorted(times_ms)
    if len(ts) >= 4:
        q1, _, q3 = statistics.quantiles(ts, n=4, method="inclusive")
    else:
        q1, q3 = ts[0], ts[-1]
    keep = times_ms if len(times_ms) <= MAX_SAMPLES else \
        [times_ms[i * len(times_ms) // MAX_SAMPLES] for i in range(MAX_SAMPLES)]
    return Stats(statistics.median(ts), q1, q3, ts[0], ts[-1], len(ts), method, list(keep))


def _settled(times: list[float], min_reps: int, rel_spread: float) -> bool:
    if len(times) < min_reps:
        return False
    s = summarize(times, "")
    return s.iqr_rel <= rel_spread


def _enough(times: list[float], min_reps: int, rel_spread: float, deadline: float) -> bool:
    """Every timer's stop rule: the spread has settled, or the budget is spent and there are 3 samples."""
    return _settled(times, min_reps, rel_spread) or (time.monotonic() > deadline and len(times) >= 3)


def _warm_up(fn, setup, n: int) -> None:
    """n untimed calls, setup() before each: compiles, caches and clocks settle before the first sample."""
    for _ in range(n):
        if setup:
            setup()
        fn()


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
            warmup: int = 3, min_reps: int = 10, max_reps: int = 2000, rel_spread: float = SPREAD_TARGET,
            budget_s: float = 2.0, flush_l2: bool = True, mode: str = "events") -> Stats:
    """Kernel time of fn() in ms, the row's timer `timer_for(device, mode)` (kernels/rows.py). setup() runs before
    each rep, outside the timed region (in graph mode: before capture, so a captured backward writes fresh
    gradients on every replay instead of accumulating)."""
    if device.startswith("cuda"):
        if mode == "graph":
            return _measure_graph(fn, device, setup, warmup, min_reps, max_reps, rel_spread, budget_s, flush_l2)
        return _measure_cuda(fn, device, setup, warmup, min_reps, max_reps, rel_spread, budget_s, flush_l2)
    return _measure_cpu(fn, setup, warmup, min_reps, max_reps, rel_spread, budget_s)


def _measure_cpu(fn, setup, warmup, min_reps, max_reps, rel_spread, budget_s) -> Stats:
    _warm_up(fn, setup, warmup)
    times: list[float] = []
    deadline = time.monotonic() + budget_s
    while len(times) < max_reps:
        if setup:
            setup()
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
        if _enough(times, min_reps, rel_spread, deadline):
            break
    return summarize(times, "cpu_clock")


_SPIN_HZ = 2.0e9      # cycles per second torch.cuda._sleep counts at (Hopper's boost clock; slower clocks only
                      # lengthen the hold, which is safe)


def _hold_cycles(fn, setup) -> int:
    """GPU cycles to hold the stream before each timed call: 1.5x the host's time to enqueue one call, plus
    20 us, at most 50 ms. The host then queues the whole call while the GPU spins, so the events see the
    kernels back to back (nvbench's blocking kernel): kernel time without the host's launch gaps, which an
    impl with several kernels otherwise shows whenever the host is slower than the GPU (seen on an H200:
    Triton fmha fwd+bwd 0.47 ms in one run, 0.90 in another while torch.compile's workers loaded the CPU)."""
    if setup:
        setup()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    enqueue_s = time.perf_counter() - t0
    torch.cuda.synchronize()
    return int(min(50e-3, 1.5 * enqueue_s + 20e-6) * _SPIN_HZ)


def _between_events(call) -> tuple:
    """(start, end) timing events recorded on the current stream right before and after call()."""
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    call()
    e.record()
    return s, e


def _elapsed_ms(events: list[tuple]) -> list[float]:
    """Each (start, end) pair's device time, once the device has reached them all."""
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in events]


def _measure_cuda(fn, device, setup, warmup, min_reps, max_reps, rel_spread, budget_s, flush_l2) -> Stats:
    buf = _l2_flush_buffer(device) if flush_l2 else None
    with torch.cuda.device(torch.device(device)):
        _warm_up(fn, setup, warmup)
        hold = _hold_cycles(fn, setup)
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
                torch.cuda._sleep(hold)
                events.append(_between_events(fn))
            times += _elapsed_ms(events)
            if _enough(times, min_reps, rel_spread, deadline):
                break
            batch = min(50, batch * 2)
    return summarize(times, "cuda_events")


def _measure_graph(fn, device, setup, warmup, min_reps, max_reps, rel_spread, budget_s, flush_l2) -> Stats:
    """Capture fn once in a CUDA graph and time replays: what launch-bound code costs without launch gaps."""
    buf = _l2_flush_buffer(device) if flush_l2 else None
    with torch.cuda.device(torch.device(device)):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            _warm_up(fn, setup, max(1, warmup))
        torch.cuda.current_stream().wait_stream(side)
        if setup:
            setup()     # gradients None at capture: the replayed backward writes them, as a real step's does
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
                events.append(_between_events(g.replay))
            times += _elapsed_ms(events)
            if _enough(times, min_reps, rel_spread, deadline):
                break
    return summarize(times, "cuda_graph")


def measure_host(fn: Callable[[], object], device: str, *, setup: Callable[[], None] | None = None,
                 warmup: int = 5, min_reps: int = 30, max_reps: int = 2000, rel_spread: float = SPREAD_TARGET,
                 budget_s: float = 1.0, flush_l2: bool = True) -> Stats:
    """Host-inclusive time of fn() in ms: the device idle and the L2 flushed before each call, then a wall clock
    from the Python call to the end of its GPU work (a synchronize). Launch cost, host-side work in the impl
    and the kernels all count, as they do in an eager training step. On CPU this is the kernel timer. At least
    30 reps: a VM's host clock and scheduler jitter by ~10 % at 20 us, and 10 reps can settle on a lucky run."""
    if not device.startswith("cuda"):
        return _measure_cpu(fn, setup, warmup, min_reps, max_reps, rel_spread, budget_s)
    buf = _l2_flush_buffer(device) if flush_l2 else None
    dev = torch.device(device)
    with torch.cuda.device(dev):
        _warm_up(fn, setup, warmup)
        times: list[float] = []
        deadline = time.monotonic() + budget_s
        while len(times) < max_reps:
            # reps in batches of 10 with nothing but the flush between them: the spread check's Python (sorting
            # the samples) run between reps left the next call's launch path cold, ~10 us more at 20 us of work
            for _ in range(10):
                if setup:
                    setup()
                if buf is not None:
                    buf.zero_()
                torch.cuda.synchronize()
                t0 = time.perf_counter_ns()
                fn()
                torch.cuda.synchronize()
                times.append((time.perf_counter_ns() - t0) / 1e6)
            if _enough(times, min_reps, rel_spread, deadline):
                break
    return summarize(times, "host_wall")


def first_call_s(fn: Callable[[], object], device: str) -> float:
    """Wall time of the first call, synchronised: JIT compile / autotune / module load, apart from run time."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0
