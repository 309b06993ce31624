"""Results on disk: one JSON object per line, appended and flushed as each point finishes, so a killed
run keeps everything it measured and --resume can skip what is done."""
from __future__ import annotations

import datetime
import json
import math
import os
import sys

from kernels.rows import SCHEMA_VERSION, read_file as read_rows, scan   # noqa: F401 - read_rows: the store's file as rows are read


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
        self._set_aside_cut_lines()

    def _set_aside_cut_lines(self) -> None:
        """A run killed mid-write leaves a half line, which pandas.read_json(lines=True) and other readers
        fail on: move every line that is not a JSON row to <path>.cut (appended: nothing is lost) and
        rewrite the file with the good lines alone (atomically: a kill now loses nothing either)."""
        good, bad = scan(self.path)
        if not bad:
            self._end_last_line()
            return
        cut = self.path + ".cut"
        with open(cut, "ab") as f:      # first: a kill before the rewrite leaves the line in both files
            f.write(b"".join(line + b"\n" for line in bad))
            f.flush()
            os.fsync(f.fileno())
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b"".join(line + b"\n" for line, _ in good))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        print(f"{self.path}: {len(bad)} line(s) that were not JSON rows (cut off by a kill?) moved to {cut}",
              file=sys.stderr)

    def _end_last_line(self) -> None:
        """A whole last row without its newline: end it, or the next row would be glued to it."""
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
        row.setdefault("schema_version", SCHEMA_VERSION)    # rows made outside the runner (a dead worker's) too
        line = json.dumps(_clean(row), default=str)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rows(self) -> list[dict]:
        return read_rows(self.path)

    def done_ids(self) -> set[str]:
        return {r["point_id"] for r in self.rows() if "point_id" in r and r.get("status")}


def fresh_results_file(out_dir: str, resume: bool) -> str:
    """The run folder's results.jsonl to append to; without resume an old one is kept aside as
    results.<its date>.jsonl, so measured results are never lost."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.jsonl")
    if os.path.exists(path) and not resume:
        # never lose measured results: keep the old file beside the new one
        stamp = datetime.datetime.fromtimestamp(os.path.getmtime(path)).strftime("%Y%m%d-%H%M%S")
        os.replace(path, os.path.join(out_dir, f"results.{stamp}.jsonl"))
    return path
