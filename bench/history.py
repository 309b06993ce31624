"""The results history: every row of every run, across commits and GPUs, in one local store.

    run_bench.py --history-add results/fmha_cuda results/h200/results.jsonl   # add runs (safe to repeat)
    run_bench.py --history --op fmha --impl cutile --gpu H100                   # a point's time across commits
    run_bench.py --compare d76d07f latest                                       # two commits from the store

and in Python, the whole store as one flat DataFrame (kernels.rows.flatten: shape.B, config.BLOCK_M, ...):

    from bench.history import load; df = load()          # or load("path/to/tilebench-history", op="fmha")

The store is `./tilebench-history/history.duckdb` under the working directory (`--history-dir`, or the
TILEBENCH_HISTORY environment variable). GPU runs never need it: they write JSONL as always, and rows are added
afterwards on any machine with the `history` extra (`pip install -e ".[history]"`).

Why DuckDB rather than a Parquet dataset: adding must be safe to repeat, and a primary key makes that one
`INSERT OR IGNORE` instead of read-everything-and-dedupe on every add; the store stays a single file to copy or
archive; SQL filters (op, impl, GPU) run in the store; and it reads into pandas in one call. A Parquet dataset
would need pyarrow plus our own dedupe and compaction.

Dedupe key: (git_commit, device_name, point_id, date, host, gpu_index). A row is one measurement of a point, by a
commit, on a GPU, finished at a date (to the second); host and GPU index keep apart two GPUs of one model that
measured the same point at the same second (a --replicate or cluster run). Adding the same file twice, or a run
folder and then its results.jsonl, adds nothing. A key, not a hash of the row, so that a row read again by a
newer reader (which fills in columns old rows lack) is still the same measurement. Missing key parts are ''.

Each row is kept whole (as JSON) beside the columns the store filters and orders by."""
from __future__ import annotations

import datetime
import json
import os
import re

import pandas as pd

from kernels.rows import flatten, point_id, read_rows

DEFAULT_DIR = "tilebench-history"
DB_NAME = "history.duckdb"
KEY = ("git_commit", "device_name", "point_id", "date", "host", "gpu_index")
COLUMNS = {   # column -> SQL type: the key, what --history filters and orders by, the times, the row itself
    "git_commit": "VARCHAR NOT NULL", "device_name": "VARCHAR NOT NULL", "point_id": "VARCHAR NOT NULL",
    "date": "VARCHAR NOT NULL", "host": "VARCHAR NOT NULL", "gpu_index": "VARCHAR NOT NULL",
    "op": "VARCHAR", "impl": "VARCHAR", "shape_label": "VARCHAR", "dtype": "VARCHAR", "pass": "VARCHAR",
    "config_label": "VARCHAR", "timer": "VARCHAR", "status": "VARCHAR", "median_ms": "DOUBLE", "q1_ms": "DOUBLE",
    "q3_ms": "DOUBLE", "iqr_rel": "DOUBLE", "schema_version": "INTEGER", "source": "VARCHAR", "added_at": "VARCHAR",
    "row": "VARCHAR",
}
COMMIT = re.compile(r"[0-9a-fA-F]{4,40}(\+dirty)?|latest")


def add_arguments(p) -> None:
    g = p.add_argument_group("results history (needs duckdb: the history extra)")
    g.add_argument("--history-add", nargs="+", metavar="RESULTS",
                   help="add result files or run folders to the history store (safe to repeat)")
    g.add_argument("--history", action="store_true",
                   help="a point's time across commits and GPUs, steps flagged; writes a page (filters: --op, "
                        "--impl, --shape, --gpu)")
    g.add_argument("--history-dir", default=None, metavar="DIR",
                   help=f"the store's folder (default ./{DEFAULT_DIR}, or $TILEBENCH_HISTORY)")
    g.add_argument("--op", default=None, help="with --history: only this op")
    g.add_argument("--shape", default=None, metavar="TEXT", help="with --history: shapes whose label contains TEXT")
    g.add_argument("--gpu", default=None, metavar="TEXT",
                   help="with --history or --compare COMMIT COMMIT: GPUs whose name contains TEXT")


class HistoryError(ValueError):
    """A one-line reason (no store, no such commit, duckdb missing)."""


def _duckdb():
    try:
        import duckdb
    except ImportError:
        raise HistoryError("the results history needs duckdb: pip install -e \".[history]\" (or pip install duckdb)") \
            from None
    return duckdb


def default_dir() -> str:
    return os.environ.get("TILEBENCH_HISTORY") or os.path.join(os.getcwd(), DEFAULT_DIR)


def db_path(root: str | None = None) -> str:
    return os.path.join(root or default_dir(), DB_NAME)


def _connect(root: str | None, create: bool):
    duckdb = _duckdb()
    path = db_path(root)
    if not create and not os.path.exists(path):
        raise HistoryError(f"no results history at {path} (add runs with run_bench.py --history-add RESULTS)")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    con = duckdb.connect(path)
    cols = ", ".join(f'"{c}" {t}' for c, t in COLUMNS.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS rows ({cols}, PRIMARY KEY ({', '.join(KEY)}))")
    return con


def _text(v) -> str:
    return "" if v is None else str(v)


def _float(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f else None


def record(row: dict, source: str, added_at: str) -> tuple:
    """The store's columns for one result row."""
    pid = row.get("point_id") or point_id(row)
    sv = row.get("schema_version")
    vals = {"git_commit": _text(row.get("git_commit")), "device_name": _text(row.get("device_name")),
            "point_id": _text(pid), "date": _text(row.get("date")), "host": _text(row.get("host")),
            "gpu_index": _text(row.get("gpu_index")), "op": row.get("op"), "impl": row.get("impl"),
            "shape_label": _text(row.get("shape_label") or row.get("shape")), "dtype": row.get("dtype"),
            "pass": row.get("pass"), "config_label": row.get("config_label"), "timer": row.get("timer"),
            "status": row.get("status"), "median_ms": _float(row.get("median_ms")), "q1_ms": _float(row.get("q1_ms")),
            "q3_ms": _float(row.get("q3_ms")), "iqr_rel": _float(row.get("iqr_rel")),
            "schema_version": int(sv) if isinstance(sv, (int, float)) and sv == sv else None, "source": source,
            "added_at": added_at, "row": json.dumps(row, default=str, sort_keys=True)}
    return tuple(vals[c] for c in COLUMNS)


def add(paths: list[str], root: str | None = None) -> tuple[int, int]:
    """Adds every result row the paths hold (files or run folders, kernels.rows.read_rows); returns (added, already
    there). Rows that are not results (no op or status) are skipped."""
    files = []
    for p in paths:
        try:
            rows = read_rows(p)
        except FileNotFoundError:
            raise HistoryError(f"{p}: no such results file or folder") from None
        files.append((p, [r for r in rows if r.get("op") and r.get("status")]))
    con = _connect(root, create=True)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        before = con.execute("SELECT count(*) FROM rows").fetchone()[0]
        total = 0
        for p, rows in files:
            total += len(rows)
            if rows:
                marks = ", ".join("?" * len(COLUMNS))
                con.executemany(f"INSERT OR IGNORE INTO rows VALUES ({marks})",
                                [record(r, os.path.abspath(p), now) for r in rows])
        added = con.execute("SELECT count(*) FROM rows").fetchone()[0] - before
    finally:
        con.close()
    return added, total - added


def _where(op=None, impl=None, shape=None, gpu=None, commit=None) -> tuple[str, list]:
    conds, args = [], []
    if op:
        conds.append("op = ?")
        args.append(op)
    if impl:
        impls = [impl] if isinstance(impl, str) else list(impl)
        conds.append(f"impl IN ({', '.join('?' * len(impls))})")
        args += impls
    if shape:
        conds.append("shape_label ILIKE ?")
        args.append(f"%{shape}%")
    if gpu:
        conds.append("device_name ILIKE ?")
        args.append(f"%{gpu}%")
    if commit:
        conds.append("git_commit = ?")
        args.append(commit)
    return (" WHERE " + " AND ".join(conds)) if conds else "", args


def rows(root: str | None = None, **filters) -> list[dict]:
    """The stored rows (whole, as written) matching the filters (op, impl, shape: a part of the shape label,
    gpu: a part of the GPU's name, commit), oldest first."""
    con = _connect(root, create=False)
    try:
        where, args = _where(**filters)
        got = con.execute(f"SELECT row, source, added_at FROM rows{where} ORDER BY date, git_commit, point_id",
                          args).fetchall()
    finally:
        con.close()
    out = []
    for text, source, added_at in got:
        r = json.loads(text)
        r["history_source"], r["history_added_at"] = source, added_at
        out.append(r)
    return out


def load(root: str | None = None, **filters) -> pd.DataFrame:
    """The store as one flat DataFrame, oldest first: `from bench.history import load; df = load()`."""
    return flatten(rows(root, **filters))


# --- commits --------------------------------------------------------------------------------------------------------

def commits(root: str | None = None, gpu: str | None = None) -> pd.DataFrame:
    """Every commit in the store: first and last date, rows, GPUs; oldest first."""
    con = _connect(root, create=False)
    try:
        where, args = _where(gpu=gpu)
        return con.execute(f"SELECT git_commit, min(date) AS first, max(date) AS last, count(*) AS rows, "
                           f"string_agg(DISTINCT device_name, ', ') AS gpus FROM rows{where} GROUP BY git_commit "
                           f"ORDER BY first", args).df()
    finally:
        con.close()


def resolve(name: str, root: str | None = None, gpu: str | None = None) -> str:
    """A stored git_commit from what a user types: `latest` (the most recent), the commit as stored, or a prefix of
    it (a stored short hash is also found from a longer one). An exact match wins over a dirty tree's rows."""
    c = commits(root, gpu)
    known = [str(x) for x in c["git_commit"] if str(x)]
    if not known:
        raise HistoryError(f"no commits in the results history at {db_path(root)}"
                           + (f" on GPU {gpu!r}" if gpu else ""))
    if name == "latest":
        return known[-1]
    if name in known:
        return name
    want = name.lower().removesuffix("+dirty")
    hits = sorted({k for k in known if k.lower().removesuffix("+dirty").startswith(want)
                   or want.startswith(k.lower().removesuffix("+dirty"))})
    clean = [h for h in hits if not h.endswith("+dirty")]
    if len(clean) == 1:
        return clean[0]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise HistoryError(f"commit {name!r} is not in the results history (known: {', '.join(known[-8:])})")
    raise HistoryError(f"commit {name!r} is ambiguous in the results history: {', '.join(hits)}")


def looks_like_commit(name: str) -> bool:
    return bool(COMMIT.fullmatch(name))


def commit_rows(a: str, b: str, root: str | None = None, gpu: str | None = None) -> tuple[tuple, tuple]:
    """((label, rows), (label, rows)) of two commits for --compare: each commit's rows on the one GPU both were
    measured on (name it with --gpu where they share several), the latest row per point."""
    ca, cb = resolve(a, root, gpu), resolve(b, root, gpu)
    ra, rb = rows(root, commit=ca, gpu=gpu), rows(root, commit=cb, gpu=gpu)
    shared = sorted({r.get("device_name") for r in ra} & {r.get("device_name") for r in rb})
    if not shared:
        raise HistoryError(f"commits {ca} and {cb} were measured on no GPU in common")
    if len(shared) > 1:
        raise HistoryError(f"commits {ca} and {cb} were both measured on {len(shared)} GPUs ({', '.join(shared)}): "
                           "name one with --gpu")
    dev = shared[0]
    return ((f"{ca} on {dev}", [r for r in ra if r.get("device_name") == dev]),
            (f"{cb} on {dev}", [r for r in rb if r.get("device_name") == dev]))
