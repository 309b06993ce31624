"""tanh-GELU with the bias add fused, in cuTile. The forward is one (BM, BC) tile per block; the
backward is persistent over row tiles per column tile so each block also sums its share of dbias
(folded by layer_norm's colsum)."""
import torch

import cuda.tile as ct

from kernels import cutile_aot as aot
from kernels import poison
from kernels.gelu import library_ops
from kernels.registry import KernelImpl, TileParam

ConstInt = ct.Constant[int]
ConstBool = ct.Constant[bool]
ZERO = ct.PaddingMode.ZERO
K0 = 0.7978845608028654   # sqrt(2/pi)
K1 = 0.044715


def gelu_tanh(x):
    return 0.5 * x * (1.0 + ct.tanh(K0 * (x + K1 * x * x * x)))


def gelu_tanh_grad(x):
    t = ct.tanh(K0 * (x + K1 * x * x * x))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * (K0 * (1.0 + 3.0 * K1 * x * x))


@ct.kernel
def _gelu_fwd(X, Bias, Y, HAS_BIAS: ConstBool, BM: ConstInt, BC: ConstInt, LAT: ConstInt, TMA: ConstBool):
    i = ct.bid(0)
    j = ct.bid(1)
    x = ct.load(X, index=(i, j), shape=(BM, BC), padding_mode=ZERO, latency=LAT, allow_tma=TMA).astype(ct.float32)
    if HAS_BIAS:
        x = x + ct.load(Bias, index=(j,), shape=(BC,), padding_mode=ZERO).astype(ct.float32)[None, :]
    ct.store(Y, index=(i, j), tile=gelu_tanh(x).astype(Y.dtype), allow_tma=TMA)


@ct.kernel
def _gelu_bwd(X, Bias, DY, DX, DBp, n_row_tiles: int, HAS_BIAS: ConstBool, NEED_DB: ConstBool, BM: ConstInt,
              BC: ConstInt, LAT: ConstInt):
    pid = ct.bid(0)
    j = ct.bid(1)
    G = ct.num_blocks(0)
    acc = ct.zeros((1, BC), dtype=ct.float32)
    if HAS_BIAS:
        b = ct.load(Bias, index=(j,), shape=(BC,), padding_mode=ZERO).astype(ct.float32)[None, :]
    for t in range(pid, n_row_tiles, G):
        x = ct.load(X, index=(t, j), shape=(BM, BC), padding_mode=ZERO, latency=LAT).astype(ct.float32)
        if HAS_BIAS:
            x = x + b
        dy = ct.load(DY, index=(t, j), shape=(BM, BC), padding_mode=ZERO, latency=LAT).astype(ct.float32)
        dx = dy * gelu_tanh_grad(x)
        ct.store(DX, index=(t, j), tile=dx.astype(DX.dtype))
        if NEED_DB:
            acc = acc + ct.sum(dx, axis=0, keepdims=True)   # padded elements: dy is 0
    if NEED_DB:
        ct.store(DBp, index=(pid, j), tile=acc)


PARAMS = (
    TileParam("BM", int, None, (1, 2, 4, 8, 16, 32, 64), "forward rows per block"),
    TileParam("BC", int, None, (64, 128, 256, 512, 1024, 2048), "forward columns per block"),
    TileParam("LATENCY", int, None, tuple(range(1, 11))),
    TileParam("occupancy", int, None, (1, 2, 4, 8, 16)),
    TileParam("TMA", bool, None, doc="let the forward's loads/stores use TMA"),
    TileParam("BWD_BM", int, None, (1, 2, 4, 8, 16, 32)),
    TileParam("BWD_BC", int, None, (64, 128, 256, 512)),
    TileParam("BWD_PROGS", int, None, (0, 1, 2, 4, 8, 16),
              "backward blocks per SM, each walking row tiles; 0: one block per row tile (its bias-gradient partial "
              "a row of M / BWD_BM)"),
    TileParam("autotune", bool, False, doc="cuda.tile.tune.exhaustive_search over forward candidates, per shape"),
)
_BWD = {"LATENCY": 4, "BWD_BM": 8, "BWD_BC": 256, "BWD_PROGS": 4, "TMA": True}
PRESETS = {
    # H100 sweep: 32x512 at occupancy 2 led the forward. Backward 8x512 tiles: 0.224 ms fwd+bwd at 16384 x 3072 on
    # an H200 vs 0.322 with 8x256 (t_gelu sweep, graph replays, 2026-12-01; BWD_PROGS 0 and 8 were slower)
    "hopper": {"BM": 32, "BC": 512, "occupancy": 2, **_BWD, "BWD_BC": 512},
    "blackwell": {"BM": 16, "BC": 256, "occupancy": 4, **_BWD},
    "ampere": {"BM": 8, "BC": 256, "occupancy": 4, **_BWD},
    "consumer": {"BM": 8, "BC": 256, "occupancy": 4, **_BWD, "BWD_BC": 128},
}
CANDIDATES = [{"BM": bm, "BC": bc, "occupancy": o} for bm, bc in ((8, 256), (16, 256), (32, 128), (8, 512), (4, 1024))
              for o in (2, 4)]
TUNER = aot.Tuner()


def _config(arch, cfg):
    return aot.fill({**{p.name: None for p in PARAMS}, **cfg}, PRESETS[aot.family(arch)])


def _fwd_grid(x2, c):
    return (aot.cdiv(x2.shape[0], c["BM"]), aot.cdiv(x2.shape[1], c["BC"]))


def gelu_forward(x2, bias, c, y=None):
    y = poison.empty(*x2.shape, dtype=x2.dtype, device=x2.device) if y is None else y
    aot.launch(_gelu_fwd, _fwd_grid(x2, c), (x2, bias if bias is not None else x2, y, bias is not None, c["BM"],
                                             c["BC"], c["LATENCY"], c["TMA"]), occupancy=c["occupancy"])
    return y


def gelu_backward(x2, bias, dy2, c, need_db):
    """dx = dy * gelu'(x + bias) and, if need_db, its column sums (dbias, in bias's or x's dtype)."""
    from kernels.layer_norm.cutile import colsum
    M, C = x2.shape
    BM, BC = c["BWD_BM"], c["BWD_BC"]
    nc = aot.cdiv(C, BC)
    n_tiles = aot.cdiv(M, BM)
    if c["BWD_PROGS"] == 0:   # every tile its own block (timed slower than 4 per SM on an H200: see the preset)
        G = n_tiles
    else:
        G = max(1, min(n_tiles, aot.cdiv(aot.sm_count(x2) * c["BWD_PROGS"], nc)))
    dx = poison.empty(M, C, dtype=x2.dtype, device=x2.device)
    dbp = poison.empty(G, C, dtype=torch.float32, device=x2.device) if need_db else dx
    aot.launch(_gelu_bwd, (G, nc), (x2, bias if bias is not None else x2, dy2, dx, dbp, n_tiles, bias is not None,
                                    bool(need_db), BM, BC, c["LATENCY"]))
    db = colsum(dbp, bias.dtype if bias is not None else x2.dtype) if need_db else None
    return dx, db


class _Gelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias, cfg):
        x2 = aot.rows2d(x, x.shape[-1])
        b = bias.contiguous() if bias is not None else None
        ctx.save_for_backward(x2, b)
        ctx.cfg, ctx.shape = cfg, x.shape
        return gelu_forward(x2, b, cfg).view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, b = ctx.saved_tensors
        need_db = b is not None and ctx.needs_input_grad[1]
        dx, db = gelu_backward(x2, b, aot.rows2d(dy, x2.shape[1]), ctx.cfg, need_db)
        return dx.view(ctx.shape), db, None


def gelu(x, bias=None, **cfg):
    auto = cfg.pop("autotune", False)
    full = _config(aot.arch_of(x), cfg)
    if auto:
        x2 = aot.rows2d(x, x.shape[-1])
        b = bias.contiguous() if bias is not None else None
        y = torch.empty_like(x2)
        full = TUNER.choose((tuple(x2.shape), x.dtype, str(x.device), bias is None),
                            aot.unique([full] + [{**full, **c} for c in CANDIDATES]),
                            lambda c: (*_fwd_grid(x2, c), 1), _gelu_fwd,
                            lambda c: (x2, b if b is not None else x2, y, b is not None, c["BM"], c["BC"],
                                       c["LATENCY"], c["TMA"]),
                            lambda c: {"occupancy": c["occupancy"]})
    TUNER.note(full)
    return _Gelu.apply(x, bias, full)


# --- torch.library ops (kernels/gelu/library_ops.py): what torch.compile traces ----------------------------

FWD_OP, BWD_OP, traced = library_ops.register(
    "cutile", forward=gelu_forward, backward=gelu_backward, rows=aot.rows2d,
    config_for=lambda x, c: _config(aot.arch_of(x), c))


def _aot(config, arch, dtype="bf16"):
    from kernels.layer_norm.cutile import colsum_aot
    c = _config(arch, {k: v for k, v in (config or {}).items() if k != "autotune"})
    X, V = aot.array(dtype, 2), aot.array(dtype, 1)
    return [
        aot.compile_kernel(_gelu_fwd, "gelu_fwd", [X, V, X, True, c["BM"], c["BC"], c["LATENCY"], c["TMA"]],
                           arch,
                           {"occupancy": c["occupancy"]}),
        aot.compile_kernel(_gelu_bwd, "gelu_bwd", [X, V, X, X, aot.array("fp32", 2), aot.scalar("i32"), True, True,
                                                   c["BWD_BM"], c["BWD_BC"], c["LATENCY"]], arch),
        colsum_aot(arch, dtype),
    ]


IMPL = KernelImpl(fn=gelu, backend="cutile", params=PARAMS, presets=PRESETS, aot=_aot, picked=TUNER.picked,
                  traced=traced,
                  doc="2D-tiled elementwise fwd; persistent row-tiled bwd with per-block dbias partials")
