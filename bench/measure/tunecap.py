"""A time cap on peers' autotuning, recorded in the row.

TileGym tunes each kernel with `cuda.tile.tune.exhaustive_search` on its first call per shape: every
candidate compiled (up to 5 s each) and timed, 206 s of a 9-minute first fmha run on an H200, its tables
printed to the console. Under `capped(cap_s)` that search sees the candidates in its order only until the
point's cap has passed (at least one is always tried), runs quietly, and says what it tried; the capped
peer then runs the best candidate it reached. cap_s 0 or None: no cap (searches still run quietly).

The stress battery runs under `one_config()`: at its new sizes a peer's tuner takes one candidate, its first, and
TileGym skips its search (its own TILEGYM_DISABLE_AUTOTUNE switch: first config, one compile where a search compiles
the candidate and then its tuned copy again). The battery asks whether the peer computes the right thing on hard
inputs, not which config is fastest there; on a cold H100 the searches at T=301 and T=1 were 33 s of the first
look's 51 s of battery."""
from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time

_state = {"deadline": None, "log": None}


TILEGYM_SWITCH = "TILEGYM_DISABLE_AUTOTUNE"


class _UntilDeadline:
    """The search space as the tuner sees it: its full length, but iteration stops at the deadline."""

    def __init__(self, space, deadline, record):
        self.space, self.deadline, self.record = list(space), deadline, record

    def __len__(self):
        return len(self.space)

    def __getitem__(self, i):
        return self.space[i]

    def __iter__(self):
        for i, cfg in enumerate(self.space):
            if i and self.deadline is not None and time.monotonic() > self.deadline:
                self.record["capped"] = True
                return
            self.record["tried"] = i + 1
            yield cfg


def _capped_search(original):
    @functools.wraps(original)
    def search(search_space, *args, **kwargs):
        log = _state["log"]
        if log is None:         # outside a benchmark point (a user's own script): the tuner as shipped
            return original(search_space, *args, **kwargs)
        record = {"candidates": len(search_space), "tried": 0, "capped": False}
        log.append(record)
        t0 = time.monotonic()
        kwargs["quiet"] = True
        try:
            result = original(_UntilDeadline(search_space, _state["deadline"], record), *args, **kwargs)
        finally:
            record["tune_s"] = round(time.monotonic() - t0, 3)
        best = getattr(result, "best", None)
        if best is not None:
            record["best"] = f"{getattr(best, 'config', '?')} {getattr(best, 'mean_us', float('nan')):.1f} us"
        return result
    search._tilebench_capped = True
    return search


def install() -> None:
    """Wrap cuda.tile.tune.exhaustive_search (where cuda.tile imports), and the copies modules that imported
    it by name already hold. Idempotent."""
    try:
        import cuda.tile.tune as tune
    except ImportError:
        return
    original = tune.exhaustive_search
    if getattr(original, "_tilebench_capped", False):
        return
    wrapped = _capped_search(original)
    tune.exhaustive_search = wrapped
    for mod in list(sys.modules.values()):
        if getattr(mod, "exhaustive_search", None) is original:
            mod.exhaustive_search = wrapped


@contextlib.contextmanager
def capped(cap_s: float | None):
    """For one point: searches started inside share a deadline cap_s from now; yields the list of records
    (one per search: candidates, tried, capped, tune_s, best)."""
    install()
    log: list[dict] = []
    _state["deadline"] = time.monotonic() + cap_s if cap_s else None
    _state["log"] = log
    try:
        yield log
    finally:
        _state["deadline"] = _state["log"] = None


@contextlib.contextmanager
def one_config():
    """Inside a point (capped): tuners take their first candidate, TileGym none (see the module's doc). Their
    searches are kept out of the point's autotune record, which tells how the timed config was found."""
    install()
    saved, user_switch = dict(_state), os.environ.get(TILEGYM_SWITCH)
    _state.update(deadline=-math.inf, log=[])   # passed: a search stops after its first candidate
    os.environ[TILEGYM_SWITCH] = "1"
    try:
        yield
    finally:
        _state.update(saved)
        if user_switch is None:
            os.environ.pop(TILEGYM_SWITCH, None)
        else:
            os.environ[TILEGYM_SWITCH] = user_switch


def into_row(row: dict, log: list[dict], cap_s: float | None) -> None:
    if log:
        row["autotune"] = log
        row["autotune_cap_s"] = cap_s or None
        row["autotune_capped"] = any(r["capped"] for r in log)
