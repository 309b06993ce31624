"""Plain-text tables of finished results for the terminal, `run_bench.py --table NAME RESULTS...`: each table is a
function rows -> str (kernels.rows.read_rows reads the rows), registered here by name with a one-line
description."""
from __future__ import annotations

import dataclasses
import difflib
from typing import Callable

from bench.report.tables import configs, e2e_breakdown, e2e_summary, gemm, targets
from bench.report.tables.base import NoRows  # noqa: F401  (what a table raises on rows it cannot show)


@dataclasses.dataclass(frozen=True)
class Table:
    render: Callable[..., str]
    about: str
    options: tuple[str, ...] = ()     # keyword arguments render takes besides the rows


TABLES = {
    "e2e-summary": Table(e2e_summary.table, "tokens/s and speed-ups over torch.compile"),
    "e2e-breakdown": Table(e2e_breakdown.table, "kernel ms per op per step, backends side by side"),
    "targets": Table(targets.table, "steps vs the best compile mode, fmha vs cuDNN, matmuls vs cuBLAS"),
    "gemm": Table(gemm.table, "each GPT-2 matmul: ours / cuBLAS, best config per part"),
    "configs": Table(configs.table, "every tile config per point, fastest first, vs the --peer impl if named",
                     options=("peer",)),
}


class UnknownTable(KeyError):
    def __str__(self):
        return self.args[0]


def lookup(name: str) -> Table:
    """The table called `name`; else UnknownTable, whose one line names the tables (and the likeliest one)."""
    if name in TABLES:
        return TABLES[name]
    close = difflib.get_close_matches(name, TABLES, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    what = f"unknown table {name!r}; " if name else "--table needs a NAME; "
    raise UnknownTable(f"{what}{hint}tables: {', '.join(TABLES)}")
