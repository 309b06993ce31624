"""Cross-entropy over a large vocabulary in cuTile, never materializing fp32 logits.

Forward: one pass over each row's vocabulary in BV-wide chunks with an online max/sum-exp, giving the
row's log-sum-exp (kept for the backward) and loss; a one-block kernel then sums losses and counts
non-ignored rows. Backward: one pass, dlogits = (softmax - onehot) * grad / n_valid, written in the
logits' dtype (the only full-size tensor it allocates)."""
import torch

import cuda.tile as ct

from kernels import cutile_aot as aot
from kernels import library, poison
from kernels.cross_entropy import eager
from kernels.cross_entropy.spec import IGNORE_INDEX
from kernels.registry import KernelImpl, TileParam, Unsupported

ConstInt = ct.Constant[int]
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
FLOOR = -1e30


@ct.kernel
def _ce_fwd(Logits, Targets, Lse, Loss, ignore_index: int, ROWS: ConstInt, BV: ConstInt, LAT: ConstInt):
    i = ct.bid(0)
    V = Logits.shape[1]
    m = ct.full((ROWS, 1), FLOOR, dtype=ct.float32)
    s = ct.zeros((ROWS, 1), dtype=ct.float32)
    for c in range(ct.cdiv(V, BV)):
        x = ct.load(Logits, index=(i, c), shape=(ROWS, BV), padding_mode=ct.PaddingMode.NEG_INF,
                    latency=LAT).astype(ct.float32) * LOG2E
        m_new = ct.maximum(m, ct.max(x, axis=1, keepdims=True))
        s = s * ct.exp2(m - m_new) + ct.sum(ct.exp2(x - m_new), axis=1, keepdims=True)
        m = m_new
    lse = (m + ct.log2(s)) * LN2                                  # natural log
    rows = i * ROWS + ct.arange(ROWS, dtype=ct.int32)
    tgt = ct.load(Targets, index=(i,), shape=(ROWS,), padding_mode=ct.PaddingMode.ZERO)
    valid = tgt != ignore_index
    xt = ct.gather(Logits, (rows, ct.where(valid, tgt, 0).astype(ct.int32)), padding_value=0).astype(ct.float32)
    lse1 = lse.reshape((ROWS,))
    ct.store(Lse, index=(i,), tile=lse1, allow_tma=False)
    ct.store(Loss, index=(i,), tile=ct.where(valid, lse1 - xt, 0.0), allow_tma=False)


@ct.kernel
def _ce_reduce(Loss, Targets, Out, Count, ignore_index: int, BN: ConstInt):
    """One block: Out = sum(Loss) / max(1, #valid), Count = #valid (for the backward's scale)."""
    tot = ct.zeros((BN,), dtype=ct.float32)
    cnt = ct.zeros((BN,), dtype=ct.float32)
    for c in range(ct.cdiv(Loss.shape[0], BN)):
        tot = tot + ct.load(Loss, index=(c,), shape=(BN,), padding_mode=ct.PaddingMode.ZERO)
        t = ct.load(Targets, index=(c,), shape=(BN,), padding_mode=ct.PaddingMode.ZERO)
        idx = c * BN + ct.arange(BN, dtype=ct.int32)
        ok = (t != ignore_index) & (idx < Loss.shape[0])
        cnt = cnt + ct.where(ok, 1.0, 0.0)
    n = ct.sum(cnt, axis=0)
    loss = ct.sum(tot, axis=0) / ct.maximum(n, 1.0)
    ct.store(Out, index=(0,), tile=loss.reshape((1,)), allow_tma=False)
    ct.store(Count, index=(0,), tile=n.reshape((1,)), allow_tma=False)


@ct.kernel
def _ce_bwd(Logits, Targets, Lse, Grad, Count, DLogits, ignore_index: int, ROWS: ConstInt, BV: ConstInt,
            LAT: ConstInt):
    i = ct.bid(0)
    c = ct.bid(1)
    g = ct.load(Grad, index=(0,), shape=(1,)) / ct.maximum(ct.load(Count, index=(0,), shape=(1,)), 1.0)
    tgt = ct.load(Targets, index=(i,), shape=(ROWS,), padding_mode=ct.PaddingMode.ZERO).reshape((ROWS, 1))
    scale = ct.where(tgt != ignore_index, g.reshape((1, 1)), 0.0)           # ignored rows: zero gradient
    lse = ct.load(Lse, index=(i,), shape=(ROWS,), padding_mode=ct.PaddingMode.ZERO).reshape((ROWS, 1))
    x = ct.load(Logits, index=(i, c), shape=(ROWS, BV), padding_mode=ct.PaddingMode.ZERO,
                latency=LAT).astype(ct.float32)
    p = ct.exp2((x - lse) * LOG2E)
    cols = c * BV + ct.arange(BV, dtype=ct.int32)[None, :]
    d = ct.where(cols == tgt, p - 1.0, p) * scale
    ct.store(DLogits, index=(i, c), tile=d.astype(DLogits.dtype))


PARAMS = (
    TileParam("ROWS", int, None, (1, 2, 4, 8), "rows per block"),
    TileParam("BV", int, None, (512, 1024, 2048, 4096, 8192), "forward vocabulary chunk"),
    TileParam("BWD_BV", int, None, (512, 1024, 2048, 4096, 8192), "backward vocabulary chunk per block"),
    TileParam("LATENCY", int, None, tuple(range(1, 11)), "latency hint for the logit loads"),
    TileParam("occupancy", int, None, (1, 2, 4, 8)),
    TileParam("autotune", bool, False, doc="cuda.tile.tune.exhaustive_search over forward candidates, per shape"),
)
PRESETS = {
    "hopper": {"ROWS": 1, "BV": 4096, "BWD_BV": 4096, "LATENCY": 6, "occupancy": 4},
    "blackwell": {"ROWS": 1, "BV": 4096, "BWD_BV": 4096, "LATENCY": 6, "occupancy": 4},
    "ampere": {"ROWS": 1, "BV": 2048, "BWD_BV": 2048, "LATENCY": 6, "occupancy": 4},
    "consumer": {"ROWS": 1, "BV": 2048, "BWD_BV": 2048, "LATENCY": 6, "occupancy": 4},
}
CANDIDATES = [{"ROWS": r, "BV": bv, "occupancy": o} for r, bv in ((1, 2048), (1, 4096), (1, 8192), (2, 2048),
                                                                  (2, 4096), (4, 2048)) for o in (2, 4)]
TUNER = aot.Tuner()


def _config(arch, cfg):
    return aot.fill({**{p.name: None for p in PARAMS}, **cfg}, PRESETS[aot.family(arch)])


def _fwd_args(logits, targets, lse, loss, ignore_index, c):
    return (logits, targets, lse, loss, int(ignore_index), c["ROWS"], c["BV"], c["LATENCY"])


def _forward(logits, targets, ignore_index, c):
    """(mean loss (fp32 scalar), lse (N,) fp32, count of valid rows (1,) fp32)."""
    N = logits.shape[0]
    lse = poison.empty(N, dtype=torch.float32, device=logits.device)
    loss = poison.empty(N, dtype=torch.float32, device=logits.device)
    aot.launch(_ce_fwd, (aot.cdiv(N, c["ROWS"]),), _fwd_args(logits, targets, lse, loss, ignore_index, c),
               occupancy=c["occupancy"])
    out = poison.empty(1, dtype=torch.float32, device=logits.device)
    count = poison.empty(1, dtype=torch.float32, device=logits.device)
    aot.launch(_ce_reduce, (1,), (loss, targets, out, count, int(ignore_index), 1024))
    return out.view(()), lse, count


def _backward(grad, logits, targets, lse, count, ignore_index, c):
    """dlogits (N, V) in the logits' dtype."""
    N, V = logits.shape
    dlogits = poison.empty(N, V, dtype=logits.dtype, device=logits.device)
    g = grad.reshape(1).to(torch.float32).contiguous()
    aot.launch(_ce_bwd, (aot.cdiv(N, c["ROWS"]), aot.cdiv(V, c["BWD_BV"])),
               (logits, targets, lse, g, count, dlogits, int(ignore_index), c["ROWS"], c["BWD_BV"], c["LATENCY"]),
               occupancy=c["occupancy"])
    return dlogits


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, ignore_index, cfg):
        out, lse, count = _forward(logits, targets, ignore_index, cfg)
        ctx.save_for_backward(logits, targets, lse, count)
        ctx.ignore_index, ctx.cfg = ignore_index, cfg
        return out

    @staticmethod
    def backward(ctx, grad):
        logits, targets, lse, count = ctx.saved_tensors
        return _backward(grad, logits, targets, lse, count, ctx.ignore_index, ctx.cfg), None, None, None


def cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, **cfg):
    if logits.dim() != 2 or targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise Unsupported(f"logits (N, V) and targets (N,), got {tuple(logits.shape)}, {tuple(targets.shape)}")
    if logits.stride(-1) != 1 or logits.stride(0) % 8:
        logits = logits.contiguous()
    targets = targets.contiguous()
    auto = cfg.pop("autotune", False)
    full = _config(aot.arch_of(logits), cfg)
    if auto:
        N = logits.shape[0]
        lse = torch.empty(N, dtype=torch.float32, device=logits.device)
        loss = torch.empty_like(lse)
        full = TUNER.choose((tuple(logits.shape), logits.dtype, str(logits.device)),
                            aot.unique([full] + [{**full, **c} for c in CANDIDATES]),
                            lambda c: (aot.cdiv(N, c["ROWS"]), 1, 1), _ce_fwd,
                            lambda c: _fwd_args(logits, targets, lse, loss, ignore_index, c),
                            lambda c: {"occupancy": c["occupancy"]})
    TUNER.note(full)
    return _CrossEntropy.apply(logits, targets, ignore_index, full)


# --- torch.library ops (kernels/library.py): what torch.compile traces -------------------------------------

def _lib_fwd(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int,
             config: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss (fp32 scalar), lse (N,) fp32, count of valid rows (1,) fp32)."""
    return _forward(logits, targets, ignore_index, _config(aot.arch_of(logits), library.config(config)))


def _lib_bwd(grad: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, count: torch.Tensor,
             ignore_index: int, config: str) -> torch.Tensor:
    return _backward(grad, logits, targets, lse, count, ignore_index,
                     _config(aot.arch_of(logits), library.config(config)))


def _standin_fwd(logits, targets, ignore_index, config):
    rows, lse, valid, n = eager.standin_rows(logits, targets, ignore_index)
    return rows.sum() / n, lse, n.reshape(1)


def _standin_bwd(grad, logits, targets, lse, count, ignore_index, config):
    valid = targets != ignore_index
    return eager.standin_dlogits(logits, targets, lse, valid, grad.float() / count[0])


FWD_OP = library.define(
    "cross_entropy_fwd_cutile", _lib_fwd, standin=_standin_fwd,
    alloc=lambda logits, targets, ignore_index, config: (logits.new_empty((), dtype=torch.float32),
                                                         logits.new_empty(logits.shape[0], dtype=torch.float32),
                                                         logits.new_empty(1, dtype=torch.float32)))
BWD_OP = library.define("cross_entropy_bwd_cutile", _lib_bwd, standin=_standin_bwd,
                        alloc=lambda grad, logits, targets, lse, count, ignore_index, config: logits.new_empty(logits.shape))


def _lib_setup(ctx, inputs, output):
    logits, targets, ignore_index, config = inputs
    ctx.save_for_backward(logits, targets, output[1], output[2])
    ctx.ignore_index, ctx.config = ignore_index, config


def _lib_backward(ctx, g, _dlse, _dcount):
    logits, targets, lse, count = ctx.saved_tensors
    return BWD_OP(g, logits, targets, lse, count, ctx.ignore_index, ctx.config), None, None, None


library.autograd(FWD_OP, _lib_backward, _lib_setup)


def traced(logits, targets, ignore_index=IGNORE_INDEX, *, config):
    """cross_entropy through the library ops (torch.compile traces this; config: library.config_json)."""
    if logits.dim() != 2 or targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise Unsupported(f"logits (N, V) and targets (N,), got {tuple(logits.shape)}, {tuple(targets.shape)}")
    lg = logits if logits.stride(-1) == 1 and logits.stride(0) % 8 == 0 else logits.contiguous()
    return FWD_OP(lg, targets.contiguous(), ignore_index, config)[0]


def _aot(config, arch, dtype="bf16"):
    c = _config(arch, {k: v for k, v in (config or {}).items() if k != "autotune"})
    L, T, F = aot.array(dtype, 2), aot.array("i64", 1), aot.array("fp32", 1)
    i64 = aot.scalar("i32")   # a Python int is passed as int32
    return [
        aot.compile_kernel(_ce_fwd, "cross_entropy_fwd", [L, T, F, F, i64, c["ROWS"], c["BV"], c["LATENCY"]], arch,
                           {"occupancy": c["occupancy"]}),
        aot.compile_kernel(_ce_reduce, "cross_entropy_reduce", [F, T, F, F, i64, 1024], arch),
        aot.compile_kernel(_ce_bwd, "cross_entropy_bwd", [L, T, F, F, F, L, i64, c["ROWS"], c["BWD_BV"],
                                                          c["LATENCY"]], arch, {"occupancy": c["occupancy"]}),
    ]


IMPL = KernelImpl(fn=cross_entropy, backend="cutile", params=PARAMS, presets=PRESETS, aot=_aot,
                  picked=TUNER.picked, traced=traced,
                  doc="chunked online-softmax fwd saving LSE per row; one-pass bwd writing dlogits in the logits dtype")
