"""e2e rows as one table: ms/step, tokens/s and the speed-up over torch.compile (the fastest of its modes at that
point: torch_compile_best, one row of its own) and over nanoGPT's eager model (eager_sdpa) of the same model in the
same rows."""
from __future__ import annotations

from bench.measure.compiled_baseline import BEST, backend_of, best_rows
from bench.report.tables.base import NoRows, lines_text

BASES = (BEST, "eager_sdpa")


def table(rows: list[dict]) -> str:
    rows = [r for r in rows if r.get("op") == "e2e"]
    if not rows:
        raise NoRows("no e2e rows (whole steps: the e2e and e2e_graph sweeps)")
    rows += best_rows(rows)
    base = {}
    for r in rows:
        if r.get("status") == "ok" and backend_of(r) in BASES and not r.get("cuda_graph"):
            base[(r.get("model"), backend_of(r))] = r.get("tokens_per_s")
    out = [f"{'model':18s} {'backend':42s} {'graph':5s} {'status':13s} {'ms/step':>8s} {'tok/s':>9s} "
           f"{'x compile':>9s} {'x eager_sdpa':>12s}  non-eager impls that ran / message"]
    for r in sorted(rows, key=lambda r: (str(r.get("model")), bool(r.get("cuda_graph")), str(backend_of(r)))):
        tps = r.get("tokens_per_s")
        sp = [(f"{tps / base[(r.get('model'), b)]:.3f}" if tps and base.get((r.get("model"), b)) else "-")
              for b in BASES]
        ms = r.get("ms_per_step")
        name = str(backend_of(r)) + (f" ({r['best_of']})" if r.get("best_of") else "")
        out.append(f"{str(r.get('model')):18s} {name:42s} {'yes' if r.get('cuda_graph') else 'no':5s} "
                   f"{r.get('status', '?'):13s} {ms if ms is None else round(ms, 2)!s:>8s} "
                   f"{'-' if not tps else f'{tps:,.0f}':>9s} {sp[0]:>9s} {sp[1]:>12s}  "
                   f"{_used(r) if backend_of(r) == 'auto' else (r.get('message') or '')[:80]}")
    return lines_text(out)


def _used(r: dict) -> str:
    """What ran, per op (auto may pick per shape, so backend_choice alone can mislead)."""
    used = r.get("impls_used") or {}
    return ", ".join(f"{op}={'/'.join(v)}" for op, v in sorted(used.items())) or r.get("backend_choice", "")
