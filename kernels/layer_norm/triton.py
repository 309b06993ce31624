"""LayerNorm in Triton: a forward that keeps mean/rstd per row, and a backward that writes dX per row
while each program sums its rows' share of dW and dB; a second kernel adds those partial sums up."""
import torch
import triton
import triton.language as tl

from kernels import library, poison
from kernels import triton_aot as aot
from kernels.layer_norm import eager
from kernels.layer_norm.spec import EPS
from kernels.registry import KernelImpl, RowLimit, TileParam
from kernels.triton_rows import colsum, colsum_aot, row_preset, rows2d, split_rows

ROW_LIMIT = RowLimit(32768, "program")   # one row lives in registers


@triton.jit
def normalize_rows(x, mask, W, B, cols, C, eps):
    """(LayerNorm of each row of the fp32 tile x with weight and bias, mean, rstd); masked elements of x are 0.
    Two-pass variance: exact for any mean. Shared with add_layer_norm's kernels."""
    mean = tl.sum(x, axis=1) / C
    xc = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / C + eps)
    w = tl.load(W + cols, mask=cols < C, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=cols < C, other=0.0).to(tl.float32)
    return xc * rstd[:, None] * w[None, :] + b[None, :], mean, rstd


@triton.jit
def normalize_rows_grad(xhat, wdy, rstd, C):
    """dX of LayerNorm per row from xhat = (x - mean) * rstd and w * dY (zero wherever masked)."""
    c1 = tl.sum(xhat * wdy, axis=1) / C
    c2 = tl.sum(wdy, axis=1) / C
    return (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]


@triton.jit
def _ln_fwd(X, W, B, Y, Stats, M, C, stride_x, stride_y, eps,
            BLOCK_C: tl.constexpr, ROWS: tl.constexpr, STATS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_C)
    rmask = rows < M
    mask = rmask[:, None] & (cols[None, :] < C)
    r64 = rows.to(tl.int64)
    x = tl.load(X + r64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    y, mean, rstd = normalize_rows(x, mask, W, B, cols, C, eps)
    tl.store(Y + r64[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    if STATS:   # only when a backward will need them: mean in Stats[:M], rstd in Stats[M:]
        tl.store(Stats + rows, mean, mask=rmask)
        tl.store(Stats + M + rows, rstd, mask=rmask)


@triton.jit
def _ln_bwd(X, W, DY, DX, Stats, DWp, M, C, stride_x, stride_dy, stride_dx, rows_per_prog,
            BLOCK_C: tl.constexpr, ROWS: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_C], dtype=tl.float32)
    db = tl.zeros([BLOCK_C], dtype=tl.float32)
    first = pid * rows_per_prog
    last = tl.minimum(first + rows_per_prog, M)
    for r in range(first, last, ROWS):
        rows = r + tl.arange(0, ROWS)
        rmask = rows < last
        mask = rmask[:, None] & cmask[None, :]
        r64 = rows.to(tl.int64)
        x = tl.load(X + r64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + r64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(Stats + rows, mask=rmask, other=0.0)
        rstd = tl.load(Stats + M + rows, mask=rmask, other=0.0)
        xhat = (x - mean[:, None]) * rstd[:, None]
        dx = normalize_rows_grad(xhat, w[None, :] * dy, rstd, C)   # w * dy is zero wherever masked
        tl.store(DX + r64[:, None] * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        dw += tl.sum(dy * xhat, axis=0)
        db += tl.sum(dy, axis=0)
    tl.store(DWp + pid * 2 * C + cols, dw, mask=cmask)       # row pid of the (G, 2C) partials: dW | dB
    tl.store(DWp + pid * 2 * C + C + cols, db, mask=cmask)


# --- configs -------------------------------------------------------------------------------------
# ROWS: rows per program in the forward (small C wants several rows to keep 16-byte loads busy);
# BWD_ROWS: rows per step of the backward loop; BWD_PROGS: programs per SM that share the rows.

PARAMS = (
    TileParam("ROWS", int, None, (1, 2, 4, 8, 16, 32), "forward rows per program"),
    TileParam("num_warps", int, None, (1, 2, 4, 8, 16, 32)),
    TileParam("BWD_ROWS", int, None, (1, 2, 4, 8, 16)),
    TileParam("bwd_num_warps", int, None, (1, 2, 4, 8, 16, 32)),
    TileParam("BWD_PROGS", int, None, (1, 2, 4, 8)),
    TileParam("autotune", bool, False, doc="time candidates per shape, keep the fastest"),
)
PRESETS = {
    # hopper: autotune mode's picks on an H100 at 16384 x 768 bf16
    "hopper": {"ROWS": 8, "num_warps": 8, "BWD_ROWS": 4, "bwd_num_warps": 4, "BWD_PROGS": 4},
    "blackwell": {"ROWS": 4, "num_warps": 4, "BWD_ROWS": 4, "bwd_num_warps": 8, "BWD_PROGS": 4},
    "ampere": {"ROWS": 4, "num_warps": 4, "BWD_ROWS": 4, "bwd_num_warps": 8, "BWD_PROGS": 4},
    "consumer": {"ROWS": 2, "num_warps": 4, "BWD_ROWS": 2, "bwd_num_warps": 8, "BWD_PROGS": 4},
}
TUNER = aot.Tuner()


def _preset(arch: str, C: int) -> dict:
    return row_preset(PRESETS, arch, C)


def _candidates(C: int) -> list[dict]:
    base = _preset("sm_90", C)
    rows = (1,) if C > 2048 else (1, 2, 4, 8)
    return aot.unique([base] + [{**base, "ROWS": r, "num_warps": w} for r in rows for w in (4, 8, 16)])


def _forward(x2, w, b, eps, cfg, stats=True):
    M, C = x2.shape
    y = poison.empty(M, C, dtype=x2.dtype, device=x2.device)
    st = poison.empty(2 * M, dtype=torch.float32, device=x2.device) if stats else y
    rows = cfg["ROWS"]
    library.kernel(_ln_fwd)[(aot.cdiv(M, rows),)](x2, w, b, y, st, M, C, x2.stride(0), y.stride(0), eps,
                                  BLOCK_C=aot.pow2(C), ROWS=rows, STATS=stats,
                                  num_warps=cfg["num_warps"])
    return y, st


def _backward(x2, w, dy, st, cfg, packed=False):
    M, C = x2.shape
    dx = poison.empty(M, C, dtype=x2.dtype, device=x2.device)
    R = cfg["BWD_ROWS"]
    G, rows_per_prog = split_rows(M, R, aot.sm_count(x2) * cfg["BWD_PROGS"])
    part = torch.empty(G, 2 * C, dtype=torch.float32, device=x2.device)   # every element written by _ln_bwd
    library.kernel(_ln_bwd)[(G,)](x2, w, dy, dx, st, part, M, C, x2.stride(0), dy.stride(0), dx.stride(0),
                  rows_per_prog, BLOCK_C=aot.pow2(C), ROWS=R, num_warps=cfg["bwd_num_warps"])
    dwb = colsum(part, w.dtype)     # one launch folds dW and dB together
    return (dx, dwb) if packed else (dx, dwb[:C], dwb[C:])


BWD_KEYS = ("BWD_ROWS", "bwd_num_warps", "BWD_PROGS")
BWD_CANDIDATES = [dict(zip(BWD_KEYS, c)) for c in (
    (1, 4, 4), (2, 4, 4), (4, 4, 4), (2, 8, 4), (4, 8, 4), (8, 8, 4), (4, 8, 2), (4, 8, 8), (8, 16, 2), (1, 8, 8))]
BWD_TUNER = aot.Tuner()


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, eps, cfg, tune):
        x2 = rows2d(x, x.shape[-1])
        y, st = _forward(x2, w, b, eps, cfg)
        ctx.save_for_backward(x2, w, st)
        ctx.cfg, ctx.tune = cfg, tune
        return y if x.dim() == 2 else y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, w, st = ctx.saved_tensors
        dy2, cfg = rows2d(dy, x2.shape[1]), ctx.cfg
        if ctx.tune:   # autotune mode times the backward's own candidates too
            cands = aot.unique([{k: cfg[k] for k in BWD_KEYS}] + (BWD_CANDIDATES if x2.shape[1] <= 2048 else []))
            cfg = {**cfg, **BWD_TUNER.choose((x2.shape, x2.dtype, str(x2.device)), cands,
                                             lambda c: _backward(x2, w, dy2, st, {**cfg, **c}))}
            TUNER.last = {**TUNER.last, **cfg}
        dx, dw, db = _backward(x2, w, dy2, st, cfg)
        return (dx if dy.dim() == 2 else dx.view(dy.shape)), dw, db, None, None, None


CONFIGS = aot.Configs(PARAMS, lambda arch, C: _preset(arch, C))


def layer_norm(x, weight, bias, eps=EPS, **cfg):
    C = x.shape[-1]
    ROW_LIMIT.check(C)
    auto = cfg.pop("autotune", False)
    full = CONFIGS.get(aot.arch_of(x), C, cfg)
    if not weight.is_contiguous() or not bias.is_contiguous():
        weight, bias = weight.contiguous(), bias.contiguous()
    if auto:
        x2 = rows2d(x, C)
        key = (x2.shape, x.dtype, str(x.device))
        full = TUNER.choose(key, [full] + _candidates(C), lambda c: _forward(x2, weight, bias, eps, c))
    TUNER.last = full
    if aot.needs_grad(x, weight, bias):
        return _LayerNorm.apply(x, weight, bias, eps, full, auto)
    y = _forward(rows2d(x, C), weight, bias, eps, full, stats=False)[0]
    return y if x.dim() == 2 else y.view(x.shape)


def _aot(config, arch):
    C = 768
    cfg = aot.fill({**{p.name: None for p in PARAMS}, **(config or {})}, _preset(arch, C))
    BC = aot.pow2(C)
    sig = {"X": "*bf16", "W": "*bf16", "B": "*bf16", "Y": "*bf16", "Stats": "*fp32",
           "M": "i32", "C": "i32", "stride_x": "i32", "stride_y": "i32", "eps": "fp32"}
    rows = [aot.compile_kernel(_ln_fwd, "layer_norm_fwd", sig, {"BLOCK_C": BC, "ROWS": cfg["ROWS"], "STATS": True}, arch,
                               cfg["num_warps"], 1)]
    sig = {"X": "*bf16", "W": "*bf16", "DY": "*bf16", "DX": "*bf16", "Stats": "*fp32",
           "DWp": "*fp32", "M": "i32", "C": "i32", "stride_x": "i32", "stride_dy": "i32",
           "stride_dx": "i32", "rows_per_prog": "i32"}
    rows.append(aot.compile_kernel(_ln_bwd, "layer_norm_bwd", sig, {"BLOCK_C": BC, "ROWS": cfg["BWD_ROWS"]},
                                   arch, cfg["bwd_num_warps"], 1))
    rows.append(colsum_aot(arch))
    return rows


# --- torch.library ops (kernels/library.py): what torch.compile traces -------------------------------------

def _lib_fwd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float, config: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, stats): rows x (M, C) with unit column stride; stats = mean | rstd, (2M,) fp32."""
    return _forward(x, w, b, eps, CONFIGS.get(aot.arch_of(x), x.shape[1], library.config(config)))


def _lib_bwd(dy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, stats: torch.Tensor,
             config: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, dW | dB as one (2C,) vector)."""
    return _backward(x, w, dy, stats, CONFIGS.get(aot.arch_of(x), x.shape[1], library.config(config)), packed=True)


def _standin_fwd(x, w, b, eps, config):
    y, mean, rstd = eager.standin_fwd(x, w, b, eps)
    return y, torch.cat([mean, rstd])


def _standin_bwd(dy, x, w, stats, config):
    M = x.shape[0]
    dx, dw, db = eager.standin_bwd(dy, x, w, stats[:M], stats[M:])
    return dx, torch.cat([dw, db])


FWD_OP = library.define("layer_norm_fwd_triton", _lib_fwd, triton=True, standin=_standin_fwd,
                        alloc=lambda x, w, b, eps, config: (torch.empty_like(x, memory_format=torch.contiguous_format),
                                                            x.new_empty(2 * x.shape[0], dtype=torch.float32)))
BWD_OP = library.define("layer_norm_bwd_triton", _lib_bwd, triton=True, standin=_standin_bwd,
                        alloc=lambda dy, x, w, stats, config: (torch.empty_like(x, memory_format=torch.contiguous_format),
                                                               w.new_empty(2 * w.shape[0])))


def _lib_setup(ctx, inputs, output):
    x, w, _, _, config = inputs
    ctx.save_for_backward(x, w, output[1])
    ctx.config = config


def _lib_backward(ctx, dy, _dstats):
    x, w, stats = ctx.saved_tensors
    C = x.shape[1]
    dx, dwb = BWD_OP(rows2d(dy, C), x, w, stats, ctx.config)
    return dx, dwb[:C], dwb[C:], None, None


library.autograd(FWD_OP, _lib_backward, _lib_setup)


def traced(x, weight, bias, eps=EPS, *, config):
    """layer_norm through the library ops (torch.compile traces this; config: library.config_json)."""
    C = x.shape[-1]
    ROW_LIMIT.check(C)
    y = FWD_OP(rows2d(x, C), weight.contiguous(), bias.contiguous(), eps, config)[0]
    return y.view(x.shape)


TEST_CONFIG = {"ROWS": 4, "BWD_ROWS": 2, "BWD_PROGS": 1}   # CPU tests: several blocks per test shape
IMPL = KernelImpl(fn=layer_norm, backend="triton", params=PARAMS, presets=PRESETS, supports=ROW_LIMIT.supports,
                  aot=_aot, picked=TUNER.picked,
                  test_config=TEST_CONFIG, traced=traced,
                  doc="row-per-program LayerNorm; bwd sums dW/dB per program, then a column-sum kernel")
