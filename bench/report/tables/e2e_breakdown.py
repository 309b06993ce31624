"""The per-op breakdown of e2e rows (kernel ms per step from the profiled pass after timing), backends side by
side, then each row's top kernels."""
from __future__ import annotations

from bench.measure.compiled_baseline import backend_of
from bench.report.tables.base import NoRows, lines_text

W = 28     # column width


def _ms(v, fmt: str) -> str:
    return f"{v:>{W}{fmt}}" if isinstance(v, (int, float)) else f"{'-':>{W}}"


def table(rows: list[dict]) -> str:
    rows = [r for r in rows if r.get("op") == "e2e" and r.get("breakdown_detail")]
    if not rows:
        raise NoRows("no e2e rows with a breakdown")
    names = [f"{r.get('model')}/{backend_of(r)}{'+graph' if r.get('cuda_graph') else ''}" for r in rows]
    keys = sorted({k for r in rows for k in r["breakdown_detail"]},
                  key=lambda k: -max(r["breakdown_detail"].get(k, 0) for r in rows))
    out = [f"{'ms per step':<{W}}" + "".join(f"{n[-(W - 2):]:>{W}}" for n in names),
           f"{'step (timer median)':<{W}}" + "".join(_ms(r.get("ms_per_step"), ".2f") for r in rows),
           f"{'host-inclusive median':<{W}}" + "".join(_ms(r.get("host_median_ms") or 0, ".2f") for r in rows)]
    for k in keys:
        out.append(f"{k:<{W}}" + "".join(_ms(r["breakdown_detail"].get(k, 0), ".3f") for r in rows))
    for extra in ("unattributed", "idle"):
        out.append(f"{extra:<{W}}" + "".join(_ms((r.get("breakdown") or {}).get(extra, 0), ".3f") for r in rows))
    for n, r in zip(names, rows):
        out.append(f"\n{n}: top kernels (ms/step)")
        out += [f"  {v:8.3f}  {k[:110]}" for k, v in r.get("top_kernels") or []]
    return lines_text(out)
