"""The targets, hit or miss: whole steps (e2e rows) against the fastest torch.compile mode at the same model, fmha
against cuDNN, and the gemm sweep's matmuls against cuBLAS (the gemm table has the per-config detail).

Every ratio is the peer's time / ours (> 1: ours is faster), both from the same rows, so from one machine when they
are one run's. Step times are kernel time per step (CUDA events around back-to-back steps, or around graph
replays); fmha and matmuls are the harness's kernel time (`timer` column of each row). Below the steps, each model's
`ok` backends and the rest: a run cut short shows there, instead of reading as a full table."""
from __future__ import annotations

from bench.measure.compiled_baseline import COMPILE_BACKENDS, backend_of, compiled_ours
from bench.report.tables import gemm as gemm_table
from bench.report.tables.base import NoRows, lines_text

OURS_ALONE = ("triton", "cutile")
# model -> the step speed-up over the best torch.compile mode its best backend must reach
STEP_GOALS = (("gpt2_124m", 1.15), ("shakespeare_6x768", 1.1), ("shakespeare_6x384", 1.1))
ALONE_GOAL = 1.05      # GPT-2 124M, triton alone and cutile alone (graphed or compiled around, the faster)
NO_GRAPH_GOAL = 1.05   # GPT-2 124M without a whole-step graph, against the fastest compile mode without graphs
MEMORY_GOAL = 0.7      # the best GPT-2 step's peak memory / the best compile mode's, at most
FMHA_SHAPE = {"B": 16, "T": 1024}     # GPT-2's attention, causal bf16


def _ok(r):
    return r.get("status") == "ok" and r.get("ms_per_step")


def _step_rows(rows, model):
    return [r for r in rows if r.get("op") == "e2e" and r.get("model") == model and _ok(r)]


def _fastest(rows, pred):
    cands = [r for r in rows if pred(r)]
    return min(cands, key=lambda r: r["ms_per_step"]) if cands else None


def _label(r):
    return f"{backend_of(r)}{'+graph' if r.get('cuda_graph') else ''}"


def _line(what, target, ours, peer):
    if ours is None or peer is None:
        return (f"| {what} | >= {target:.2f}x | {'-' if ours is None else _label(ours)} | "
                f"{'-' if peer is None else _label(peer)} | - | not measured |")
    ratio = peer["ms_per_step"] / ours["ms_per_step"]
    return (f"| {what} | >= {target:.2f}x | {_label(ours)} {ours['ms_per_step']:.2f} ms | {_label(peer)} "
            f"{peer['ms_per_step']:.2f} ms | {ratio:.3f}x | {'hit' if ratio >= target else 'MISS'} |")


def _memory_line(what, ours, peer):
    mem = lambda r: (r or {}).get("peak_mem_bytes")
    if not (mem(ours) and mem(peer)):
        return f"| {what} | <= {MEMORY_GOAL:.2f}x | - | - | - | not measured |"
    ratio = mem(ours) / mem(peer)
    return (f"| {what} | <= {MEMORY_GOAL:.2f}x | {_label(ours)} {mem(ours) / 1e9:.2f} GB | {_label(peer)} "
            f"{mem(peer) / 1e9:.2f} GB | {ratio:.3f}x | {'hit' if ratio <= MEMORY_GOAL else 'MISS'} |")


def _kernels_of(name):
    """The backend inside a "compile+..." one (our GPT compiled around it), else the name itself."""
    return (compiled_ours(name) or (None, name))[1]


def _alone(r, b):
    """The impl alone: `triton`, or our GPT compiled around it (`compile+triton`, any mode)."""
    name = backend_of(r)
    return name == b or (compiled_ours(name) or (None, None))[1] == b


def steps(rows):
    out = ["| target | goal | ours (ms/step) | best torch.compile (ms/step) | ratio | |", "|---|---|---|---|---|---|"]
    compiled = lambda r: backend_of(r) in COMPILE_BACKENDS
    no_graphs = lambda r: compiled(r) and COMPILE_BACKENDS[backend_of(r)] != "reduce-overhead"
    ours = lambda r: not compiled(r) and _kernels_of(backend_of(r)) not in ("eager", "eager_sdpa")
    graphed = lambda r: r.get("cuda_graph") or (compiled_ours(backend_of(r)) or ("",))[0] == "reduce-overhead"
    for model, goal in STEP_GOALS:
        rs = _step_rows(rows, model)
        peer = _fastest(rs, compiled)
        best = _fastest(rs, ours)
        out.append(_line(f"{model} step, best backend", goal, best, peer))
        if model == "gpt2_124m":
            for b in OURS_ALONE:
                out.append(_line(f"{model} step, `{b}` alone", ALONE_GOAL, _fastest(rs, lambda r, b=b: _alone(r, b)),
                                 peer))
            out.append(_line(f"{model} step without a whole-step CUDA graph", NO_GRAPH_GOAL,
                             _fastest(rs, lambda r: ours(r) and not graphed(r)), _fastest(rs, no_graphs)))
            out.append(_memory_line(f"{model} peak memory of the best step", best, peer))
    return out + _chosen_from(rows)


def _chosen_from(rows):
    """What each model's lines chose among: in a run cut short, the "best backend" may be the only one timed."""
    out = []
    for model, _ in STEP_GOALS:
        rs = [r for r in rows if r.get("op") == "e2e" and r.get("model") == model]
        if rs:
            ok = sorted({_label(r) for r in rs if _ok(r)})
            bad = sorted({f"{_label(r)} ({r.get('status')})" for r in rs if not _ok(r)})
            out.append(f"- {model}, chosen among: {', '.join(ok) or 'none'}"
                       + (f"; not ok: {', '.join(bad)}" if bad else ""))
    return [""] + out if out else []


def fmha(rows):
    out = ["", "| fmha B16 H12 T1024 D64 causal bf16 | ours ms | cuDNN ms | cuDNN / ours | |", "|---|---|---|---|---|"]
    fm = [r for r in rows if r.get("op") == "fmha" and r.get("status") == "ok" and r.get("dtype") == "bf16"
          and all((r.get("shape") or {}).get(k) == v for k, v in FMHA_SHAPE.items())
          and (r.get("shape") or {}).get("causal")]
    for p in ("fwd", "fwd+bwd"):
        cudnn = [r for r in fm if r["impl"] == "sdpa_cudnn" and r.get("pass") == p]
        if not cudnn:
            continue
        c = min(r["median_ms"] for r in cudnn)
        for impl in OURS_ALONE:
            mine = [r for r in fm if r["impl"] == impl and r.get("pass") == p]
            if mine:
                r = min(mine, key=lambda r: r["median_ms"])
                out.append(f"| {impl} {p} ({r.get('config_label', 'default')}, {r.get('timer')}) | "
                           f"{r['median_ms']:.4f} | {c:.4f} | {c / r['median_ms']:.3f}x | "
                           f"{'hit' if r['median_ms'] <= c else 'MISS'} |")
    return out


def gemm(rows):
    found = gemm_table.collect(rows)
    if not found:
        return []
    out = ["", "| matmul, M16384 bf16 | cuBLAS ms | triton best (config) | cutile best (config) |", "|---|---|---|---|"]
    for key in sorted(found, key=lambda k: (gemm_table.LAYERS.get((k[1], k[2]), ""), k[3])):
        M, N, K, part, what, dtype = key
        if not part:
            continue
        cands = found[key]
        base = [r for (impl, _), r in cands.items() if impl == "eager" and r.get("status") == "ok"]
        if not base:
            continue
        b = min(r["median_ms"] for r in base)
        cells = []
        for impl in OURS_ALONE:
            mine = [(r["median_ms"], lab) for (i, lab), r in cands.items() if i == impl and r.get("status") == "ok"]
            if not mine:
                cells.append("-")
                continue
            t, lab = min(mine)
            cells.append(f"{b / t:.3f}x {'hit' if b / t >= gemm_table.TARGET else 'MISS'} ({lab})")
        out.append(f"| {gemm_table.layer(N, K)} {what} | {b:.4f} | {cells[0]} | {cells[1]} |")
    return out


def table(rows: list[dict]) -> str:
    if not any(r.get("op") in ("e2e", "fmha", "linear") for r in rows):
        raise NoRows("no e2e, fmha or linear rows (the targets are whole steps, fmha and the GPT-2 matmuls)")
    return lines_text(steps(rows) + fmha(rows) + gemm(rows))
