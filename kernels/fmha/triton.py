"""Flash attention in Triton, forward and backward, for (B, H, T, D) with any T and any strides over B/H/T.

Forward: each program owns BLOCK_M queries and streams the keys in BLOCK_N blocks with an online softmax
(base 2: the scale folds log2(e) in), saving the row log-sum-exp for the backward. Under a causal mask
the blocks left of the diagonal run unmasked; only the diagonal blocks pay for the mask.
Backward: delta = rowsum(dO * O) first; then one kernel per key block accumulates dK, dV over the query
blocks that see it, and another per query block accumulates dQ over its key blocks (no atomics).
Masked scores take the finite floor MASK_FLOOR, so a fully masked row softmaxes to uniform, never NaN.
"""
import math

import torch
import triton
import triton.language as tl

from kernels import library, poison
from kernels.fmha import layout, library_ops
from kernels import triton_aot as aot
from kernels.mask import MASK_FLOOR
from kernels.registry import KernelImpl, TileParam, Unsupported

LOG2E = 1.4426950408889634
FLOOR = tl.constexpr(MASK_FLOOR)
# Triton 3.9's CPU interpreter gets bf16 tl.dot wrong; under it (only) the operands go up to fp32 first.
INTERP = tl.constexpr(aot.interpreting())
HEAD_DIMS = (16, 32, 64, 128)
# The kernels take T unspecialized (do_not_specialize): EVEN_T already says whether T needs masks, so T=301 and T=1
# (the stress battery's ragged and single-query cases) share one compile instead of two per kernel.


@triton.jit
def _dot(a, b, acc):
    if INTERP:
        a, b = a.to(tl.float32), b.to(tl.float32)
    return tl.dot(a, b, acc)


@triton.jit
def _block_and_head(LPT: tl.constexpr, REVERSE: tl.constexpr):
    """This program's block index along T and its batch*head. LPT grids are (B*H, blocks): every head's
    block b goes before any head's block b+1, so with REVERSE (heaviest last blocks first, for query blocks
    under a causal mask) the grid's last wave holds the lightest blocks."""
    if LPT:
        blk, n, bh = tl.program_id(1), tl.num_programs(1), tl.program_id(0)
    else:
        blk, n, bh = tl.program_id(0), tl.num_programs(0), tl.program_id(1)
    if REVERSE:
        blk = n - 1 - blk
    return blk, bh


@triton.jit
def _fwd_blocks(acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, lo, hi, T, qk_scale,
                D: tl.constexpr, BLOCK_N: tl.constexpr, DIAG: tl.constexpr, EDGE: tl.constexpr):
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    for start in range(lo, hi, BLOCK_N):
        cols = start + offs_n
        k_ptr = k_base + cols[None, :].to(tl.int64) * stride_kt + offs_d[:, None]
        v_ptr = v_base + cols[:, None].to(tl.int64) * stride_vt + offs_d[None, :]
        if EDGE:
            kT = tl.load(k_ptr, mask=cols[None, :] < T, other=0.0)
        else:
            kT = tl.load(k_ptr)
        s = _dot(q, kT, tl.zeros([q.shape[0], BLOCK_N], dtype=tl.float32)) * qk_scale
        if DIAG:
            s = tl.where(offs_m[:, None] >= cols[None, :], s, FLOOR)
        if EDGE:   # keys past T do not exist: they take no weight even in a fully masked row
            s = tl.where(cols[None, :] < T, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if EDGE:
            v = tl.load(v_ptr, mask=cols[:, None] < T, other=0.0)
        else:
            v = tl.load(v_ptr)
        acc = _dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, l_i, m_i


@triton.jit(do_not_specialize=["T"])
def _fmha_fwd(Q, K, V, O, LSE, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot, H, T, qk_scale,
              D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
              EVEN_T: tl.constexpr, LPT: tl.constexpr):
    pid_m, bh = _block_and_head(LPT, True)   # heaviest (last) query blocks first: they have the most keys
    b, h = bh // H, bh % H
    q_base = Q + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh
    k_base = K + b.to(tl.int64) * skb + h.to(tl.int64) * skh
    v_base = V + b.to(tl.int64) * svb + h.to(tl.int64) * svh
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q_ptr = q_base + offs_m[:, None].to(tl.int64) * sqt + offs_d[None, :]
    if EVEN_T:
        q = tl.load(q_ptr)
    else:
        q = tl.load(q_ptr, mask=offs_m[:, None] < T, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    if CAUSAL:
        m0 = pid_m * BLOCK_M      # keys [0, m0) are visible to every row here: no mask
        acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, k_base, v_base, skt, svt, offs_m, 0, m0, T, qk_scale,
                                    D, BLOCK_N, False, False)
        acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, k_base, v_base, skt, svt, offs_m, m0,
                                    tl.minimum(m0 + BLOCK_M, T), T, qk_scale, D, BLOCK_N, True, not EVEN_T)
    else:
        t_full = (T // BLOCK_N) * BLOCK_N
        acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, k_base, v_base, skt, svt, offs_m, 0, t_full, T, qk_scale,
                                    D, BLOCK_N, False, False)
        if not EVEN_T:
            acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, k_base, v_base, skt, svt, offs_m, t_full, T, T,
                                        qk_scale, D, BLOCK_N, False, True)
    o = acc / l_i[:, None]
    o_ptr = O + b.to(tl.int64) * sob + h.to(tl.int64) * soh + offs_m[:, None].to(tl.int64) * sot + offs_d[None, :]
    lse_ptr = LSE + bh.to(tl.int64) * T + offs_m
    if EVEN_T:
        tl.store(o_ptr, o.to(O.dtype.element_ty))
        tl.store(lse_ptr, m_i + tl.log2(l_i))
    else:
        tl.store(o_ptr, o.to(O.dtype.element_ty), mask=offs_m[:, None] < T)
        tl.store(lse_ptr, m_i + tl.log2(l_i), mask=offs_m < T)


@triton.jit(do_not_specialize=["T"])
def _bwd_delta(O, DO, Delta, sob, soh, sot, sdb, sdh, sdt, H, T, D: tl.constexpr, BLOCK: tl.constexpr):
    """delta = rowsum(dO * O) for BLOCK rows of one (batch, head); O and dO in any (B, H, T) strides."""
    bh = tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    cols = tl.arange(0, D)[None, :]
    r64 = rows[:, None].to(tl.int64)
    mask = rows[:, None] < T
    o = tl.load(O + b * sob + h * soh + r64 * sot + cols, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + b * sdb + h * sdh + r64 * sdt + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Delta + bh.to(tl.int64) * T + rows, tl.sum(o * do, axis=1), mask=rows < T)


@triton.jit
def _dkdv_blocks(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqt, sdt, offs_n, lo, hi, T, qk_scale,
                 D: tl.constexpr, BLOCK_M: tl.constexpr, MASK: tl.constexpr, EDGE: tl.constexpr):
    offs_d = tl.arange(0, D)
    for start in range(lo, hi, BLOCK_M):
        offs_m = start + tl.arange(0, BLOCK_M)
        q_ptr = q_base + offs_m[None, :].to(tl.int64) * sqt + offs_d[:, None]
        do_ptr = do_base + offs_m[:, None].to(tl.int64) * sdt + offs_d[None, :]
        # rows past T load as zeros (lse and delta too), which makes their every contribution zero
        if EDGE:
            qT = tl.load(q_ptr, mask=offs_m[None, :] < T, other=0.0)
            do = tl.load(do_ptr, mask=offs_m[:, None] < T, other=0.0)
            lse = tl.load(lse_base + offs_m, mask=offs_m < T, other=0.0)
            delta = tl.load(delta_base + offs_m, mask=offs_m < T, other=0.0)
        else:
            qT = tl.load(q_ptr)
            do = tl.load(do_ptr)
            lse = tl.load(lse_base + offs_m)
            delta = tl.load(delta_base + offs_m)
        sT = _dot(k, qT, tl.zeros([k.shape[0], BLOCK_M], dtype=tl.float32)) * qk_scale
        pT = tl.exp2(sT - lse[None, :])
        if MASK:
            pT = tl.where(offs_m[None, :] >= offs_n[:, None], pT, 0.0)
        dv = _dot(pT.to(do.dtype), do, dv)
        dpT = _dot(v, tl.trans(do), tl.zeros([k.shape[0], BLOCK_M], dtype=tl.float32))
        dsT = pT * (dpT - delta[None, :])
        dk = _dot(dsT.to(qT.dtype), tl.trans(qT), dk)
    return dk, dv


@triton.jit(do_not_specialize=["T"])
def _fmha_bwd_dkdv(Q, K, V, DO, DK, DV, LSE, Delta, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
                   sdb, sdh, sdt, sgb, sgh, sgt, H, T, qk_scale, sm_scale,
                   D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                   EVEN_T: tl.constexpr, LPT: tl.constexpr):
    pid_n, bh = _block_and_head(LPT, False)   # first key blocks first: the most queries see them
    b, h = bh // H, bh % H
    q_base = Q + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh
    do_base = DO + b.to(tl.int64) * sdb + h.to(tl.int64) * sdh
    lse_base = LSE + bh.to(tl.int64) * T
    delta_base = Delta + bh.to(tl.int64) * T
    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    k_ptr = K + b.to(tl.int64) * skb + h.to(tl.int64) * skh + offs_n[:, None].to(tl.int64) * skt + offs_d[None, :]
    v_ptr = V + b.to(tl.int64) * svb + h.to(tl.int64) * svh + offs_n[:, None].to(tl.int64) * svt + offs_d[None, :]
    if EVEN_T:
        k = tl.load(k_ptr)
        v = tl.load(v_ptr)
    else:
        k = tl.load(k_ptr, mask=offs_n[:, None] < T, other=0.0)
        v = tl.load(v_ptr, mask=offs_n[:, None] < T, other=0.0)
    dk = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, D], dtype=tl.float32)
    t_full = (T // BLOCK_M) * BLOCK_M
    lo = 0
    if CAUSAL:   # queries [n0, n0 + BLOCK_N) straddle the diagonal; earlier ones never see these keys
        dk, dv = _dkdv_blocks(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqt, sdt, offs_n, n0,
                              tl.minimum(n0 + BLOCK_N, T), T, qk_scale, D, BLOCK_M, True, not EVEN_T)
        lo = n0 + BLOCK_N
    dk, dv = _dkdv_blocks(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqt, sdt, offs_n, lo, t_full, T,
                          qk_scale, D, BLOCK_M, False, False)
    if not EVEN_T:
        dk, dv = _dkdv_blocks(dk, dv, k, v, q_base, do_base, lse_base, delta_base, sqt, sdt, offs_n,
                              tl.maximum(lo, t_full), T, T, qk_scale, D, BLOCK_M, False, True)
    out = b.to(tl.int64) * sgb + h.to(tl.int64) * sgh + offs_n[:, None].to(tl.int64) * sgt + offs_d[None, :]
    dk = dk * sm_scale
    if EVEN_T:
        tl.store(DK + out, dk.to(DK.dtype.element_ty))
        tl.store(DV + out, dv.to(DV.dtype.element_ty))
    else:
        tl.store(DK + out, dk.to(DK.dtype.element_ty), mask=offs_n[:, None] < T)
        tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=offs_n[:, None] < T)


@triton.jit
def _dq_blocks(dq, q, do, lse, delta, k_base, v_base, skt, svt, offs_m, lo, hi, T, qk_scale,
               D: tl.constexpr, BLOCK_N: tl.constexpr, MASK: tl.constexpr, EDGE: tl.constexpr):
    offs_d = tl.arange(0, D)
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        k_ptr = k_base + cols[None, :].to(tl.int64) * skt + offs_d[:, None]
        v_ptr = v_base + cols[None, :].to(tl.int64) * svt + offs_d[:, None]
        # keys past T load as zeros: their dS multiplies a zero K row, so dQ is untouched
        if EDGE:
            kT = tl.load(k_ptr, mask=cols[None, :] < T, other=0.0)
            vT = tl.load(v_ptr, mask=cols[None, :] < T, other=0.0)
        else:
            kT = tl.load(k_ptr)
            vT = tl.load(v_ptr)
        s = _dot(q, kT, tl.zeros([q.shape[0], BLOCK_N], dtype=tl.float32)) * qk_scale
        p = tl.exp2(s - lse[:, None])
        if MASK:
            p = tl.where(offs_m[:, None] >= cols[None, :], p, 0.0)
        dp = _dot(do, vT, tl.zeros([q.shape[0], BLOCK_N], dtype=tl.float32))
        ds = p * (dp - delta[:, None])
        dq = _dot(ds.to(kT.dtype), tl.trans(kT), dq)
    return dq


@triton.jit(do_not_specialize=["T"])
def _fmha_bwd_dq(Q, K, V, DO, DQ, LSE, Delta, sqb, sqh, sqt, skb, skh, skt, svb, svh, svt,
                 sdb, sdh, sdt, sgb, sgh, sgt, H, T, qk_scale, sm_scale,
                 D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr,
                 EVEN_T: tl.constexpr, LPT: tl.constexpr):
    pid_m, bh = _block_and_head(LPT, True)
    b, h = bh // H, bh % H
    k_base = K + b.to(tl.int64) * skb + h.to(tl.int64) * skh
    v_base = V + b.to(tl.int64) * svb + h.to(tl.int64) * svh
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q_ptr = Q + b.to(tl.int64) * sqb + h.to(tl.int64) * sqh + offs_m[:, None].to(tl.int64) * sqt + offs_d[None, :]
    do_ptr = DO + b.to(tl.int64) * sdb + h.to(tl.int64) * sdh + offs_m[:, None].to(tl.int64) * sdt + offs_d[None, :]
    if EVEN_T:
        q = tl.load(q_ptr)
        do = tl.load(do_ptr)
        lse = tl.load(LSE + bh.to(tl.int64) * T + offs_m)
        delta = tl.load(Delta + bh.to(tl.int64) * T + offs_m)
    else:
        rmask = offs_m < T
        q = tl.load(q_ptr, mask=rmask[:, None], other=0.0)
        do = tl.load(do_ptr, mask=rmask[:, None], other=0.0)
        lse = tl.load(LSE + bh.to(tl.int64) * T + offs_m, mask=rmask, other=0.0)
        delta = tl.load(Delta + bh.to(tl.int64) * T + offs_m, mask=rmask, other=0.0)
    dq = tl.zeros([BLOCK_M, D], dtype=tl.float32)
    if CAUSAL:
        dq = _dq_blocks(dq, q, do, lse, delta, k_base, v_base, skt, svt, offs_m, 0, m0, T, qk_scale,
                        D, BLOCK_N, False, False)
        dq = _dq_blocks(dq, q, do, lse, delta, k_base, v_base, skt, svt, offs_m, m0,
                        tl.minimum(m0 + BLOCK_M, T), T, qk_scale, D, BLOCK_N, True, not EVEN_T)
    else:
        t_full = (T // BLOCK_N) * BLOCK_N
        dq = _dq_blocks(dq, q, do, lse, delta, k_base, v_base, skt, svt, offs_m, 0, t_full, T, qk_scale,
                        D, BLOCK_N, False, False)
        if not EVEN_T:
            dq = _dq_blocks(dq, q, do, lse, delta, k_base, v_base, skt, svt, offs_m, t_full, T, T, qk_scale,
                            D, BLOCK_N, False, True)
    out = DQ + b.to(tl.int64) * sgb + h.to(tl.int64) * sgh + offs_m[:, None].to(tl.int64) * sgt + offs_d[None, :]
    dq = dq * sm_scale
    if EVEN_T:
        tl.store(out, dq.to(DQ.dtype.element_ty))
    else:
        tl.store(out, dq.to(DQ.dtype.element_ty), mask=offs_m[:, None] < T)


# --- configs -------------------------------------------------------------------------------------

PARAMS = (
    TileParam("BLOCK_M", int, None, (16, 32, 64, 128, 256), "forward query block"),
    TileParam("BLOCK_N", int, None, (16, 32, 64, 128), "forward key block"),
    TileParam("num_warps", int, None, (2, 4, 8)),
    TileParam("num_stages", int, None, (1, 2, 3, 4, 5)),
    TileParam("BWD_BLOCK_M1", int, None, (16, 32, 64, 128), "dK/dV kernel: query block"),
    TileParam("BWD_BLOCK_N1", int, None, (16, 32, 64, 128), "dK/dV kernel: key block"),
    TileParam("BWD_BLOCK_M2", int, None, (16, 32, 64, 128), "dQ kernel: query block"),
    TileParam("BWD_BLOCK_N2", int, None, (16, 32, 64, 128), "dQ kernel: key block"),
    TileParam("bwd_num_warps", int, None, (2, 4, 8)),
    TileParam("bwd_num_stages", int, None, (1, 2, 3, 4, 5)),
    TileParam("LPT", bool, None, doc="grids in (head, block) order, heaviest blocks of every head first"),
    TileParam("autotune", bool, False, doc="time candidates per shape, keep the fastest"),
)
_BWD = {"BWD_BLOCK_M1": 32, "BWD_BLOCK_N1": 128, "BWD_BLOCK_M2": 128, "BWD_BLOCK_N2": 32}
PRESETS = {
    # hopper: picked by autotune mode on an H100 at (16, 12, 1024, 64) and (8, 16, 4096, 128), causal bf16
    "hopper": {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3, **_BWD,
               "bwd_num_warps": 4, "bwd_num_stages": 3},
    "hopper_d128": {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 3,
                    "BWD_BLOCK_M1": 64, "BWD_BLOCK_N1": 128, "BWD_BLOCK_M2": 128, "BWD_BLOCK_N2": 64,
                    "bwd_num_warps": 8, "bwd_num_stages": 3},
    "blackwell": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3, **_BWD,
                  "bwd_num_warps": 4, "bwd_num_stages": 3},
    "blackwell_d128": {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 3,
                       "BWD_BLOCK_M1": 64, "BWD_BLOCK_N1": 128, "BWD_BLOCK_M2": 128, "BWD_BLOCK_N2": 64,
                       "bwd_num_warps": 8, "bwd_num_stages": 3},
    "ampere": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2, **_BWD,
               "bwd_num_warps": 4, "bwd_num_stages": 2},
    "ampere_d128": {"BLOCK_M": 128, "BLOCK_N": 32, "num_warps": 8, "num_stages": 2,
                    "BWD_BLOCK_M1": 32, "BWD_BLOCK_N1": 64, "BWD_BLOCK_M2": 64, "BWD_BLOCK_N2": 32,
                    "bwd_num_warps": 4, "bwd_num_stages": 2},
    "consumer": {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2,
                 "BWD_BLOCK_M1": 32, "BWD_BLOCK_N1": 64, "BWD_BLOCK_M2": 64, "BWD_BLOCK_N2": 32,
                 "bwd_num_warps": 4, "bwd_num_stages": 2},
    "consumer_d128": {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2,
                      "BWD_BLOCK_M1": 32, "BWD_BLOCK_N1": 64, "BWD_BLOCK_M2": 64, "BWD_BLOCK_N2": 32,
                      "bwd_num_warps": 4, "bwd_num_stages": 1},
}
# Experiment configs of the fmha_tune sweeps (tuning/fmha.yaml, GPT-2's shape on an H200), not presets: LPT order,
# and with 128-query blocks in 8 warps
TUNING = {"tune_lpt": {**PRESETS["hopper"], "LPT": True}}
TUNING["tune_lpt_128"] = {**TUNING["tune_lpt"], "BLOCK_M": 128, "num_warps": 8}
TUNING["tune_no_lpt"] = {**PRESETS["hopper"], "LPT": False}   # the old default, now that hopper has LPT
for _p in (*PRESETS.values(), *TUNING.values()):
    _p.setdefault("LPT", False)
# LPT on Hopper: fwd+bwd 0.388 ms vs 0.406 at B16 H12 T1024 D64 causal bf16 on an H200 (fmha_tune, 2026-12-01;
# the forward alone 0.105 vs 0.103)
PRESETS["hopper"]["LPT"] = True
FWD_KEYS = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
BWD_KEYS = ("BWD_BLOCK_M1", "BWD_BLOCK_N1", "BWD_BLOCK_M2", "BWD_BLOCK_N2", "bwd_num_warps", "bwd_num_stages")
FWD_CANDIDATES = [dict(zip(FWD_KEYS, c)) for c in (
    (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 4), (64, 64, 4, 3), (128, 32, 4, 3),
    (128, 64, 8, 4), (64, 32, 4, 4))]
BWD_CANDIDATES = [dict(zip(BWD_KEYS, c)) for c in (
    (32, 128, 128, 32, 4, 3), (32, 128, 128, 32, 8, 3), (64, 128, 128, 64, 8, 3), (32, 64, 64, 32, 4, 3),
    (64, 64, 64, 64, 4, 3), (32, 128, 128, 32, 4, 2), (64, 128, 128, 64, 8, 2), (32, 64, 64, 32, 4, 2))]
FWD_TUNER, BWD_TUNER = aot.Tuner(), aot.Tuner()


def _preset(arch: str, D: int) -> dict:
    fam = aot.family(arch)
    return dict(PRESETS[f"{fam}_d128"] if D > 64 else PRESETS[fam])


def _check_cfg(cfg, causal):
    if causal and cfg["BLOCK_M"] % cfg["BLOCK_N"]:
        raise Unsupported("causal needs BLOCK_M to be a multiple of BLOCK_N")
    if causal and cfg["BWD_BLOCK_N1"] % cfg["BWD_BLOCK_M1"]:
        raise Unsupported("causal needs BWD_BLOCK_N1 to be a multiple of BWD_BLOCK_M1")
    if causal and cfg["BWD_BLOCK_M2"] % cfg["BWD_BLOCK_N2"]:
        raise Unsupported("causal needs BWD_BLOCK_M2 to be a multiple of BWD_BLOCK_N2")


def _strides(t):
    return t.stride(0), t.stride(1), t.stride(2)


def _last_dim_unit(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def _grid(heads, blocks, lpt):
    return (heads, blocks) if lpt else (blocks, heads)


def _forward(q, k, v, causal, sm_scale, cfg):
    B, H, T, D = q.shape
    o = layout.out_like(q)
    lse = poison.empty(B * H, T, dtype=torch.float32, device=q.device)
    BM, BN = cfg["BLOCK_M"], cfg["BLOCK_N"]
    library.kernel(_fmha_fwd)[_grid(B * H, aot.cdiv(T, BM), cfg["LPT"])](
        q, k, v, o, lse, *_strides(q), *_strides(k), *_strides(v), *_strides(o), H, T, sm_scale * LOG2E,
        D=D, BLOCK_M=BM, BLOCK_N=BN, CAUSAL=causal, EVEN_T=(T % BM == 0 and T % BN == 0), LPT=cfg["LPT"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return o, lse


def _backward(q, k, v, o, lse, do, causal, sm_scale, cfg, grads=None):
    B, H, T, D = q.shape
    delta = torch.empty(B * H, T, dtype=torch.float32, device=q.device)   # fully written below
    library.kernel(_bwd_delta)[(aot.cdiv(T, 64), B * H)](o, do, delta, *_strides(o), *_strides(do), H, T, D=D,
                                                        BLOCK=64, num_warps=4)
    # one (B, T, 3, H, D) buffer when q, k, v are a qkv split (or the library op's, given)
    dq, dk, dv = grads if grads is not None else layout.grads_like(q, k, v)
    if dk.stride() != dq.stride() or dv.stride() != dq.stride():
        raise Unsupported("dq, dk, dv must share strides")
    common = dict(num_warps=cfg["bwd_num_warps"], num_stages=cfg["bwd_num_stages"], LPT=cfg["LPT"])
    M1, N1, M2, N2 = (cfg[k_] for k_ in ("BWD_BLOCK_M1", "BWD_BLOCK_N1", "BWD_BLOCK_M2", "BWD_BLOCK_N2"))
    library.kernel(_fmha_bwd_dkdv)[_grid(B * H, aot.cdiv(T, N1), cfg["LPT"])](
        q, k, v, do, dk, dv, lse, delta, *_strides(q), *_strides(k), *_strides(v), *_strides(do), *_strides(dk),
        H, T, sm_scale * LOG2E, sm_scale, D=D, BLOCK_M=M1, BLOCK_N=N1, CAUSAL=causal, EVEN_T=(T % M1 == 0 and T % N1 == 0), **common)
    library.kernel(_fmha_bwd_dq)[_grid(B * H, aot.cdiv(T, M2), cfg["LPT"])](
        q, k, v, do, dq, lse, delta, *_strides(q), *_strides(k), *_strides(v), *_strides(do), *_strides(dq),
        H, T, sm_scale * LOG2E, sm_scale, D=D, BLOCK_M=M2, BLOCK_N=N2, CAUSAL=causal, EVEN_T=(T % M2 == 0 and T % N2 == 0), **common)
    return dq, dk, dv


class _Fmha(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale, cfg, tune):
        q, k, v = (_last_dim_unit(t) for t in (q, k, v))
        o, lse = _forward(q, k, v, causal, sm_scale, cfg)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.sm_scale, ctx.cfg, ctx.tune = causal, sm_scale, cfg, tune
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        do = _last_dim_unit(do)   # any (B, H, T) strides: the model's dO is a transposed view
        cfg = ctx.cfg
        if ctx.tune:
            key = (tuple(q.shape), q.dtype, str(q.device), ctx.causal)
            cands = aot.unique([{k_: cfg[k_] for k_ in BWD_KEYS}] + BWD_CANDIDATES)
            if ctx.causal:
                cands = [c for c in cands if c["BWD_BLOCK_N1"] % c["BWD_BLOCK_M1"] == 0
                         and c["BWD_BLOCK_M2"] % c["BWD_BLOCK_N2"] == 0]
            cfg = {**cfg, **BWD_TUNER.choose(key, cands, lambda c: _backward(
                q, k, v, o, lse, do, ctx.causal, ctx.sm_scale, {**cfg, **c}))}
            FWD_TUNER.note({**FWD_TUNER.last, **{k_: cfg[k_] for k_ in BWD_KEYS}})
        dq, dk, dv = _backward(q, k, v, o, lse, do, ctx.causal, ctx.sm_scale, cfg)
        return dq, dk, dv, None, None, None, None


def fmha(q, k, v, causal=True, scale=None, **cfg):
    B, H, T, D = q.shape
    if k.shape != q.shape or v.shape != q.shape:
        raise Unsupported(f"q, k, v shapes differ: {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    why = _head_dim_refusal(D)
    if why:
        raise Unsupported(why)
    if not (q.dtype == k.dtype == v.dtype):
        raise Unsupported("q, k, v dtypes differ")
    auto = cfg.pop("autotune", False)
    full = config_for(q, cfg)
    _check_cfg(full, causal)
    sm_scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if auto:
        qc, kc, vc = (_last_dim_unit(t.detach()) for t in (q, k, v))
        cands = aot.unique([{k_: full[k_] for k_ in FWD_KEYS}] + FWD_CANDIDATES)
        if causal:
            cands = [c for c in cands if c["BLOCK_M"] % c["BLOCK_N"] == 0]
        full = {**full, **FWD_TUNER.choose((tuple(q.shape), q.dtype, str(q.device), causal), cands,
                                           lambda c: _forward(qc, kc, vc, causal, sm_scale, {**full, **c}))}
    FWD_TUNER.last = full
    if aot.needs_grad(q, k, v):
        return _Fmha.apply(q, k, v, causal, sm_scale, full, auto)
    return _forward(*(_last_dim_unit(t) for t in (q, k, v)), causal, sm_scale, full)[0]


CONFIGS = aot.Configs(PARAMS, _preset)


def config_for(q, cfg):
    """The full tile config for q (B, H, T, D): the arch's preset for head dim D under the overrides."""
    return CONFIGS.get(aot.arch_of(q), q.shape[-1], cfg)


def picked():
    return FWD_TUNER.picked()


def _head_dim_refusal(D):
    return None if D in HEAD_DIMS else f"head dim {D} (takes {HEAD_DIMS})"


def _supports(shape, dtype, device):
    return _head_dim_refusal(shape.get("D", 64))


# --- torch.library ops (kernels/fmha/library_ops.py): what torch.compile traces ----------------------------
# Opaque custom ops, not triton_ops: inductor recompiles a triton_op's kernels from their source in a subprocess,
# and there the forward failed at its first nested @triton.jit call (CompilationError at `_fwd_blocks(`; H200,
# torch 2.11, triton 3.6, compile+triton, 2026-12-06), while the same kernels compile through triton.compile and
# the JIT. Opaque, inductor calls this host code, which launches the kernels as the harness does (as for cuTile).

FWD_OP, BWD_OP, traced = library_ops.register("triton", forward=_forward, backward=_backward, config_for=config_for,
                                              head_dim_refusal=_head_dim_refusal, check=_check_cfg, interpreted=True)


def _aot(config, arch, D=64):
    cfg = aot.fill({**{p.name: None for p in PARAMS}, **(config or {})}, _preset(arch, D))
    ptrs = {n: "*bf16" for n in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV")}
    ptrs.update({"LSE": "*fp32", "Delta": "*fp32"})
    strides = {n: "i64" for n in ("sqb", "sqh", "sqt", "skb", "skh", "skt", "svb", "svh", "svt", "sob", "soh", "sot",
                                  "sdb", "sdh", "sdt", "sgb", "sgh", "sgt")}
    sig = {**ptrs, **strides, "H": "i32", "T": "i32", "qk_scale": "fp32", "sm_scale": "fp32"}
    rows = [aot.compile_kernel(_fmha_fwd, "fmha_fwd", sig, dict(D=D, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"],
                                                              CAUSAL=True, EVEN_T=True, LPT=cfg["LPT"]),
                               arch, cfg["num_warps"], cfg["num_stages"]),
            aot.compile_kernel(_bwd_delta, "fmha_bwd_delta", sig, dict(D=D, BLOCK=64), arch, 4, 1)]
    bw, bs = cfg["bwd_num_warps"], cfg["bwd_num_stages"]
    rows.append(aot.compile_kernel(_fmha_bwd_dkdv, "fmha_bwd_dkdv", sig,
                                   dict(D=D, BLOCK_M=cfg["BWD_BLOCK_M1"], BLOCK_N=cfg["BWD_BLOCK_N1"], CAUSAL=True,
                                        EVEN_T=True, LPT=cfg["LPT"]), arch, bw, bs))
    rows.append(aot.compile_kernel(_fmha_bwd_dq, "fmha_bwd_dq", sig,
                                   dict(D=D, BLOCK_M=cfg["BWD_BLOCK_M2"], BLOCK_N=cfg["BWD_BLOCK_N2"], CAUSAL=True,
                                        EVEN_T=True, LPT=cfg["LPT"]), arch, bw, bs))
    return rows


TEST_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 16, "BWD_BLOCK_M1": 16, "BWD_BLOCK_N1": 32, "BWD_BLOCK_M2": 32,
               "BWD_BLOCK_N2": 16}   # CPU tests: several blocks per test shape
IMPL = KernelImpl(fn=fmha, backend="triton", dtypes=("bf16", "fp16", "fp32"), params=PARAMS, presets=PRESETS,
                  tuning=TUNING, supports=_supports, aot=_aot, picked=picked,
                  test_config=TEST_CONFIG, traced=traced,
                  doc="flash attention fwd (online softmax, LSE) + bwd (delta, dK/dV and dQ kernels)")
