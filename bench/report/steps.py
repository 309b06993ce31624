"""Step detection in a point's time across commits, after asv's (airspeed velocity's `step_detect`): asv fits a
piecewise-constant function to the series by minimising the L1 distance plus a penalty per step, and reports a
regression where a fitted step is large against the noise. This is a simpler version of the same idea:

1. the series: one level per commit (the median of that commit's medians), ordered by date;
2. its noise, relative to the level: the larger of the commit-to-commit scatter (1.4826 x the median absolute
   difference of successive levels / sqrt 2, which one step barely moves) and the repetitions' own spread (the
   median IQR/median of the rows over 1.349, a sample's standard deviation);
3. binary segmentation with the L1 cost: the split that most lowers sum |level - segment median| is a step when the
   segments' medians differ by more than max(MIN_STEP, K x noise); both halves are searched again.

A single outlier commit inside a series moves neither segment's median and is never a step; a step at the newest
commit (one level after it) is flagged but not `confirmed` until a later commit agrees."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

MIN_STEP = 0.05     # smaller changes are never flagged, however quiet the series (the run-to-run drift of a GPU)
K = 3.0             # a step must exceed K x the series' noise


@dataclasses.dataclass
class Step:
    index: int          # the first level after the step
    before: float       # median level before (ms)
    after: float        # median level after (ms)
    threshold: float    # the relative change it had to exceed
    confirmed: bool     # at least two levels on each side

    @property
    def ratio(self) -> float:
        return self.after / self.before

    @property
    def direction(self) -> str:
        return "slower" if self.after > self.before else "faster"


def noise(levels, iqr_rel=None) -> float:
    """The series' relative noise (see the module's docstring)."""
    y = np.asarray(levels, dtype=float)
    level = float(np.median(y)) if len(y) else 0.0
    scatter = 0.0
    if len(y) >= 3 and level > 0:
        scatter = 1.4826 * float(np.median(np.abs(np.diff(y)))) / math.sqrt(2) / level
    within = 0.0
    if iqr_rel is not None:
        q = np.asarray([v for v in iqr_rel if v is not None and v == v], dtype=float)
        if len(q):
            within = float(np.median(q)) / 1.349
    return max(scatter, within)


def _cost(seg: np.ndarray) -> float:
    return float(np.abs(seg - np.median(seg)).sum()) if len(seg) else 0.0


def detect(levels, iqr_rel=None, min_step: float = MIN_STEP, k: float = K) -> list[Step]:
    """The steps of a series of levels (one per commit, oldest first), in order."""
    y = np.asarray(levels, dtype=float)
    n = len(y)
    if n < 2 or not np.all(np.isfinite(y)) or np.any(y <= 0):
        return []
    threshold = max(min_step, k * noise(y, iqr_rel))
    found: list[Step] = []

    def split(lo: int, hi: int) -> None:
        if hi - lo < 2:
            return
        seg = y[lo:hi]
        costs = [(_cost(seg[:i]) + _cost(seg[i:]), i) for i in range(1, len(seg))]
        _, i = min(costs)
        at = lo + i
        before, after = float(np.median(y[lo:at])), float(np.median(y[at:hi]))
        if abs(math.log(after / before)) <= math.log1p(threshold):
            return
        found.append(Step(at, before, after, threshold, confirmed=(at - lo >= 2 and hi - at >= 2)))
        split(lo, at)
        split(at, hi)

    split(0, n)
    return sorted(found, key=lambda s: s.index)
