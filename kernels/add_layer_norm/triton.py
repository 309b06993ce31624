"""Residual add + LayerNorm in Triton. The forward reads x (fp32 residual) and y (the branch, bf16),
writes the new residual s and h = LayerNorm(s) in the matmul's dtype: the fp32 LayerNorm output and its
cast never exist. The backward reads s, dh and the residual gradient ds, writes dx = ds + LayerNorm'(dh)
in fp32 and the same gradient cast for the branch (dy), and sums dW, dB and dbias per program;
layer_norm's column-sum kernel folds those partials."""
import torch
import triton
import triton.language as tl

from kernels import poison
from kernels import triton_aot as aot
from kernels.add_layer_norm import spec
from kernels.add_layer_norm.spec import EPS, check_args, out_dtype_of
from kernels.layer_norm.triton import PRESETS as LN_PRESETS
from kernels.layer_norm.triton import normalize_rows, normalize_rows_grad
from kernels.registry import KernelImpl, RowLimit, TileParam
from kernels.triton_rows import colsum, row_preset, rows2d, split_rows

ROW_LIMIT = RowLimit(16384, "program")   # a row of s lives in registers (fp32)


@triton.jit
def _add_ln_fwd(X, Y, Bias, W, B, S, H, Stats, M, C, stride_x, stride_y, stride_s, stride_h, eps,
                BLOCK_C: tl.constexpr, ROWS: tl.constexpr, HAS_Y: tl.constexpr, HAS_BIAS: tl.constexpr,
                STATS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_C)
    rmask = rows < M
    cmask = cols < C
    mask = rmask[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)
    s = tl.load(X + r64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_Y:
        s += tl.load(Y + r64[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            s += tl.load(Bias + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        tl.store(S + r64[:, None] * stride_s + cols[None, :], s.to(S.dtype.element_ty), mask=mask)
    h, mean, rstd = normalize_rows(s, mask, W, B, cols, C, eps)   # padded columns hold 0 (bias too)
    tl.store(H + r64[:, None] * stride_h + cols[None, :], h.to(H.dtype.element_ty), mask=mask)
    if STATS:
        tl.store(Stats + rows, mean, mask=rmask)
        tl.store(Stats + M + rows, rstd, mask=rmask)


@triton.jit
def _add_ln_bwd(S, W, DH, DS, DX, DY, Stats, Part, M, C, stride_s, stride_dh, stride_ds, stride_dx, stride_dy,
                rows_per_prog, BLOCK_C: tl.constexpr, ROWS: tl.constexpr, HAS_DS: tl.constexpr,
                HAS_DY: tl.constexpr, NPART: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    cmask = cols < C
    w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_C], dtype=tl.float32)
    db = tl.zeros([BLOCK_C], dtype=tl.float32)
    dbias = tl.zeros([BLOCK_C], dtype=tl.float32)
    first = pid * rows_per_prog
    last = tl.minimum(first + rows_per_prog, M)
    for r in range(first, last, ROWS):
        rows = r + tl.arange(0, ROWS)
        rmask = rows < last
        mask = rmask[:, None] & cmask[None, :]
        r64 = rows.to(tl.int64)
        s = tl.load(S + r64[:, None] * stride_s + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dh = tl.load(DH + r64[:, None] * stride_dh + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(Stats + rows, mask=rmask, other=0.0)
        rstd = tl.load(Stats + M + rows, mask=rmask, other=0.0)
        shat = (s - mean[:, None]) * rstd[:, None]
        dx = normalize_rows_grad(shat, w[None, :] * dh, rstd, C)   # w * dh is zero wherever masked
        if HAS_DS:   # the residual stream's own gradient passes straight through the add
            dx += tl.load(DS + r64[:, None] * stride_ds + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dx = tl.where(mask, dx, 0.0)
        tl.store(DX + r64[:, None] * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        if HAS_DY:
            tl.store(DY + r64[:, None] * stride_dy + cols[None, :], dx.to(DY.dtype.element_ty), mask=mask)
        dw += tl.sum(dh * shat, axis=0)
        db += tl.sum(dh, axis=0)
        if NPART == 3:
            dbias += tl.sum(dx, axis=0)
    base = Part + pid * NPART * C      # row pid of the (G, NPART*C) partials: dW | dB | dbias
    tl.store(base + cols, dw, mask=cmask)
    tl.store(base + C + cols, db, mask=cmask)
    if NPART == 3:
        tl.store(base + 2 * C + cols, dbias, mask=cmask)


# --- configs: the same axes and per-generation presets as layer_norm's Triton kernels ---------------------

PARAMS = (
    TileParam("ROWS", int, None, (1, 2, 4, 8, 16, 32), "forward rows per program"),
    TileParam("num_warps", int, None, (1, 2, 4, 8, 16, 32)),
    TileParam("BWD_ROWS", int, None, (1, 2, 4, 8, 16)),
    TileParam("bwd_num_warps", int, None, (1, 2, 4, 8, 16, 32)),
    TileParam("BWD_PROGS", int, None, (1, 2, 4, 8), "programs per SM sharing the backward's rows"),
)
PRESETS = {k: dict(v) for k, v in LN_PRESETS.items()}
# the fp32-residual backward at GPT-2's 16384 x 768 on an H200 (t_aln sweep, graph replays, 2026-12-01): 8 rows
# per step, 2 programs per SM, 4 warps 0.112 ms fwd+bwd vs layer_norm's 4 / 4 / 4 at 0.137 (24 such calls a step)
PRESETS["hopper"].update(BWD_ROWS=8, BWD_PROGS=2, bwd_num_warps=4)


def _preset(arch: str, C: int) -> dict:
    return row_preset(PRESETS, arch, C)


CONFIGS = aot.Configs(PARAMS, _preset)


def _forward(x2, y2, bias, w, b, eps, h_dtype, cfg, stats):
    M, C = x2.shape
    s = poison.empty(M, C, dtype=x2.dtype, device=x2.device) if y2 is not None else x2
    h = poison.empty(M, C, dtype=h_dtype, device=x2.device)
    st = poison.empty(2 * M, dtype=torch.float32, device=x2.device) if stats else h
    R = cfg["ROWS"]
    _add_ln_fwd[(aot.cdiv(M, R),)](
        x2, y2 if y2 is not None else x2, bias if bias is not None else w, w, b, s, h, st, M, C,
        x2.stride(0), (y2 if y2 is not None else x2).stride(0), s.stride(0), h.stride(0), eps,
        BLOCK_C=aot.pow2(C), ROWS=R, HAS_Y=y2 is not None, HAS_BIAS=bias is not None, STATS=stats,
        num_warps=cfg["num_warps"])
    return s, h, st


def _backward(s2, w, dh, ds, st, dy_dtype, need_dbias, cfg):
    M, C = s2.shape
    dx = poison.empty(M, C, dtype=s2.dtype, device=s2.device)
    dy = poison.empty(M, C, dtype=dy_dtype, device=s2.device) if dy_dtype is not None else None
    R = cfg["BWD_ROWS"]
    G, rows_per_prog = split_rows(M, R, aot.sm_count(s2) * cfg["BWD_PROGS"])
    npart = 3 if need_dbias else 2
    part = torch.empty(G, npart * C, dtype=torch.float32, device=s2.device)   # every element written
    _add_ln_bwd[(G,)](s2, w, dh, ds if ds is not None else dh, dx, dy if dy is not None else dx, st, part, M, C,
                      s2.stride(0), dh.stride(0), (ds if ds is not None else dh).stride(0), dx.stride(0),
                      (dy if dy is not None else dx).stride(0), rows_per_prog, BLOCK_C=aot.pow2(C), ROWS=R,
                      HAS_DS=ds is not None, HAS_DY=dy is not None, NPART=npart, num_warps=cfg["bwd_num_warps"])
    sums = colsum(part, w.dtype)
    return dx, dy, sums[:C], sums[C:2 * C], (sums[2 * C:] if need_dbias else None)


class _AddLayerNorm(torch.autograd.Function):
    """Outputs (s, h) when there is a branch y; h alone without one (s is then x itself)."""

    @staticmethod
    def forward(ctx, x, y, bias, w, b, eps, h_dtype, cfg):
        C = x.shape[-1]
        s, h, st = _forward(rows2d(x, C), rows2d(y, C) if y is not None else None, bias, w, b, eps, h_dtype, cfg,
                            stats=True)
        ctx.save_for_backward(s, w, st)
        spec.save_meta(ctx, x, y, bias, cfg)
        return spec.outputs(x, y, s, h)

    @staticmethod
    def backward(ctx, *grads):
        s2, w, st = ctx.saved_tensors
        C = s2.shape[1]
        ds, dh, dy_dtype, need_dbias = spec.upstream(ctx, grads, s2.device)
        dx, dy, dw, db, dbias = _backward(s2, w, rows2d(dh, C), rows2d(ds, C) if ds is not None else None, st,
                                          dy_dtype, need_dbias, ctx.cfg)
        return spec.input_grads(ctx, dx, dy, dbias, dw, db)


def add_layer_norm(x, y, bias, weight, ln_bias, eps=EPS, out_dtype=None, **cfg):
    check_args(x, y, bias)
    C = x.shape[-1]
    ROW_LIMIT.check(C)
    h_dtype = out_dtype_of(out_dtype, x)
    full = CONFIGS.get(aot.arch_of(x), C, cfg)
    bias, weight, ln_bias = spec.kernel_params(bias, weight, ln_bias)
    if aot.needs_grad(x, y, bias, weight, ln_bias):
        out = _AddLayerNorm.apply(x, y, bias, weight, ln_bias, eps, h_dtype, full)
        return (x, out) if y is None else out
    x2 = rows2d(x, C)
    s, h, _ = _forward(x2, rows2d(y, C) if y is not None else None, bias, weight, ln_bias, eps, h_dtype, full,
                       stats=False)
    return (x if y is None else s.view(x.shape)), h.view(x.shape)


def _aot(config, arch, C=768, dtype="bf16"):
    cfg = aot.fill({**{p.name: None for p in PARAMS}, **(config or {})}, _preset(arch, C))
    BC = aot.pow2(C)
    t = "*" + dtype
    sig = {"X": "*fp32", "Y": t, "Bias": "*fp32", "W": "*fp32", "B": "*fp32", "S": "*fp32", "H": t,
           "Stats": "*fp32", "M": "i32", "C": "i32", "stride_x": "i32", "stride_y": "i32", "stride_s": "i32",
           "stride_h": "i32", "eps": "fp32"}
    rows = [aot.compile_kernel(_add_ln_fwd, "add_layer_norm_fwd", sig,
                               {"BLOCK_C": BC, "ROWS": cfg["ROWS"], "HAS_Y": True, "HAS_BIAS": True, "STATS": True},
                               arch, cfg["num_warps"], 1)]
    sig = {"S": "*fp32", "W": "*fp32", "DH": t, "DS": "*fp32", "DX": "*fp32", "DY": t, "Stats": "*fp32",
           "Part": "*fp32", "M": "i32", "C": "i32", "stride_s": "i32", "stride_dh": "i32", "stride_ds": "i32",
           "stride_dx": "i32", "stride_dy": "i32", "rows_per_prog": "i32"}
    rows.append(aot.compile_kernel(_add_ln_bwd, "add_layer_norm_bwd", sig,
                                   {"BLOCK_C": BC, "ROWS": cfg["BWD_ROWS"], "HAS_DS": True, "HAS_DY": True,
                                    "NPART": 3}, arch, cfg["bwd_num_warps"], 1))
    return rows


TEST_CONFIG = {"ROWS": 4, "BWD_ROWS": 2, "BWD_PROGS": 1}   # CPU tests: several blocks per test shape
IMPL = KernelImpl(fn=add_layer_norm, backend="triton", params=PARAMS, presets=PRESETS, supports=ROW_LIMIT.supports,
                  aot=_aot, test_config=TEST_CONFIG,
                  doc="residual add + LayerNorm, h in the matmul dtype; bwd writes dx (fp32) and dy, "
                      "dW/dB/dbias as per-program partials")
