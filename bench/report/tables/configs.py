"""Every tile config of every point, fastest first within each (op, shape, dtype, pass, timer): what a tuning sweep
found, as the best row's time / each row's, or with a peer as that impl's time / each row's (e.g. sdpa_cudnn for
the fmha_tune sweep: >= 1.0 is the target), and what an autotuned row picked."""
from __future__ import annotations

from collections import defaultdict

from bench.report.tables.base import NoRows, lines_text


def table(rows: list[dict], peer: str | None = None) -> str:
    """`peer`: the impl whose time the ratios divide (default: each group's fastest row)."""
    groups = defaultdict(list)
    for r in rows:
        if r.get("op") == "e2e":
            continue
        shape = ",".join(f"{k}={v}" for k, v in (r.get("shape") or {}).items())
        groups[(r.get("op"), shape, r.get("dtype"), r.get("pass"), r.get("timer"))].append(r)
    if not groups:
        raise NoRows("no op rows (e2e rows have no tile configs)")
    out = []
    for (op, shape, dtype, pass_, timer), group in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        ok = sorted((r for r in group if r.get("status") == "ok"), key=lambda r: r["median_ms"])
        base_rows = [r for r in ok if r["impl"] == peer] if peer else ok[:1]
        base = base_rows[0]["median_ms"] if base_rows else None
        head = f"{peer} {base:.4f} ms" if peer and base else f"no {peer} row" if peer else ""
        out.append(f"\n{op} {shape} {dtype} {pass_} ({timer})  {head}")
        for r in ok:
            ratio = f"{base / r['median_ms']:5.3f}" if base else "    -"
            picked = r.get("picked_config") if (r.get("config") or {}).get("autotune") else None
            out.append(f"  {r['median_ms']:9.4f} ms  {ratio}  {r['impl']:<12} {r.get('config_label', '')}"
                       + (f"  picked {picked}" if picked else ""))
        for r in group:
            if r.get("status") != "ok":
                out.append(f"  {r.get('status'):>12}  {r['impl']:<12} {r.get('config_label', '')}: "
                           f"{(r.get('message') or '')[:100]}")
    return lines_text(out)
