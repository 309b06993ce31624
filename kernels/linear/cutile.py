"""Linear (x @ W.T + b, optional tanh-GELU) in cuTile: one tiled matmul kernel with the bias and
activation in the epilogue, used three ways: y = x W^T (fwd), dX = dY W, dW = dY^T X (bwd), where a
transposed operand is a load with order=(1, 0) rather than a copy. dB is a column sum of dY."""
import torch

import cuda.tile as ct

from kernels import cutile_aot as aot
from kernels import poison
from kernels.registry import KernelImpl, TileParam, Unsupported

ConstInt = ct.Constant[int]
ConstBool = ct.Constant[bool]
ZERO = ct.PaddingMode.ZERO


@ct.kernel
def _matmul(A, B, Bias, C, Z, TRANS_A: ConstBool, TRANS_B: ConstBool, HAS_BIAS: ConstBool, GELU: ConstBool,
            TM: ConstInt, TN: ConstInt, TK: ConstInt, GROUP_M: ConstInt, LAT: ConstInt, SPLIT: ConstInt):
    """C[M, N] = op(A) @ op(B) (+ Bias[N]) (-> gelu; Z keeps the pre-activation). op(A) is A (M, K) or
    A^T for A (K, M); op(B) is B (K, N) or B^T for B (N, K). Blocks are grouped GROUP_M tiles tall so
    neighbours share B tiles in L2. SPLIT > 1: C is (SPLIT, M, N) fp32 and block (pid, s) sums only the
    s-th slice of the K tiles (no bias or activation); the caller adds the slices."""
    pid = ct.bid(0)
    if SPLIT > 1:
        M = C.shape[1]
        N = C.shape[2]
    else:
        M = C.shape[0]
        N = C.shape[1]
    grid_m = ct.cdiv(M, TM)
    grid_n = ct.cdiv(N, TN)
    per_group = GROUP_M * grid_n
    first_m = (pid // per_group) * GROUP_M
    rows_in_group = min(grid_m - first_m, GROUP_M)
    i = first_m + (pid % per_group) % rows_in_group
    j = (pid % per_group) // rows_in_group
    if TRANS_A:
        Kdim = A.shape[0]
    else:
        Kdim = A.shape[1]
    acc = ct.zeros((TM, TN), dtype=ct.float32)
    nk = ct.cdiv(Kdim, TK)
    k_first = 0
    k_last = nk
    if SPLIT > 1:
        per = ct.cdiv(nk, SPLIT)
        k_first = ct.bid(1) * per
        k_last = min(nk, k_first + per)
    for kk in range(k_first, k_last):
        if TRANS_A:
            a = ct.load(A, index=(i, kk), shape=(TM, TK), order=(1, 0), padding_mode=ZERO, latency=LAT)
        else:
            a = ct.load(A, index=(i, kk), shape=(TM, TK), padding_mode=ZERO, latency=LAT)
        if TRANS_B:
            b = ct.load(B, index=(kk, j), shape=(TK, TN), order=(1, 0), padding_mode=ZERO, latency=LAT)
        else:
            b = ct.load(B, index=(kk, j), shape=(TK, TN), padding_mode=ZERO, latency=LAT)
        acc = ct.mma(a, b, acc)
    if HAS_BIAS:
        acc = acc + ct.load(Bias, index=(j,), shape=(TN,), padding_mode=ZERO).astype(ct.float32)[None, :]
    if GELU:
        ct.store(Z, index=(i, j), tile=acc.astype(Z.dtype))
        acc = 0.5 * acc * (1.0 + ct.tanh(0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)))
    if SPLIT > 1:
        ct.store(C, index=(ct.bid(1), i, j), tile=ct.reshape(acc, (1, TM, TN)))
    else:
        ct.store(C, index=(i, j), tile=acc.astype(C.dtype))


PARAMS = (
    TileParam("TILE_M", int, None, (32, 64, 128, 256)),
    TileParam("TILE_N", int, None, (32, 64, 128, 256)),
    TileParam("TILE_K", int, None, (16, 32, 64, 128)),
    TileParam("GROUP_M", int, None, (1, 4, 8, 16), "block rows per L2 group"),
    TileParam("LATENCY", int, None, tuple(range(1, 11)), "latency hint for the A/B loads"),
    TileParam("occupancy", int, None, (1, 2, 4)),
    TileParam("num_ctas", int, None, (1, 2, 4)),
    TileParam("autotune", bool, False, doc="cuda.tile.tune.exhaustive_search over forward candidates, per shape"),
)
PRESETS = {
    # H100 sweep: 128x128x64 at occupancy 2 led (128x256 and 256x128 spill out of registers)
    "hopper": {"TILE_M": 128, "TILE_N": 128, "TILE_K": 64, "GROUP_M": 8, "LATENCY": 3, "occupancy": 2, "num_ctas": 1},
    "blackwell": {"TILE_M": 128, "TILE_N": 256, "TILE_K": 64, "GROUP_M": 8, "LATENCY": 3, "occupancy": 1,
                  "num_ctas": 2},
    "ampere": {"TILE_M": 128, "TILE_N": 128, "TILE_K": 32, "GROUP_M": 8, "LATENCY": 3, "occupancy": 1, "num_ctas": 1},
    "consumer": {"TILE_M": 128, "TILE_N": 64, "TILE_K": 32, "GROUP_M": 8, "LATENCY": 3, "occupancy": 1,
                 "num_ctas": 1},
}
CANDIDATES = [{"TILE_M": m, "TILE_N": n, "TILE_K": k, "occupancy": o}
              for m, n, k in ((128, 128, 64), (128, 256, 64), (256, 128, 64), (128, 64, 64), (64, 128, 64))
              for o in (1, 2)]
TUNER = aot.Tuner()


def _config(arch, cfg):
    return aot.fill({**{p.name: None for p in PARAMS}, **cfg}, PRESETS[aot.family(arch)])


def _grid(M, N, c, split=1):
    return (aot.cdiv(M, c["TILE_M"]) * aot.cdiv(N, c["TILE_N"]), split)


def _args(a, b, bias, out, z, ta, tb, gelu, c, split=1):
    return (a, b, bias if bias is not None else out, out, z if z is not None else out, ta, tb, bias is not None,
            gelu, c["TILE_M"], c["TILE_N"], c["TILE_K"], c["GROUP_M"], c["LATENCY"], split)


def split_k(M, N, K, c, sms):
    """K slices for a matmul with too few output tiles to fill the GPU (dW: M x N small, K = B*T long)."""
    tiles = aot.cdiv(M, c["TILE_M"]) * aot.cdiv(N, c["TILE_N"])
    nk = aot.cdiv(K, c["TILE_K"])
    if tiles >= sms or nk < 8:
        return 1
    s = max(1, min(aot.cdiv(2 * sms, tiles), nk // 4, 16))
    return aot.cdiv(nk, aot.cdiv(nk, s))   # no empty slice


def matmul(a, b, ta, tb, c, bias=None, gelu=False, out_dtype=None):
    M = a.shape[1] if ta else a.shape[0]
    N = b.shape[0] if tb else b.shape[1]
    K = a.shape[0] if ta else a.shape[1]
    dtype = out_dtype or a.dtype
    S = 1 if (bias is not None or gelu) else split_k(M, N, K, c, aot.sm_count(a))
    if S > 1:
        part = poison.empty(S, M, N, dtype=torch.float32, device=a.device)
        aot.launch(_matmul, _grid(M, N, c, S), _args(a, b, None, part, None, ta, tb, False, c, S),
                   occupancy=c["occupancy"], num_ctas=c["num_ctas"])
        return part.sum(0, dtype=torch.float32).to(dtype), None
    out = poison.empty(M, N, dtype=dtype, device=a.device)
    z = poison.empty(M, N, dtype=out.dtype, device=a.device) if gelu else None
    aot.launch(_matmul, _grid(M, N, c), _args(a, b, bias, out, z, ta, tb, gelu, c),
               occupancy=c["occupancy"], num_ctas=c["num_ctas"])
    return out, z


def _flat(t, K):
    t2 = t.reshape(-1, K)
    return t2 if t2.stride(-1) == 1 and t2.stride(0) % 8 == 0 else t2.contiguous()


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, bias, gelu, cfg):
        K = x.shape[-1]
        x2, w = _flat(x, K), w.contiguous()
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
        dy2 = _flat(dy, w.shape[0])
        if z is not None:   # through the activation: dz = dy * gelu'(z)
            dy2, _ = gelu_backward(z, None, dy2, gelu_config(aot.arch_of(z), {}), need_db=False)
        cfg = ctx.cfg
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx, _ = matmul(dy2, w, False, False, cfg)              # (M, N) @ (N, K)
            dx = dx.view(ctx.shape)
        if ctx.needs_input_grad[1]:
            dw, _ = matmul(dy2, x2, True, False, cfg)              # (N, M) @ (M, K)
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
        x2, w = _flat(x, K), weight.contiguous()
        M, N = x2.shape[0], w.shape[0]
        out = torch.empty(M, N, dtype=x.dtype, device=x.device)
        z = torch.empty_like(out) if activation else None
        full = TUNER.choose((M, N, K, x.dtype, str(x.device), bias is None, activation),
                            aot.unique([full] + [{**full, **c} for c in CANDIDATES]),
                            lambda c: (*_grid(M, N, c), 1), _matmul,
                            lambda c: _args(x2, w, bias, out, z, False, True, activation == "gelu", c),
                            lambda c: {"occupancy": c["occupancy"], "num_ctas": c["num_ctas"]})
    TUNER.note(full)
    return _Linear.apply(x, weight, bias, activation == "gelu", full)


def _aot(config, arch, dtype="bf16"):
    c = _config(arch, {k: v for k, v in (config or {}).items() if k != "autotune"})
    X, V = aot.array(dtype, 2), aot.array(dtype, 1)
    hints = {"occupancy": c["occupancy"], "num_ctas": c["num_ctas"]}
    const = [c["TILE_M"], c["TILE_N"], c["TILE_K"], c["GROUP_M"], c["LATENCY"]]
    P = aot.array("fp32", 3)
    rows = [
        aot.compile_kernel(_matmul, "linear_fwd", [X, X, V, X, X, False, True, True, False] + const + [1], arch, hints),
        aot.compile_kernel(_matmul, "linear_fwd_gelu", [X, X, V, X, X, False, True, True, True] + const + [1], arch,
                           hints),
        aot.compile_kernel(_matmul, "linear_bwd_dx", [X, X, V, X, X, False, False, False, False] + const + [1], arch,
                           hints),
        aot.compile_kernel(_matmul, "linear_bwd_dw", [X, X, V, X, X, True, False, False, False] + const + [1], arch,
                           hints),
        aot.compile_kernel(_matmul, "linear_bwd_dw_splitk", [X, X, P, P, P, True, False, False, False] + const + [4],
                           arch, hints),
    ]
    return rows


IMPL = KernelImpl(fn=linear, backend="cutile", params=PARAMS, presets=PRESETS, aot=_aot, picked=TUNER.picked,
                  doc="grouped-order tiled matmul with bias/GELU epilogue; bwd reuses it with transposed loads")
