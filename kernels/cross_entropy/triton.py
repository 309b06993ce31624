"""Cross-entropy in Triton: one program per row walks the vocabulary in chunks (online max and sum of
exponentials), then, when a gradient is wanted, walks it again writing softmax - onehot straight into a
dlogits buffer of the logits' dtype. No fp32 copy of the logits ever exists; the backward only rescales
by grad_output, and skips even that when it is 1 (checked on the device, no sync)."""
import torch
import triton
import triton.language as tl

from kernels import library, poison
from kernels import triton_aot as aot
from kernels.cross_entropy import eager
from kernels.cross_entropy.spec import IGNORE_INDEX
from kernels.registry import KernelImpl, TileParam


@triton.jit
def _ce_fwd(X, Tgt, Loss, DX, NValid, V, stride_x, stride_dx, ignore_index,
            HAS_GRAD: tl.constexpr, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = X + row * stride_x
    offs = tl.arange(0, BLOCK_V)
    # pass 1: running max m and sum of exp(x - m), in base 2
    m = tl.full((), float("-inf"), tl.float32)
    d = tl.full((), 0.0, tl.float32)
    for start in range(0, V, BLOCK_V):
        cols = start + offs
        x = tl.load(x_row + cols, mask=cols < V, other=float("-inf")).to(tl.float32) * 1.4426950408889634
        m_new = tl.maximum(m, tl.max(x, axis=0))
        d = d * tl.exp2(m - m_new) + tl.sum(tl.exp2(x - m_new), axis=0)
        m = m_new
    lse2 = m + tl.log2(d)                         # log-sum-exp in base 2
    tgt = tl.load(Tgt + row)
    valid = tgt != ignore_index
    safe_tgt = tl.where(valid, tgt, 0)
    xt = tl.load(x_row + safe_tgt).to(tl.float32)
    loss = tl.where(valid, lse2 * 0.6931471805599453 - xt, 0.0)
    tl.store(Loss + row, loss)
    if HAS_GRAD:
        # d loss_mean / d x = (softmax - onehot) / n_valid for rows that count, 0 for ignored rows
        scale = tl.where(valid, 1.0 / tl.load(NValid).to(tl.float32), 0.0)
        dx_row = DX + row * stride_dx
        for start in range(0, V, BLOCK_V):
            cols = start + offs
            x = tl.load(x_row + cols, mask=cols < V, other=0.0).to(tl.float32) * 1.4426950408889634
            p = tl.exp2(x - lse2)
            g = (p - tl.where(cols == tgt, 1.0, 0.0)) * scale
            tl.store(dx_row + cols, g.to(DX.dtype.element_ty), mask=cols < V)


@triton.jit
def _scale_rows(DX, G, V, stride_dx, BLOCK_V: tl.constexpr):
    """DX *= G (a device scalar), skipped wholesale when G == 1 as after loss.backward()."""
    g = tl.load(G).to(tl.float32)
    if g != 1.0:
        row = DX + tl.program_id(0).to(tl.int64) * stride_dx
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            v = tl.load(row + cols, mask=cols < V, other=0.0).to(tl.float32)
            tl.store(row + cols, (v * g).to(DX.dtype.element_ty), mask=cols < V)


PARAMS = (
    TileParam("BLOCK_V", int, None, (256, 512, 1024, 2048, 4096, 8192, 16384, 32768), "vocabulary chunk"),
    TileParam("num_warps", int, None, (4, 8, 16, 32)),
    TileParam("autotune", bool, False, doc="time candidates per shape, keep the fastest"),
)
PRESETS = {
    # H100, 16384 x 50304 bf16: autotune picked 16384/32 for fwd+bwd (1.64 ms vs 1.67) but it costs
    # the forward alone 10% (0.70 vs 0.64 ms), so the default stays here
    "hopper": {"BLOCK_V": 8192, "num_warps": 16},
    "blackwell": {"BLOCK_V": 8192, "num_warps": 16},
    "ampere": {"BLOCK_V": 4096, "num_warps": 8},
    "consumer": {"BLOCK_V": 4096, "num_warps": 8},
}
CANDIDATES = [{"BLOCK_V": b, "num_warps": w} for b in (4096, 8192, 16384) for w in (8, 16, 32)]
TUNER = aot.Tuner()


def _launch(logits, targets, ignore_index, n_valid, cfg, grad: bool):
    N, V = logits.shape
    loss_rows = poison.empty(N, dtype=torch.float32, device=logits.device)
    dx = poison.empty(N, V, dtype=logits.dtype, device=logits.device) if grad else loss_rows
    library.kernel(_ce_fwd)[(N,)](logits, targets, loss_rows, dx, n_valid, V, logits.stride(0), dx.stride(0) if grad else 0,
                  ignore_index, HAS_GRAD=grad, BLOCK_V=cfg["BLOCK_V"], num_warps=cfg["num_warps"])
    return loss_rows, (dx if grad else None)


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, ignore_index, cfg):
        if logits.stride(-1) != 1:
            logits = logits.contiguous()
        targets = targets.contiguous()
        n_valid = (targets != ignore_index).sum()          # stays on the device: no sync
        grad = logits.requires_grad
        loss_rows, dx = _launch(logits, targets, ignore_index, n_valid, cfg, grad)
        if grad:
            ctx.save_for_backward(dx)
        ctx.cfg = cfg
        return loss_rows.sum() / n_valid

    @staticmethod
    def backward(ctx, grad_out):
        (dx,) = ctx.saved_tensors
        g = grad_out.reshape(1).to(torch.float32)
        _scale_rows[(dx.shape[0],)](dx, g, dx.shape[1], dx.stride(0), BLOCK_V=ctx.cfg["BLOCK_V"],
                                    num_warps=ctx.cfg["num_warps"])
        return dx, None, None, None


def cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, **cfg):
    auto = cfg.pop("autotune", False)
    full = CONFIGS.get(aot.arch_of(logits), 0, cfg)
    if auto:
        lg = logits.detach().contiguous()
        nv = (targets != ignore_index).sum()
        full = TUNER.choose((tuple(logits.shape), logits.dtype, str(logits.device)),
                            aot.unique([full] + CANDIDATES),
                            lambda c: _launch(lg, targets, ignore_index, nv, c, True))
    TUNER.last = full
    return _CrossEntropy.apply(logits, targets, ignore_index, full)


CONFIGS = aot.Configs(PARAMS, lambda arch, _: PRESETS[aot.family(arch)])


# --- torch.library ops (kernels/library.py): what torch.compile traces -------------------------------------
# The forward writes dlogits / n_valid beside the losses; the backward only scales them by grad_out (plain torch
# ops in the autograd formula, which inductor fuses), so there is no backward op.

def _lib_fwd(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, grad: bool,
             config: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss (fp32 scalar), dlogits / n_valid (empty without grad)); logits (N, V) unit column stride."""
    n_valid = (targets != ignore_index).sum()
    cfg = CONFIGS.get(aot.arch_of(logits), 0, library.config(config))
    loss_rows, dx = _launch(logits, targets, ignore_index, n_valid, cfg, grad)
    return loss_rows.sum() / n_valid, dx if dx is not None else logits.new_empty(0)


def _standin_fwd(logits, targets, ignore_index, grad, config):
    rows, lse, valid, n = eager.standin_rows(logits, targets, ignore_index)
    dx = eager.standin_dlogits(logits, targets, lse, valid, 1.0 / n) if grad else logits.new_empty(0)
    return rows.sum() / n, dx


FWD_OP = library.define(
    "cross_entropy_fwd_triton", _lib_fwd, triton=True, standin=_standin_fwd,
    alloc=lambda logits, targets, ignore_index, grad, config: (
        logits.new_empty((), dtype=torch.float32), logits.new_empty(logits.shape if grad else (0,))))


def _lib_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])


def _lib_backward(ctx, g, _ddx):
    (dx,) = ctx.saved_tensors
    return (dx.float() * g.float()).to(dx.dtype), None, None, None, None


library.autograd(FWD_OP, _lib_backward, _lib_setup)


def traced(logits, targets, ignore_index=IGNORE_INDEX, *, config):
    """cross_entropy through the library op (torch.compile traces this; config: library.config_json)."""
    lg = logits if logits.stride(-1) == 1 else logits.contiguous()
    grad = torch.is_grad_enabled() and logits.requires_grad
    return FWD_OP(lg, targets.contiguous(), ignore_index, grad, config)[0]


def _aot(config, arch):
    cfg = aot.fill({**{p.name: None for p in PARAMS}, **(config or {})}, PRESETS[aot.family(arch)])
    sig = {"X": "*bf16", "Tgt": "*i64", "Loss": "*fp32", "DX": "*bf16", "NValid": "*i64", "V": "i32",
           "stride_x": "i64", "stride_dx": "i64", "ignore_index": "i64"}
    rows = [aot.compile_kernel(_ce_fwd, "cross_entropy_fwd_bwd", sig, {"HAS_GRAD": True,
                                                                       "BLOCK_V": cfg["BLOCK_V"]},
                               arch, cfg["num_warps"], 1)]
    rows.append(aot.compile_kernel(_scale_rows, "cross_entropy_scale", {"DX": "*bf16", "G": "*fp32", "V": "i32",
                                                                        "stride_dx": "i64"},
                                   {"BLOCK_V": cfg["BLOCK_V"]}, arch, cfg["num_warps"], 1))
    return rows


TEST_CONFIG = {"BLOCK_V": 256}   # CPU tests: several blocks per test shape
IMPL = KernelImpl(fn=cross_entropy, backend="triton", params=PARAMS, presets=PRESETS, aot=_aot, traced=traced,
                  picked=TUNER.picked,
                  test_config=TEST_CONFIG,
                  doc="row per program, vocabulary in chunks; dlogits written in the forward (logits dtype)")
