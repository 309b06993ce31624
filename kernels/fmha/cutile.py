"""Flash attention in cuTile: an online-softmax forward that keeps the log-sum-exp per row, and a
FlashAttention-2 style backward (Delta = rowsum(O * dO), then one kernel for dK/dV per key tile and
one for dQ per query tile). Scores live in the log2 domain (exp2), masked ones at the finite floor."""
import math

import torch

import cuda.tile as ct

from kernels import cutile_aot as aot
from kernels import poison
from kernels.fmha import layout
from kernels.mask import MASK_FLOOR
from kernels.registry import KernelImpl, TileParam, Unsupported

LOG2E = 1.4426950408889634
ConstInt = ct.Constant[int]
ConstBool = ct.Constant[bool]
ZERO = ct.PaddingMode.ZERO


@ct.kernel
def _fmha_fwd(Q, K, V, O, LSE, qk_scale: float, H: ConstInt, D: ConstInt, TM: ConstInt, TN: ConstInt,
              CAUSAL: ConstBool, EVEN_N: ConstBool, K_LAT: ConstInt, V_LAT: ConstInt):
    mb = ct.bid(0)
    bh = ct.bid(1)
    b = bh // H
    h = bh % H
    T = K.shape[2]
    q = ct.load(Q, index=(b, h, mb, 0), shape=(1, 1, TM, D), padding_mode=ZERO).reshape((TM, D))
    rows = mb * TM + ct.arange(TM, dtype=ct.int32)[:, None]
    cols0 = ct.arange(TN, dtype=ct.int32)[None, :]
    m_i = ct.full((TM, 1), MASK_FLOOR, dtype=ct.float32)   # finite start: no inf - inf
    l_i = ct.zeros((TM, 1), dtype=ct.float32)
    acc = ct.zeros((TM, D), dtype=ct.float32)
    if CAUSAL:
        n_end = ct.cdiv(min((mb + 1) * TM, T), TN)
        mask_from = (mb * TM) // TN
    else:
        n_end = ct.cdiv(T, TN)
        mask_from = T // TN
    for j in range(n_end):
        kt = ct.load(K, index=(b, h, 0, j), shape=(1, 1, D, TN), order=(0, 1, 3, 2), padding_mode=ZERO,
                     latency=K_LAT).reshape((D, TN))
        s = ct.mma(q, kt, ct.zeros((TM, TN), dtype=ct.float32))
        if (CAUSAL or not EVEN_N) and j >= mask_from:     # only diagonal and tail tiles pay for the mask
            cols = j * TN + cols0
            keep = cols < T
            if CAUSAL:
                keep = keep & (cols <= rows)
            s = ct.where(keep, s, MASK_FLOOR)
        # scale after the max so that s * scale - m is one FMA
        m_new = ct.maximum(m_i, ct.max(s, axis=-1, keepdims=True) * qk_scale)
        p = ct.exp2(s * qk_scale - m_new, flush_to_zero=True)
        alpha = ct.exp2(m_i - m_new, flush_to_zero=True)
        l_i = l_i * alpha + ct.sum(p, axis=-1, keepdims=True)
        v = ct.load(V, index=(b, h, j, 0), shape=(1, 1, TN, D), padding_mode=ZERO, latency=V_LAT).reshape((TN, D))
        acc = ct.mma(p.astype(Q.dtype), v, acc * alpha)
        m_i = m_new
    out = ct.truediv(acc, l_i, flush_to_zero=True, rounding_mode=ct.RoundingMode.APPROX)
    ct.store(O, index=(b, h, mb, 0), tile=out.reshape((1, 1, TM, D)).astype(O.dtype))
    ct.store(LSE, index=(bh, mb), tile=(m_i + ct.log2(l_i)).reshape((1, TM)))


@ct.kernel
def _fmha_bwd_delta(O, DO, Delta, H: ConstInt, D: ConstInt, TM: ConstInt):
    """Delta[bh, t] = sum_d O * dO: the softmax-backward correction term, once per query row."""
    mb = ct.bid(0)
    bh = ct.bid(1)
    b = bh // H
    h = bh % H
    o = ct.load(O, index=(b, h, mb, 0), shape=(1, 1, TM, D), padding_mode=ZERO).reshape((TM, D))
    do = ct.load(DO, index=(b, h, mb, 0), shape=(1, 1, TM, D), padding_mode=ZERO).reshape((TM, D))
    d = ct.sum(o.astype(ct.float32) * do.astype(ct.float32), axis=-1)
    ct.store(Delta, index=(bh, mb), tile=d.reshape((1, TM)))


@ct.kernel
def _fmha_bwd_dkdv(Q, K, V, DO, DK, DV, LSE, Delta, qk_scale: float, sm_scale: float, H: ConstInt, D: ConstInt,
                   TM: ConstInt, TN: ConstInt, CAUSAL: ConstBool, K_LAT: ConstInt, V_LAT: ConstInt):
    """One key tile per block; walks the query tiles that see it. Padded query rows load as zeros
    (q, dO, LSE, Delta), so they add exactly nothing to dK and dV."""
    nb = ct.bid(0)
    bh = ct.bid(1)
    b = bh // H
    h = bh % H
    T = Q.shape[2]
    k = ct.load(K, index=(b, h, nb, 0), shape=(1, 1, TN, D), padding_mode=ZERO).reshape((TN, D))
    v = ct.load(V, index=(b, h, nb, 0), shape=(1, 1, TN, D), padding_mode=ZERO).reshape((TN, D))
    dk = ct.zeros((TN, D), dtype=ct.float32)
    dv = ct.zeros((TN, D), dtype=ct.float32)
    cols = nb * TN + ct.arange(TN, dtype=ct.int32)[:, None]      # key positions, [TN, 1]
    rows0 = ct.arange(TM, dtype=ct.int32)[None, :]
    m_end = ct.cdiv(T, TM)
    if CAUSAL:
        m_start = (nb * TN) // TM
        mask_to = ct.cdiv((nb + 1) * TN, TM)
    else:
        m_start = 0
        mask_to = 0
    for mi in range(m_start, m_end):
        q = ct.load(Q, index=(b, h, mi, 0), shape=(1, 1, TM, D), padding_mode=ZERO, latency=K_LAT).reshape((TM, D))
        do = ct.load(DO, index=(b, h, mi, 0), shape=(1, 1, TM, D), padding_mode=ZERO,
                     latency=V_LAT).reshape((TM, D))
        lse = ct.load(LSE, index=(bh, mi), shape=(1, TM), padding_mode=ZERO)
        delta = ct.load(Delta, index=(bh, mi), shape=(1, TM), padding_mode=ZERO)
        st = ct.mma(k, ct.transpose(q), ct.zeros((TN, TM), dtype=ct.float32))
        pt = ct.exp2(st * qk_scale - lse, flush_to_zero=True)
        if CAUSAL and mi < mask_to:
            pt = ct.where(cols <= mi * TM + rows0, pt, 0.0)
        dv = ct.mma(pt.astype(Q.dtype), do, dv)
        dpt = ct.mma(v, ct.transpose(do), ct.zeros((TN, TM), dtype=ct.float32))
        dst = pt * (dpt - delta)
        dk = ct.mma(dst.astype(Q.dtype), q, dk)
    ct.store(DK, index=(b, h, nb, 0), tile=(dk * sm_scale).reshape((1, 1, TN, D)).astype(DK.dtype))
    ct.store(DV, index=(b, h, nb, 0), tile=dv.reshape((1, 1, TN, D)).astype(DV.dtype))


@ct.kernel
def _fmha_bwd_dq(Q, K, V, DO, DQ, LSE, Delta, qk_scale: float, sm_scale: float, H: ConstInt, D: ConstInt,
                 TM: ConstInt, TN: ConstInt, CAUSAL: ConstBool, EVEN_N: ConstBool, K_LAT: ConstInt,
                 V_LAT: ConstInt):
    mb = ct.bid(0)
    bh = ct.bid(1)
    b = bh // H
    h = bh % H
    T = K.shape[2]
    q = ct.load(Q, index=(b, h, mb, 0), shape=(1, 1, TM, D), padding_mode=ZERO).reshape((TM, D))
    do = ct.load(DO, index=(b, h, mb, 0), shape=(1, 1, TM, D), padding_mode=ZERO).reshape((TM, D))
    lse = ct.load(LSE, index=(bh, mb), shape=(1, TM), padding_mode=ZERO).reshape((TM, 1))
    delta = ct.load(Delta, index=(bh, mb), shape=(1, TM), padding_mode=ZERO).reshape((TM, 1))
    dq = ct.zeros((TM, D), dtype=ct.float32)
    rows = mb * TM + ct.arange(TM, dtype=ct.int32)[:, None]
    cols0 = ct.arange(TN, dtype=ct.int32)[None, :]
    if CAUSAL:
        n_end = ct.cdiv(min((mb + 1) * TM, T), TN)
        mask_from = (mb * TM) // TN
    else:
        n_end = ct.cdiv(T, TN)
        mask_from = T // TN
    for j in range(n_end):
        k = ct.load(K, index=(b, h, j, 0), shape=(1, 1, TN, D), padding_mode=ZERO, latency=K_LAT).reshape((TN, D))
        v = ct.load(V, index=(b, h, j, 0), shape=(1, 1, TN, D), padding_mode=ZERO, latency=V_LAT).reshape((TN, D))
        s = ct.mma(q, ct.transpose(k), ct.zeros((TM, TN), dtype=ct.float32))
        p = ct.exp2(s * qk_scale - lse, flush_to_zero=True)
        if (CAUSAL or not EVEN_N) and j >= mask_from:
            cols = j * TN + cols0
            keep = cols < T
            if CAUSAL:
                keep = keep & (cols <= rows)
            p = ct.where(keep, p, 0.0)
        dp = ct.mma(do, ct.transpose(v), ct.zeros((TM, TN), dtype=ct.float32))
        ds = p * (dp - delta)
        dq = ct.mma(ds.astype(Q.dtype), k, dq)
    ct.store(DQ, index=(b, h, mb, 0), tile=(dq * sm_scale).reshape((1, 1, TM, D)).astype(DQ.dtype))


# --- configs -------------------------------------------------------------------------------------

PARAMS = (
    TileParam("TILE_M", int, None, (32, 64, 128, 256), "forward query rows per block"),
    TileParam("TILE_N", int, None, (32, 64, 128), "forward keys per inner step"),
    TileParam("K_LATENCY", int, None, tuple(range(1, 11)), "latency hint for K loads (1 low .. 10 high DRAM traffic)"),
    TileParam("V_LATENCY", int, None, tuple(range(1, 11)), "latency hint for V loads"),
    TileParam("occupancy", int, None, (1, 2, 3, 4), "expected blocks per SM (compiler hint)"),
    TileParam("num_ctas", int, None, (1, 2), "CTAs per cluster"),
    TileParam("BWD_TILE_M", int, None, (32, 64, 128), "backward query tile"),
    TileParam("BWD_TILE_N", int, None, (32, 64, 128), "backward key tile"),
    TileParam("bwd_occupancy", int, None, (1, 2, 3, 4)),
    TileParam("autotune", bool, False, doc="cuda.tile.tune.exhaustive_search over the forward candidates, per shape"),
)
_BWD = {"BWD_TILE_M": 64, "BWD_TILE_N": 64, "bwd_occupancy": 1}
# H100 sweep (tests/gpu/cutile_check.py --tune/--sweep): 128x64 at occupancy 2 led the forward at T=1024
# and 4096, 64x64 at occupancy 4 at T=256; the 64x64 backward gained 30% from occupancy 2.
PRESETS = {
    # the design notes' Blackwell preset: 64x64 tiles, K latency 2, V latency 5
    "blackwell": {"TILE_M": 64, "TILE_N": 64, "K_LATENCY": 2, "V_LATENCY": 5, "occupancy": 2, "num_ctas": 1, **_BWD},
    "hopper": {"TILE_M": 128, "TILE_N": 64, "K_LATENCY": 2, "V_LATENCY": 4, "occupancy": 2, "num_ctas": 1,
               **_BWD, "bwd_occupancy": 2},
    "ampere": {"TILE_M": 64, "TILE_N": 64, "K_LATENCY": 2, "V_LATENCY": 4, "occupancy": 2, "num_ctas": 1, **_BWD},
    "consumer": {"TILE_M": 64, "TILE_N": 64, "K_LATENCY": 2, "V_LATENCY": 4, "occupancy": 2, "num_ctas": 1,
                 "BWD_TILE_M": 32, "BWD_TILE_N": 64, "bwd_occupancy": 1},
}
CANDIDATES = [{"TILE_M": tm, "TILE_N": tn, "occupancy": occ}
              for tm, tn in ((64, 64), (128, 64), (128, 128), (256, 64), (256, 128)) for occ in (1, 2)]
TUNER = aot.Tuner()


SHORT_HOPPER = {"TILE_M": 64, "TILE_N": 64, "occupancy": 4}   # T <= 256: more, smaller blocks


def _config(arch: str, cfg: dict, T: int | None = None) -> dict:
    p = PRESETS[aot.family(arch)]
    if T is not None and T <= 256 and aot.family(arch) == "hopper":
        p = {**p, **SHORT_HOPPER}
    return aot.fill({**{q.name: None for q in PARAMS}, **cfg}, p)


def _prep(t):
    return t if t.stride(-1) == 1 else t.contiguous()   # strided views go straight to the kernel


def _fwd_args(q, k, v, o, lse, scale, causal, c):
    B, H, T, D = q.shape
    return (q, k, v, o, lse, scale * LOG2E, H, D, c["TILE_M"], c["TILE_N"], bool(causal),
            T % c["TILE_N"] == 0, c["K_LATENCY"], c["V_LATENCY"])


def _forward(q, k, v, causal, scale, c):
    B, H, T, D = q.shape
    o = layout.out_like(q)   # (B, T, H, D) memory for the model's qkv views: no transpose copy after
    lse = poison.empty(B * H, T, dtype=torch.float32, device=q.device)
    aot.launch(_fmha_fwd, (aot.cdiv(T, c["TILE_M"]), B * H), _fwd_args(q, k, v, o, lse, scale, causal, c),
               occupancy=c["occupancy"], num_ctas=c["num_ctas"])
    return o, lse


def _backward(q, k, v, o, lse, do, causal, scale, c):
    B, H, T, D = q.shape
    delta = poison.empty(B * H, T, dtype=torch.float32, device=q.device)
    aot.launch(_fmha_bwd_delta, (aot.cdiv(T, 64), B * H), (o, do, delta, H, D, 64))
    dq, dk, dv = layout.grads_like(q, k, v)   # one (B, T, 3, H, D) buffer when q, k, v are a qkv split
    tm, tn, occ = c["BWD_TILE_M"], c["BWD_TILE_N"], c["bwd_occupancy"]
    aot.launch(_fmha_bwd_dkdv, (aot.cdiv(T, tn), B * H),
               (q, k, v, do, dk, dv, lse, delta, scale * LOG2E, scale, H, D, tm, tn, bool(causal), 2, 3),
               occupancy=occ)
    aot.launch(_fmha_bwd_dq, (aot.cdiv(T, tm), B * H),
               (q, k, v, do, dq, lse, delta, scale * LOG2E, scale, H, D, tm, tn, bool(causal), T % tn == 0, 2, 3),
               occupancy=occ)
    return dq, dk, dv


class _Fmha(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale, cfg):
        q, k, v = _prep(q), _prep(k), _prep(v)
        o, lse = _forward(q, k, v, causal, scale, cfg)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale, ctx.cfg = causal, scale, cfg
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, o, lse, _prep(do), ctx.causal, ctx.scale, ctx.cfg)
        return dq, dk, dv, None, None, None


def _why(shape: dict, dtype: str) -> str | None:
    D = shape.get("D", 64)
    if D not in (16, 32, 64, 128, 256):
        return f"head dim D={D} is not a power of two in [16, 256]"
    return None


def _autotune(q, k, v, causal, scale, full):
    B, H, T, D = q.shape
    key = (tuple(q.shape), q.dtype, bool(causal), str(q.device))
    if key in TUNER.best:      # tuned already: no allocations on the hot path
        return TUNER.choose(key, [], None, None, None, None)
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty(B * H, T, dtype=torch.float32, device=q.device)
    cands = aot.unique([full] + [{**full, **c} for c in CANDIDATES])
    return TUNER.choose(
        key, cands,
        lambda c: (aot.cdiv(T, c["TILE_M"]), B * H, 1), _fmha_fwd,
        lambda c: _fwd_args(q, k, v, o, lse, scale, causal, c),
        lambda c: {"occupancy": c["occupancy"], "num_ctas": c["num_ctas"]})


def fmha(q, k, v, causal=True, scale=None, **cfg):
    if q.shape != k.shape or q.shape != v.shape:
        raise Unsupported(f"q, k, v must have one shape (self-attention), got {tuple(q.shape)}, "
                          f"{tuple(k.shape)}, {tuple(v.shape)}")
    why = _why({"D": q.shape[-1]}, "")
    if why:
        raise Unsupported(why)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    auto = cfg.pop("autotune", False)
    full = _config(aot.arch_of(q), cfg, q.shape[-2])
    if auto:
        full = _autotune(_prep(q), _prep(k), _prep(v), causal, scale, full)
    TUNER.note(full)
    return _Fmha.apply(q, k, v, causal, scale, full)


def _supports(shape, dtype, device):
    return _why(shape, dtype)


def _aot(config, arch, D=64, dtype="bf16"):
    c = _config(arch, {k: v for k, v in (config or {}).items() if k != "autotune"})
    A4, A2 = aot.array(dtype, 4), aot.array("fp32", 2)
    f32 = aot.scalar("fp32")
    tm, tn = c["BWD_TILE_M"], c["BWD_TILE_N"]
    hints = {"occupancy": c["occupancy"], "num_ctas": c["num_ctas"]}
    return [
        aot.compile_kernel(_fmha_fwd, "fmha_fwd", [A4, A4, A4, A4, A2, f32, 12, D, c["TILE_M"], c["TILE_N"], True,
                                                   False, c["K_LATENCY"], c["V_LATENCY"]], arch, hints),
        aot.compile_kernel(_fmha_bwd_delta, "fmha_bwd_delta", [A4, A4, A2, 12, D, 64], arch),
        aot.compile_kernel(_fmha_bwd_dkdv, "fmha_bwd_dkdv", [A4] * 6 + [A2, A2, f32, f32, 12, D, tm, tn, True, 2, 3],
                           arch, {"occupancy": c["bwd_occupancy"]}),
        aot.compile_kernel(_fmha_bwd_dq, "fmha_bwd_dq", [A4] * 5 + [A2, A2, f32, f32, 12, D, tm, tn, True, False, 2, 3],
                           arch, {"occupancy": c["bwd_occupancy"]}),
    ]


IMPL = KernelImpl(fn=fmha, backend="cutile", dtypes=("bf16", "fp16", "fp32"), params=PARAMS, presets=PRESETS,
                  supports=_supports, aot=_aot, picked=TUNER.picked,
                  doc="online-softmax fwd saving LSE; FA2 bwd: delta, dK/dV per key tile, dQ per query tile")
