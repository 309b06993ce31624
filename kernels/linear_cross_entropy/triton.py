"""Linear + cross-entropy, Triton: row chunks through kernels.linear_cross_entropy.chunks, the matmuls on
cuBLAS (torch.mm into reused buffers) and the log-softmax/NLL and its gradient in one Triton kernel that
overwrites each chunk's logits with dlogits (logits dtype) in place. The backward only scales the stashed
dx and dW by grad_output, on the device, skipped when it is 1 (no sync, so a CUDA graph can hold it).

The kernel is this op's own rather than kernels/cross_entropy/triton.py's: it must work in place on a
strided chunk and that module's private kernel signature is free to change."""
import torch
import triton
import triton.language as tl

from kernels import triton_aot as aot
from kernels.linear_cross_entropy import chunks, library_ops
from kernels.linear_cross_entropy.spec import IGNORE_INDEX
from kernels.registry import KernelImpl, TileParam



@triton.jit
def _ce_rows(L, Tgt, Loss, V, stride_l, ignore_index, HAS_GRAD: tl.constexpr, BLOCK_V: tl.constexpr):
    """One row per program: loss = lse - x[target]; with HAS_GRAD the row becomes softmax - onehot (0 if ignored)."""
    row = tl.program_id(0).to(tl.int64)
    ptr = L + row * stride_l
    offs = tl.arange(0, BLOCK_V)
    m = tl.full((), float("-inf"), tl.float32)     # running max and sum of exp, base 2
    d = tl.full((), 0.0, tl.float32)
    for start in range(0, V, BLOCK_V):
        cols = start + offs
        x = tl.load(ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32) * 1.4426950408889634
        m_new = tl.maximum(m, tl.max(x, axis=0))
        d = d * tl.exp2(m - m_new) + tl.sum(tl.exp2(x - m_new), axis=0)
        m = m_new
    lse2 = m + tl.log2(d)
    tgt = tl.load(Tgt + row)
    valid = tgt != ignore_index
    xt = tl.load(ptr + tl.where(valid, tgt, 0)).to(tl.float32)   # read before the row is overwritten
    tl.store(Loss + row, tl.where(valid, lse2 * 0.6931471805599453 - xt, 0.0))
    if HAS_GRAD:
        scale = tl.where(valid, 1.0, 0.0)
        for start in range(0, V, BLOCK_V):
            cols = start + offs
            x = tl.load(ptr + cols, mask=cols < V, other=0.0).to(tl.float32) * 1.4426950408889634
            g = (tl.exp2(x - lse2) - tl.where(cols == tgt, 1.0, 0.0)) * scale
            tl.store(ptr + cols, g.to(L.dtype.element_ty), mask=cols < V)


@triton.jit
def _scale(T, G, N, BLOCK: tl.constexpr):
    """T *= G (a device scalar) over a flat contiguous tensor; nothing when G == 1, as after loss.backward()."""
    g = tl.load(G).to(tl.float32)
    if g != 1.0:
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        v = tl.load(T + offs, mask=offs < N, other=0.0).to(tl.float32)
        tl.store(T + offs, (v * g).to(T.dtype.element_ty), mask=offs < N)


PARAMS = (
    TileParam("CHUNK_ROWS", int, None, (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384),
              "rows of logits held at once (memory vs. matmul efficiency)"),
    TileParam("BLOCK_V", int, None, (256, 512, 1024, 2048, 4096, 8192, 16384), "vocabulary chunk of the CE kernel"),
    TileParam("num_warps", int, None, (4, 8, 16, 32)),
    TileParam("DW_FP32", bool, True, doc="accumulate dW over chunks in fp32 (one rounding, as the unchunked matmul)"),
)
PRESETS = {
    # 4096 x 50304 bf16 = 412 MB of logits per chunk (the eager path holds 1.6 GB + a 3.3 GB fp32 copy)
    "hopper": {"CHUNK_ROWS": 4096, "BLOCK_V": 8192, "num_warps": 16},
    "blackwell": {"CHUNK_ROWS": 4096, "BLOCK_V": 8192, "num_warps": 16},
    "ampere": {"CHUNK_ROWS": 2048, "BLOCK_V": 4096, "num_warps": 8},
    "consumer": {"CHUNK_ROWS": 2048, "BLOCK_V": 4096, "num_warps": 8},
}
CONFIGS = aot.Configs(PARAMS, lambda arch, _: PRESETS[aot.family(arch)])
LAST: dict = {}


def _ce_rows_launcher(cfg):
    def ce_rows(lg, tgt, loss_rows, ignore_index, grad):
        _ce_rows[(lg.shape[0],)](lg, tgt, loss_rows, lg.shape[1], lg.stride(0), ignore_index,
                                 HAS_GRAD=grad, BLOCK_V=cfg["BLOCK_V"], num_warps=cfg["num_warps"])
    return ce_rows


def _scale_(t, g):
    BLOCK = 4096
    _scale[(aot.cdiv(t.numel(), BLOCK),)](t, g, t.numel(), BLOCK=BLOCK, num_warps=4)


_LAUNCHERS: dict = {}


def _launcher(full):
    key = (full["BLOCK_V"], full["num_warps"])
    return _LAUNCHERS.get(key) or _LAUNCHERS.setdefault(key, _ce_rows_launcher(full))


def config_for(x, cfg):
    return CONFIGS.get(aot.arch_of(x), 0, cfg)


def linear_cross_entropy(x, weight, targets, ignore_index=IGNORE_INDEX, **cfg):
    full = config_for(x, cfg)
    LAST.clear()
    LAST.update(full)
    return chunks.apply(x, weight, targets, ignore_index, full, _launcher(full), _scale_)


# torch.library op (kernels/linear_cross_entropy/library_ops.py): what torch.compile traces
FWD_OP, traced = library_ops.register("triton", ce_rows_for=_launcher, config_for=config_for, interpreted=True)


def _aot(config, arch):
    cfg = aot.fill({**{p.name: None for p in PARAMS}, **(config or {})}, PRESETS[aot.family(arch)])
    sig = {"L": "*bf16", "Tgt": "*i64", "Loss": "*fp32", "V": "i32", "stride_l": "i64", "ignore_index": "i64"}
    return [
        aot.compile_kernel(_ce_rows, "linear_cross_entropy_ce_rows", sig, {"HAS_GRAD": True, "BLOCK_V": cfg["BLOCK_V"]},
                           arch, cfg["num_warps"], 1, not_divisible=("ignore_index",)),
        aot.compile_kernel(_scale, "linear_cross_entropy_scale", {"T": "*bf16", "G": "*fp32", "N": "i64"},
                           {"BLOCK": 4096}, arch, 4, 1),
    ]


TEST_CONFIG = {"CHUNK_ROWS": 16, "BLOCK_V": 256}   # CPU tests: several blocks per test shape
IMPL = KernelImpl(fn=linear_cross_entropy, backend="triton", params=PARAMS, presets=PRESETS, aot=_aot,
                  picked=lambda: dict(LAST), traced=traced,
                  test_config=TEST_CONFIG,
                  doc="row chunks: cuBLAS logits, Triton in-place log-softmax/NLL -> dlogits, dx/dW in the forward")
