"""Residual add + LayerNorm in cuTile: s = x + y + bias kept in x's dtype (fp32 residual), h = LayerNorm(s)
written in the matmul's dtype. The backward is persistent like layer_norm's: each block walks its share of
row tiles, writes dx = ds + LayerNorm'(dh) and the branch gradient dy, and sums dW, dB, dbias; layer_norm's
colsum folds the per-block partials."""
import torch

import cuda.tile as ct

from kernels import cutile_aot as aot
from kernels import poison
from kernels.add_layer_norm import spec
from kernels.add_layer_norm.spec import EPS, check_args, out_dtype_of
from kernels.layer_norm.cutile import colsum, colsum_aot
from kernels.registry import KernelImpl, RowLimit, TileParam

ConstInt = ct.Constant[int]
ConstBool = ct.Constant[bool]
ZERO = ct.PaddingMode.ZERO
ROW_LIMIT = RowLimit(8192, "block")   # a (rows, C) fp32 tile lives in registers


@ct.kernel
def _add_ln_fwd(X, Y, Bias, W, B, S, H, Mean, Rstd, eps: float, C: ConstInt, BC: ConstInt, ROWS: ConstInt,
                LAT: ConstInt, HAS_Y: ConstBool, HAS_BIAS: ConstBool):
    i = ct.bid(0)
    s = ct.load(X, index=(i, 0), shape=(ROWS, BC), padding_mode=ZERO, latency=LAT).astype(ct.float32)
    if HAS_Y:
        s = s + ct.load(Y, index=(i, 0), shape=(ROWS, BC), padding_mode=ZERO, latency=LAT).astype(ct.float32)
        if HAS_BIAS:
            s = s + ct.load(Bias, index=(0,), shape=(BC,), padding_mode=ZERO).astype(ct.float32)[None, :]
        ct.store(S, index=(i, 0), tile=s.astype(S.dtype))
    cmask = ct.arange(BC, dtype=ct.int32)[None, :] < C
    mean = ct.sum(s, axis=1, keepdims=True) / C        # padded columns hold 0 (bias too)
    sc = ct.where(cmask, s - mean, 0.0)
    rstd = ct.rsqrt(ct.sum(sc * sc, axis=1, keepdims=True) / C + eps)
    w = ct.load(W, index=(0,), shape=(BC,), padding_mode=ZERO).astype(ct.float32)
    b = ct.load(B, index=(0,), shape=(BC,), padding_mode=ZERO).astype(ct.float32)
    ct.store(H, index=(i, 0), tile=(sc * rstd * w[None, :] + b[None, :]).astype(H.dtype))
    ct.store(Mean, index=(i,), tile=mean.reshape((ROWS,)), allow_tma=False)
    ct.store(Rstd, index=(i,), tile=rstd.reshape((ROWS,)), allow_tma=False)


@ct.kernel
def _add_ln_bwd(S, W, DH, DS, DX, DY, Mean, Rstd, DWp, DBp, DBiasp, n_tiles: int, C: ConstInt, BC: ConstInt,
                ROWS: ConstInt, LAT: ConstInt, HAS_DS: ConstBool, HAS_DY: ConstBool, NEED_DBIAS: ConstBool):
    pid = ct.bid(0)
    G = ct.num_blocks(0)
    w = ct.load(W, index=(0,), shape=(BC,), padding_mode=ZERO).astype(ct.float32)[None, :]
    cmask = ct.arange(BC, dtype=ct.int32)[None, :] < C
    dw = ct.zeros((1, BC), dtype=ct.float32)
    db = ct.zeros((1, BC), dtype=ct.float32)
    dbias = ct.zeros((1, BC), dtype=ct.float32)
    for t in range(pid, n_tiles, G):
        s = ct.load(S, index=(t, 0), shape=(ROWS, BC), padding_mode=ZERO, latency=LAT).astype(ct.float32)
        dh = ct.load(DH, index=(t, 0), shape=(ROWS, BC), padding_mode=ZERO, latency=LAT).astype(ct.float32)
        mean = ct.load(Mean, index=(t,), shape=(ROWS,), padding_mode=ZERO).reshape((ROWS, 1))
        rstd = ct.load(Rstd, index=(t,), shape=(ROWS,), padding_mode=ZERO).reshape((ROWS, 1))
        shat = (s - mean) * rstd
        wdh = w * dh                       # padded rows and columns: dh is 0 there
        c1 = ct.sum(shat * wdh, axis=1, keepdims=True) / C
        c2 = ct.sum(wdh, axis=1, keepdims=True) / C
        dx = (wdh - (shat * c1 + c2)) * rstd
        if HAS_DS:   # the residual stream's own gradient passes straight through the add
            dx = dx + ct.load(DS, index=(t, 0), shape=(ROWS, BC), padding_mode=ZERO, latency=LAT).astype(ct.float32)
        dx = ct.where(cmask, dx, 0.0)
        ct.store(DX, index=(t, 0), tile=dx.astype(DX.dtype))
        if HAS_DY:
            ct.store(DY, index=(t, 0), tile=dx.astype(DY.dtype))
        dw = dw + ct.sum(dh * shat, axis=0, keepdims=True)
        db = db + ct.sum(dh, axis=0, keepdims=True)
        if NEED_DBIAS:
            # padded rows: mean and rstd load as 0, so dx there is ds (0) alone
            dbias = dbias + ct.sum(dx, axis=0, keepdims=True)
    ct.store(DWp, index=(pid, 0), tile=dw)
    ct.store(DBp, index=(pid, 0), tile=db)
    if NEED_DBIAS:
        ct.store(DBiasp, index=(pid, 0), tile=dbias)


# --- configs -------------------------------------------------------------------------------------

PARAMS = (
    TileParam("ROWS", int, None, (1, 2, 4, 8, 16), "forward rows per block"),
    TileParam("LATENCY", int, None, tuple(range(1, 11)), "latency hint for the row loads"),
    TileParam("occupancy", int, None, (1, 2, 4, 8, 16)),
    TileParam("BWD_ROWS", int, None, (1, 2, 4, 8, 16)),
    TileParam("BWD_PROGS", int, None, (1, 2, 4, 8, 16), "backward blocks per SM"),
)
_BASE = {"LATENCY": 4, "occupancy": 4, "BWD_PROGS": 4}
PRESETS = {
    # layer_norm's H100 picks (one row per block at occupancy 8 forward, 8-row backward steps)
    "hopper": {**_BASE, "ROWS": 1, "occupancy": 8, "BWD_ROWS": 8},
    "blackwell": {**_BASE, "ROWS": 4, "BWD_ROWS": 4},
    "ampere": {**_BASE, "ROWS": 4, "BWD_ROWS": 4},
    "consumer": {**_BASE, "ROWS": 2, "BWD_ROWS": 2},
}


def _config(arch: str, C: int, cfg: dict) -> dict:
    p = dict(PRESETS[aot.family(arch)])
    BC = aot.next_pow2(C)
    if BC >= 2048:   # wide rows: fewer rows per tile to stay in registers
        p.update(ROWS=1, BWD_ROWS=max(1, 4096 // BC), occupancy=4)
    return aot.fill({**{q.name: None for q in PARAMS}, **cfg}, p)


def _forward(x2, y2, bias, w, b, eps, h_dtype, c):
    M, C = x2.shape
    s = poison.empty(M, C, dtype=x2.dtype, device=x2.device) if y2 is not None else x2
    h = poison.empty(M, C, dtype=h_dtype, device=x2.device)
    mean = poison.empty(M, dtype=torch.float32, device=x2.device)
    rstd = poison.empty(M, dtype=torch.float32, device=x2.device)
    aot.launch(_add_ln_fwd, (aot.cdiv(M, c["ROWS"]),),
               (x2, y2 if y2 is not None else x2, bias if bias is not None else w, w, b, s, h, mean, rstd,
                float(eps), C, aot.next_pow2(C), c["ROWS"], c["LATENCY"], y2 is not None, bias is not None),
               occupancy=c["occupancy"])
    return s, h, mean, rstd


def _backward(s2, w, dh, ds, mean, rstd, dy_dtype, need_dbias, c):
    M, C = s2.shape
    R = c["BWD_ROWS"]
    n_tiles = aot.cdiv(M, R)
    G = max(1, min(n_tiles, aot.sm_count(s2) * c["BWD_PROGS"]))
    dx = poison.empty(M, C, dtype=s2.dtype, device=s2.device)
    dy = poison.empty(M, C, dtype=dy_dtype, device=s2.device) if dy_dtype is not None else None
    dwp = poison.empty(G, C, dtype=torch.float32, device=s2.device)
    dbp = poison.empty(G, C, dtype=torch.float32, device=s2.device)
    dbiasp = poison.empty(G, C, dtype=torch.float32, device=s2.device) if need_dbias else dbp
    aot.launch(_add_ln_bwd, (G,), (s2, w, dh, ds if ds is not None else dh, dx, dy if dy is not None else dx,
                                   mean, rstd, dwp, dbp, dbiasp, n_tiles, C, aot.next_pow2(C), R, c["LATENCY"],
                                   ds is not None, dy is not None, bool(need_dbias)))
    dbias = colsum(dbiasp, w.dtype) if need_dbias else None
    return dx, dy, colsum(dwp, w.dtype), colsum(dbp, w.dtype), dbias


class _AddLayerNorm(torch.autograd.Function):
    """Outputs (s, h) when there is a branch y; h alone without one (s is then x itself)."""

    @staticmethod
    def forward(ctx, x, y, bias, w, b, eps, h_dtype, cfg):
        C = x.shape[-1]
        s, h, mean, rstd = _forward(aot.rows2d(x, C), aot.rows2d(y, C) if y is not None else None, bias, w, b,
                                    eps, h_dtype, cfg)
        ctx.save_for_backward(s, w, mean, rstd)
        spec.save_meta(ctx, x, y, bias, cfg)
        return spec.outputs(x, y, s, h)

    @staticmethod
    def backward(ctx, *grads):
        s2, w, mean, rstd = ctx.saved_tensors
        C = s2.shape[1]
        ds, dh, dy_dtype, need_dbias = spec.upstream(ctx, grads, s2.device)
        dx, dy, dw, db, dbias = _backward(s2, w, aot.rows2d(dh, C), aot.rows2d(ds, C) if ds is not None else None,
                                          mean, rstd, dy_dtype, need_dbias, ctx.cfg)
        return spec.input_grads(ctx, dx, dy, dbias, dw, db)


def add_layer_norm(x, y, bias, weight, ln_bias, eps=EPS, out_dtype=None, **cfg):
    check_args(x, y, bias)
    C = x.shape[-1]
    ROW_LIMIT.check(C)
    full = _config(aot.arch_of(x), C, cfg)
    bias, weight, ln_bias = spec.kernel_params(bias, weight, ln_bias)
    out = _AddLayerNorm.apply(x, y, bias, weight, ln_bias, eps, out_dtype_of(out_dtype, x), full)
    return (x, out) if y is None else out


def _aot(config, arch, C=768, dtype="bf16"):
    c = _config(arch, C, dict(config or {}))
    BC = aot.next_pow2(C)
    F2, F1, X = aot.array("fp32", 2), aot.array("fp32", 1), aot.array(dtype, 2)
    rows = [aot.compile_kernel(_add_ln_fwd, "add_layer_norm_fwd",
                               [F2, X, F1, F1, F1, F2, X, F1, F1, aot.scalar("fp32"), C, BC, c["ROWS"],
                                c["LATENCY"], True, True], arch, {"occupancy": c["occupancy"]})]
    rows.append(aot.compile_kernel(_add_ln_bwd, "add_layer_norm_bwd",
                                   [F2, F1, X, F2, F2, X, F1, F1, F2, F2, F2, aot.scalar("i32"), C, BC,
                                    c["BWD_ROWS"], c["LATENCY"], True, True, True], arch))
    rows.append(colsum_aot(arch, "fp32"))
    return rows


IMPL = KernelImpl(fn=add_layer_norm, backend="cutile", params=PARAMS, presets=PRESETS, supports=ROW_LIMIT.supports,
                  aot=_aot,
                  doc="residual add + LayerNorm, h in the matmul dtype; persistent bwd writes dx (fp32) and dy, "
                      "dW/dB/dbias as per-block partials")
