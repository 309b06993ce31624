"""Linear in Triton: one strided matmul kernel (fp32 accumulation, grouped tile order for L2 reuse) with a
bias and optional tanh-GELU epilogue, and on sm_90+ the TMA persistent kernel (kernels.linear.triton_tma).
The backward reuses them through strides: dX = dY W and dW = dY^T X. db is the column sums of dY: summed by
the TMA dW matmul from the dY^T tiles it loads anyway, else by a standalone column sum (no dW wanted, the
pointer kernel); with GELU, the column sums of dpre, which the GELU backward kernel adds up on the way."""
import torch
import triton
import triton.language as tl

from kernels import poison
from kernels import triton_aot as aot
from kernels.gelu.triton import gelu_backward, gelu_tanh
from kernels.linear import library_ops, parts, triton_tma
from kernels.linear.splitk import slices
from kernels.registry import KernelImpl, TileParam, Unsupported
from kernels.triton_rows import colsum, colsum_aot, split_rows

# Triton 3.9's CPU interpreter gets bf16 tl.dot wrong; under it (only) the operands go up to fp32 first.
INTERP = tl.constexpr(aot.interpreting())


@triton.jit
def _matmul(A, B, C, Bias, Pre, M, N, K, s_am, s_ak, s_bk, s_bn, s_cm, s_cn, K_SPLIT, s_cs,
            HAS_BIAS: tl.constexpr, GELU: tl.constexpr, STORE_PRE: tl.constexpr, EVEN_K: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """C[M, N] = A[M, K] @ B[K, N] (+ bias[N]) (then GELU; Pre keeps the pre-activation).
    Split-K: program_id(1) = s takes K rows [s*K_SPLIT, (s+1)*K_SPLIT) and writes C + s*s_cs."""
    pid = tl.program_id(0)
    k0 = tl.program_id(1) * K_SPLIT
    k_len = tl.minimum(K - k0, K_SPLIT)
    n_m, n_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    # groups of GROUP_M row-tiles sweep the columns together, so their A tiles stay in L2
    group = pid // (GROUP_M * n_n)
    first_m = group * GROUP_M
    size_m = tl.minimum(n_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * n_n)) % size_m
    pid_n = (pid % (GROUP_M * n_n)) // size_m
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    # edge masks on M/N rather than wrapping indices: a wrapped, vectorised load along a unit-stride
    # M (the dW = dY^T X case) could read past the end of the buffer
    m_in = (rm < M)[:, None]
    n_in = (rn < N)[None, :]
    a_ptr = A + rm[:, None].to(tl.int64) * s_am + (k0 + rk[None, :]).to(tl.int64) * s_ak
    b_ptr = B + (k0 + rk[:, None]).to(tl.int64) * s_bk + rn[None, :].to(tl.int64) * s_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(k_len, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptr, mask=m_in, other=0.0)
            b = tl.load(b_ptr, mask=n_in, other=0.0)
        else:
            a = tl.load(a_ptr, mask=m_in & (rk[None, :] < k_len - k * BLOCK_K), other=0.0)
            b = tl.load(b_ptr, mask=n_in & (rk[:, None] < k_len - k * BLOCK_K), other=0.0)
        if INTERP:
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc)
        a_ptr += BLOCK_K * s_ak
        b_ptr += BLOCK_K * s_bk
    if HAS_BIAS:
        acc += tl.load(Bias + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    offs = tl.program_id(1).to(tl.int64) * s_cs + rm[:, None].to(tl.int64) * s_cm + rn[None, :] * s_cn
    if STORE_PRE:
        tl.store(Pre + offs, acc.to(Pre.dtype.element_ty), mask=mask)
    if GELU:
        acc = gelu_tanh(acc)
    tl.store(C + offs, acc.to(C.dtype.element_ty), mask=mask)


STREAM_K = -1   # the SPLIT_K value that asks for stream-K (kernels.linear.triton_tma._matmul_streamk)
PARAMS = (
    TileParam("BLOCK_M", int, None, (16, 32, 64, 128, 256)),
    TileParam("BLOCK_N", int, None, (16, 32, 64, 128, 256)),
    TileParam("BLOCK_K", int, None, (16, 32, 64, 128)),
    TileParam("GROUP_M", int, None, (1, 4, 8, 16, 32, 64, 128)),
    TileParam("num_warps", int, None, (2, 4, 8, 16)),
    TileParam("num_stages", int, None, (1, 2, 3, 4, 5)),
    TileParam("KERNEL", str, None, ("blocked", "tma"),
              "blocked: pointer loads, one program per tile; tma: TMA descriptors on a persistent grid (sm_90+)"),
    TileParam("WARP_SPEC", bool, None, doc="tma kernel: warp-specialize the K loop (producer/consumer warps)"),
    TileParam("SUBTILE", bool, None, doc="tma kernel: store each output tile as two halves (half the staging smem)"),
    TileParam("SPLIT_K", int, None, (STREAM_K, 0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16),
              "K slices when no epilogue runs (the dW matmul); 0: kernels.linear.splitk's model; -1: stream-K on "
              "the tma kernel for every matmul (whole waves, then the last 1-2 split evenly by K steps; the "
              "pointer kernel takes the model)"),
    TileParam("FUSE_DB", bool, None, doc="the bias gradient summed inside the split-K dW matmul (tma kernel); "
                                         "False (every preset): a standalone column sum of dY. Not yet run on a "
                                         "GPU at 3 stages; its row-sum code is the one that made stream-K's dW "
                                         "wrong on an H200 (cause unknown), so the gate decides"),
    TileParam("autotune", bool, False, doc="time candidates per shape, keep the fastest"),
)
PRESETS = {
    "blackwell": {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3,
                  "KERNEL": "blocked", "WARP_SPEC": False, "SUBTILE": True, "SPLIT_K": 0},
    "ampere": {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8, "num_warps": 4, "num_stages": 4,
               "KERNEL": "blocked", "WARP_SPEC": False, "SUBTILE": True, "SPLIT_K": 0},
    "consumer": {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8, "num_warps": 4, "num_stages": 4,
                 "KERNEL": "blocked", "WARP_SPEC": False, "SUBTILE": True, "SPLIT_K": 0},
}
# Shared memory at bf16 (sm_90 AOT): 128x128x64 at 4 stages 147 KB, 128x256x64 at 3 stages 181 KB.
_TMA = {"BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "KERNEL": "tma", "SUBTILE": True, "SPLIT_K": 0,
        "DX_CONFIG": parts.SAME, "DW_CONFIG": parts.SAME}
# hopper = tma_128x256: the fastest Triton config at every GPT-2 forward and dX matmul in the gemm sweep
# (H200, 2026-12-01, graph replays, 0.95-0.98x cuBLAS; dW 0.80-0.97x)
PRESETS["hopper"] = {**_TMA, "BLOCK_M": 128, "BLOCK_N": 256, "num_stages": 3, "WARP_SPEC": False}
# Hopper variants the tuning sweeps name (tuning/gemm.yaml, tuning/gemm_triton.yaml), not presets; each becomes a
# default only on a measured win there.
TUNING = {
    # the blocked pointer kernel at autotune's pick on an H100 for 16384x768 -> 3072 bf16 (hopper's until the
    # gemm sweep of 2026-12-01 on an H200: 0.81-0.92x cuBLAS forward, where TMA 128x256 made 0.95-0.97x)
    "hopper_blocked": {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3,
                       "KERNEL": "blocked", "WARP_SPEC": False, "SUBTILE": True, "SPLIT_K": 0},
    "tma_128x256": {**_TMA, "BLOCK_M": 128, "BLOCK_N": 256, "num_stages": 3, "WARP_SPEC": False},
    "tma_128x128": {**_TMA, "BLOCK_M": 128, "BLOCK_N": 128, "num_stages": 4, "WARP_SPEC": False},
    "tma_128x256_ws": {**_TMA, "BLOCK_M": 128, "BLOCK_N": 256, "num_stages": 3, "WARP_SPEC": True},
    # for the forward at lm_head / mlp c_proj (0.92 / 0.95x): a 4th stage, wider L2 groups, the tile turned
    # (its split-K dW would need 262 KB of shared memory: dW runs hopper's config)
    "tma_128x256_s4": {**_TMA, "BLOCK_M": 128, "BLOCK_N": 256, "num_stages": 4, "WARP_SPEC": False,
                       "DW_CONFIG": "hopper"},
    "tma_128x256_whole": {**_TMA, "BLOCK_M": 128, "BLOCK_N": 256, "num_stages": 3, "WARP_SPEC": False,
                          "SUBTILE": False, "DW_CONFIG": "hopper"},   # the tile stored in one piece (K = 768: 12 steps)
    "tma_128x256_g16": {**_TMA, "BLOCK_M": 128, "BLOCK_N": 256, "num_stages": 3, "WARP_SPEC": False, "GROUP_M": 16},
    # lm_head's W (50304 x 768, 77 MB) outgrows the L2: GROUP_M 8 streams it once per 8 row tiles (16 times,
    # 1.2 GB), 64 twice, while those 64 row tiles of X (12.6 MB) stay in L2
    "tma_128x256_g64": {**_TMA, "BLOCK_M": 128, "BLOCK_N": 256, "num_stages": 3, "WARP_SPEC": False, "GROUP_M": 64},
    "tma_256x128": {**_TMA, "BLOCK_M": 256, "BLOCK_N": 128, "num_stages": 3, "WARP_SPEC": False},
    "tma_256x128_w16": {**_TMA, "BLOCK_M": 256, "BLOCK_N": 128, "num_stages": 3, "WARP_SPEC": False, "num_warps": 16},
    # stream-K: for the dW matmuls (N = 768: 18-72 tiles of 128x256 on 132 SMs; via DW_CONFIG), and the forward
    # and dX's partial last waves (384 tiles of 128x256 = 2.91 waves at N or K = 768)
    "tma_streamk": {**_TMA, "BLOCK_M": 128, "BLOCK_N": 256, "num_stages": 3, "WARP_SPEC": False, "SPLIT_K": STREAM_K},
    "tma_128x128_streamk": {**_TMA, "BLOCK_M": 128, "BLOCK_N": 128, "num_stages": 4, "WARP_SPEC": False,
                            "SPLIT_K": STREAM_K},
}
# every config names its backward matmuls' configs: an autotuned pick reports them too
for _p in (*PRESETS.values(), *TUNING.values()):
    _p.setdefault("DX_CONFIG", parts.SAME)
    _p.setdefault("DW_CONFIG", parts.SAME)
    _p.setdefault("FUSE_DB", False)
NAMED = {**PRESETS, **TUNING}   # what DX_CONFIG / DW_CONFIG may name (gemm_triton_op's dW runs tma_streamk)
PARAMS += parts.part_params(NAMED)
# TMA needs sm_90; on older GPUs a `KERNEL: tma` request takes the blocked kernel (see matmul)
TMA_FAMILIES = ("hopper", "blackwell")
CANDIDATES = [
    {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3, "KERNEL": "blocked"},
    {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 4, "KERNEL": "blocked"},
    {"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3, "KERNEL": "blocked"},
    {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 4, "KERNEL": "blocked"},
    {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 4, "KERNEL": "blocked"},
    {"BLOCK_M": 64, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 4, "KERNEL": "blocked"},
    {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4, "num_stages": 4, "KERNEL": "blocked"},
    {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 4, "KERNEL": "tma"},
    {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 4, "KERNEL": "tma"},
]
TUNER = aot.Tuner()
DOT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def matmul(a, b, cfg, bias=None, gelu=False, store_pre=False, out_dtype=None, row_sums=False):
    """a (M, K) @ b (K, N), any strides; returns (out, pre-activation or None, row sums of a or None).
    Few output tiles and a long K (the dW matmul) split K across programs: fp32 partials summed after
    (kernels.linear.splitk), or stream-K (SPLIT_K -1, TMA kernel only, any matmul: its partial last wave
    too). row_sums asks for a's rows summed in out's dtype along the way (db of dW = dY^T X); only the TMA
    kernel fuses them: None elsewhere."""
    M, K = a.shape
    N = b.shape[1]
    dtype = out_dtype or a.dtype
    BM, BN, BK = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    sms = aot.sm_count(a)
    # the interpreter runs the TMA kernel too (it emulates descriptors), whatever arch it stands in for
    tma = cfg["KERNEL"] == "tma" and (cfg.get("_family") in TMA_FAMILIES or aot.interpreting()) \
        and triton_tma.usable(a, b, dtype) is None
    if not tma:   # too few tiles to fill the GPU: halve the tile rows before splitting K
        while BM > 64 and aot.cdiv(M, BM) * aot.cdiv(N, BN) < sms:
            BM //= 2
    epilogue = bias is not None or gelu or store_pre
    # Triton 3.9 fails to compile the row sums inside a warp-specialized loop for sm_100
    # stream-K never sums them: with ROW_SUMS its dW came out wrong on an H200 (rel-L2 0.29-0.57, gemm_triton_op,
    # 2026-12-01) where the CPU interpreter, running programs one at a time, got it right
    row_sums = row_sums and tma and not epilogue and not cfg["WARP_SPEC"] and cfg["SPLIT_K"] != STREAM_K
    if tma and cfg["SPLIT_K"] == STREAM_K:
        out = poison.empty(M, N, dtype=dtype, device=a.device)
        pre = poison.empty(M, N, dtype=dtype, device=a.device) if store_pre else None
        triton_tma.launch_streamk(a, b, out, bias, pre, cfg, sms, gelu)
        return out, pre, None
    want = max(cfg["SPLIT_K"], 0)   # stream-K asked of the pointer kernel: the split-K model decides
    S, k_split = (1, K) if epilogue else slices(M, N, K, BM, BN, BK, sms, want)
    # partials are poisoned too: a slice that writes nothing must fail the gate, not sum stale memory
    out = poison.empty(M, N, dtype=dtype, device=a.device) if S == 1 else \
        poison.empty(S, M, N, dtype=torch.float32, device=a.device)
    pre = poison.empty(M, N, dtype=out.dtype, device=a.device) if store_pre else None
    sums = None
    if row_sums:   # per-slice fp32 partials when K is split
        sums = poison.empty(M, dtype=dtype, device=a.device) if S == 1 else \
            poison.empty(S, M, dtype=torch.float32, device=a.device)
    if tma:
        triton_tma.launch(a, b, out, bias, pre, k_split, {**cfg, "BLOCK_M": BM}, sms, gelu, sums)
    else:
        grid = (aot.cdiv(M, BM) * aot.cdiv(N, BN), S)
        _matmul[grid](a, b, out, bias if bias is not None else out, pre if store_pre else out, M, N, K,
                      a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(-2), out.stride(-1),
                      k_split, M * N if S > 1 else 0,   # 0 when unused: no divisibility respecialisation
                      # k_split is a multiple of BK, so every slice is whole tiles exactly when K is
                      HAS_BIAS=bias is not None, GELU=gelu, STORE_PRE=store_pre, EVEN_K=K % BK == 0,
                      BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, GROUP_M=cfg["GROUP_M"],
                      num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    if S > 1:
        out = sum_slices(out, dtype)
        if sums is not None:
            sums = colsum(sums, dtype)
    return out, pre, sums


@triton.jit
def _sum_slices(P, C, n, S, BLOCK: tl.constexpr):
    """C[i] = sum over s of P[s, i] (fp32), in C's dtype: the split-K partials folded in one pass."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    p = P + offs
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for _ in range(S):
        acc += tl.load(p, mask=m, other=0.0)
        p += n
    tl.store(C + offs, acc.to(C.dtype.element_ty), mask=m)


SUM_BLOCK = 2048


def sum_slices(part, dtype):
    S, M, N = part.shape
    out = poison.empty(M, N, dtype=dtype, device=part.device)
    _sum_slices[(aot.cdiv(M * N, SUM_BLOCK),)](part, out, M * N, S, BLOCK=SUM_BLOCK, num_warps=4)
    return out


def _bwd_cfg(cfg):
    """The elementwise/colsum half of the backward uses gelu's defaults for this arch."""
    from kernels.gelu.triton import PRESETS as GP
    return GP.get(cfg.get("_family", "hopper"), GP["hopper"])


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, bias, activation, cfg, grad):
        x2 = x.reshape(-1, x.shape[-1])
        gelu = activation == "gelu"
        keep_pre = gelu and grad     # the GELU backward needs the pre-activation
        y, pre, _ = matmul(x2, w.t(), cfg, bias=bias, gelu=gelu, store_pre=keep_pre)
        ctx.save_for_backward(x2, w, pre)
        ctx.has_bias, ctx.gelu, ctx.cfg, ctx.shape = bias is not None, gelu, cfg, x.shape
        return y.view(*x.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, dy):
        x2, w, pre = ctx.saved_tensors
        dy2 = dy.reshape(-1, w.shape[0])
        db = None
        need_db = ctx.has_bias and ctx.needs_input_grad[2]
        if ctx.gelu:    # d pre = dy * gelu'(pre); its column sums are db
            dy2, db = gelu_backward(pre, None, dy2.contiguous(), _bwd_cfg(ctx.cfg), need_db=need_db)
            need_db = False
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = matmul(dy2, w, parts.config_for_part(ctx.cfg, 2, NAMED))[0].view(ctx.shape)
        if ctx.needs_input_grad[1]:
            # db = the column sums of dY = the row sums of dY^T, the dW matmul's A: the TMA kernel adds them up
            # from the tiles it loads anyway
            dw, _, db_fused = matmul(dy2.t(), x2, parts.config_for_part(ctx.cfg, 3, NAMED), out_dtype=w.dtype,
                                     row_sums=need_db and ctx.cfg["FUSE_DB"])
            db = db_fused if need_db else db
        if need_db and db is None:   # no dW wanted, or the pointer kernel ran it
            db = column_sums(dy2, w.dtype)
        return dx, dw, db, None, None, None


# the standalone bias gradient reads (32, 256) blocks (16 KB of bf16) per step, 4 programs per SM (with the old
# 8 x 128 blocks c_fc's op without GELU took 0.597 ms on an H200 where its three matmuls sum to ~0.36)
COLSUM_BLOCK_M, COLSUM_BLOCK_N, COLSUM_WARPS, COLSUM_STAGES, COLSUM_PROGS_PER_SM = 32, 256, 8, 3, 4


def column_sums(t, dtype):
    """db = the column sums of dY (M, N) where the dW matmul cannot fuse them: programs over row blocks leave
    fp32 partials, folded by triton_rows.colsum. Memory-bound: 16384 x 3072 bf16 is 100 MB, ~30 us at an H200's
    4.8 TB/s."""
    M, N = t.shape
    if t.stride(1) != 1:
        t = t.contiguous()
    n_cols = aot.cdiv(N, COLSUM_BLOCK_N)
    G, rows = split_rows(M, COLSUM_BLOCK_M, aot.cdiv(COLSUM_PROGS_PER_SM * aot.sm_count(t), n_cols))
    part = torch.empty(G, N, dtype=torch.float32, device=t.device)   # every element written by _rowblock_sum
    _rowblock_sum[(G, n_cols)](t, part, M, N, t.stride(0), rows, BLOCK_M=COLSUM_BLOCK_M, BLOCK_N=COLSUM_BLOCK_N,
                               num_warps=COLSUM_WARPS, num_stages=COLSUM_STAGES)
    return colsum(part, dtype)


@triton.jit
def _rowblock_sum(T, P, M, N, stride_t, rows_per_prog, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """P[g, cols] = the column sums of rows [g * rows_per_prog, (g+1) * rows_per_prog) of T, in fp32."""
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    first = pid_m * rows_per_prog
    last = tl.minimum(first + rows_per_prog, M)
    for r in range(first, last, BLOCK_M):
        rows = r + tl.arange(0, BLOCK_M)
        m = (rows[:, None] < last) & (cols[None, :] < N)
        acc += tl.sum(tl.load(T + rows[:, None].to(tl.int64) * stride_t + cols[None, :], mask=m, other=0.0)
                      .to(tl.float32), axis=0)
    tl.store(P + pid_m * N + cols, acc, mask=cols < N)


def linear(x, weight, bias=None, activation=None, **cfg):
    if activation not in (None, "gelu"):
        raise Unsupported(f"activation {activation!r} (takes None or 'gelu')")
    if x.dtype not in DOT_DTYPES or weight.dtype != x.dtype:
        raise Unsupported(f"dtypes x {x.dtype}, weight {weight.dtype}")
    auto = cfg.pop("autotune", False)
    full = config_for(x, cfg)
    if auto:
        x2 = x.reshape(-1, x.shape[-1])
        full = TUNER.choose((tuple(x2.shape), tuple(weight.shape), x.dtype, str(x.device), activation),
                            aot.unique([full] + [{**full, **c} for c in CANDIDATES]),
                            lambda c: matmul(x2, weight.t(), c, bias=bias, gelu=activation == "gelu"))
    TUNER.last = {k: v for k, v in full.items() if not k.startswith("_")}
    if aot.needs_grad(x, weight, bias):
        return _Linear.apply(x, weight, bias, activation, full, True)
    x2 = x.reshape(-1, x.shape[-1])
    y = matmul(x2, weight.t(), full, bias=bias, gelu=activation == "gelu")[0]
    return y.view(*x.shape[:-1], weight.shape[0])


# "_family" rides along so the backward's elementwise half and the TMA gate know the generation
def matmul_part(a, b, part, **cfg):
    """One of the linear's three matmuls alone (kernels.linear.parts), as the autograd path calls it."""
    full = parts.config_for_part(config_for(a, cfg), part, NAMED)
    if part == 1:
        return matmul(a, b.t(), full)[0]
    if part == 2:
        return matmul(a, b, full)[0]
    return matmul(a.t(), b, full, out_dtype=b.dtype)[0]


parts.provide(linear, matmul_part)
CONFIGS = aot.Configs(PARAMS, lambda arch, _: {**PRESETS[aot.family(arch)], "_family": aot.family(arch)})


def config_for(x, cfg):
    """The full tile config for tensors on x's device: the arch's preset under the overrides."""
    return CONFIGS.get(aot.arch_of(x), 0, cfg)


def _rows(t, C):
    t2 = t.reshape(-1, C)
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


# --- torch.library ops (kernels/linear/library_ops.py): what torch.compile traces --------------------------

FWD_OP, BWD_OP, traced = library_ops.register(
    "triton", config_for=config_for, rows=_rows, backward=_Linear.backward,
    forward=lambda x, w, bias, gelu, keep_pre, c: matmul(x, w.t(), c, bias=bias, gelu=gelu,
                                                         store_pre=gelu and keep_pre)[:2])


def _aot(config, arch):
    """The kernels this config runs on `arch`: the TMA kernel's uses where it runs (sm_90+; dX and dW under
    their DX_CONFIG / DW_CONFIG), else the pointer kernel's; then the split-K fold and the bias-gradient column
    sums."""
    fam = aot.family(arch)
    cfg = aot.fill({**{p.name: None for p in PARAMS}, **(config or {})}, PRESETS[fam])
    tiles = {k: cfg[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")}
    if cfg["KERNEL"] == "tma" and fam in TMA_FAMILIES:
        rows = triton_tma.aot_rows(lambda part: parts.config_for_part(cfg, part, NAMED), arch)
    else:
        rows = [aot.unsupported("linear_tma", arch, "TMA descriptors need sm_90+: the blocked kernel runs here")] \
            if cfg["KERNEL"] == "tma" else []
        sig = {"A": "*bf16", "B": "*bf16", "C": "*bf16", "Bias": "*bf16", "Pre": "*bf16", "M": "i32", "N": "i32",
               "K": "i32", "s_am": "i32", "s_ak": "i32", "s_bk": "i32", "s_bn": "i32", "s_cm": "i32", "s_cn": "i32",
               "K_SPLIT": "i32", "s_cs": "i32"}
        for name, flags in (("linear_fwd_bias", dict(HAS_BIAS=True, GELU=False, STORE_PRE=False)),
                            ("linear_fwd_bias_gelu", dict(HAS_BIAS=True, GELU=True, STORE_PRE=True)),
                            ("linear_bwd_matmul", dict(HAS_BIAS=False, GELU=False, STORE_PRE=False))):
            rows.append(aot.compile_kernel(_matmul, name, sig, {**flags, "EVEN_K": True, **tiles}, arch,
                                           cfg["num_warps"], cfg["num_stages"]))
    rows.append(aot.compile_kernel(_sum_slices, "linear_splitk_sum", {"P": "*fp32", "C": "*bf16", "n": "i32",
                                                                      "S": "i32"}, {"BLOCK": SUM_BLOCK}, arch, 4, 1))
    rows.append(aot.compile_kernel(_rowblock_sum, "linear_bwd_rowblock_sum",
                                   {"T": "*bf16", "P": "*fp32", "M": "i32", "N": "i32", "stride_t": "i32",
                                    "rows_per_prog": "i32"}, {"BLOCK_M": COLSUM_BLOCK_M, "BLOCK_N": COLSUM_BLOCK_N},
                                   arch, COLSUM_WARPS, COLSUM_STAGES))
    rows.append(colsum_aot(arch))
    return rows


TEST_CONFIG = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16}   # CPU tests: several blocks per test shape
IMPL = KernelImpl(fn=linear, backend="triton", params=PARAMS, presets=PRESETS, tuning=TUNING, aot=_aot,
                  picked=TUNER.picked, test_config=TEST_CONFIG, traced=traced,
                  doc="grouped-order strided matmul, bias/GELU epilogue; bwd = two more matmuls + column sums")
