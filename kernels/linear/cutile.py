"""Linear (x @ W.T + b, optional tanh-GELU) in cuTile: one tiled matmul kernel with the bias and
activation in the epilogue, used three ways: y = x W^T (fwd), dX = dY W, dW = dY^T X (bwd), where a
transposed operand is a load with order=(1, 0) rather than a copy. dB is a column sum of dY."""
import torch

import cuda.tile as ct

from kernels import cutile_aot as aot
from kernels import poison
from kernels.linear import library_ops, parts
from kernels.linear.splitk import slices
from kernels.registry import KernelImpl, TileParam, Unsupported

ConstInt = ct.Constant[int]
ConstBool = ct.Constant[bool]
ZERO = ct.PaddingMode.ZERO
FIX_ROWS = 16   # rows per step of the split-K fixup's sum


def _k_loop(A, B, i, j, k0, k1, TRANS_A, TRANS_B, TM, TN, TK, LAT, ROW_SUMS):
    """acc = sum over K tiles [k0, k1) of op(A) tile (i, k) @ op(B) tile (k, j), and (ROW_SUMS) the op(A)
    tiles' row sums (TM, 1), both fp32."""
    acc = ct.zeros((TM, TN), dtype=ct.float32)
    rows = ct.zeros((TM, 1), dtype=ct.float32)
    for kk in range(k0, k1):
        if TRANS_A:
            a = ct.load(A, index=(i, kk), shape=(TM, TK), order=(1, 0), padding_mode=ZERO, latency=LAT)
        else:
            a = ct.load(A, index=(i, kk), shape=(TM, TK), padding_mode=ZERO, latency=LAT)
        if TRANS_B:
            b = ct.load(B, index=(kk, j), shape=(TK, TN), order=(1, 0), padding_mode=ZERO, latency=LAT)
        else:
            b = ct.load(B, index=(kk, j), shape=(TK, TN), padding_mode=ZERO, latency=LAT)
        acc = ct.mma(a, b, acc)
        if ROW_SUMS:
            rows = rows + ct.sum(a.astype(ct.float32), axis=1, keepdims=True)
    return acc, rows


def _tile(A, B, Bias, C, Z, P, DB, DBP, Cnt, t, KT_PER, TRANS_A, TRANS_B, HAS_BIAS, GELU, TM, TN, TK, GROUP_M,
          LAT, SPLIT, HAS_DB, FIXUP):
    """Output tile t: C[M, N] = op(A) @ op(B) (+ Bias[N]) (-> gelu; Z keeps the pre-activation). op(A) is
    A (M, K) or A^T for A (K, M); op(B) is B (K, N) or B^T for B (N, K). Tiles are numbered in groups
    GROUP_M tall so neighbours share B tiles in L2. HAS_DB (dW = dY^T X, where op(A) = dY^T): DB[M] = the
    row sums of op(A), dY's column sums, the bias gradient, taken by the first column of tiles.

    SPLIT > 1: tile t belongs to K slice s = t // (tiles per slice) and sums only K tiles
    [s*KT_PER, (s+1)*KT_PER) into the fp32 partials P[s] (and DBP[s]), no epilogue. Without FIXUP a second
    kernel (_sum_slices) sums them; with FIXUP the slice that finishes a tile last (a counter per tile in
    Cnt, zero between calls) sums the others' partials into C itself and resets the counter."""
    M = C.shape[0]
    N = C.shape[1]
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
    k0 = s * KT_PER
    k1 = min(nk, k0 + KT_PER)
    if HAS_DB:
        if j == 0:     # a loop of its own: the other tiles' loop stays the plain pipelined one
            acc, db = _k_loop(A, B, i, j, k0, k1, TRANS_A, TRANS_B, TM, TN, TK, LAT, True)
        else:
            acc, db = _k_loop(A, B, i, j, k0, k1, TRANS_A, TRANS_B, TM, TN, TK, LAT, False)
    else:
        acc, db = _k_loop(A, B, i, j, k0, k1, TRANS_A, TRANS_B, TM, TN, TK, LAT, False)
    if SPLIT > 1:
        # FIXUP: the counter's atomic is acq_rel, which cuTile orders after the block's stores (tileiras 13.4
        # waits for the TMA stores to complete before it: SASS DEPBAR after each UTMASTG); plain stores here
        # spilled 488 B/thread at 128x128
        ct.store(P, index=(s, i, j), tile=ct.reshape(acc, (1, TM, TN)))
        if HAS_DB:
            if j == 0:
                ct.store(DBP, index=(s, i), tile=ct.reshape(db, (1, TM)))
        if FIXUP:
            if ct.atomic_add(Cnt, u, 1) == SPLIT - 1:
                # every partial re-read, its own too, FIX_ROWS rows at a time: the accumulator is dead by
                # now, so the sum holds a few registers rather than a second tile
                for r in range(TM // FIX_ROWS):
                    part = ct.zeros((FIX_ROWS, TN), dtype=ct.float32)
                    for s2 in range(SPLIT):
                        part = part + ct.reshape(ct.load(P, index=(s2, i * (TM // FIX_ROWS) + r, j),
                                                         shape=(1, FIX_ROWS, TN), allow_tma=False), (FIX_ROWS, TN))
                    ct.store(C, index=(i * (TM // FIX_ROWS) + r, j), tile=part.astype(C.dtype))
                if HAS_DB:
                    if j == 0:
                        dsum = ct.zeros((1, TM), dtype=ct.float32)
                        for s2 in range(SPLIT):
                            dsum = dsum + ct.load(DBP, index=(s2, i), shape=(1, TM), allow_tma=False)
                        ct.store(DB, index=(i,), tile=ct.reshape(dsum, (TM,)).astype(DB.dtype))
                ct.atomic_xchg(Cnt, u, 0)
    else:
        if HAS_BIAS:
            acc = acc + ct.load(Bias, index=(j,), shape=(TN,), padding_mode=ZERO).astype(ct.float32)[None, :]
        if GELU:
            ct.store(Z, index=(i, j), tile=acc.astype(Z.dtype))
            acc = 0.5 * acc * (1.0 + ct.tanh(0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)))
        ct.store(C, index=(i, j), tile=acc.astype(C.dtype))
        if HAS_DB:
            if j == 0:
                ct.store(DB, index=(i,), tile=ct.reshape(db, (TM,)).astype(DB.dtype))


@ct.kernel
def _matmul(A, B, Bias, C, Z, P, DB, DBP, Cnt, KT_PER: int, TRANS_A: ConstBool, TRANS_B: ConstBool,
            HAS_BIAS: ConstBool, GELU: ConstBool, TM: ConstInt, TN: ConstInt, TK: ConstInt, GROUP_M: ConstInt,
            LAT: ConstInt, SPLIT: ConstInt, PERSISTENT: ConstBool, HAS_DB: ConstBool, FIXUP: ConstBool):
    """One output tile per block, or (PERSISTENT) a grid of about one block per SM slot striding over
    all SPLIT x tiles (see _tile)."""
    if PERSISTENT:
        total = ct.cdiv(C.shape[0], TM) * ct.cdiv(C.shape[1], TN) * SPLIT
        for t in range(ct.bid(0), total, ct.num_blocks(0)):
            _tile(A, B, Bias, C, Z, P, DB, DBP, Cnt, t, KT_PER, TRANS_A, TRANS_B, HAS_BIAS, GELU, TM, TN, TK,
                  GROUP_M, LAT, SPLIT, HAS_DB, FIXUP)
    else:
        _tile(A, B, Bias, C, Z, P, DB, DBP, Cnt, ct.bid(0), KT_PER, TRANS_A, TRANS_B, HAS_BIAS, GELU, TM, TN, TK,
              GROUP_M, LAT, SPLIT, HAS_DB, FIXUP)


@ct.kernel
def _sum_slices(P, C, DBP, DB, TM: ConstInt, TN: ConstInt, HAS_DB: ConstBool):
    """C = sum over s of P[s] (fp32 partials of a split-K matmul), in C's dtype, in one pass; HAS_DB: and
    DB = the sum over s of DBP[s] (the first column of blocks)."""
    i = ct.bid(0) // ct.cdiv(C.shape[1], TN)
    j = ct.bid(0) % ct.cdiv(C.shape[1], TN)
    acc = ct.zeros((TM, TN), dtype=ct.float32)
    for s in range(P.shape[0]):
        acc = acc + ct.reshape(ct.load(P, index=(s, i, j), shape=(1, TM, TN), padding_mode=ZERO), (TM, TN))
    ct.store(C, index=(i, j), tile=acc.astype(C.dtype))
    if HAS_DB:
        if j == 0:
            db = ct.zeros((1, TM), dtype=ct.float32)
            for s in range(P.shape[0]):
                db = db + ct.load(DBP, index=(s, i), shape=(1, TM), padding_mode=ZERO)
            ct.store(DB, index=(i,), tile=ct.reshape(db, (TM,)).astype(DB.dtype))


SUM_TILE = (32, 128)


PARAMS = (
    TileParam("TILE_M", int, None, (32, 64, 128, 256)),
    TileParam("TILE_N", int, None, (32, 64, 128, 256)),
    TileParam("TILE_K", int, None, (16, 32, 64, 128)),
    TileParam("GROUP_M", int, None, (1, 4, 8, 16, 32), "block rows per L2 group"),
    TileParam("LATENCY", int, None, tuple(range(1, 11)), "latency hint for the A/B loads"),
    TileParam("occupancy", int, None, (1, 2, 4)),
    TileParam("num_ctas", int, None, (1, 2, 4)),
    TileParam("num_worker_warps", int, None, (4, 8),
              "math warps of the warp-specialized kernel (None: the compiler's 4); 8 = two warpgroups sharing "
              "the accumulator, so a 128x256 or 256x128 fp32 tile fits in registers"),
    TileParam("PERSISTENT", bool, None, doc="about one block per SM slot (SMs x occupancy) striding over the tiles"),
    TileParam("SPLIT_K", int, None, (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16),
              "K slices when no epilogue runs (the dW matmul); 0: kernels.linear.splitk's model"),
    TileParam("SPLIT_FIXUP", bool, False, doc="split K: the tile's last slice sums the partials (a counter per "
              "tile) rather than a second kernel"),
    TileParam("DB_FUSED", bool, False, doc="bias gradient summed by the dW kernel (dY^T's row sums) rather than "
              "a column-sum pass over dY (with GELU the GELU backward sums it either way)"),
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
# Hopper variants the tuning sweeps name (tuning/gemm.yaml, tuning/gemm_cutile.yaml), not presets; each becomes a
# default only on a measured win there.
# None may spill (tests/test_cutile_linear.py): with tileiras 13.4 for sm_90, 128x256 on the default 4 math
# warps took 255 registers + 1.8 KB/thread of stack (ran 0.07-0.3x cuBLAS), and the persistent loop at
# occupancy 2 spilled 152 B of its accumulator per tile; 8 math warps (168 registers) and occupancy 1 do not.
_H = {**PRESETS["hopper"], "DX_CONFIG": parts.SAME, "DW_CONFIG": parts.SAME}
TUNING = {
    "tile_128x128": _H,     # today's `hopper` by a name a part can keep (DX_CONFIG / DW_CONFIG) if `hopper` moves
    "persistent_128x128": {**_H, "PERSISTENT": True, "occupancy": 1},
    "persistent_128x256": {**_H, "TILE_N": 256, "occupancy": 1, "num_worker_warps": 8, "PERSISTENT": True},
    "tile_128x256": {**_H, "TILE_N": 256, "occupancy": 1, "num_worker_warps": 8},
    "tile_256x128": {**_H, "TILE_M": 256, "occupancy": 1, "num_worker_warps": 8},
    # a tile per pair of SMs (a cluster: num_ctas=2) sharing operand loads by TMA multicast: each SM 128x128
    # at occupancy 2 as `hopper`, or 128x256 on 8 math warps
    "cluster_256x128": {**_H, "TILE_M": 256, "num_ctas": 2},
    "cluster_256x256": {**_H, "TILE_M": 256, "TILE_N": 256, "occupancy": 1, "num_ctas": 2, "num_worker_warps": 8},
}
HOPPER_VARIANTS = ("persistent_128x128", "persistent_128x256", "tile_128x256", "tile_256x128", "cluster_256x128",
                   "cluster_256x256")
NAMED = {**PRESETS, **TUNING}   # what DX_CONFIG / DW_CONFIG may name
PARAMS += parts.part_params(NAMED)
CANDIDATES = [{"TILE_M": m, "TILE_N": n, "TILE_K": k, "occupancy": o}
              for m, n, k in ((128, 128, 64), (128, 256, 64), (256, 128, 64), (128, 64, 64), (64, 128, 64))
              for o in (1, 2)]
TUNER = aot.Tuner()


def _config(arch, cfg):
    return aot.fill({**{p.name: p.default for p in PARAMS}, **cfg}, PRESETS[aot.family(arch)])


def _grid(M, N, c, split=1, sms=None):
    """Blocks: one per tile and slice, or with PERSISTENT at most SMs x occupancy / num_ctas (sms given)."""
    tiles = aot.cdiv(M, c["TILE_M"]) * aot.cdiv(N, c["TILE_N"]) * split
    if c["PERSISTENT"] and sms:
        tiles = min(tiles, sms * c["occupancy"] // c["num_ctas"])
    return (tiles,)


def _args(a, b, out, ta, tb, c, bias=None, z=None, part=None, db=None, dbp=None, cnt=None, split=1, kt_per=0,
          fixup=False):
    """_matmul's arguments; an array a call does not use is a stand-in of the same rank (its code is
    compiled out)."""
    return (a, b, bias if bias is not None else out.view(-1), out, z if z is not None else out,
            part if part is not None else out.view(1, *out.shape), db if db is not None else out.view(-1),
            dbp if dbp is not None else out, cnt if cnt is not None else _counters(out.device, 1), kt_per, ta, tb,
            bias is not None, z is not None, c["TILE_M"], c["TILE_N"], c["TILE_K"], c["GROUP_M"], c["LATENCY"],
            split, c["PERSISTENT"], db is not None, fixup)


def _hints(c):
    return {"occupancy": c["occupancy"], "num_ctas": c["num_ctas"], "num_worker_warps": c.get("num_worker_warps")}


_COUNTERS: dict = {}
_RETIRED: list = []


def _counters(device, n):
    """n int32 tile counters for SPLIT_FIXUP, zero between calls (the tile's last slice resets its own), one
    buffer per device: fixup matmuls on one device must not run concurrently (a training step's backward is
    one stream). Kept from outside a CUDA graph capture, so a graph replays no memset; one made during a
    capture is the graph's own (zeroed at each replay) and not kept."""
    buf = _COUNTERS.get(str(device))
    if buf is None or buf.numel() < n:
        buf = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
        if not (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
            # the smaller buffer it replaces stays alive: a graph captured earlier replays with its address
            _RETIRED.append(_COUNTERS.get(str(device)))
            _COUNTERS[str(device)] = buf
    return buf


def _refusal(c):
    """Why a config cannot run (None: it can)."""
    if c["SPLIT_FIXUP"] and c["PERSISTENT"]:
        return "SPLIT_FIXUP with PERSISTENT (tileiras 13.4 fails on it at 128x256 and spills 1.7 KB at 128x128)"
    return None


def matmul(a, b, ta, tb, c, bias=None, gelu=False, out_dtype=None, db_dtype=None):
    """op(a) @ op(b) (+ bias, -> gelu) as (out, z, db): z the GELU's input (gelu only), db (db_dtype given;
    dW only, ta) the row sums of op(a) = dY^T, the bias gradient, in db_dtype; None where not asked."""
    M = a.shape[1] if ta else a.shape[0]
    N = b.shape[0] if tb else b.shape[1]
    K = a.shape[0] if ta else a.shape[1]
    if db_dtype is not None and not ta:
        raise ValueError("matmul: db (row sums of op(a)) is dW's, whose a is transposed")
    dtype = out_dtype or a.dtype
    sms = aot.sm_count(a)
    # the split model's waves are of resident blocks, occupancy per SM, num_ctas SMs each: SMs alone (132 at
    # occupancy 2) chose 1/3/4/4 slices for GPT-2's four dW where the hand-timed best was 2/6/3/3 (264: 2/7/3/3)
    slots = sms * c["occupancy"] // c["num_ctas"]
    S, k_split = (1, K) if (bias is not None or gelu) else \
        slices(M, N, K, c["TILE_M"], c["TILE_N"], c["TILE_K"], slots, c["SPLIT_K"])
    kt_per = k_split // c["TILE_K"] if S > 1 else aot.cdiv(K, c["TILE_K"])
    out = poison.empty(M, N, dtype=dtype, device=a.device)
    z = poison.empty(M, N, dtype=out.dtype, device=a.device) if gelu else None
    db = poison.empty(M, dtype=db_dtype, device=a.device) if db_dtype is not None else None
    part = dbp = cnt = None
    fixup = S > 1 and c["SPLIT_FIXUP"]
    if S > 1:
        # partials poisoned too: a slice that writes nothing fails the gate rather than summing stale memory
        part = poison.empty(S, M, N, dtype=torch.float32, device=a.device)
        dbp = poison.empty(S, M, dtype=torch.float32, device=a.device) if db is not None else None
        cnt = _counters(a.device, aot.cdiv(M, c["TILE_M"]) * aot.cdiv(N, c["TILE_N"])) if fixup else None
    aot.launch(_matmul, _grid(M, N, c, S, sms),
               _args(a, b, out, ta, tb, c, bias, z, part, db, dbp, cnt, S, kt_per, fixup), **_hints(c))
    if S > 1 and not fixup:
        aot.launch(_sum_slices, (aot.cdiv(M, SUM_TILE[0]) * aot.cdiv(N, SUM_TILE[1]),),
                   (part, out, dbp if dbp is not None else out, db if db is not None else out.view(-1), *SUM_TILE,
                    db is not None))
    return out, z, db


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, bias, gelu, cfg):
        K = x.shape[-1]
        x2, w = aot.rows2d(x, K), w.contiguous()
        b = bias.contiguous() if bias is not None else None
        y, z, _ = matmul(x2, w, False, True, cfg, bias=b, gelu=gelu)
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
        need_db = ctx.has_bias and ctx.needs_input_grad[2]
        db = None
        if z is not None:   # through the activation: dz = dy * gelu'(z), and db its column sums in the same pass
            dy2, db = gelu_backward(z, None, dy2, gelu_config(aot.arch_of(z), {}), need_db=need_db)
            db = db.to(ctx.bias_dtype) if db is not None else None
        cfg, cw = ctx.cfg, parts.config_for_part(ctx.cfg, 3, NAMED)
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx, _, _ = matmul(dy2, w, False, False, parts.config_for_part(cfg, 2, NAMED))  # (M, N) @ (N, K)
            dx = dx.view(ctx.shape)
        if ctx.needs_input_grad[1]:
            fuse_db = need_db and db is None and cw["DB_FUSED"]
            dw, _, fused = matmul(dy2, x2, True, False, cw,                                   # (N, M) @ (M, K)
                                  db_dtype=ctx.bias_dtype if fuse_db else None)
            db = fused if fuse_db else db
        if need_db and db is None:
            db = colsum(dy2, ctx.bias_dtype)
        return dx, dw, db, None, None


def _check_parts(full):
    """Unsupported where the config of any of the three matmuls (kernels.linear.parts) is refused."""
    why = next(filter(None, (_refusal(parts.config_for_part(full, p, NAMED)) for p in parts.PARTS)), None)
    if why:
        raise Unsupported(why)


def linear(x, weight, bias=None, activation=None, **cfg):
    if activation not in (None, "gelu"):
        raise Unsupported(f"activation {activation!r} (takes None or 'gelu')")
    auto = cfg.pop("autotune", False)
    full = _config(aot.arch_of(x), cfg)
    _check_parts(full)
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
                            lambda c: _args(x2, w, out, False, True, c, bias, z, kt_per=aot.cdiv(K, c["TILE_K"])),
                            _hints)
    TUNER.note(full)
    return _Linear.apply(x, weight, bias, activation == "gelu", full)


def matmul_part(a, b, part, **cfg):
    """One of the linear's three matmuls alone (kernels.linear.parts), as _Linear calls it."""
    full = parts.config_for_part(_config(aot.arch_of(a), cfg), part, NAMED)
    if _refusal(full):
        raise Unsupported(_refusal(full))
    a, b = a.contiguous(), b.contiguous()
    if part == 1:     # X (M, K) @ W (N, K)^T
        return matmul(a, b, False, True, full)[0]
    if part == 2:     # dY (M, N) @ W (N, K)
        return matmul(a, b, False, False, full)[0]
    return matmul(a, b, True, False, full, out_dtype=b.dtype)[0]    # dY (M, N)^T @ X (M, K)


parts.provide(linear, matmul_part)


# --- torch.library ops (kernels/linear/library_ops.py): what torch.compile traces --------------------------

FWD_OP, BWD_OP, traced = library_ops.register(
    "cutile", config_for=lambda x, c: _config(aot.arch_of(x), c), rows=aot.rows2d, backward=_Linear.backward,
    forward=lambda x, w, bias, gelu, keep_pre, c: matmul(x, w, False, True, c, bias=bias, gelu=gelu)[:2],
    check=_check_parts)


def _aot(config, arch, dtype="bf16"):
    """The kernels this config runs: the dW ones with the bias gradient (DB_FUSED) and the split-K sum
    in-kernel (SPLIT_FIXUP) or as a second kernel, as it says."""
    c = _config(arch, {k: v for k, v in (config or {}).items() if k != "autotune"})
    db, fix = c["DB_FUSED"], c["SPLIT_FIXUP"]
    X1, X2, X3 = (aot.array(dtype, n) for n in (1, 2, 3))
    F2, F3, I1, kt = aot.array("fp32", 2), aot.array("fp32", 3), aot.array("i32", 1), aot.scalar("i32")
    dbp = F2 if db else X2    # without DB_FUSED the partials' stand-in is the output, as _args passes it
    plain = [X2, X2, X1, X2, X2, X3, X1, X2, I1]    # A, B, Bias, C, Z, P, DB, DBP, Cnt (as _args stands in)
    split = [X2, X2, X1, X2, X2, F3, X1, dbp, I1]
    const = [c["TILE_M"], c["TILE_N"], c["TILE_K"], c["GROUP_M"], c["LATENCY"]]
    uses = (  # name, operands, TRANS_A, TRANS_B, HAS_BIAS, GELU, SPLIT, HAS_DB, FIXUP
        ("linear_fwd", plain, False, True, True, False, 1, False, False),
        ("linear_fwd_gelu", plain, False, True, True, True, 1, False, False),
        ("linear_bwd_dx", plain, False, False, False, False, 1, False, False),
        ("linear_bwd_dw", plain, True, False, False, False, 1, db, False),
        ("linear_bwd_dw_splitk", split, True, False, False, False, 4, db, fix),
    )
    rows = [aot.compile_kernel(_matmul, name, ops + [kt, ta, tb, hb, g] + const + [sp, c["PERSISTENT"], hd, fx],
                               arch, _hints(c))
            for name, ops, ta, tb, hb, g, sp, hd, fx in uses]
    if not fix:
        rows.append(aot.compile_kernel(_sum_slices, "linear_splitk_sum", [F3, X2, dbp, X1, *SUM_TILE, db], arch))
    return rows


IMPL = KernelImpl(fn=linear, backend="cutile", params=PARAMS, presets=PRESETS, tuning=TUNING, aot=_aot,
                  picked=TUNER.picked, traced=traced,
                  doc="grouped-order tiled matmul with bias/GELU epilogue; bwd reuses it with transposed loads")
