"""A running sweep's report stays current: rebuilt every few points, and once more when the run ends or is
interrupted (Ctrl-C, SIGTERM from a scheduler or `kill`), so a stopped run still leaves a readable page."""
from __future__ import annotations

import contextlib
import signal
import sys
import time

# A rebuild (tables, PNG charts) takes ~1-3 s: at least this many points and seconds apart keeps it under
# ~5 % of a run while the page is never more than a minute behind.
EVERY_POINTS = 5
EVERY_S = 30.0


class Rebuilder:
    """Call it with each finished row; it rebuilds the report when enough points and time have passed.
    A failed rebuild is said on stderr and never stops the sweep."""

    def __init__(self, results_path: str, report_dir: str, every_points: int = EVERY_POINTS,
                 every_s: float = EVERY_S):
        self.results_path, self.report_dir = results_path, report_dir
        self.every_points, self.every_s = every_points, every_s
        self.since, self.last = 0, time.monotonic()

    def __call__(self, row: dict) -> None:
        self.since += 1
        if self.since >= self.every_points and time.monotonic() - self.last >= self.every_s:
            self.build()

    def build(self) -> str | None:
        from bench.report import pages
        self.since, self.last = 0, time.monotonic()
        try:
            return pages.build([self.results_path], self.report_dir)
        except Exception as e:  # noqa: BLE001 - said on stderr; a report bug must not cost a GPU run
            print(f"warning: report not rebuilt: {type(e).__name__}: {e}", file=sys.stderr)
            return None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so the run stops the way Ctrl-C stops it."""


@contextlib.contextmanager
def sigterm_interrupts():
    """Within: SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread."""
    def handler(signum, frame):
        raise Terminated()
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:          # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
