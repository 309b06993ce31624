"""Linear + cross-entropy, cuTile: row chunks through kernels.linear_cross_entropy.chunks, the matmuls on
cuBLAS (torch.mm into one reused logits buffer, dW accumulated in fp32) and the log-softmax/NLL and its
gradient in two cuTile kernels: the rows' losses and log-sum-exps, then dlogits written over each chunk's
logits in place. The backward only scales the stashed dx and dW by grad_output, on the device, skipped when
it is 1 (no host sync, so a CUDA graph can hold it).

The CE kernel is this op's own rather than kernels/cross_entropy/cutile.py's: it works in place on a
chunk, with the whole batch's valid-row count as its scale, and that module's kernels are free to change."""
import torch

import cuda.tile as ct

from kernels import cutile_aot as aot
from kernels import poison
from kernels.linear_cross_entropy import chunks, library_ops
from kernels.linear_cross_entropy.spec import IGNORE_INDEX
from kernels.registry import KernelImpl, TileParam

ConstInt = ct.Constant[int]
ConstBool = ct.Constant[bool]
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@ct.kernel
def _ce_rows(L, Tgt, Loss, Lse, ignore_index: int, ROWS: ConstInt, BV: ConstInt, LAT: ConstInt):
    """ROWS rows of logits L (R, V) per block: Loss = lse - x[target] (0 for ignored rows), Lse = the rows'
    log-sum-exp in base 2 for _ce_grad."""
    i = ct.bid(0)
    nv = ct.cdiv(L.shape[1], BV)
    m = ct.full((ROWS, 1), -1e30, dtype=ct.float32)      # running max and sum of exp, base 2
    d = ct.zeros((ROWS, 1), dtype=ct.float32)
    for c in range(nv):
        x = ct.load(L, index=(i, c), shape=(ROWS, BV), padding_mode=ct.PaddingMode.NEG_INF,
                    latency=LAT).astype(ct.float32) * LOG2E
        m_new = ct.maximum(m, ct.max(x, axis=1, keepdims=True))
        d = d * ct.exp2(m - m_new) + ct.sum(ct.exp2(x - m_new), axis=1, keepdims=True)
        m = m_new
    lse2 = (m + ct.log2(d)).reshape((ROWS,))
    tgt = ct.load(Tgt, index=(i,), shape=(ROWS,), padding_mode=ct.PaddingMode.ZERO)
    valid = tgt != ignore_index
    rows = i * ROWS + ct.arange(ROWS, dtype=ct.int32)
    xt = ct.gather(L, (rows, ct.where(valid, tgt, 0).astype(ct.int32)), padding_value=0).astype(ct.float32)
    ct.store(Loss, index=(i,), tile=ct.where(valid, lse2 * LN2 - xt, 0.0), allow_tma=False)
    ct.store(Lse, index=(i,), tile=lse2, allow_tma=False)


@ct.kernel
def _ce_grad(L, Tgt, Lse, ignore_index: int, ROWS: ConstInt, BV: ConstInt, LAT: ConstInt):
    """In place, one (ROWS, BV) tile per block: L = softmax - onehot in L's dtype (ignored rows: 0).
    A grid over rows and vocabulary chunks: the whole GPU streams the logits once (one block per row
    walking its row, as in _ce_rows, ran the pass at ~half the bandwidth)."""
    i = ct.bid(0)
    c = ct.bid(1)
    tgt = ct.load(Tgt, index=(i,), shape=(ROWS,), padding_mode=ct.PaddingMode.ZERO).reshape((ROWS, 1))
    lse2 = ct.load(Lse, index=(i,), shape=(ROWS,), padding_mode=ct.PaddingMode.ZERO).reshape((ROWS, 1))
    x = ct.load(L, index=(i, c), shape=(ROWS, BV), padding_mode=ct.PaddingMode.ZERO, latency=LAT).astype(ct.float32)
    p = ct.exp2(x * LOG2E - lse2)
    cols = c * BV + ct.arange(BV, dtype=ct.int32)[None, :]
    g = ct.where(cols == tgt, p - 1.0, p)
    ct.store(L, index=(i, c), tile=ct.where(tgt != ignore_index, g, 0.0).astype(L.dtype))


@ct.kernel
def _scale(T, G, BLOCK: ConstInt):
    """T *= G (a device scalar) over a flat tensor; nothing when G == 1, as after loss.backward()."""
    g = ct.load(G, index=(0,), shape=(1,))
    if ct.reshape(g, ()) != 1.0:
        t = ct.load(T, index=(ct.bid(0),), shape=(BLOCK,), padding_mode=ct.PaddingMode.ZERO).astype(ct.float32)
        ct.store(T, index=(ct.bid(0),), tile=(t * g).astype(T.dtype))


SCALE_BLOCK = 4096
PARAMS = (
    TileParam("CHUNK_ROWS", int, None, (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384),
              "rows of logits held at once (memory vs. matmul efficiency)"),
    TileParam("ROWS", int, None, (1, 2, 4, 8), "rows per block of the CE kernel"),
    TileParam("BV", int, None, (512, 1024, 2048, 4096, 8192), "vocabulary chunk of the loss pass"),
    TileParam("BWD_BV", int, None, (256, 512, 1024, 2048, 4096, 8192), "vocabulary chunk per block of the gradient pass"),
    TileParam("LATENCY", int, None, tuple(range(1, 11)), "latency hint for the logit loads"),
    TileParam("occupancy", int, None, (1, 2, 4, 8)),
    TileParam("DW_FP32", bool, True, doc="accumulate dW over chunks in fp32 (one rounding, as the unchunked matmul)"),
)
PRESETS = {
    # chunks as the Triton impl's (4096 x 50304 bf16 = 412 MB of logits); the CE kernel as cross_entropy's
    "hopper": {"CHUNK_ROWS": 4096, "ROWS": 1, "BV": 4096, "BWD_BV": 4096, "LATENCY": 6, "occupancy": 4},
    "blackwell": {"CHUNK_ROWS": 4096, "ROWS": 1, "BV": 4096, "BWD_BV": 4096, "LATENCY": 6, "occupancy": 4},
    "ampere": {"CHUNK_ROWS": 2048, "ROWS": 1, "BV": 2048, "BWD_BV": 2048, "LATENCY": 6, "occupancy": 4},
    "consumer": {"CHUNK_ROWS": 2048, "ROWS": 1, "BV": 2048, "BWD_BV": 2048, "LATENCY": 6, "occupancy": 4},
}
LAST: dict = {}


def _config(arch, cfg):
    return aot.fill({**{p.name: None for p in PARAMS}, **cfg}, PRESETS[aot.family(arch)])


def _ce_rows_launcher(c):
    def ce_rows(lg, tgt, loss_rows, ignore_index, grad):
        R, V = lg.shape
        lse = poison.empty(R, dtype=torch.float32, device=lg.device)
        aot.launch(_ce_rows, (aot.cdiv(R, c["ROWS"]),),
                   (lg, tgt, loss_rows, lse, int(ignore_index), c["ROWS"], c["BV"], c["LATENCY"]),
                   occupancy=c["occupancy"])
        if grad:
            aot.launch(_ce_grad, (aot.cdiv(R, c["ROWS"]), aot.cdiv(V, c["BWD_BV"])),
                       (lg, tgt, lse, int(ignore_index), c["ROWS"], c["BWD_BV"], c["LATENCY"]),
                       occupancy=c["occupancy"])
    return ce_rows


def _scale_(t, g):
    aot.launch(_scale, (aot.cdiv(t.numel(), SCALE_BLOCK),), (t.view(-1), g, SCALE_BLOCK))


def config_for(x, cfg):
    return _config(aot.arch_of(x), cfg)


def linear_cross_entropy(x, weight, targets, ignore_index=IGNORE_INDEX, **cfg):
    full = config_for(x, cfg)
    LAST.clear()
    LAST.update(full)
    return chunks.apply(x, weight, targets, ignore_index, full, _ce_rows_launcher(full), _scale_)


# torch.library op (kernels/linear_cross_entropy/library_ops.py): what torch.compile traces
FWD_OP, traced = library_ops.register("cutile", ce_rows_for=_ce_rows_launcher, config_for=config_for)


def _aot(config, arch, dtype="bf16"):
    c = _config(arch, config or {})
    L = aot.array(dtype, 2, contiguous=True)
    vec = aot.array("fp32", 1)
    return [
        aot.compile_kernel(_ce_rows, "linear_cross_entropy_ce_rows",
                           [L, aot.array("i64", 1), vec, vec, aot.scalar("i64"), c["ROWS"], c["BV"], c["LATENCY"]],
                           arch, {"occupancy": c["occupancy"]}),
        aot.compile_kernel(_ce_grad, "linear_cross_entropy_ce_grad",
                           [L, aot.array("i64", 1), vec, aot.scalar("i64"), c["ROWS"], c["BWD_BV"], c["LATENCY"]],
                           arch, {"occupancy": c["occupancy"]}),
        aot.compile_kernel(_scale, "linear_cross_entropy_scale", [aot.array(dtype, 1), vec, SCALE_BLOCK], arch),
    ]


IMPL = KernelImpl(fn=linear_cross_entropy, backend="cutile", params=PARAMS, presets=PRESETS, aot=_aot,
                  picked=lambda: dict(LAST), traced=traced,
                  doc="row chunks: cuBLAS logits, cuTile log-softmax/NLL then in-place dlogits, dx/dW in the forward")
