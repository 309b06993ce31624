"""Issue 14's targets, hit or miss, from one run's result files: whole steps (e2e rows) against the fastest
torch.compile mode at the same model, fmha against cuDNN, and the gemm sweep's matmuls against cuBLAS
(tests/gpu/gemm_table.py has the per-config detail).

    python tests/gpu/targets_table.py RESULTS.jsonl [...]

Every ratio is the peer's time / ours (> 1: ours is faster), both from the same files, so from one machine
when the files are one run's. Step times are kernel time per step (CUDA events around back-to-back steps, or
around graph replays); fmha and matmuls are the harness's kernel time (`timer` column of each row).
"""
import sys

from bench.measure.compiled_baseline import COMPILE_BACKENDS, backend_of
from model.ranking import read_results
from tests.gpu.gemm_table import LAYERS, TARGET as GEMM_TARGET, collect

OURS_ALONE = ("triton", "cutile")


def _ok(r):
    return r.get("status") == "ok" and r.get("ms_per_step")


def step_rows(rows, model):
    return [r for r in rows if r.get("op") == "e2e" and r.get("model") == model and _ok(r)]


def best(rows, pred):
    cands = [r for r in rows if pred(r)]
    return min(cands, key=lambda r: r["ms_per_step"]) if cands else None


def _label(r):
    return f"{backend_of(r)}{'+graph' if r.get('cuda_graph') else ''}"


def line(what, target, ours, peer):
    if ours is None or peer is None:
        print(f"| {what} | >= {target:.2f}x | {'-' if ours is None else _label(ours)} | "
              f"{'-' if peer is None else _label(peer)} | - | not measured |")
        return
    ratio = peer["ms_per_step"] / ours["ms_per_step"]
    print(f"| {what} | >= {target:.2f}x | {_label(ours)} {ours['ms_per_step']:.2f} ms | {_label(peer)} "
          f"{peer['ms_per_step']:.2f} ms | {ratio:.3f}x | {'hit' if ratio >= target else 'MISS'} |")


def steps(rows):
    print("| target | goal | ours (ms/step) | best torch.compile (ms/step) | ratio | |\n|---|---|---|---|---|---|")
    compiled = lambda r: backend_of(r) in COMPILE_BACKENDS
    ours = lambda r: not compiled(r) and backend_of(r) not in ("eager", "eager_sdpa")
    for model, goal in (("gpt2_124m", 1.15), ("shakespeare_6x768", 1.2), ("shakespeare_6x384", 1.2)):
        rs = step_rows(rows, model)
        peer = best(rs, compiled)
        line(f"{model} step, best backend", goal, best(rs, ours), peer)
        if model == "gpt2_124m":
            for b in OURS_ALONE:
                line(f"{model} step, `{b}` alone", 1.0, best(rs, lambda r, b=b: backend_of(r) == b), peer)
            line(f"{model} step without a whole-step CUDA graph", 1.0,
                 best(rs, lambda r: ours(r) and not r.get("cuda_graph")), peer)


def fmha(rows):
    print("\n| fmha B16 H12 T1024 D64 causal bf16 | ours ms | cuDNN ms | cuDNN / ours | |\n|---|---|---|---|---|")
    fm = [r for r in rows if r.get("op") == "fmha" and r.get("status") == "ok" and r.get("dtype") == "bf16"
          and r["shape"].get("T") == 1024 and r["shape"].get("B") == 16 and r["shape"].get("causal")]
    for p in ("fwd", "fwd+bwd"):
        cudnn = [r for r in fm if r["impl"] == "sdpa_cudnn" and r.get("pass") == p]
        if not cudnn:
            continue
        c = min(r["median_ms"] for r in cudnn)
        for impl in OURS_ALONE:
            mine = [r for r in fm if r["impl"] == impl and r.get("pass") == p]
            if mine:
                r = min(mine, key=lambda r: r["median_ms"])
                print(f"| {impl} {p} ({r.get('config_label', 'default')}, {r.get('timer')}) | {r['median_ms']:.4f} | "
                      f"{c:.4f} | {c / r['median_ms']:.3f}x | {'hit' if r['median_ms'] <= c else 'MISS'} |")


def gemm(rows):
    table = collect(rows)
    if not table:
        return
    print(f"\n| matmul, M16384 bf16 | cuBLAS ms | triton best (config) | cutile best (config) |\n|---|---|---|---|")
    for key in sorted(table, key=lambda k: (LAYERS.get((k[1], k[2]), ""), k[3])):
        M, N, K, part, what, dtype = key
        if not part:
            continue
        cands = table[key]
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
            cells.append(f"{b / t:.3f}x {'hit' if b / t >= GEMM_TARGET else 'MISS'} ({lab})")
        print(f"| {LAYERS.get((N, K), f'N{N} K{K}')} {what} | {b:.4f} | {cells[0]} | {cells[1]} |")


def main(paths):
    rows = read_results(paths)
    steps(rows)
    fmha(rows)
    gemm(rows)


if __name__ == "__main__":
    main(sys.argv[1:])
