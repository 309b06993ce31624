"""tanh-GELU with the bias add fused, in Triton. The forward is a flat elementwise pass; the backward
walks row tiles so each program can also sum its share of dbias (folded by kernels/triton_rows.py's colsum)."""
import torch
import triton
import triton.language as tl

from kernels import library, poison
from kernels import triton_aot as aot
from kernels.gelu import library_ops
from kernels.registry import KernelImpl, TileParam
from kernels.triton_rows import colsum, split_rows


@triton.jit
def gelu_tanh(x):
    """0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3); tanh from exp2 (tl has no tanh before 3.6)."""
    u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
    t = 1.0 - 2.0 / (tl.exp2(u * 2.8853900817779268) + 1.0)   # 2.885 = 2 log2(e); saturates cleanly
    return 0.5 * x * (1.0 + t)


@triton.jit
def gelu_tanh_grad(x):
    u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
    t = 1.0 - 2.0 / (tl.exp2(u * 2.8853900817779268) + 1.0)
    du = 0.7978845608028654 * (1.0 + 0.134145 * x * x)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du


@triton.jit
def _gelu_fwd(X, B, Y, n, C, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        x += tl.load(B + offs % C, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + offs, gelu_tanh(x).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _gelu_bwd(X, B, DY, DX, DBp, M, C, rows_per_prog,
              HAS_BIAS: tl.constexpr, NEED_DB: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_m, pid_c = tl.program_id(0), tl.program_id(1)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    if HAS_BIAS:
        b = tl.load(B + cols, mask=cmask, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    first = pid_m * rows_per_prog
    last = tl.minimum(first + rows_per_prog, M)
    for r in range(first, last, BLOCK_M):
        rows = r + tl.arange(0, BLOCK_M)
        mask = (rows[:, None] < last) & cmask[None, :]
        offs = rows[:, None].to(tl.int64) * C + cols[None, :]
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            x += b[None, :]
        dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
        dx = dy * gelu_tanh_grad(x)
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=mask)
        if NEED_DB:
            acc += tl.sum(dx, axis=0)   # dx is 0 where masked (dy loaded as 0)
    if NEED_DB:
        tl.store(DBp + pid_m * C + cols, acc, mask=cmask)


PARAMS = (
    TileParam("BLOCK", int, None, (512, 1024, 2048, 4096, 8192), "forward elements per program"),
    TileParam("num_warps", int, None, (2, 4, 8, 16)),
    TileParam("BWD_BLOCK_M", int, None, (1, 2, 4, 8, 16, 32)),
    TileParam("BWD_BLOCK_C", int, None, (64, 128, 256, 512, 1024)),
    TileParam("bwd_num_warps", int, None, (2, 4, 8, 16)),
    TileParam("BWD_PROGS", int, None, (0, 1, 2, 4, 8, 16),
              "backward programs per SM sharing the rows; 0: one BWD_BLOCK_M x BWD_BLOCK_C tile per program"),
    TileParam("autotune", bool, False, doc="time candidates per shape, keep the fastest"),
)
PRESETS = {
    # hopper: forward from autotune mode on an H100; backward from the tune_gelu sweep on an H200 (2026-11-25,
    # graph-timed fwd+bwd at 16384 x 3072: 0.241 ms vs 0.278 with 16-row tiles at 8 programs per SM)
    "hopper": {"BLOCK": 2048, "num_warps": 8, "BWD_BLOCK_M": 32, "BWD_BLOCK_C": 128, "bwd_num_warps": 4,
               "BWD_PROGS": 16},
    "blackwell": {"BLOCK": 2048, "num_warps": 8, "BWD_BLOCK_M": 16, "BWD_BLOCK_C": 128, "bwd_num_warps": 4,
                  "BWD_PROGS": 8},
    "ampere": {"BLOCK": 1024, "num_warps": 4, "BWD_BLOCK_M": 8, "BWD_BLOCK_C": 256, "bwd_num_warps": 4,
               "BWD_PROGS": 8},
    "consumer": {"BLOCK": 1024, "num_warps": 4, "BWD_BLOCK_M": 8, "BWD_BLOCK_C": 256, "bwd_num_warps": 4,
                 "BWD_PROGS": 8},
}
CANDIDATES = [{"BLOCK": b, "num_warps": w} for b in (1024, 2048, 4096, 8192) for w in (4, 8)]
TUNER = aot.Tuner()


def gelu_forward(x2, bias, cfg):
    y = poison.empty(*x2.shape, dtype=x2.dtype, device=x2.device)
    n, C = x2.numel(), x2.shape[-1]
    library.kernel(_gelu_fwd)[(aot.cdiv(n, cfg["BLOCK"]),)](x2, bias if bias is not None else x2, y, n, C,
                                               HAS_BIAS=bias is not None, BLOCK=cfg["BLOCK"],
                                               num_warps=cfg["num_warps"])
    return y


def gelu_backward(x2, bias, dy2, cfg, need_db):
    """dx = dy * gelu'(x + bias) and, if need_db, its column sums (dbias, in bias's or x's dtype)."""
    M, C = x2.shape
    dx = poison.empty(M, C, dtype=x2.dtype, device=x2.device)
    BM, BC = cfg["BWD_BLOCK_M"], cfg["BWD_BLOCK_C"]
    nc = aot.cdiv(C, BC)
    # BWD_PROGS 0: every tile its own program (the most loads in flight, more dbias partials)
    progs = aot.cdiv(aot.sm_count(x2) * cfg["BWD_PROGS"], nc) if cfg["BWD_PROGS"] else aot.cdiv(M, BM)
    G, rows_per_prog = split_rows(M, BM, progs)
    dbp = torch.empty(G, C, dtype=torch.float32, device=x2.device) if need_db else dx
    library.kernel(_gelu_bwd)[(G, nc)](x2, bias if bias is not None else x2, dy2, dx, dbp, M, C, rows_per_prog,
                       HAS_BIAS=bias is not None, NEED_DB=need_db, BLOCK_M=BM, BLOCK_C=BC,
                       num_warps=cfg["bwd_num_warps"])
    db = colsum(dbp, bias.dtype if bias is not None else x2.dtype) if need_db else None
    return dx, db


def _flat(t, C):
    if t.dim() == 2 and t.is_contiguous():
        return t
    return t.reshape(-1, C) if t.is_contiguous() else t.contiguous().view(-1, C)


BWD_KEYS = ("BWD_BLOCK_M", "BWD_BLOCK_C", "bwd_num_warps", "BWD_PROGS")
BWD_CANDIDATES = [dict(zip(BWD_KEYS, c)) for c in (
    (8, 256, 4, 8), (4, 512, 4, 8), (16, 256, 8, 8), (8, 512, 8, 8), (4, 1024, 8, 4), (16, 128, 4, 8),
    (8, 256, 4, 16), (32, 128, 8, 8), (8, 512, 8, 16))]
BWD_TUNER = aot.Tuner()


class _Gelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias, cfg, tune):
        x2 = _flat(x, x.shape[-1])
        ctx.save_for_backward(x2, bias)
        ctx.cfg, ctx.tune = cfg, tune
        return gelu_forward(x2, bias, cfg).view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, b = ctx.saved_tensors
        need_db = b is not None and ctx.needs_input_grad[1]
        dy2, cfg = _flat(dy, x2.shape[1]), ctx.cfg
        if ctx.tune:   # autotune mode times the backward's own candidates too
            cands = aot.unique([{k: cfg[k] for k in BWD_KEYS}] + BWD_CANDIDATES)
            cfg = {**cfg, **BWD_TUNER.choose((x2.shape, x2.dtype, str(x2.device), need_db), cands,
                                             lambda c: gelu_backward(x2, b, dy2, {**cfg, **c}, need_db))}
            TUNER.last = {**TUNER.last, **cfg}
        dx, db = gelu_backward(x2, b, dy2, cfg, need_db=need_db)
        return dx.view(dy.shape), db, None, None


CONFIGS = aot.Configs(PARAMS, lambda arch, _: PRESETS[aot.family(arch)])


def config_for(x, cfg):
    """The full tile config for tensors on x's device: the arch's preset under the overrides."""
    return CONFIGS.get(aot.arch_of(x), 0, cfg)


def gelu(x, bias=None, **cfg):
    auto = cfg.pop("autotune", False)
    full = config_for(x, cfg)
    if bias is not None and not bias.is_contiguous():
        bias = bias.contiguous()
    if auto:
        x2 = _flat(x, x.shape[-1])
        full = TUNER.choose((x2.shape, x.dtype, str(x.device), bias is None),
                            aot.unique([full] + [{**full, **c} for c in CANDIDATES]),
                            lambda c: gelu_forward(x2, bias, c))
    TUNER.last = full
    if aot.needs_grad(x, bias):
        return _Gelu.apply(x, bias, full, auto)
    return gelu_forward(_flat(x, x.shape[-1]), bias, full).view(x.shape)


# --- torch.library ops (kernels/gelu/library_ops.py): what torch.compile traces ----------------------------
# triton_ops: named functions, no lambdas (torch reads the source of what an op body calls to find its kernels)

FWD_OP, BWD_OP, traced = library_ops.register("triton", forward=gelu_forward, backward=gelu_backward,
                                              config_for=config_for, rows=_flat, triton=True)


def _aot(config, arch):
    cfg = aot.fill({**{p.name: None for p in PARAMS}, **(config or {})}, PRESETS[aot.family(arch)])
    rows = [aot.compile_kernel(_gelu_fwd, "gelu_fwd", {"X": "*bf16", "B": "*bf16", "Y": "*bf16", "n": "i32",
                                                       "C": "i32"},
                               {"HAS_BIAS": True, "BLOCK": cfg["BLOCK"]}, arch, cfg["num_warps"], 1)]
    rows.append(aot.compile_kernel(
        _gelu_bwd, "gelu_bwd", {"X": "*bf16", "B": "*bf16", "DY": "*bf16", "DX": "*bf16", "DBp": "*fp32",
                                "M": "i32", "C": "i32", "rows_per_prog": "i32"},
        {"HAS_BIAS": True, "NEED_DB": True, "BLOCK_M": cfg["BWD_BLOCK_M"], "BLOCK_C": cfg["BWD_BLOCK_C"]},
        arch, cfg["bwd_num_warps"], 1))
    return rows


TEST_CONFIG = {"BLOCK": 512, "BWD_BLOCK_M": 4, "BWD_BLOCK_C": 64, "BWD_PROGS": 1}   # CPU tests: several blocks
IMPL = KernelImpl(fn=gelu, backend="triton", params=PARAMS, presets=PRESETS, aot=_aot, picked=TUNER.picked,
                  test_config=TEST_CONFIG, traced=traced,
                  doc="flat elementwise fwd; row-tiled bwd with per-program dbias partials")
