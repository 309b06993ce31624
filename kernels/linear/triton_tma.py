"""Hopper+ matmul in Triton: TMA tensor descriptors built on the host, a persistent grid (one program per
SM) walking the output tiles in grouped order, optional warp specialization of the K loop, and split-K
slices as extra tiles of the same walk (fp32 partials into an (S, M, N) workspace).

Descriptors need 16-byte aligned rows and a unit-stride last dimension: `usable()` says whether the
operands qualify; the caller takes the pointer kernel when they do not. A transposed operand (dY^T in
dW = dY^T X, W in the forward's X W^T) is described in its stored layout and transposed in registers, so
no copy is made."""
import torch
import triton
import triton.language as tl

from kernels import triton_aot as aot
from kernels.gelu.triton import gelu_tanh

try:   # triton >= 3.4 (the GPU image has 3.6, CI 3.9)
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:   # pragma: no cover - older triton: the variant reports itself unavailable
    TensorDescriptor = None

INTERP = tl.constexpr(aot.interpreting())


@triton.jit
def _grouped(t, n_m, n_n, GROUP_M: tl.constexpr):
    """Tile t of an n_m x n_n grid in grouped order: GROUP_M row-tiles sweep the columns together."""
    per_group = GROUP_M * n_n
    first_m = (t // per_group) * GROUP_M
    size_m = tl.minimum(n_m - first_m, GROUP_M)
    return first_m + (t % per_group) % size_m, (t % per_group) // size_m


@triton.jit
def _store(desc, off_m, off_n, s, val, SPLIT: tl.constexpr, SUBTILE: tl.constexpr):
    """Store an (M, N) tile through desc (at [s, off_m, off_n] of an (S, M, N) workspace with SPLIT);
    SUBTILE stores it as two (M, N/2) halves: half the shared-memory staging (a 128x256 tile's bf16 output
    is 64 KB, its fp32 partial 128 KB, beside the operand stages' ~150 KB)."""
    BM: tl.constexpr = val.shape[0]
    BN: tl.constexpr = val.shape[1]
    if SUBTILE:
        lo, hi = tl.split(tl.permute(tl.reshape(val, (BM, 2, BN // 2)), (0, 2, 1)))
        if SPLIT:
            desc.store([s, off_m, off_n], tl.reshape(lo, (1, BM, BN // 2)))
            desc.store([s, off_m, off_n + BN // 2], tl.reshape(hi, (1, BM, BN // 2)))
        else:
            desc.store([off_m, off_n], lo)
            desc.store([off_m, off_n + BN // 2], hi)
    else:
        if SPLIT:
            desc.store([s, off_m, off_n], tl.reshape(val, (1, BM, BN)))
        else:
            desc.store([off_m, off_n], val)


@triton.jit
def _matmul_tma(A, B, C, Bias, Pre, M, N, K, K_SPLIT, NUM_PROGS,
                TRANS_A: tl.constexpr, TRANS_B: tl.constexpr, HAS_BIAS: tl.constexpr, GELU: tl.constexpr,
                STORE_PRE: tl.constexpr, SPLIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, WARP_SPEC: tl.constexpr, SUBTILE: tl.constexpr):
    """C = op(A) @ op(B) (+ bias, GELU; Pre keeps the pre-activation). A is described as (M, K), or
    (K, M) with TRANS_A; B as (K, N), or (N, K) with TRANS_B. SPLIT: C is an (S, M, N) fp32 workspace
    and tile t covers K rows [s*K_SPLIT, (s+1)*K_SPLIT) of slice s = t // (tiles per slice)."""
    n_m = tl.cdiv(M, BLOCK_M)
    n_n = tl.cdiv(N, BLOCK_N)
    per_slice = n_m * n_n
    n_tiles = per_slice * tl.cdiv(K, K_SPLIT)
    k_tiles = tl.cdiv(K_SPLIT, BLOCK_K)   # the last slice may run past K: TMA reads zeros there
    for t in tl.range(tl.program_id(0), n_tiles, NUM_PROGS, flatten=True, warp_specialize=WARP_SPEC):
        s = t // per_slice
        pid_m, pid_n = _grouped(t % per_slice, n_m, n_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for kk in range(k_tiles):
            k = s * K_SPLIT + kk * BLOCK_K
            if TRANS_A:
                a = A.load([k, off_m]).T
            else:
                a = A.load([off_m, k])
            if TRANS_B:
                b = B.load([off_n, k]).T
            else:
                b = B.load([k, off_n])
            if INTERP:   # the CPU interpreter's bf16 dot is wrong (see triton.py)
                a, b = a.to(tl.float32), b.to(tl.float32)
            acc = tl.dot(a, b, acc)
        if SPLIT:
            _store(C, off_m, off_n, s, acc, True, SUBTILE)
        else:
            if HAS_BIAS:
                rn = off_n + tl.arange(0, BLOCK_N)
                acc += tl.load(Bias + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
            if STORE_PRE:
                _store(Pre, off_m, off_n, s, acc.to(Pre.dtype), False, SUBTILE)
            if GELU:
                acc = gelu_tanh(acc)
            _store(C, off_m, off_n, s, acc.to(C.dtype), False, SUBTILE)


def _aligned(t) -> bool:
    e = t.element_size()
    return t.data_ptr() % 16 == 0 and all((st * e) % 16 == 0 for st, n in zip(t.stride(), t.shape) if st != 1)


def layout(t):
    """'n' when rows are unit-stride in the last dim, 't' when the first dim is (a transposed view), else None."""
    if t.stride(-1) == 1:
        return "n"
    if t.stride(0) == 1:
        return "t"
    return None


def usable(a, b, out_dtype) -> str | None:
    """None when the TMA kernel can take a (M, K) @ b (K, N) into out_dtype, else why not."""
    if TensorDescriptor is None:
        return "this triton has no triton.tools.tensor_descriptor"
    if layout(a) is None or layout(b) is None:
        return "an operand with no unit stride"
    if not (_aligned(a) and _aligned(b)):
        return "rows not 16-byte aligned"
    if (b.shape[1] * torch.finfo(out_dtype).bits // 8) % 16:
        return "output rows not 16-byte aligned"
    return None


def _desc(t, block_rows, block_cols):
    """A descriptor over t (R, C) as stored: t itself, or the (C, R) tensor behind a transposed view."""
    if layout(t) == "n":
        return TensorDescriptor(t, list(t.shape), list(t.stride()), [block_rows, block_cols])
    return TensorDescriptor(t, [t.shape[1], t.shape[0]], [t.stride(1), 1], [block_cols, block_rows])


def launch(a, b, out, bias, pre, k_split, cfg, sms, gelu):
    """out (M, N), or (S, M, N) fp32 partials, = a (M, K) @ b (K, N) on a persistent grid."""
    M, K = a.shape
    N = b.shape[1]
    BM, BN, BK = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    split = out.dim() == 3
    SN = BN // 2 if cfg["SUBTILE"] else BN   # the stored block's width
    c = TensorDescriptor(out, list(out.shape), list(out.stride()), [1, BM, SN] if split else [BM, SN])
    p = TensorDescriptor(pre, list(pre.shape), list(pre.stride()), [BM, SN]) if pre is not None else c
    tiles = aot.cdiv(M, BM) * aot.cdiv(N, BN) * aot.cdiv(K, k_split)
    progs = min(sms, tiles)
    _matmul_tma[(progs,)](_desc(a, BM, BK), _desc(b, BK, BN), c, bias if bias is not None else out, p,
                          M, N, K, k_split, progs,
                          TRANS_A=layout(a) == "t", TRANS_B=layout(b) == "t", HAS_BIAS=bias is not None,
                          GELU=gelu, STORE_PRE=pre is not None, SPLIT=split, BLOCK_M=BM, BLOCK_N=BN,
                          BLOCK_K=BK, GROUP_M=cfg["GROUP_M"], WARP_SPEC=cfg["WARP_SPEC"], SUBTILE=cfg["SUBTILE"],
                          num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])


def aot_rows(cfg, arch, tiles):
    """Compile the kernel's four uses (forward with bias, with bias + GELU, dX, split-K dW) for `arch`."""
    BM, BN, BK = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    SN = BN // 2 if cfg["SUBTILE"] else BN

    def desc(dt, shape):
        return f"tensordesc<{dt}[{', '.join(map(str, shape))}]>"
    ints = {k: "i32" for k in ("M", "N", "K", "K_SPLIT", "NUM_PROGS")}
    uses = (  # name, A block, B block, C, flags
        ("linear_tma_fwd_bias", [BM, BK], [BN, BK], desc("bf16", [BM, SN]), dict(TRANS_B=True, HAS_BIAS=True)),
        ("linear_tma_fwd_bias_gelu", [BM, BK], [BN, BK], desc("bf16", [BM, SN]),
         dict(TRANS_B=True, HAS_BIAS=True, GELU=True, STORE_PRE=True)),
        ("linear_tma_bwd_dx", [BM, BK], [BK, BN], desc("bf16", [BM, SN]), {}),
        ("linear_tma_bwd_dw_splitk", [BK, BM], [BK, BN], desc("fp32", [1, BM, SN]), dict(TRANS_A=True, SPLIT=True)),
    )
    rows = []
    for name, ab, bb, c, flags in uses:
        sig = {"A": desc("bf16", ab), "B": desc("bf16", bb), "C": c, "Bias": "*bf16",
               "Pre": desc("bf16", [BM, SN]) if flags.get("STORE_PRE") else c, **ints}
        const = {"TRANS_A": False, "TRANS_B": False, "HAS_BIAS": False, "GELU": False, "STORE_PRE": False,
                 "SPLIT": False, **flags, **tiles, "WARP_SPEC": cfg["WARP_SPEC"], "SUBTILE": cfg["SUBTILE"]}
        rows.append(aot.compile_kernel(_matmul_tma, name, sig, const, arch, cfg["num_warps"], cfg["num_stages"]))
    return rows
