"""Tables for the report templates: cells with their text, CSS class and hover title, and the formats every page
shares (ratios as `0.85×` coloured by which side of 1 they fall, fractions as percentages, tile configs as
`BLOCK_M=128, num_warps=8`). The templates (bench/report/templates/_macros.html) render them, autoescaped."""
from __future__ import annotations

import dataclasses
import math

import pandas as pd


@dataclasses.dataclass
class Cell:
    text: str
    cls: str = ""          # CSS classes: num, up (>= 1, green), down (< 1, red), unsettled, dim
    title: str = ""        # hover text

    def __str__(self) -> str:
        return self.text


@dataclasses.dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]

    def __len__(self) -> int:
        return len(self.rows)


def _missing(v) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):   # lists, dicts
        return False


def number(v, digits: int = 4) -> str:
    if _missing(v):
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.{digits}g}"
    return str(v)


def cell(v) -> Cell:
    """Any value as a cell: numbers right-aligned and short, lists joined, dicts as configs."""
    if isinstance(v, Cell):
        return v
    if _missing(v):
        return Cell("")
    if isinstance(v, dict):
        return Cell(config_text(v))
    if isinstance(v, (list, tuple)):
        return Cell(", ".join(map(str, v)))
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return Cell(number(v), "num")
    return Cell(str(v))


def from_df(df: pd.DataFrame, columns: list[str] | None = None, rename: dict | None = None) -> Table:
    cols = [c for c in (columns or list(df.columns)) if c in df]
    rename = rename or {}
    return Table([rename.get(c, c) for c in cols], [[cell(v) for v in row] for row in df[cols].itertuples(index=False)])


def ratio(r, lo=None, hi=None, unsettled: bool = False, what: str = "") -> Cell:
    """`0.85×` in red (below 1: slower than the reference), `1.20×` in green; the interval on hover; `~` marks a
    ratio whose times did not settle."""
    if _missing(r):
        return Cell("")
    shown = f"{r:.2f}"
    text = f"{shown}×" + (" ~" if unsettled else "")
    title = what
    if not _missing(lo) and not _missing(hi):
        title = (title + " " if title else "") + f"95 % interval {lo:.2f}×–{hi:.2f}×"
    if unsettled:
        title += " (a time did not settle: IQR above the timing target)"
    up = float(shown) >= 1          # by the ratio as written: 0.998 reads 1.00× and is not red
    return Cell(text, "num " + ("up" if up else "down") + (" unsettled" if unsettled else ""), title.strip())


def times(v) -> Cell:
    """A speed-up that is not a contest (over eager): `42×`, uncoloured."""
    return Cell("" if _missing(v) else f"{v:.3g}×", "num")


def pct(v) -> Cell:
    return Cell("" if _missing(v) else f"{100 * v:.1f} %", "num")


def ms(v) -> Cell:
    return Cell("" if _missing(v) else f"{v:.4g}", "num")


def config_text(cfg) -> str:
    """A tile config readably: `BLOCK_M=128, num_warps=8` (keys left at None, "choose at call time", left out)."""
    if not isinstance(cfg, dict):
        return "" if _missing(cfg) else str(cfg)
    parts = [f"{k}={_config_value(v)}" for k, v in cfg.items() if v is not None]
    return ", ".join(parts) if parts else "default"


def _config_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return str(int(v))
    if isinstance(v, dict):
        return "{" + config_text(v) + "}"
    return str(v)
