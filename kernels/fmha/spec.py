import dataclasses
import math

import torch

from kernels.fmha.layout import split_qkv
from kernels.mask import MASK_FLOOR
from kernels.spec import Inputs, OpSpec, StressCase, elt_size, randn

RAGGED_T = 301     # a multiple of no tile


class FmhaSpec(OpSpec):
    """qkv: true times attention as the model calls it: q, k, v are (B, H, T, D) views of one (B, T, 3C)
    qkv matmul output, the result goes back to (B, T, C), and the gradient arrives as one dqkv, so an impl
    pays for whatever transposes and concatenations its layouts need (kernels/fmha/layout.py)."""
    name = "fmha"
    shape_keys = ("B", "H", "T", "D")
    shape_defaults = {"causal": True, "qkv": False}
    bound = "compute"
    chunk_dim0 = True

    def test_shapes(self):
        return [dict(B=2, H=3, T=37, D=64, causal=True), dict(B=2, H=3, T=37, D=64, causal=False),
                dict(B=1, H=2, T=19, D=16, causal=True)]

    def label(self, shape):
        s = self.full_shape(shape)
        return " ".join([f"{k}{s[k]}" for k in self.shape_keys] + ["causal" if s["causal"] else "no-causal"]
                        + (["qkv"] if s["qkv"] else []))

    def stress_cases(self, shape, dtype):
        """q, k, v as the model passes them (views of one qkv tensor) at a ragged T, large scores there, and a single
        query (T=1: sampling's first token). A causal square mask leaves no row fully masked, so none is tried."""
        s = self.full_shape(shape)
        ragged = {**s, "B": 2, "T": RAGGED_T, "qkv": True}
        return [StressCase("qkv_view", ragged, dtype), StressCase("large_scores", ragged, dtype, _large_scores),
                StressCase("one_query", {**s, "B": 2, "T": 1}, dtype)]

    def make_inputs(self, shape, dtype, device, gen):
        s = self.full_shape(shape)
        if s["qkv"]:
            qkv = randn((s["B"], s["T"], 3 * s["H"] * s["D"]), dtype, device, gen)
            return Inputs((qkv,), {"causal": s["causal"], "heads": s["H"]}, grad_args=(0,))
        dims = (s["B"], s["H"], s["T"], s["D"])
        q, k, v = (randn(dims, dtype, device, gen) for _ in range(3))
        return Inputs((q, k, v), {"causal": s["causal"]}, grad_args=(0, 1, 2))

    def wrap(self, fn, shape):
        if not self.full_shape(shape)["qkv"]:
            return fn

        def attention(qkv, causal=True, heads=1, **cfg):
            B, T, C3 = qkv.shape
            q, k, v = (t.view(B, T, heads, C3 // 3 // heads).transpose(1, 2) for t in split_qkv(qkv, C3 // 3))
            return fn(q, k, v, causal=causal, **cfg).transpose(1, 2).contiguous().view(B, T, C3 // 3)
        return attention

    def math(self, q, k=None, v=None, causal=True, scale=None, heads=None):
        if heads is not None:   # q is qkv (B, T, 3C)
            B, T, C3 = q.shape
            q, k, v = q.view(B, T, 3, heads, C3 // 3 // heads).permute(2, 0, 3, 1, 4)
            return self.math(q, k, v, causal, scale).transpose(1, 2).reshape(B, T, C3 // 3)
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        att = (q @ k.transpose(-2, -1)) * scale
        if causal:
            T, S = q.shape[-2], k.shape[-2]
            keep = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
            att = att.masked_fill(~keep, MASK_FLOOR)
        return torch.softmax(att, dim=-1) @ v

    def _ref_elements(self, inputs):
        q = inputs.args[0]
        if "heads" in inputs.kwargs:   # qkv (B, T, 3C)
            return q.shape[0] * inputs.kwargs["heads"] * q.shape[1] * q.shape[1]
        return q.shape[0] * q.shape[1] * q.shape[2] * q.shape[2]

    def flops(self, shape, pass_):
        s = self.full_shape(shape)
        f = 4.0 * s["B"] * s["H"] * s["T"] * s["T"] * s["D"] * (0.5 if s["causal"] else 1.0)
        return f * (3.5 if pass_ == "fwd+bwd" else 1.0)   # bwd does 5 matmuls to fwd's 2

    def bytes(self, shape, dtype, pass_):
        s = self.full_shape(shape)
        n = s["B"] * s["H"] * s["T"] * s["D"] * elt_size(dtype)
        return n * (12 if pass_ == "fwd+bwd" else 4)      # fwd: q,k,v,o; bwd adds q,k,v,o,do,dq,dk,dv

    def x_value(self, shape):
        return float(self.full_shape(shape)["T"])

    def grad_names(self):
        return {0: "dq", 1: "dk", 2: "dv"}   # with qkv: 0 is dqkv


def _large_scores(inputs, gen):
    """Every other head's queries each aim at one key (causal: at or before it) with a scaled score near 100, the
    rest of the row within ~+-40: exp() of the raw scores overflows (fp32 past 88, fp16 exponentials past 11),
    while softmax itself stays one-hot, so rounding the scores to the dtype (as eager does) costs nothing. The
    other heads keep a soft distribution, whose gradients stay measurable."""
    args = [a.clone() for a in inputs.args]
    causal = inputs.kwargs.get("causal", True)
    if "heads" in inputs.kwargs:     # qkv (B, T, 3C): q and k are its first two thirds
        B, T, C3 = args[0].shape
        H = inputs.kwargs["heads"]
        qkv = args[0].view(B, T, 3, H, C3 // 3 // H)
        q, k = qkv[:, :, 0, ::2], qkv[:, :, 1, ::2]          # (B, T, H/2, D)
        t_dim = 1
    else:
        q, k = args[0][:, ::2], args[1][:, ::2]                # (B, H/2, T, D)
        t_dim = 2
    T, D = q.shape[t_dim], q.shape[-1]
    i = torch.arange(T, device=q.device)
    span = (i + 1) if causal else torch.full_like(i, T)
    aim = (torch.rand(T, generator=gen, device=gen.device).to(q.device) * span).long().clamp(max=T - 1)
    kk = k.index_select(t_dim, aim).float()
    # a score of 100 after the 1/sqrt(D) scale: q = 100 sqrt(D) k_aim / |k_aim|^2
    q.copy_((kk * (100 * D ** 0.5) / kk.pow(2).sum(-1, keepdim=True)).to(q.dtype))
    return dataclasses.replace(inputs, args=tuple(args))


SPEC = FmhaSpec()
