"""The three matmuls of a linear layer, each alone, so each can be timed against cuBLAS by itself: the
linear op's shape key `part` (0: the whole op as usual; 1: forward Y = X W^T; 2: dX = dY W; 3: dW = dY^T X),
at the linear's own sizes (M tokens, N out features, K in features). The `gemm` sweep runs them and
`run_bench.py --table gemm` tables ours / cuBLAS per shape and part.

An impl times its own matmul through the function attribute `matmul_part(a, b, part, **tile_config)`
set with `provide()`; an impl without one (torch.compile of the whole op) is `unsupported` for parts."""
from kernels.registry import TileParam, Unsupported

PARTS = {1: "fwd", 2: "dX", 3: "dW"}
# tile parameters naming the preset the backward's dX and dW matmuls run with ("same": the forward's)
PART_CONFIG = {2: "DX_CONFIG", 3: "DW_CONFIG"}
SAME = "same"


def part_params(presets: dict) -> tuple:
    names = (SAME, *presets)
    return tuple(TileParam(key, str, None, names, f"preset for the {PARTS[p]} matmul ({SAME}: the forward's)")
                 for p, key in PART_CONFIG.items())


def config_for_part(cfg: dict, part: int, presets: dict) -> dict:
    """The config part `part` runs with: cfg, or cfg under the preset its DX_CONFIG / DW_CONFIG names."""
    name = cfg.get(PART_CONFIG.get(part, ""))
    return cfg if name in (None, SAME) else {**cfg, **presets[name]}


def operand_shapes(M, N, K, part):
    """(a, b, out) shapes of a part for a linear (M, K) -> (M, N)."""
    return {1: ((M, K), (N, K), (M, N)),      # X, W -> Y = X W^T
            2: ((M, N), (N, K), (M, K)),      # dY, W -> dX = dY W
            3: ((M, N), (M, K), (N, K))}[part]   # dY, X -> dW = dY^T X


def reference(a, b, part):
    """What each part computes, in plain torch (the products F.linear's forward and backward call)."""
    if part == 1:
        return a @ b.t()
    if part == 2:
        return a @ b
    return a.t() @ b


def provide(fn, matmul_part):
    fn.matmul_part = matmul_part
    return fn


def wrap(fn, part):
    """The callable the harness checks and times for a part: (a, b, **tile_config) -> product."""
    own = getattr(fn, "matmul_part", None)

    def call(a, b, part=part, **cfg):
        if own is None:
            raise Unsupported("no matmul of its own to time alone (parts are for impls that provide one)")
        cfg.pop("autotune", None)   # parts run the given config: autotuning is the whole op's
        return own(a, b, part, **cfg)
    return call
