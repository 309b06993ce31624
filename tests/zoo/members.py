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
    """Right for the first three calls at a shape (first call, checked call), wrong on the later, timed ones."""
    _calls[tuple(x.shape)] += 1
    y = gelu(x, bias)
    return y if _calls[tuple(x.shape)] <= 3 else y * 1.1


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


def add_ln_sum_off_in_fp32(x, y, bias, weight, ln_bias, eps=1e-5, out_dtype=None):
    s, h = add_layer_norm(x, y, bias, weight, ln_bias, eps, out_dtype)
    return s * (1 + 1e-4), h     # the fp32 residual stream off by 1e-4: only fp32's own tolerance sees it


_LN = {"cpu": [{"M": 257, "C": 768}], "gpu": [{"M": 16384, "C": 768}]}
_FMHA = {"cpu": [{"B": 2, "H": 4, "T": 257, "D": 64, "causal": True}],
         "gpu": [{"B": 16, "H": 12, "T": 1024, "D": 64, "causal": True}]}
_GELU = {"cpu": [{"M": 255, "C": 3072}], "gpu": [{"M": 16384, "C": 3072}]}
_CE = {"cpu": [{"M": 129, "V": 1003}], "gpu": [{"M": 16384, "V": 50304}]}
_LIN = {"cpu": [{"M": 257, "N": 384, "K": 256}], "gpu": [{"M": 16384, "N": 768, "K": 768}]}

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
}

# each member is a module attribute named as it is registered, for TILEBENCH_PLUGINS="op:name=module:name"
globals().update({name: KernelImpl(fn=fn, backend="eager", doc=why) for name, (fn, _, why, *_r) in MEMBERS.items()})


def plugins_env() -> str:
    """The TILEBENCH_PLUGINS value that registers every member under its op."""
    return ",".join(f"{op}:{name}=tests.zoo.members:{name}" for name, (_, op, *_r) in MEMBERS.items())
