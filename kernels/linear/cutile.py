"""Linear (x @ W.T + b, optional tanh-GELU) in cuTile: one tiled matmul kernel with the bias and
activation in the epilogue, used three ways: y = x W^T (fwd), dX = dY W, dW = dY^T X (bwd), where a
transposed operand is a load with order=(1, 0) rather than a copy. dB is a column sum of dY."""
import torch

import cuda.tile as ct

from kernels import cutile_aot as aot
from kernels import poison
from kernels.linear import parts
from kernels.linear.splitk import slices
from kernels.registry import KernelImpl, TileParam, Unsupported

ConstInt = ct.Constant[int]
ConstBool = ct.Constant[bool]
ZERO = ct.PaddingMode.ZERO


def _tile(A, B, Bias, C, Z, t, KT_PER, TRANS_A, TRANS_B, HAS_BIAS, GELU, TM, TN, TK, GROUP_M, LAT, SPLIT):
    """Output tile t: C[M, N] = op(A) @ op(B) (+ Bias[N]) (-> gelu; Z keeps the pre-activation). op(A) is
    A (M, K) or A^T for A (K, M); op(B) is B (K, N) or B^T for B (N, K). Tiles are numbered in groups
    GROUP_M tall so neighbours share B tiles in L2. SPLIT > 1: C is (SPLIT, M, N) fp32 and tile t belongs
    to slice s = t // (tiles per slice), summing only K tiles [s*KT_PER, (s+1)*KT_PER) (no epilogue)."""
    M = C.shape[C.ndim - 2]
    N = C.shape[C.ndim - 1]
    grid_m = ct.cdiv(M, TM)
    grid_n = ct.cdiv(N, TN)
    per_slice = grid_m * grid_n
    s = t // per_slice
    u = t % per_slice
    per_group = GROUP_M * grid_n
    first_m = (u // per_group) * GROUP_M
    rows_in_group = min(grid_m - first_m, GROUP_M)
    i = first_m + (u % per_group) % rows_in_group
    j = (u % per_group) // rows_in_group
    if TRANS_A:
        nk = ct.cdiv(A.shape[0], TK)
    else:
        nk = ct.cdiv(A.shape[1], TK)
    acc = ct.zeros((TM, TN), dtype=ct.float32)
    for kk in range(s * KT_PER, min(nk, s * KT_PER + KT_PER)):
        if TRANS_A:
            a = ct.load(A, index=(i, kk), shape=(TM, TK), order=(1, 0), padding_mode=ZERO, latency=LAT)
        else:
            a = ct.load(A, index=(i, kk), shape=(TM, TK), padding_mode=ZERO, latency=LAT)
        if TRANS_B:
            b = ct.load(B, index=(kk, j), shape=(TK, TN), order=(1, 0), padding_mode=ZERO, latency=LAT)
        else:
            b = ct.load(B, index=(kk, j), shape=(TK, TN), padding_mode=ZERO, latency=LAT)
        acc = ct.mma(a, b, acc)
    if SPLIT > 1:
        ct.store(C, index=(s, i, j), tile=ct.reshape(acc, (1, TM, TN)))
    else:
        if HAS_BIAS:
            acc = acc + ct.load(Bias, index=(j,), shape=(TN,), padding_mode=ZERO).astype(ct.float32)[None, :]
        if GELU:
            ct.store(Z, index=(i, j), tile=acc.astype(Z.dtype))
            acc = 0.5 * acc * (1.0 + ct.tanh(0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)))
        ct.store(C, index=(i, j), tile=acc.astype(C.dtype))


@ct.kernel
def _matmul(A, B, Bias, C, Z, KT_PER: int, TRANS_A: ConstBool, TRANS_B: ConstBool, HAS_BIAS: ConstBool,
            GELU: ConstBool, TM: ConstInt, TN: ConstInt, TK: ConstInt, GROUP_M: ConstInt, LAT: ConstInt,
            SPLIT: ConstInt, PERSISTENT: ConstBool):
    """One output tile per block, or (PERSISTENT) a grid of about one block per SM slot striding over
    all SPLIT x tiles (see _tile)."""
    if PERSISTENT:
        total = ct.cdiv(C.shape[C.ndim - 2], TM) * ct.cdiv(C.shape[C.ndim - 1], TN) * SPLIT
        for t in range(ct.bid(0), total, ct.num_blocks(0)):
            _tile(A, B, Bias, C, Z, t, KT_PER, TRANS_A, TRANS_B, HAS_BIAS, GELU, TM, TN, TK, GROUP_M, LAT, SPLIT)
    else:
        _tile(A, B, Bias, C, Z, ct.bid(0), KT_PER, TRANS_A, TRANS_B, HAS_BIAS, GELU, TM, TN, TK, GROUP_M, LAT,
              SPLIT)


@ct.kernel
def _sum_slices(P, C, TM: ConstInt, TN: ConstInt):
    """C = sum over s of P[s] (fp32 partials of a split-K matmul), in C's dtype, in one pass."""
    i = ct.bid(0) // ct.cdiv(C.shape[1], TN)
    j = ct.bid(0) % ct.cdiv(C.shape[1], TN)
    acc = ct.zeros((TM, TN), dtype=ct.float32)
    for s in range(P.shape[0]):
        acc = acc + ct.reshape(ct.load(P, index=(s, i, j), shape=(1, TM, TN), padding_mode=ZERO), (TM, TN))
    ct.store(C, index=(i, j), tile=acc.astype(C.dtype))


SUM_TILE = (32, 128)


PARAMS = (
    TileParam("TILE_M", int, None, (32, 64, 128, 256)),
    TileParam("TILE_N", int, None, (32, 64, 128, 256)),
    TileParam("TILE_K", int, None, (16, 32, 64, 128)),
    TileParam("GROUP_M", int, None, (1, 4, 8, 16), "block rows per L2 group"),
    TileParam("LATENCY", int, None, tuple(range(1, 11)), "latency hint for the A/B loads"),
    TileParam("occupancy", int, None, (1, 2, 4)),
    TileParam("num_ctas", int, None, (1, 2, 4)),
    TileParam("num_worker_warps", int, None, (4, 8),
              "math warps of the warp-specialized kernel (None: the compiler's 4); 8 = two warpgroups sharing "
              "the accumulator, so a 128x256 or 256x128 fp32 tile fits in registers"),
    TileParam("PERSISTENT", bool, None, doc="about one block per SM slot (SMs x occupancy) striding over the tiles"),
    TileParam("SPLIT_K", int, None, (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16),
              "K slices when no epilogue runs (the dW matmul); 0: kernels.linear.splitk's model"),
    TileParam("autotune", bool, False, doc="cuda.tile.tune.exhaustive_search over forward candidates, per shape"),
)
PRESETS = {
    # H100 sweep: 128x128x64 at occupancy 2 led (128x256 and 256x128 spill out of registers)
    "hopper": {"TILE_M": 128, "TILE_N": 128, "TILE_K": 64, "GROUP_M": 8, "LATENCY": 3, "occupancy": 2, "num_ctas": 1,
               "PERSISTENT": False, "SPLIT_K": 0},
    "blackwell": {"TILE_M": 128, "TILE_N": 256, "TILE_K": 64, "GROUP_M": 8, "LATENCY": 3, "occupancy": 1,
                  "num_ctas": 2, "PERSISTENT": False, "SPLIT_K": 0},
    "ampere": {"TILE_M": 128, "TILE_N": 128, "TILE_K": 32, "GROUP_M": 8, "LATENCY": 3, "occupancy": 1, "num_ctas": 1,
               "PERSISTENT": False, "SPLIT_K": 0},
    "consumer": {"TILE_M": 128, "TILE_N": 64, "TILE_K": 32, "GROUP_M": 8, "LATENCY": 3, "occupancy": 1,
                 "num_ctas": 1, "PERSISTENT": False, "SPLIT_K": 0},
}
# Hopper variants for the gemm sweep (issue 14); each becomes a default only on a measured win there.
# None may spill (tests/test_cutile_linear.py): with tileiras 13.4 for sm_90, 128x256 on the default 4 math
# warps took 255 registers + 1.8 KB/thread of stack (ran 0.07-0.3x cuBLAS), and the persistent loop at
# occupancy 2 spilled 152 B of its accumulator per tile; 8 math warps (168 registers) and occupancy 1 do not.
_H = {**PRESETS["hopper"], "DX_CONFIG": parts.SAME, "DW_CONFIG": parts.SAME}
PRESETS.update({
    "persistent_128x128": {**_H, "PERSISTENT": True, "occupancy": 1},
    "persistent_128x256": {**_H, "TILE_N": 256, "occupancy": 1, "num_worker_warps": 8, "PERSISTENT": True},
    "tile_128x256": {**_H, "TILE_N": 256, "occupancy": 1, "num_worker_warps": 8},
    "tile_256x128": {**_H, "TILE_M": 256, "occupancy": 1, "num_worker_warps": 8},
    "tile_128x128x128": {**_H, "TILE_K": 128},     # half the K steps (6 at K=768); 2 x 107 KB still fit
})
HOPPER_VARIANTS = ("persistent_128x128", "persistent_128x256", "tile_128x256", "tile_256x128", "tile_128x128x128")
PARAMS += parts.part_params(PRESETS)
CANDIDATES = [{"TILE_M": m, "TILE_N": n, "TILE_K": k, "occupancy": o}
              for m, n, k in ((128, 128, 64), (128, 256, 64), (256, 128, 64), (128, 64, 64), (64, 128, 64))
              for o in (1, 2)]
TUNER = aot.Tuner()


def _config(arch, cfg):
    return aot.fill({**{p.name: None for p in PARAMS}, **cfg}, PRESETS[aot.family(arch)])


def _grid(M, N, c, split=1, sms=None):
    """Blocks: one per tile and slice, or with PERSISTENT at most SMs x occupancy / num_ctas (sms given)."""
    tiles = aot.cdiv(M, c["TILE_M"]) * aot.cdiv(N, c["TILE_N"]) * split
    if c["PERSISTENT"] and sms:
        tiles = min(tiles, sms * c["occupancy"] // c["num_ctas"])
    return (tiles,)


def _args(a, b, bias, out, z, ta, tb, gelu, c, split=1, kt_per=0):
    return (a, b, bias if bias is not None else out, out, z if z is not None else out, kt_per, ta, tb,
            bias is not None, gelu, c["TILE_M"], c["TILE_N"], c["TILE_K"], c["GROUP_M"], c["LATENCY"], split,
            c["PERSISTENT"])


def _hints(c):
    return {"occupancy": c["occupancy"], "num_ctas": c["num_ctas"], "num_worker_warps": c.get("num_worker_warps")}


def matmul(a, b, ta, tb, c, bias=None, gelu=False, out_dtype=None):
    M = a.shape[1] if ta else a.shape[0]
    N = b.shape[0] if tb else b.shape[1]
    K = a.shape[0] if ta else a.shape[1]
    dtype = out_dtype or a.dtype
    sms = aot.sm_count(a)
    S, k_split = (1, K) if (bias is not None or gelu) else \
        slices(M, N, K, c["TILE_M"], c["TILE_N"], c["TILE_K"], sms, c["SPLIT_K"])
    kt_per = k_split // c["TILE_K"] if S > 1 else aot.cdiv(K, c["TILE_K"])
    if S > 1:
        # partials poisoned too: a slice that writes nothing fails the gate rather than summing stale memory
        part = poison.empty(S, M, N, dtype=torch.float32, device=a.device)
        aot.launch(_matmul, _grid(M, N, c, S, sms), _args(a, b, None, part, None, ta, tb, False, c, S, kt_per),
                   **_hints(c))
        out = poison.empty(M, N, dtype=dtype, device=a.device)
        aot.launch(_sum_slices, (aot.cdiv(M, SUM_TILE[0]) * aot.cdiv(N, SUM_TILE[1]),), (part, out, *SUM_TILE))
        return out, None
    out = poison.empty(M, N, dtype=dtype, device=a.device)
    z = poison.empty(M, N, dtype=out.dtype, device=a.device) if gelu else None
    aot.launch(_matmul, _grid(M, N, c, 1, sms), _args(a, b, bias, out, z, ta, tb, gelu, c, 1, kt_per), **_hints(c))
    return out, z


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, bias, gelu, cfg):
        K = x.shape[-1]
        x2, w = aot.rows2d(x, K), w.contiguous()
        b = bias.contiguous() if bias is not None else None
        y, z = matmul(x2, w, False, True, cfg, bias=b, gelu=gelu)
        ctx.save_for_backward(x2, w, z)
        ctx.cfg, ctx.shape = cfg, x.shape
        ctx.has_bias, ctx.bias_dtype = b is not None, (b.dtype if b is not None else None)
        return y.view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, dy):
        from kernels.gelu.cutile import _config as gelu_config, gelu_backward
        from kernels.layer_norm.cutile import colsum
        x2, w, z = ctx.saved_tensors
        dy2 = aot.rows2d(dy, w.shape[0])
        if z is not None:   # through the activation: dz = dy * gelu'(z)
            dy2, _ = gelu_backward(z, None, dy2, gelu_config(aot.arch_of(z), {}), need_db=False)
        cfg = ctx.cfg
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx, _ = matmul(dy2, w, False, False, parts.config_for_part(cfg, 2, PRESETS))     # (M, N) @ (N, K)
            dx = dx.view(ctx.shape)
        if ctx.needs_input_grad[1]:
            dw, _ = matmul(dy2, x2, True, False, parts.config_for_part(cfg, 3, PRESETS))     # (N, M) @ (M, K)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = colsum(dy2, ctx.bias_dtype)
        return dx, dw, db, None, None


def linear(x, weight, bias=None, activation=None, **cfg):
    if activation not in (None, "gelu"):
        raise Unsupported(f"activation {activation!r} (takes None or 'gelu')")
    auto = cfg.pop("autotune", False)
    full = _config(aot.arch_of(x), cfg)
    if auto:
        K = x.shape[-1]
        x2, w = aot.rows2d(x, K), weight.contiguous()
        M, N = x2.shape[0], w.shape[0]
        out = torch.empty(M, N, dtype=x.dtype, device=x.device)
        z = torch.empty_like(out) if activation else None
        sms = aot.sm_count(x)
        full = TUNER.choose((M, N, K, x.dtype, str(x.device), bias is None, activation),
                            aot.unique([full] + [{**full, **c} for c in CANDIDATES]),
                            lambda c: (*_grid(M, N, c, 1, sms), 1, 1), _matmul,
                            lambda c: _args(x2, w, bias, out, z, False, True, activation == "gelu", c, 1,
                                            aot.cdiv(K, c["TILE_K"])), _hints)
    TUNER.note(full)
    return _Linear.apply(x, weight, bias, activation == "gelu", full)


def matmul_part(a, b, part, **cfg):
    """One of the linear's three matmuls alone (kernels.linear.parts), as _Linear calls it."""
    full = parts.config_for_part(_config(aot.arch_of(a), cfg), part, PRESETS)
    a, b = a.contiguous(), b.contiguous()
    if part == 1:     # X (M, K) @ W (N, K)^T
        return matmul(a, b, False, True, full)[0]
    if part == 2:     # dY (M, N) @ W (N, K)
        return matmul(a, b, False, False, full)[0]
    return matmul(a, b, True, False, full, out_dtype=b.dtype)[0]    # dY (M, N)^T @ X (M, K)


parts.provide(linear, matmul_part)


def _aot(config, arch, dtype="bf16"):
    c = _config(arch, {k: v for k, v in (config or {}).items() if k != "autotune"})
    X, V, P, kt = aot.array(dtype, 2), aot.array(dtype, 1), aot.array("fp32", 3), aot.scalar("i32")
    const = [c["TILE_M"], c["TILE_N"], c["TILE_K"], c["GROUP_M"], c["LATENCY"]]
    uses = (  # name, operands, TRANS_A, TRANS_B, HAS_BIAS, GELU, SPLIT
        ("linear_fwd", [X, X, V, X, X], False, True, True, False, 1),
        ("linear_fwd_gelu", [X, X, V, X, X], False, True, True, True, 1),
        ("linear_bwd_dx", [X, X, V, X, X], False, False, False, False, 1),
        ("linear_bwd_dw", [X, X, V, X, X], True, False, False, False, 1),
        ("linear_bwd_dw_splitk", [X, X, P, P, P], True, False, False, False, 4),
    )
    rows = [aot.compile_kernel(_matmul, name, ops + [kt, ta, tb, hb, g] + const + [split, c["PERSISTENT"]], arch,
                               _hints(c))
            for name, ops, ta, tb, hb, g, split in uses]
    rows.append(aot.compile_kernel(_sum_slices, "linear_splitk_sum", [P, X, *SUM_TILE], arch))
    return rows


IMPL = KernelImpl(fn=linear, backend="cutile", params=PARAMS, presets=PRESETS, aot=_aot, picked=TUNER.picked,
                  doc="grouped-order tiled matmul with bias/GELU epilogue; bwd reuses it with transposed loads")
