"""What the gate's two calls per point cannot show about cuTile's split-K fixup (SPLIT_FIXUP: each dW
tile's last K slice sums the partials, a counter per tile ordering it after the others' stores): a race.
Both ways sum the same fp32 partials in the same order, so the fixup's dW and fused bias gradient must be
bitwise those of the two-kernel sum, on every call, eager and graph-replayed; the counters must end at zero.
Seconds on an H100/H200 (compiles included):

    PYTHONPATH=.:$PYTHONPATH python tools/cutile_fixup_check.py [--reps 100]
"""
import argparse
import sys

import torch

from kernels.linear import cutile as L
from kernels.linear.splitk import slices

SHAPES = ((16384, 768, 768), (16384, 2304, 768), (16384, 3072, 768), (16384, 768, 3072))   # tokens, N, K
PRESETS = ("hopper", "tile_128x256", "cluster_256x128")


def dw(dy, x, c):
    """dW = dY^T X and db = dY's column sums, as the linear's backward calls them."""
    out, _, db = L.matmul(dy, x, True, False, c, db_dtype=dy.dtype)
    return out, db


def check(M, N, K, preset, reps, device="cuda", overrides=None):
    """One shape and preset (plus overrides); off a GPU (kernels stood in) without the graph replays."""
    g = torch.Generator(device=device).manual_seed(M + N + K)
    dy = torch.randn(M, N, device=device, generator=g).bfloat16()
    x = torch.randn(M, K, device=device, generator=g).bfloat16()
    c = {**L._config(L.aot.arch_of(dy), {**L.NAMED[preset], **(overrides or {})}), "DB_FUSED": True,
         "SPLIT_FIXUP": False}
    slots = L.aot.sm_count(dy) * c["occupancy"] // c["num_ctas"]   # as L.matmul counts its waves
    S = slices(N, K, M, c["TILE_M"], c["TILE_N"], c["TILE_K"], slots, c["SPLIT_K"])[0]
    ref, db_ref = dw(dy, x, c)
    fix = {**c, "SPLIT_FIXUP": True}
    eager_bad = sum(not (torch.equal(o, ref) and torch.equal(d, db_ref)) for o, d in (dw(dy, x, fix)
                                                                                      for _ in range(reps)))
    graph_bad = replays(dy, x, fix, ref, db_ref, reps) if device == "cuda" else 0
    stuck = sum(int(b.count_nonzero()) for b in L._COUNTERS.values())
    ref64 = dy.double().t() @ x.double()
    err = ((ref.double() - ref64).norm() / ref64.norm()).item()
    db_err = ((db_ref.double() - dy.double().sum(0)).norm() / dy.double().sum(0).norm()).item()
    ok = eager_bad == 0 and graph_bad == 0 and stuck == 0 and err < 1e-2 and db_err < 1e-2
    verdict = "FAIL" if not ok else "ok  " if S > 1 else "n/a "   # S = 1: no fix-up ran, nothing was checked
    print(f"{verdict} dW {N}x{K} over {M} {preset:16s} S={S}: fixup != two-kernel sum in "
          f"{eager_bad}/{reps} calls, {graph_bad}/{reps} replays; counters left non-zero {stuck}; "
          f"rel err vs fp64 {err:.1e}, db {db_err:.1e}")
    return ok


def replays(dy, x, fix, ref, db_ref, reps):
    """How many of reps replays of the fixup captured in a CUDA graph differ from ref, db_ref."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        dw(dy, x, fix)                      # warm-up on the capture's stream, as a graphed step does
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out_g, db_g = dw(dy, x, fix)
    bad = 0
    for _ in range(reps):
        out_g.fill_(float("nan"))
        db_g.fill_(float("nan"))
        graph.replay()
        bad += not (torch.equal(out_g, ref) and torch.equal(db_g, db_ref))
    torch.cuda.synchronize()
    return bad


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=100)
    args = p.parse_args(argv)
    results = [check(M, N, K, preset, args.reps) for M, N, K in SHAPES for preset in PRESETS]
    print(f"{sum(results)}/{len(results)} ok")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
