"""Hopper+ matmul in Triton: TMA tensor descriptors built on the host, a persistent grid (one program per
SM) walking the output tiles in grouped order, optional warp specialization of the K loop, and split-K
slices as extra tiles of the same walk (fp32 partials into an (S, M, N) workspace). `_matmul_streamk`
runs whole waves of tiles and splits the (tile, K step) work of the last one or two evenly over the
programs (stream-K: for the dW matmuls, whose few output tiles leave SMs idle, and any partial last wave).
`_matmul_tma` can sum the rows of A on the way (ROW_SUMS, FUSE_DB: db = the column sums of dY rides along
the dW = dY^T X matmul, whose A tiles are dY^T); stream-K cannot (its dW came out wrong with them on a GPU).

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
def _k_steps(A, B, off_m, off_n, k_first, steps, acc, asum, TRANS_A: tl.constexpr, TRANS_B: tl.constexpr,
             ROW_SUMS: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc += A[off_m tile, K from k_first, `steps` blocks] @ B[..., off_n tile]; with ROW_SUMS also asum += the
    rows of that A block summed over K in fp32 (from the tile already loaded for the mma: no extra traffic)."""
    for kk in range(steps):
        k = k_first + kk * BLOCK_K
        if TRANS_A:
            a_kt = A.load([k, off_m])
            a = a_kt.T
            if ROW_SUMS:
                asum += tl.sum(a_kt.to(tl.float32), axis=0)
        else:
            a = A.load([off_m, k])
            if ROW_SUMS:
                asum += tl.sum(a.to(tl.float32), axis=1)
        if TRANS_B:
            b = B.load([off_n, k]).T
        else:
            b = B.load([k, off_n])
        if INTERP:   # the CPU interpreter's bf16 dot is wrong (see triton.py)
            a, b = a.to(tl.float32), b.to(tl.float32)
        acc = tl.dot(a, b, acc)
    return acc, asum


@triton.jit
def _epilogue(C, Bias, Pre, acc, off_m, off_n, N, HAS_BIAS: tl.constexpr, GELU: tl.constexpr,
              STORE_PRE: tl.constexpr, SUBTILE: tl.constexpr):
    """Store a finished fp32 tile: + bias, Pre keeps the pre-activation, then GELU, in C's dtype."""
    if HAS_BIAS:
        rn = off_n + tl.arange(0, acc.shape[1])
        acc += tl.load(Bias + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    if STORE_PRE:
        _store(Pre, off_m, off_n, 0, acc.to(Pre.dtype), False, SUBTILE)
    if GELU:
        acc = gelu_tanh(acc)
    _store(C, off_m, off_n, 0, acc.to(C.dtype), False, SUBTILE)


@triton.jit
def _matmul_tma(A, B, C, Bias, Pre, DB, M, N, K, K_SPLIT, NUM_PROGS,
                TRANS_A: tl.constexpr, TRANS_B: tl.constexpr, HAS_BIAS: tl.constexpr, GELU: tl.constexpr,
                STORE_PRE: tl.constexpr, SPLIT: tl.constexpr, ROW_SUMS: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, WARP_SPEC: tl.constexpr,
                SUBTILE: tl.constexpr):
    """C = op(A) @ op(B) (+ bias, GELU; Pre keeps the pre-activation). A is described as (M, K), or
    (K, M) with TRANS_A; B as (K, N), or (N, K) with TRANS_B. SPLIT: C is an (S, M, N) fp32 workspace
    and tile t covers K rows [s*K_SPLIT, (s+1)*K_SPLIT) of slice s = t // (tiles per slice).
    ROW_SUMS: DB[s, m] = sum over the slice's K of op(A)[m, :], written by the first column of tiles
    (DB is (S, M) fp32 with SPLIT, else (M,) in its own dtype)."""
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
        asum = tl.zeros((BLOCK_M,), dtype=tl.float32)
        acc, asum = _k_steps(A, B, off_m, off_n, s * K_SPLIT, k_tiles, acc, asum, TRANS_A, TRANS_B, ROW_SUMS,
                             BLOCK_K)
        if ROW_SUMS:
            if pid_n == 0:
                rm = off_m + tl.arange(0, BLOCK_M)
                tl.store(DB + s * M + rm, asum.to(DB.dtype.element_ty), mask=rm < M)
        if SPLIT:
            _store(C, off_m, off_n, s, acc, True, SUBTILE)
        else:
            _epilogue(C, Bias, Pre, acc, off_m, off_n, N, HAS_BIAS, GELU, STORE_PRE, SUBTILE)


@triton.jit
def _matmul_streamk(A, B, C, Bias, Pre, Part, Flags, M, N, K, DP_TILES, NUM_PROGS, MAX_POLLS,
                    TRANS_A: tl.constexpr, TRANS_B: tl.constexpr, HAS_BIAS: tl.constexpr, GELU: tl.constexpr,
                    STORE_PRE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, SUBTILE: tl.constexpr):
    """C = op(A) @ op(B) (+ bias, GELU, Pre as in _matmul_tma) as data-parallel waves of whole tiles (the first
    DP_TILES in grouped order, round robin as in _matmul_tma), then stream-K over the rest: its
    (tile, K step) work split evenly over the NUM_PROGS programs, program p taking steps [p W / P, (p+1) W / P)
    of those W, tile after tile. A tile whose K range spans programs is finished by the one holding its last
    K step (its owner): every other program leaves its fp32 partial in its own slot of Part (P, BM, BN) and
    raises Flags[p]; the owner waits for those flags and adds the partials in program order, so the result is
    deterministic. A program holds at most one partial (its last tile) and does that one first, so owners
    never wait long; only lower programs are waited for, so the interpreter (programs in order) runs it too.
    A flag that never comes (after MAX_POLLS polls) turns the owner's tile into NaN rather than hanging.
    No row sums here: with them its dW came out wrong on an H200 (2026-12-01), so the bias gradient of a
    stream-K dW is the standalone column sum's."""
    pid = tl.program_id(0)
    n_m = tl.cdiv(M, BLOCK_M)
    n_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    rm_l = tl.arange(0, BLOCK_M)
    for t in tl.range(pid, DP_TILES, NUM_PROGS, flatten=True):
        pid_m, pid_n = _grouped(t, n_m, n_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        asum = tl.zeros((BLOCK_M,), dtype=tl.float32)
        acc, asum = _k_steps(A, B, off_m, off_n, 0, k_tiles, acc, asum, TRANS_A, TRANS_B, False, BLOCK_K)
        _epilogue(C, Bias, Pre, acc, off_m, off_n, N, HAS_BIAS, GELU, STORE_PRE, SUBTILE)

    work = (n_m * n_n - DP_TILES).to(tl.int64) * k_tiles   # stream-K tiles are u = t - DP_TILES
    start = pid * work // NUM_PROGS
    end = (pid + 1) * work // NUM_PROGS
    first_u = start // k_tiles
    last_u = (end - 1) // k_tiles
    rn_l = tl.arange(0, BLOCK_N)
    slot = rm_l[:, None] * BLOCK_N + rn_l[None, :]
    for j in range(0, (last_u - first_u + 1).to(tl.int32)):
        u = last_u - j   # the last tile (perhaps partial) first
        k_lo = (tl.maximum(start, u * k_tiles) - u * k_tiles).to(tl.int32)
        k_hi = (tl.minimum(end, (u + 1) * k_tiles) - u * k_tiles).to(tl.int32)
        pid_m, pid_n = _grouped(DP_TILES + u.to(tl.int32), n_m, n_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        asum = tl.zeros((BLOCK_M,), dtype=tl.float32)
        acc, asum = _k_steps(A, B, off_m, off_n, k_lo * BLOCK_K, k_hi - k_lo, acc, asum, TRANS_A, TRANS_B, False,
                             BLOCK_K)
        if k_hi < k_tiles:   # not the tile's end: a partial for its owner
            tl.store(Part + pid * (BLOCK_M * BLOCK_N) + slot, acc)
            tl.debug_barrier()   # every thread's partial stored before the flag goes up
            tl.atomic_xchg(Flags + pid, 1, sem="release")
        else:
            # programs q0 .. pid-1 hold the tile's earlier K steps (q0 = the one holding step 0)
            q0 = ((u * k_tiles + 1) * NUM_PROGS - 1) // work
            for q in range(q0.to(tl.int32), pid):
                polls = 0
                while (tl.atomic_cas(Flags + q, 1, 1, sem="acquire") != 1) & (polls < MAX_POLLS):
                    polls += 1
                late = polls >= MAX_POLLS
                part = tl.load(Part + q * (BLOCK_M * BLOCK_N) + slot, cache_modifier=".cg")
                acc += tl.where(late, float("nan"), part)
            _epilogue(C, Bias, Pre, acc, off_m, off_n, N, HAS_BIAS, GELU, STORE_PRE, SUBTILE)


# Summing A's rows (FUSE_DB) reads its tiles outside the mma too, and Triton's pipeliner on sm_90 then keeps one A
# buffer fewer (A fetched one K step ahead instead of two). One more stage would give A its depth back, but with
# triton 3.6 on an H200 the 128x256x64 dW kernel then asked for 249,912 B of shared memory (limit 232,448;
# gemm_triton_op, 2026-12-01), so every kernel compiles with the config's num_stages.


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


def launch(a, b, out, bias, pre, k_split, cfg, sms, gelu, row_sums=None):
    """out (M, N), or (S, M, N) fp32 partials, = a (M, K) @ b (K, N) on a persistent grid; row_sums (M,),
    or (S, M) fp32 partials, gets the rows of a summed (over each slice's K)."""
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
                          row_sums if row_sums is not None else out, M, N, K, k_split, progs,
                          TRANS_A=layout(a) == "t", TRANS_B=layout(b) == "t", HAS_BIAS=bias is not None,
                          GELU=gelu, STORE_PRE=pre is not None, SPLIT=split, ROW_SUMS=row_sums is not None,
                          BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, GROUP_M=cfg["GROUP_M"], WARP_SPEC=cfg["WARP_SPEC"],
                          SUBTILE=cfg["SUBTILE"], num_warps=cfg["num_warps"],
                          num_stages=cfg["num_stages"])


# polls of a missing partial's flag before its owner gives up (NaN tile): ~1 s on a GPU; the interpreter
# runs programs in order, so a flag it has to poll for at all is a bug
MAX_POLLS_GPU, MAX_POLLS_INTERP = 1 << 20, 4


def dp_tiles(tiles: int, progs: int) -> int:
    """Tiles the stream-K kernel runs whole (data-parallel): every full wave but the last, so stream-K evens
    out one to two waves' worth (the partial last wave's idle SMs are what it recovers) and the rest keeps the
    cross-tile pipelining of the flattened persistent loop."""
    return max(0, tiles // progs - 1) * progs


def launch_streamk(a, b, out, bias, pre, cfg, sms, gelu):
    """out (M, N) = a (M, K) @ b (K, N) (+ bias, GELU, pre as in launch), data-parallel waves then stream-K
    over min(sms, K steps) programs. Workspace: one fp32 (BM, BN) partial per
    program (17 MB at 128x256 on 132 SMs, mostly L2) and fresh zeroed flags (one small memset per call), so no
    state carries from one call to the next."""
    M, K = a.shape
    N = b.shape[1]
    BM, BN, BK = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    SN = BN // 2 if cfg["SUBTILE"] else BN
    tiles = aot.cdiv(M, BM) * aot.cdiv(N, BN)
    progs = min(sms, tiles * aot.cdiv(K, BK))   # every program gets at least one K step: every partial's flag rises
    part = torch.empty(progs, BM, BN, dtype=torch.float32, device=out.device)   # read only behind a raised flag
    flags = torch.zeros(progs, dtype=torch.int32, device=out.device)
    c = TensorDescriptor(out, list(out.shape), list(out.stride()), [BM, SN])
    p = TensorDescriptor(pre, list(pre.shape), list(pre.stride()), [BM, SN]) if pre is not None else c
    _matmul_streamk[(progs,)](_desc(a, BM, BK), _desc(b, BK, BN), c, bias if bias is not None else out, p,
                              part, flags, M, N, K,
                              dp_tiles(tiles, progs), progs, MAX_POLLS_INTERP if aot.interpreting() else MAX_POLLS_GPU,
                              TRANS_A=layout(a) == "t", TRANS_B=layout(b) == "t", HAS_BIAS=bias is not None,
                              GELU=gelu, STORE_PRE=pre is not None, BLOCK_M=BM, BLOCK_N=BN, BLOCK_K=BK, GROUP_M=cfg["GROUP_M"], SUBTILE=cfg["SUBTILE"],
                              num_warps=cfg["num_warps"],
                              num_stages=cfg["num_stages"])


def aot_rows(cfg_of, arch):
    """Compile the kernels' uses for `arch`: the forward with bias, with bias + GELU (part 1), dX (part 2),
    and dW (part 3) split-K and with the bias gradient's row sums; stream-K's forward with bias + GELU and dW
    with row sums. cfg_of(part) is the full tile config that part runs with."""
    def desc(dt, shape):
        return f"tensordesc<{dt}[{', '.join(map(str, shape))}]>"
    ints = {k: "i32" for k in ("M", "N", "K", "K_SPLIT", "NUM_PROGS")}
    uses = (  # name, part, A block, B block, C (as [dtype, split]), flags
        ("linear_tma_fwd_bias", 1, "mk", "nk", dict(TRANS_B=True, HAS_BIAS=True)),
        ("linear_tma_fwd_bias_gelu", 1, "mk", "nk", dict(TRANS_B=True, HAS_BIAS=True, GELU=True, STORE_PRE=True)),
        ("linear_tma_bwd_dx", 2, "mk", "kn", {}),
        ("linear_tma_bwd_dw_splitk", 3, "km", "kn", dict(TRANS_A=True, SPLIT=True)),
        # FUSE_DB's dW: split, with the row sums' fp32 partials (GPT-2's dW is split)
        ("linear_tma_bwd_dw_splitk_db", 3, "km", "kn", dict(TRANS_A=True, SPLIT=True, ROW_SUMS=True)),
    )
    rows = []
    for name, part, a_dims, b_dims, flags in uses:
        cfg = cfg_of(part)
        if flags.get("ROW_SUMS") and (cfg["WARP_SPEC"] or not cfg["FUSE_DB"]):   # the standalone column sum runs
            continue
        tiles = {k: cfg[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")}
        dims = {"m": cfg["BLOCK_M"], "n": cfg["BLOCK_N"], "k": cfg["BLOCK_K"]}
        SN = cfg["BLOCK_N"] // 2 if cfg["SUBTILE"] else cfg["BLOCK_N"]
        c = desc("fp32", [1, cfg["BLOCK_M"], SN]) if flags.get("SPLIT") else desc("bf16", [cfg["BLOCK_M"], SN])
        sig = {"A": desc("bf16", [dims[d] for d in a_dims]), "B": desc("bf16", [dims[d] for d in b_dims]), "C": c,
               "Bias": "*bf16", "Pre": desc("bf16", [cfg["BLOCK_M"], SN]) if flags.get("STORE_PRE") else c,
               "DB": "*fp32" if flags.get("SPLIT") else "*bf16", **ints}
        const = {"TRANS_A": False, "TRANS_B": False, "HAS_BIAS": False, "GELU": False, "STORE_PRE": False,
                 "SPLIT": False, "ROW_SUMS": False, **flags, **tiles, "WARP_SPEC": cfg["WARP_SPEC"],
                 "SUBTILE": cfg["SUBTILE"]}
        rows.append(aot.compile_kernel(_matmul_tma, name, sig, const, arch, cfg["num_warps"],
                                       cfg["num_stages"]))
    for name, part, a_dims, b_dims, flags in (
            ("linear_tma_fwd_bias_gelu_streamk", 1, "mk", "nk", dict(TRANS_B=True, HAS_BIAS=True, GELU=True,
                                                                     STORE_PRE=True)),
            ("linear_tma_bwd_dw_streamk", 3, "km", "kn", dict(TRANS_A=True))):
        cfg = cfg_of(part)
        dims = {"m": cfg["BLOCK_M"], "n": cfg["BLOCK_N"], "k": cfg["BLOCK_K"]}
        c = desc("bf16", [cfg["BLOCK_M"], cfg["BLOCK_N"] // 2 if cfg["SUBTILE"] else cfg["BLOCK_N"]])
        sig = {"A": desc("bf16", [dims[d] for d in a_dims]), "B": desc("bf16", [dims[d] for d in b_dims]), "C": c,
               "Bias": "*bf16", "Pre": c, "Part": "*fp32", "Flags": "*i32",
               **{k: "i32" for k in ("M", "N", "K", "DP_TILES", "NUM_PROGS", "MAX_POLLS")}}
        const = {"TRANS_A": False, "TRANS_B": False, "HAS_BIAS": False, "GELU": False, "STORE_PRE": False,
                 **flags, **{k: cfg[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")},
                 "SUBTILE": cfg["SUBTILE"]}
        rows.append(aot.compile_kernel(_matmul_streamk, name, sig, const, arch, cfg["num_warps"],
                                       cfg["num_stages"]))
    return rows
