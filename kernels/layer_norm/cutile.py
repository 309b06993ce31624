"""LayerNorm in cuTile. The forward normalizes ROWS rows per block (two-pass variance, exact for any
mean); the backward is persistent: each block walks its share of the rows, writes dX per row and
sums its rows' dW, dB, then `colsum` folds the per-block partial sums (also used by gelu and linear)."""
import torch

import cuda.tile as ct

from kernels import cutile_aot as aot
from kernels import library, poison
from kernels.layer_norm import eager
from kernels.layer_norm.spec import EPS
from kernels.registry import KernelImpl, RowLimit, TileParam

ConstInt = ct.Constant[int]
ZERO = ct.PaddingMode.ZERO
ROW_LIMIT = RowLimit(16384, "block")   # a row tile lives in registers


@ct.kernel
def _ln_fwd(X, W, B, Y, Mean, Rstd, eps: float, C: ConstInt, BC: ConstInt, ROWS: ConstInt, LAT: ConstInt,
            TMA: ct.Constant[bool]):
    i = ct.bid(0)
    x = ct.load(X, index=(i, 0), shape=(ROWS, BC), padding_mode=ZERO, latency=LAT, allow_tma=TMA).astype(ct.float32)
    cmask = ct.arange(BC, dtype=ct.int32)[None, :] < C
    mean = ct.sum(x, axis=1, keepdims=True) / C
    xc = ct.where(cmask, x - mean, 0.0)
    rstd = ct.rsqrt(ct.sum(xc * xc, axis=1, keepdims=True) / C + eps)
    w = ct.load(W, index=(0,), shape=(BC,), padding_mode=ZERO).astype(ct.float32)
    b = ct.load(B, index=(0,), shape=(BC,), padding_mode=ZERO).astype(ct.float32)
    y = xc * rstd * w[None, :] + b[None, :]
    ct.store(Y, index=(i, 0), tile=y.astype(Y.dtype), allow_tma=TMA)
    ct.store(Mean, index=(i,), tile=mean.reshape((ROWS,)), allow_tma=False)
    ct.store(Rstd, index=(i,), tile=rstd.reshape((ROWS,)), allow_tma=False)


@ct.kernel
def _ln_bwd(X, W, DY, DX, Mean, Rstd, DWp, DBp, n_tiles: int, C: ConstInt, BC: ConstInt, ROWS: ConstInt,
            LAT: ConstInt, TMA: ct.Constant[bool]):
    pid = ct.bid(0)
    G = ct.num_blocks(0)
    w = ct.load(W, index=(0,), shape=(BC,), padding_mode=ZERO).astype(ct.float32)[None, :]
    dw = ct.zeros((1, BC), dtype=ct.float32)
    db = ct.zeros((1, BC), dtype=ct.float32)
    for t in range(pid, n_tiles, G):
        x = ct.load(X, index=(t, 0), shape=(ROWS, BC), padding_mode=ZERO, latency=LAT,
                    allow_tma=TMA).astype(ct.float32)
        dy = ct.load(DY, index=(t, 0), shape=(ROWS, BC), padding_mode=ZERO, latency=LAT,
                     allow_tma=TMA).astype(ct.float32)
        mean = ct.load(Mean, index=(t,), shape=(ROWS,), padding_mode=ZERO).reshape((ROWS, 1))
        rstd = ct.load(Rstd, index=(t,), shape=(ROWS,), padding_mode=ZERO).reshape((ROWS, 1))
        xhat = (x - mean) * rstd            # padded columns: dy and w are 0 there, so they drop out
        wdy = w * dy
        c1 = ct.sum(xhat * wdy, axis=1, keepdims=True) / C
        c2 = ct.sum(wdy, axis=1, keepdims=True) / C
        dx = (wdy - (xhat * c1 + c2)) * rstd
        ct.store(DX, index=(t, 0), tile=dx.astype(DX.dtype), allow_tma=TMA)
        dw = dw + ct.sum(dy * xhat, axis=0, keepdims=True)   # padded rows: dy is 0
        db = db + ct.sum(dy, axis=0, keepdims=True)
    ct.store(DWp, index=(pid, 0), tile=dw)
    ct.store(DBp, index=(pid, 0), tile=db)


@ct.kernel
def _colsum(P, Out, steps: int, BG: ConstInt, BN: ConstInt):
    """Out[g, n] = sum of P[r, n] over block g's rows (steps tiles of BG rows), in fp32."""
    g = ct.bid(0)
    j = ct.bid(1)
    acc = ct.zeros((1, BN), dtype=ct.float32)
    for t in range(g * steps, min((g + 1) * steps, ct.cdiv(P.shape[0], BG))):
        acc = acc + ct.sum(ct.load(P, index=(t, j), shape=(BG, BN), padding_mode=ZERO).astype(ct.float32),
                           axis=0, keepdims=True)
    ct.store(Out, index=(g, j), tile=acc.astype(Out.dtype))


def colsum(p: torch.Tensor, dtype) -> torch.Tensor:
    """Column sums of a (R, N) matrix (fp32 partials, or dY itself) as an (N,) vector of `dtype`:
    one pass when R is small, else a first pass over row groups that fills the GPU."""
    R, N = p.shape
    BG, BN = 32, 128
    nb = aot.cdiv(N, BN)
    tiles = aot.cdiv(R, BG)
    if tiles > 32:
        G = max(1, min(tiles // 8, aot.cdiv(4 * aot.sm_count(p), nb)))
        steps = aot.cdiv(tiles, G)
        G = aot.cdiv(tiles, steps)
        part = poison.empty(G, N, dtype=torch.float32, device=p.device)
        aot.launch(_colsum, (G, nb), (p, part, steps, BG, BN))
        p, tiles = part, aot.cdiv(G, BG)
    out = poison.empty(1, N, dtype=dtype, device=p.device)
    aot.launch(_colsum, (1, nb), (p, out, tiles, BG, BN))
    return out.view(N)


def colsum_aot(arch: str, out_dtype="bf16") -> dict:
    return aot.compile_kernel(_colsum, "colsum", [aot.array("fp32", 2), aot.array(out_dtype, 2), aot.scalar("i32"),
                                                  32, 128], arch)


# --- configs -------------------------------------------------------------------------------------

PARAMS = (
    TileParam("ROWS", int, None, (1, 2, 4, 8, 16, 32), "forward rows per block"),
    TileParam("LATENCY", int, None, tuple(range(1, 11)), "latency hint for the row loads"),
    TileParam("occupancy", int, None, (1, 2, 4, 8, 16)),
    TileParam("num_worker_warps", int, None, (4, 8), "CUDA-core warps per block (compiler hint)"),
    TileParam("BWD_ROWS", int, None, (1, 2, 4, 8, 16)),
    TileParam("BWD_PROGS", int, None, (1, 2, 4, 8, 16, 32), "backward blocks per SM"),
    TileParam("TMA", bool, None, doc="let row loads/stores use TMA (False: plain vectorized loads)"),
    TileParam("autotune", bool, False, doc="cuda.tile.tune.exhaustive_search over forward candidates, per shape"),
)
_BASE = {"LATENCY": 4, "occupancy": 4, "num_worker_warps": 4, "BWD_PROGS": 2, "TMA": True}
PRESETS = {
    # H100 sweep (tools/cutile_check.py --sweep): one row per block without TMA at occupancy 8 for
    # the forward (tied with 16 rows over TMA); 8-row steps, 4 blocks per SM, no TMA for the backward
    "hopper": {"ROWS": 1, "BWD_ROWS": 8, **_BASE, "occupancy": 8, "BWD_PROGS": 4, "TMA": False},
    "blackwell": {"ROWS": 4, "BWD_ROWS": 4, **_BASE},
    "ampere": {"ROWS": 4, "BWD_ROWS": 4, **_BASE},
    "consumer": {"ROWS": 2, "BWD_ROWS": 2, **_BASE},
}
TUNER = aot.Tuner()


def _config(arch: str, C: int, cfg: dict) -> dict:
    p = dict(PRESETS[aot.family(arch)])
    BC = aot.next_pow2(C)
    if BC >= 2048:   # wide rows: one row per block (H100, C=4096: 4 warps at occupancy 4 led)
        p.update(ROWS=1, BWD_ROWS=max(1, 4096 // BC), occupancy=4, num_worker_warps=4)
    return aot.fill({**{q.name: None for q in PARAMS}, **cfg}, p)


def _hints(c):
    return {"occupancy": c["occupancy"], "num_worker_warps": c["num_worker_warps"]}


def _fwd_args(x2, w, b, y, mean, rstd, eps, c):
    C = x2.shape[1]
    return (x2, w, b, y, mean, rstd, float(eps), C, aot.next_pow2(C), c["ROWS"], c["LATENCY"], c["TMA"])


def _forward(x2, w, b, eps, c):
    M, C = x2.shape
    y = poison.empty(M, C, dtype=x2.dtype, device=x2.device)
    mean = poison.empty(M, dtype=torch.float32, device=x2.device)
    rstd = poison.empty(M, dtype=torch.float32, device=x2.device)
    aot.launch(_ln_fwd, (aot.cdiv(M, c["ROWS"]),), _fwd_args(x2, w, b, y, mean, rstd, eps, c), **_hints(c))
    return y, mean, rstd


def _backward(x2, w, dy, mean, rstd, c):
    M, C = x2.shape
    BC, R = aot.next_pow2(C), c["BWD_ROWS"]
    n_tiles = aot.cdiv(M, R)
    G = max(1, min(n_tiles, aot.sm_count(x2) * c["BWD_PROGS"]))
    dx = poison.empty(M, C, dtype=x2.dtype, device=x2.device)
    dwp = poison.empty(G, C, dtype=torch.float32, device=x2.device)
    dbp = poison.empty(G, C, dtype=torch.float32, device=x2.device)
    aot.launch(_ln_bwd, (G,), (x2, w, dy, dx, mean, rstd, dwp, dbp, n_tiles, C, BC, R, c["LATENCY"], c["TMA"]),
               num_worker_warps=c["num_worker_warps"])
    return dx, colsum(dwp, w.dtype), colsum(dbp, w.dtype)


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, eps, cfg):
        x2 = aot.rows2d(x, x.shape[-1])
        w, b = w.contiguous(), b.contiguous()
        y, mean, rstd = _forward(x2, w, b, eps, cfg)
        ctx.save_for_backward(x2, w, mean, rstd)
        ctx.cfg, ctx.shape = cfg, x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, w, mean, rstd = ctx.saved_tensors
        dx, dw, db = _backward(x2, w, aot.rows2d(dy, x2.shape[1]), mean, rstd, ctx.cfg)
        return dx.view(ctx.shape), dw, db, None, None


CANDIDATES = [{"ROWS": r, "num_worker_warps": w, "occupancy": o} for r in (1, 2, 4, 8, 16) for w in (4, 8)
              for o in (2, 4)]


def layer_norm(x, weight, bias, eps=EPS, **cfg):
    C = x.shape[-1]
    ROW_LIMIT.check(C)
    auto = cfg.pop("autotune", False)
    full = _config(aot.arch_of(x), C, cfg)
    if auto:
        x2 = aot.rows2d(x, C)
        M = x2.shape[0]
        y = torch.empty_like(x2)
        mean = torch.empty(M, dtype=torch.float32, device=x.device)
        rstd = torch.empty_like(mean)
        w, b = weight.contiguous(), bias.contiguous()
        BC = aot.next_pow2(C)
        cands = aot.unique([full] + [{**full, **c} for c in CANDIDATES if c["ROWS"] * BC <= 16384])
        full = TUNER.choose((tuple(x2.shape), x.dtype, str(x.device)), cands,
                            lambda c: (aot.cdiv(M, c["ROWS"]), 1, 1), _ln_fwd,
                            lambda c: _fwd_args(x2, w, b, y, mean, rstd, eps, c), _hints)
    TUNER.note(full)
    return _LayerNorm.apply(x, weight, bias, eps, full)


# --- torch.library ops (kernels/library.py): what torch.compile traces -------------------------------------

def _lib_fwd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float,
             config: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, rstd) of rows x (M, C) (row stride a multiple of 8), w and b contiguous."""
    return _forward(x, w, b, eps, _config(aot.arch_of(x), x.shape[1], library.config(config)))


def _lib_bwd(dy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
             config: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(x, w, dy, mean, rstd, _config(aot.arch_of(x), x.shape[1], library.config(config)))


def _rows_like(x):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


FWD_OP = library.define(
    "layer_norm_fwd_cutile", _lib_fwd, standin=lambda x, w, b, eps, config: eager.standin_fwd(x, w, b, eps),
    alloc=lambda x, w, b, eps, config: (_rows_like(x), x.new_empty(x.shape[0], dtype=torch.float32),
                                        x.new_empty(x.shape[0], dtype=torch.float32)))
BWD_OP = library.define(
    "layer_norm_bwd_cutile", _lib_bwd, standin=lambda dy, x, w, mean, rstd, config: eager.standin_bwd(dy, x, w, mean, rstd),
    alloc=lambda dy, x, w, mean, rstd, config: (_rows_like(x), torch.empty_like(w), torch.empty_like(w)))


def _lib_setup(ctx, inputs, output):
    x, w, _, _, config = inputs
    ctx.save_for_backward(x, w, output[1], output[2])
    ctx.config = config


def _lib_backward(ctx, dy, _dmean, _drstd):
    x, w, mean, rstd = ctx.saved_tensors
    dx, dw, db = BWD_OP(aot.rows2d(dy, x.shape[1]), x, w, mean, rstd, ctx.config)
    return dx, dw, db, None, None


library.autograd(FWD_OP, _lib_backward, _lib_setup)


def traced(x, weight, bias, eps=EPS, *, config):
    """layer_norm through the library ops (torch.compile traces this; config: library.config_json)."""
    C = x.shape[-1]
    ROW_LIMIT.check(C)
    y = FWD_OP(aot.rows2d(x, C), weight.contiguous(), bias.contiguous(), eps, config)[0]
    return y.view(x.shape)


def _aot(config, arch, C=768, dtype="bf16"):
    c = _config(arch, C, {k: v for k, v in (config or {}).items() if k != "autotune"})
    BC = aot.next_pow2(C)
    X, V, F1 = aot.array(dtype, 2), aot.array(dtype, 1), aot.array("fp32", 1)
    rows = [aot.compile_kernel(_ln_fwd, "layer_norm_fwd", [X, V, V, X, F1, F1, aot.scalar("fp32"), C, BC, c["ROWS"],
                                                           c["LATENCY"], c["TMA"]], arch, _hints(c))]
    rows.append(aot.compile_kernel(_ln_bwd, "layer_norm_bwd",
                                   [X, V, X, X, F1, F1, aot.array("fp32", 2), aot.array("fp32", 2), aot.scalar("i32"),
                                    C, BC, c["BWD_ROWS"], c["LATENCY"], c["TMA"]], arch,
                                   {"num_worker_warps": c["num_worker_warps"]}))
    rows.append(colsum_aot(arch, dtype))
    return rows


IMPL = KernelImpl(fn=layer_norm, backend="cutile", params=PARAMS, presets=PRESETS, supports=ROW_LIMIT.supports,
                  aot=_aot, picked=TUNER.picked, traced=traced,
                  doc="rows-per-block fwd; persistent bwd with per-block dW/dB partials, then a column sum")
