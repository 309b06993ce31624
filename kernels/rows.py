"""What a result row says, in one place: its statuses, its timers, the axes that make a point a point, and how
result files and folders are read. The harness (bench/), the model's `--backend auto` ranking (model/) and every
table and report use these names; the module sits at the bottom layer so that each can import it.

A row is one JSON object per line of a results file (`results.jsonl` in a run folder; Slurm shards keep
`shard-I-of-N/results.jsonl` under it). Rows written by older versions still load: `read_rows` fills what they
lack (`impl` of e2e rows that named it `backend`, `timer` of rows written before timers had names). Every column a row
can carry is documented in docs/results.md; `frame` loads rows as one flat pandas DataFrame."""
from __future__ import annotations

import hashlib
import json
import os

# --- the row format ---------------------------------------------------------------------------------------------
# Stamped as `schema_version` into every row a writer finishes (the runner's kernel and e2e rows, e2e's own CLI rows,
# --static rows). Raise it when a column changes meaning or is renamed (adding a column needs no new version) and
# say what changed in docs/results.md. Rows without it were written before it existed.
SCHEMA_VERSION = 1

# --- statuses -------------------------------------------------------------------------------------------------
OK = "ok"
NOT_HERE = ("unsupported", "unavailable")                # the impl does not take this point, or cannot run here
BROKEN = ("wrong", "error", "compile_error", "oom")      # it ran and failed
STATUSES = (OK, "wrong", *NOT_HERE, "compile_error", "oom", "error")


def failed(rows: list[dict]) -> list[dict]:
    """The rows `--strict` fails on (locally and after `--collect` alike): every status but ok and the two that say
    "not here", so a status added later fails too."""
    return [r for r in rows if r.get("status") not in (OK, *NOT_HERE)]


# --- timers ---------------------------------------------------------------------------------------------------
# A row's `timer` says how its kernel time (median_ms, q1_ms, ... samples_ms) was taken; host_* columns are always
# HOST_TIMER. The words are the values rows carry, from the sweep's point to the report.
TIMERS = {
    "cuda_events": "kernel time: CUDA events around each call, the L2 flushed before it",
    "cuda_graph": "kernel time: replays of the call captured in a CUDA graph",
    "cpu_clock": "a monotonic clock around each call (no GPU)",
}
HOST_TIMER = "host_wall"
# The timers stop once the interquartile range is within this fraction of the median (or the budget is spent): a
# row whose `iqr_rel` is above it never settled, and reports flag it.
SPREAD_TARGET = 0.03
# what a user asks for (launched calls, or graph replays with --cuda-graph) -> the timer a GPU's rows then carry;
# a new timer is a mode here, its measurement in bench/measure/timing.py and its flag in bench/cli.py
MODES = {"events": "cuda_events", "graph": "cuda_graph"}


def timer_for(device: str, mode: str = "events") -> str:
    """The timer a point measured on `device` in `mode` carries (a CPU has one clock whatever the mode)."""
    if mode not in MODES:
        raise ValueError(f"timer mode {mode!r}: expected one of {', '.join(MODES)}")
    return MODES[mode] if device.startswith("cuda") else "cpu_clock"


def mode_of(timer: str | None) -> str:
    """The mode that measures a row's timer: what the runner hands bench/measure/timing.py."""
    return next((m for m, t in MODES.items() if t == timer), "events")


def is_graph(timer: str | None) -> bool:
    return timer == "cuda_graph"


# --- points ---------------------------------------------------------------------------------------------------
# Every axis that changes a measurement. Two rows differing in any one are two points: their ids, their --compare
# keys and their report groups differ, and --resume keeps both.
POINT_AXES = ("op", "impl", "shape", "dtype", "pass", "config", "config_label", "timer", "extra")


def point_key(row: dict) -> tuple:
    """The row's point as a hashable tuple of JSON strings, one per axis (absent axes read as null)."""
    return tuple(json.dumps(row.get(k), sort_keys=True, default=str) for k in POINT_AXES)


TUNING_AXES = ("config", "config_label")    # what a report picks the best of within one group


def group_key(row: dict, without: tuple = ()) -> str:
    """The row's point with its tile config left out (and any axes in `without`): rows of one group compete for
    "best config"; leave out "impl" too and they compete for "fastest impl"."""
    skip = set(TUNING_AXES) | set(without)
    return json.dumps([row.get(k) for k in POINT_AXES if k not in skip], sort_keys=True, default=str)


def point_id(row: dict) -> str:
    key = {k: row[k] for k in POINT_AXES if k in row}
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- reading --------------------------------------------------------------------------------------------------
RESULTS_FILE = "results.jsonl"
RESULTS_DIR = "results"      # run_bench.py writes <working directory>/results/<run>/results.jsonl


def results_root() -> str:
    """Where results go and where `--backend auto` looks for them: results/ under the working directory, whether
    tilebench runs from a checkout or from an installed copy."""
    return os.path.abspath(RESULTS_DIR)


def result_files(path: str) -> list[str]:
    """The result files a path names: a file itself; a run folder's results.jsonl, or, where it has none, every
    results.jsonl under it (Slurm shards). Backups beside it (results.<date>.jsonl, kept when a run starts over)
    are older runs, not this one: name such a file to read it."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(path)
    own = os.path.join(path, RESULTS_FILE)
    if os.path.isfile(own):
        return [own]
    return sorted(os.path.join(root, RESULTS_FILE) for root, _, names in os.walk(path) if RESULTS_FILE in names)


def scan(path: str) -> tuple[list[tuple[bytes, dict]], list[bytes]]:
    """(line, row) for every line of a file that is a JSON object, and the lines that are not (cut off by a kill,
    not JSON at all); blank lines are neither. A missing file has neither."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], []
    good, bad = [], []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:      # JSONDecodeError, or bytes that are not UTF-8
            row = None
        if isinstance(row, dict):
            good.append((line, normalize(row)))
        else:
            bad.append(line)
    return good, bad


def read_file(path: str) -> list[dict]:
    """Every complete row of one results file; a line cut off by a kill is skipped, not fatal."""
    return [row for _, row in scan(path)[0]]


def read_rows(*paths: str) -> list[dict]:
    """Every row of every result file the paths name (files or run folders, see result_files)."""
    return [r for p in paths for f in result_files(p) for r in read_file(f)]


def unsettled(row: dict) -> bool:
    """The row's kernel time stopped on the budget with its spread above SPREAD_TARGET (rows without iqr_rel: no)."""
    try:
        v = float(row.get("iqr_rel"))
    except (TypeError, ValueError):     # absent, or not a number
        return False
    return v == v and v > SPREAD_TARGET


def flatten(rows: list[dict]):
    """Rows as one flat pandas DataFrame: nested objects become dotted columns (`shape.B`, `config.BLOCK_M`,
    `errors.out`, `stress.qkv_view`, `breakdown.fmha`), lists (samples_ms, profile) stay lists in their cell."""
    import pandas as pd
    if not rows:
        return pd.DataFrame()
    return pd.json_normalize(rows, sep=".")


def frame(*paths: str):
    """Every row of the result files or run folders named, as one flat DataFrame (see flatten):
    `kernels.rows.frame("results/fmha_cuda")`."""
    return flatten(read_rows(*paths))


def normalize(row: dict) -> dict:
    """A row of any version in today's words: e2e rows written by `python -m bench.measure.e2e` named the impl `backend`;
    rows written before timers had names have none (launch-timed kernel time, or the CPU clock)."""
    if "impl" not in row and "backend" in row:
        row["impl"] = row["backend"]
    if "timer" not in row and row.get("device"):
        row["timer"] = "cuda_events" if str(row["device"]).startswith("cuda") else "cpu_clock"
    return row
