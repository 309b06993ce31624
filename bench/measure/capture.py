"""Third-party prints go to the point's log, not the console: while a point runs, file descriptors 1 and 2
(what Python's print, C++ std::cout, compilers and autotuners all write to) point at a temporary file;
afterwards its text goes into the row (`log`, the last LOG_CHARS characters) and the console is restored."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile

LOG_CHARS = 4000     # a row is one JSON line: keep the tail, where the error or the tuner's verdict is


class Captured:
    text: str = ""


@contextlib.contextmanager
def output():
    """Redirect fds 1 and 2 (and sys.stdout/sys.stderr) into a file for the duration; yields a Captured
    whose .text is filled on exit. A process without real fds 1/2 (pytest's capture) is left alone."""
    got = Captured()
    try:
        fds = [sys.stdout.fileno(), sys.stderr.fileno()]
    except (AttributeError, OSError, ValueError):
        yield got
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        for s in (sys.stdout, sys.stderr):
            s.flush()
        saved = [os.dup(fd) for fd in fds]
        try:
            for fd in fds:
                os.dup2(tmp.fileno(), fd)
            yield got
        finally:
            for s in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    s.flush()
            for fd, old in zip(fds, saved):
                os.dup2(old, fd)
                os.close(old)
            tmp.seek(0)
            got.text = tmp.read().decode(errors="replace")


def into_row(row: dict, text: str) -> None:
    if text.strip():
        row["log"] = text[-LOG_CHARS:]
