"""What a running sweep tells the user: one line per finished point above a rich progress bar, with an ETA
from what each impl has cost so far (TileGym's first points cost minutes, eager's a second: a flat
average read 34 s with 21 TileGym points to go)."""
from __future__ import annotations

import collections
import os
import sys
import time


def _own_stream(stream):
    """(stream, owned): a private handle on the terminal, so that prints captured from the point
    (bench.measure.capture redirects fds 1 and 2 while a point runs) do not swallow the bar's own refreshes."""
    try:
        return os.fdopen(os.dup(stream.fileno()), "w", buffering=1), True
    except (AttributeError, OSError, ValueError):   # a StringIO: no fd to duplicate
        return stream, False


def _cost_key(p: dict) -> tuple:
    return p.get("op"), p.get("impl")


class Progress:
    """Accepts the points to run (a list, in any order; a point may appear several times, as with
    --replicate) and is told each finished row."""

    def __init__(self, points: list[dict], stream=None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar
        self._own, self._owned = _own_stream(stream or sys.stderr)
        self.console = Console(file=self._own, highlight=False, soft_wrap=True)
        self.left = collections.Counter(p.get("point_id") for p in points)
        self.kind_of = {p.get("point_id"): _cost_key(p) for p in points}
        self.total, self.done, self.t0 = len(points), 0, time.monotonic()
        self.spent: dict[tuple, list[float]] = collections.defaultdict(list)
        self.unavailable_said: set = set()
        self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("eta {task.fields[eta]}"), console=self.console, transient=True)
        self.task = self.bar.add_task("starting", total=self.total, eta="?")
        self.bar.start()

    def eta_s(self) -> float | None:
        """Seconds still to go: each remaining point costs what its (op, impl) has cost on average so far,
        or the average of every finished point for an impl not yet seen; None before the first point."""
        every = [s for v in self.spent.values() for s in v]
        if not every:
            return None
        overall = sum(every) / len(every)
        eta = 0.0
        for pid, n in self.left.items():
            seen = self.spent.get(self.kind_of.get(pid))
            eta += n * (sum(seen) / len(seen) if seen else overall)
        return eta

    def start(self, point: dict) -> None:
        what = f"{point['op']}/{point['impl']} {point.get('dtype', '')} {point.get('pass', '')}"
        self.bar.update(self.task, description=what)

    def update(self, row: dict) -> None:
        self.done += 1
        pid = row.get("point_id")
        if self.left.get(pid):
            self.left[pid] -= 1
            if not self.left[pid]:
                del self.left[pid]
        if row.get("duration_s") is not None:
            self.spent[_cost_key(row)].append(float(row["duration_s"]))
        eta = self.eta_s()
        self.bar.update(self.task, completed=self.done, eta="?" if eta is None else f"{eta:.0f}s")
        if row["status"] == "unavailable":   # say it once per impl, not once per point
            key = (row["op"], row["impl"])
            if key in self.unavailable_said:
                return
            self.unavailable_said.add(key)
        self.console.print(f"{self.done}/{self.total} eta {'?' if eta is None else f'{eta:.0f}s':>5}  "
                           f"{describe(row)}", markup=False)

    def say(self, text: str) -> None:
        self.console.print(text, markup=False)

    def close(self) -> None:
        self.bar.stop()
        if self._owned:
            self._own.close()


def describe(row: dict) -> str:
    """One line: what the point is and how it went."""
    what = f"{row['op']}/{row['impl']} {row['dtype']} {row['pass']} {row.get('shape_label', '')}"
    if row.get("config_label") not in (None, "default"):
        what += f" [{row['config_label']}]"
    if row["status"] == "ok" and "median_ms" in row:
        res = f"ok {row['median_ms']:.4g} ms"
        if row.get("bound") == "compute" and "tflops" in row:
            res += f" {row['tflops']:.3g} TFLOP/s"
        elif "gbps" in row:
            res += f" {row['gbps']:.4g} GB/s"
    elif row["status"] == "ok":
        res = "ok"
    else:
        res = f"{row['status']}: {str(row['message'])[:90]}"
    if row.get("autotune_capped"):
        res += f"  (autotune capped at {row['autotune_cap_s']:g} s)"
    return f"{what}  {res}"
