"""The e2e torch.compile baselines: nanoGPT's model (model/plain_gpt.py) compiled in each mode, and "the"
compiled peer reports compare against, the fastest mode at each point (each mode's row is kept too).

No torch import: reports and sweeps validation read it."""
from __future__ import annotations

# e2e backend -> torch.compile mode
COMPILE_BACKENDS = {"torch_compile": "default", "torch_compile_max_autotune": "max-autotune-no-cudagraphs",
                    "torch_compile_graphs": "reduce-overhead"}   # reduce-overhead: inductor's own CUDA graphs
# our GPT (model/gpt.py) with its kernels inside torch.compile(fullgraph=True): "<prefix>+<backend>", e.g.
# compile+triton, compile_max_autotune+cutile, compile+triton,fmha=cutile (the backend in model/ops.py's syntax)
COMPILED_OURS = {"compile": "default", "compile_max_autotune": "max-autotune-no-cudagraphs",
                 "compile_graphs": "reduce-overhead"}
BEST = "torch_compile_best"
# what makes two e2e rows the same measurement
POINT_KEYS = ("device_name", "model", "B", "T", "dtype", "cuda_graph")


def compiled_ours(backend: str) -> tuple[str, str] | None:
    """(torch.compile mode, the model's backend) of a "compile+..." e2e backend, else None."""
    prefix, plus, inner = str(backend).partition("+")
    if not plus or prefix not in COMPILED_OURS or not inner:
        return None
    return COMPILED_OURS[prefix], inner


def backend_of(row: dict) -> str | None:
    """The e2e backend of a row: `impl` in sweep rows, `backend` in python -m bench.measure.e2e rows."""
    return row.get("impl") or row.get("backend")


def best_rows(rows: list[dict]) -> list[dict]:
    """Per point where a compile mode ran ok, a copy of the fastest mode's row named BEST, with best_of
    naming the mode's backend."""
    best: dict[tuple, dict] = {}
    for r in rows:
        if r.get("op", "e2e") != "e2e" or r.get("status") != "ok" or backend_of(r) not in COMPILE_BACKENDS:
            continue
        if not r.get("tokens_per_s"):
            continue
        key = tuple(str(r.get(k)) for k in POINT_KEYS)
        if key not in best or r["tokens_per_s"] > best[key]["tokens_per_s"]:
            best[key] = r
    return [{**r, "impl": BEST, "backend": BEST, "best_of": backend_of(r)} for r in best.values()]
