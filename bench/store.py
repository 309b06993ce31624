"""Results on disk: one JSON object per line, appended and flushed as each point finishes, so a killed
run keeps everything it measured and --resume can skip what is done."""
from __future__ import annotations

import json
import math
import os


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)      # JSON has no inf/nan
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


class ResultStore:
    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._end_cut_line()

    def _end_cut_line(self) -> None:
        """A run killed mid-write leaves a line without its newline: end it, or the next row would be glued
        to it and lost with it (read_rows skips the cut line alone)."""
        try:
            with open(self.path, "rb+") as f:
                size = f.seek(0, os.SEEK_END)
                if size:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        f.write(b"\n")
        except FileNotFoundError:
            pass

    def append(self, row: dict) -> None:
        line = json.dumps(_clean(row), default=str)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> list[dict]:
        return read_rows(self.path)

    def done_ids(self) -> set[str]:
        return {r["point_id"] for r in self.rows() if "point_id" in r and r.get("status")}


def read_rows(path: str) -> list[dict]:
    """Every complete row; a line cut off by a kill is skipped, not fatal."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
