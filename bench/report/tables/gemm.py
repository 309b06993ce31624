"""The gemm sweep: each GPT-2 matmul (forward, dX, dW of each linear) and the whole linear op (with its GELU
epilogue) per impl and tile config, as a fraction of cuBLAS (eager's time / ours: >= TARGET is the target), then
the best config per impl, which is the config each part would want as its default.

Rows are the linear op's: with a `part` shape key (kernels.linear.parts) the matmul alone, without one the op per
pass; a config that did not run reports its status instead of a time. The targets table reads `collect` too."""
from __future__ import annotations

from collections import defaultdict

from bench.report.tables.base import NoRows, lines_text
from kernels.linear.parts import PARTS

# GPT-2's linears by (N, K): out and in features
LAYERS = {(2304, 768): "c_attn", (768, 768): "attn c_proj", (3072, 768): "c_fc", (768, 3072): "mlp c_proj",
          (50304, 768): "lm_head"}
TARGET = 0.95      # ours within 5 % of cuBLAS


def _key(r: dict) -> tuple:
    s = r["shape"]
    part = s.get("part", 0)
    what = PARTS[part] if part else "op " + str(r.get("pass")) + (" gelu" if s.get("gelu") else "")
    return s["M"], s["N"], s["K"], part, what, str(r.get("dtype"))


def layer(N: int, K: int) -> str:
    return LAYERS.get((N, K), f"N{N} K{K}")


def _name(key: tuple) -> str:
    M, N, K, _, what, dtype = key
    return f"{layer(N, K)} M{M} {what} {dtype}"


def collect(rows: list[dict]) -> dict:
    """{shape key: {(impl, config label): row}} for the linear's rows."""
    out = defaultdict(dict)
    for r in rows:
        if r.get("op") == "linear" and isinstance(r.get("shape"), dict):
            out[_key(r)][(r["impl"], r.get("config_label", "default"))] = r
    return out


def cublas(cells: dict) -> dict | None:
    """The ok eager row of one matmul's cells: eager's linear is cuBLAS."""
    return next((r for (impl, _), r in cells.items() if impl == "eager" and r.get("status") == "ok"), None)


def _ratio(base, r):
    if base is None or r.get("status") != "ok" or not r.get("median_ms"):
        return None
    return base["median_ms"] / r["median_ms"]


def _cell(base, r):
    if r.get("status") != "ok":
        return r.get("status", "?")
    x = _ratio(base, r)
    return f"{r['median_ms']:.4f}ms" + (f" {x:.2f}x" if x is not None else "")


def table(rows: list[dict]) -> str:
    found = collect(rows)
    if not found:
        raise NoRows("no linear rows (the gemm sweeps)")
    out = []
    timers = sorted({str(r["timer"]) for r in rows if r.get("op") == "linear" and r.get("timer")})
    if len(timers) > 1:
        out.append(f"warning: rows timed with {timers} mixed; compare one timer's files at a time")
    for key in sorted(found):
        cells = found[key]
        base = cublas(cells)
        out.append(f"\n{_name(key)}  cuBLAS {base['median_ms']:.4f} ms" if base else f"\n{_name(key)}  (no cuBLAS row)")
        for (impl, label), r in sorted(cells.items()):
            if impl == "eager":
                continue
            x = _ratio(base, r)
            mark = "" if x is None else (" ok" if x >= TARGET else " MISS")
            msg = "" if r.get("status") == "ok" else "  " + (r.get("message") or "")[:100]
            out.append(f"  {impl:8s} {label:60s} {_cell(base, r):>22s}{mark}{msg}")
    out.append(f"\nbest config per impl (ours / cuBLAS; target >= {TARGET}):")
    impls = sorted({impl for cells in found.values() for impl, _ in cells if impl != "eager"})
    out.append(f"{'matmul':40s} {'cuBLAS ms':>10s} " + " ".join(f"{i:>10s} {'config':28s}" for i in impls))
    for key in sorted(found):
        cells = found[key]
        base = cublas(cells)
        line = f"{_name(key):40s} {base['median_ms'] if base else float('nan'):10.4f} "
        for impl in impls:
            scored = [(_ratio(base, r), label) for (i, label), r in cells.items() if i == impl]
            scored = [s for s in scored if s[0] is not None]
            if scored:
                x, label = max(scored)
                line += f"{x:9.3f}x {label[:28]:28s} "
            else:
                line += f"{'-':>10s} {'':28s} "
        out.append(line)
    return lines_text(out)
