"""The wrong-kernel zoo: impls each wrong in one way a real kernel goes wrong, every one of which the harness
must report `wrong`. Each is eager with one defect, registered as a plugin (TILEBENCH_PLUGINS) under its op.
When a bug slips past the gate, it joins the zoo before it is fixed.

MEMBERS: name -> (op, what is wrong, the sweep it is caught in: dtypes, passes, CPU shapes, GPU shapes)."""
import collections

import torch

from kernels.cross_entropy.eager import cross_entropy
from kernels.cross_entropy.spec import IGNORE_INDEX
from kernels.fmha.eager import fmha
from kernels.gelu.eager import gelu
from kernels.layer_norm.eager import layer_norm
from kernels.add_layer_norm.eager import add_layer_norm
from kernels.linear.eager import linear
from kernels import poison
from kernels.registry import KernelImpl


def _rows_zeroed(y, rows):
    keep = torch.ones(y.shape[0], 1, dtype=y.dtype, device=y.device)
    keep[list(rows)] = 0
    return y * keep


def ln_two_rows_unwritten(x, w, b, eps=1e-5):
    return _rows_zeroed(layer_norm(x, w, b, eps), (0, x.shape[0] // 2))


def ln_last_tile_unwritten(x, w, b, eps=1e-5):
    y = torch.empty_like(x)      # rows past the last full 64-row tile keep whatever the allocator had there
    n = x.shape[0] - max(1, x.shape[0] % 64)
    y[:n] = layer_norm(x[:n], w, b, eps)
    return y


def ln_small_scale_error(x, w, b, eps=1e-5):
    return layer_norm(x, w, b, eps) * 1.005


def fmha_one_head_tail_zeroed(q, k, v, causal=True, scale=None):
    o = fmha(q, k, v, causal, scale)
    keep = torch.ones(o.shape[1], o.shape[2], 1, dtype=o.dtype, device=o.device)
    keep[o.shape[1] - 1, -64:] = 0   # the last head's last 64 queries
    return o * keep


def fmha_mask_missing_in_one_block(q, k, v, causal=True, scale=None):
    o = fmha(q, k, v, causal, scale)
    full = fmha(q[:, :, 64:128], k, v, False, scale)   # queries 64..127 see the future
    return torch.cat([o[:, :, :64], full, o[:, :, 128:]], dim=2)


class _DvTileDropped(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal):
        with torch.enable_grad():
            q_, k_, v_ = (t.detach().requires_grad_() for t in (q, k, v))
            o = fmha(q_, k_, v_, causal)
        ctx.save_for_backward(q_, k_, v_, o)
        return o.detach()

    @staticmethod
    def backward(ctx, g):
        q, k, v, o = ctx.saved_tensors
        dq, dk, dv = torch.autograd.grad(o, (q, k, v), g)
        dv = dv.clone()
        dv[:, 0, :64] = 0        # one head's first 64-key tile of dV never written
        return dq, dk, dv, None


def fmha_dv_tile_dropped(q, k, v, causal=True, scale=None):
    return _DvTileDropped.apply(q, k, v, causal)


def ce_one_percent_high(logits, targets, ignore_index=IGNORE_INDEX):
    return cross_entropy(logits, targets, ignore_index) * 1.01


def ce_ignore_index_ignored(logits, targets, ignore_index=IGNORE_INDEX):
    return cross_entropy(logits, targets.clamp(min=0), ignore_index)   # ignored rows counted as class 0


def gelu_answers_in_fp32(x, bias=None):
    return gelu(x.float(), None if bias is None else bias.float())


def gelu_writes_its_input(x, bias=None):
    y = gelu(x, bias)
    x.data.mul_(0.5)            # scratch space taken from the caller's tensor
    return y


_calls = collections.Counter()


def gelu_right_then_wrong(x, bias=None):
    """Right whenever the gate checks it (its calls run poisoned) and in the stress battery, wrong when timed: only
    the re-check of the last timed call sees it."""
    y = gelu(x, bias)
    return y if poison.poisoning() else y * 1.1


_first = {}


def gelu_stale_output(x, bias=None):
    """Returns the answer of its first call at a shape (a cached output buffer never rewritten)."""
    key = tuple(x.shape)
    if key not in _first:
        _first[key] = gelu(x, bias).detach()
    return _first[key].clone()


class _DwColumnDropped(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return linear(x, w, b)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        dw = g.reshape(-1, g.shape[-1]).t().float() @ x.reshape(-1, x.shape[-1]).float()
        dw[:, -1] = 0            # the last K column of dW never written
        return (g @ w).to(x.dtype), dw.to(w.dtype), g.reshape(-1, g.shape[-1]).float().sum(0).to(w.dtype)


def linear_dw_column_dropped(x, weight, bias=None, activation=None):
    return _DwColumnDropped.apply(x, weight, bias)


def ln_one_pass_variance(x, w, b, eps=1e-5):
    """Variance as E[x^2] - E[x]^2 in fp32: fine near 0, cancels on rows far from it (the fp32 residual stream)."""
    xf = x.float()
    mean = xf.mean(-1, keepdim=True)
    var = (xf * xf).mean(-1, keepdim=True) - mean * mean
    y = (xf - mean) * torch.rsqrt(var.clamp(min=0) + eps) * w.float() + b.float()
    return y.to(x.dtype)


class _GradTailDropped(torch.autograd.Function):
    """Identity forward; the backward drops the last n entries of the gradient."""
    @staticmethod
    def forward(ctx, t, n):
        ctx.n = n
        return t.view_as(t)

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        g[..., -ctx.n:] = 0
        return g, None


def ln_dw_columns_dropped(x, w, b, eps=1e-5):
    return layer_norm(x, _GradTailDropped.apply(w, 8), b, eps)      # the last 8 dW columns never written


def fmha_reads_as_contiguous(q, k, v, causal=True, scale=None):
    """Reads q, k, v through their storage as if each were a contiguous (B, H, T, D) tensor: right on contiguous
    inputs, garbage on the model's views of one qkv tensor."""
    def flat(t):
        B, H, T, D = t.shape
        return torch.as_strided(t, t.shape, (H * T * D, T * D, D, 1), t.storage_offset())
    return fmha(flat(q), flat(k), flat(v), causal, scale)


def fmha_partial_tile_dropped(q, k, v, causal=True, scale=None):
    """Queries past the last whole 64-row tile never written: right whenever T is a multiple of 64."""
    o = fmha(q, k, v, causal, scale)
    T = q.shape[-2]
    keep = torch.ones(T, 1, dtype=o.dtype, device=o.device)
    keep[T - T % 64:] = 0
    return o * keep


def ce_without_max_subtraction(logits, targets, ignore_index=IGNORE_INDEX):
    """log(sum(exp(x))) in fp32, no row max subtracted: inf once a logit passes ~88."""
    x = logits.float()
    lse = torch.log(torch.exp(x).sum(-1))
    keep = targets != ignore_index
    picked = x.gather(1, targets.clamp(min=0)[:, None])[:, 0]
    return ((lse - picked) * keep).sum() / keep.sum()


def gelu_tanh_from_exp(x, bias=None):
    """tanh(u) as (e^u - e^-u) / (e^u + e^-u) in fp32: inf / inf = NaN once |x| passes ~12."""
    z = (x if bias is None else x + bias).float()
    u = 0.7978845608 * (z + 0.044715 * z ** 3)
    ep, en = torch.exp(u), torch.exp(-u)
    return (0.5 * z * (1 + (ep - en) / (ep + en))).to(x.dtype)


def gelu_slightly_high(x, bias=None):
    y = gelu(x.float(), None if bias is None else bias.float())
    return (y * 1.003).to(x.dtype)      # 0.3 % high: under bf16's rounding unit (0.4 %), unbiased noise it is not


_nth = collections.Counter()


def gelu_wrong_every_fifth_call(x, bias=None):
    """A race, made deterministic: every 5th call at a shape is 10 % off."""
    _nth[tuple(x.shape)] += 1
    y = gelu(x, bias)
    return y * 1.1 if _nth[tuple(x.shape)] % 5 == 0 else y


def add_ln_sum_off_in_fp32(x, y, bias, weight, ln_bias, eps=1e-5, out_dtype=None):
    s, h = add_layer_norm(x, y, bias, weight, ln_bias, eps, out_dtype)
    return s * (1 + 1e-4), h     # the fp32 residual stream off by 1e-4: only fp32's own tolerance sees it


_LN = {"cpu": [{"M": 257, "C": 768}], "gpu": [{"M": 16384, "C": 768}]}
_LN_BIG = {"cpu": [{"M": 16384, "C": 768}], "gpu": [{"M": 16384, "C": 768}]}     # where CPU eager's bf16 dW is ~10 % off
_FMHA_TILED = {"cpu": [{"B": 2, "H": 4, "T": 256, "D": 64, "causal": True}],     # T a multiple of 64: only the
               "gpu": [{"B": 16, "H": 12, "T": 1024, "D": 64, "causal": True}]}  # battery's ragged T sees it
_FMHA = {"cpu": [{"B": 2, "H": 4, "T": 257, "D": 64, "causal": True}],
         "gpu": [{"B": 16, "H": 12, "T": 1024, "D": 64, "causal": True}]}
_GELU = {"cpu": [{"M": 255, "C": 3072}], "gpu": [{"M": 16384, "C": 3072}]}
_CE = {"cpu": [{"M": 129, "V": 1003}], "gpu": [{"M": 16384, "V": 50304}]}
_LIN = {"cpu": [{"M": 257, "N": 384, "K": 256}], "gpu": [{"M": 16384, "N": 768, "K": 768}]}

BF16, FWD, BWD, BOTH_PASSES = ["bf16"], ["fwd"], ["fwd+bwd"], ["fwd", "fwd+bwd"]

# name: (fn, op, what is wrong, dtypes, passes, shapes)
MEMBERS = {
    "zoo_ln_two_rows": (ln_two_rows_unwritten, "layer_norm", "two rows never written (zeros)",
                        ["bf16"], ["fwd"], _LN),
    "zoo_ln_last_tile": (ln_last_tile_unwritten, "layer_norm", "the last row tile never written",
                         ["bf16"], ["fwd"], {"cpu": [{"M": 1000, "C": 1000}], "gpu": [{"M": 4099, "C": 1000}]}),
    "zoo_ln_scale": (ln_small_scale_error, "layer_norm", "output 0.5 % too large",
                     ["fp16", "fp32"], ["fwd"], _LN),
    "zoo_fmha_head_tail": (fmha_one_head_tail_zeroed, "fmha", "one head's last 64 queries zeroed",
                           ["bf16"], ["fwd"], _FMHA),
    "zoo_fmha_mask_block": (fmha_mask_missing_in_one_block, "fmha", "causal mask missing for queries 64-127",
                            ["bf16"], ["fwd"], _FMHA),
    "zoo_fmha_dv_tile": (fmha_dv_tile_dropped, "fmha", "one 64-key tile of one head's dV dropped",
                         ["bf16"], ["fwd+bwd"], _FMHA),
    "zoo_ce_high": (ce_one_percent_high, "cross_entropy", "loss 1 % high", ["bf16"], ["fwd"], _CE),
    "zoo_ce_ignore": (ce_ignore_index_ignored, "cross_entropy", "ignore_index rows counted",
                      ["bf16"], ["fwd"], _CE),
    "zoo_gelu_fp32": (gelu_answers_in_fp32, "gelu", "a bf16 point answered in fp32", ["bf16"], ["fwd"], _GELU),
    "zoo_gelu_mutates": (gelu_writes_its_input, "gelu", "writes its input in place", ["bf16"], ["fwd"], _GELU),
    "zoo_gelu_right_then_wrong": (gelu_right_then_wrong, "gelu", "right when checked, wrong when timed",
                                  ["fp32"], ["fwd"], _GELU),
    "zoo_gelu_stale": (gelu_stale_output, "gelu", "returns its first call's output", ["bf16"], ["fwd"], _GELU),
    "zoo_linear_dw_col": (linear_dw_column_dropped, "linear", "one column of dW dropped",
                          ["bf16"], ["fwd+bwd"], _LIN),
    "zoo_add_ln_sum": (add_ln_sum_off_in_fp32, "add_layer_norm", "fp32 residual sum off by 1e-4",
                       ["bf16"], ["fwd"], {"cpu": [{"M": 257, "C": 768}], "gpu": [{"M": 16384, "C": 768}]}),
    # the stress battery, the scale bias, repeated calls and the ceiling each catch one of these
    "zoo_ln_one_pass": (ln_one_pass_variance, "layer_norm", "one-pass variance in fp32", BF16, BOTH_PASSES, _LN),
    "zoo_ln_dw_cols": (ln_dw_columns_dropped, "layer_norm", "the last 8 dW columns dropped", BF16, BWD, _LN_BIG),
    "zoo_fmha_contiguous": (fmha_reads_as_contiguous, "fmha", "reads q, k, v as if contiguous", BF16, FWD, _FMHA),
    "zoo_fmha_partial_tile": (fmha_partial_tile_dropped, "fmha", "rows past the last 64-tile unwritten", BF16, FWD,
                              _FMHA_TILED),
    "zoo_ce_no_max": (ce_without_max_subtraction, "cross_entropy", "log-sum-exp without the row max", BF16, FWD, _CE),
    "zoo_gelu_exp_tanh": (gelu_tanh_from_exp, "gelu", "tanh from exp: NaN past |x| ~12", BF16, FWD, _GELU),
    "zoo_gelu_bias": (gelu_slightly_high, "gelu", "output 0.3 % high, bf16", BF16, FWD, _GELU),
    "zoo_gelu_every_fifth": (gelu_wrong_every_fifth_call, "gelu", "wrong on every 5th call (a race)", BF16, FWD, _GELU),
}

# what must catch each member, where one measure alone can: its `wrong` message contains this
CAUGHT_BY = {
    "zoo_ln_one_pass": "stress:far_mean",
    "zoo_ln_dw_cols": "beyond the ceiling",
    "zoo_fmha_contiguous": "stress:qkv_view",
    "zoo_fmha_partial_tile": "stress:qkv_view",
    "zoo_ce_no_max": "stress:trained_logits",
    "zoo_gelu_exp_tanh": "stress:large_x",
    "zoo_gelu_bias": "scale bias",
    "zoo_gelu_every_fifth": "call 4 of 8",
    "zoo_gelu_right_then_wrong": "timed call",
    "zoo_ln_two_rows": "worst row/column",
    "zoo_linear_dw_col": "worst row/column",
    "zoo_gelu_mutates": "written in place",
    "zoo_gelu_fp32": "dtype float32",
}

# each member is a module attribute named as it is registered, for TILEBENCH_PLUGINS="op:name=module:name"
globals().update({name: KernelImpl(fn=fn, backend="eager", doc=why) for name, (fn, _, why, *_r) in MEMBERS.items()})


def plugins_env() -> str:
    """The TILEBENCH_PLUGINS value that registers every member under its op."""
    return ",".join(f"{op}:{name}=tests.zoo.members:{name}" for name, (_, op, *_r) in MEMBERS.items())
