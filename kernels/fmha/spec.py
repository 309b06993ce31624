import math

import torch

from kernels.mask import MASK_FLOOR
from kernels.spec import Inputs, OpSpec, elt_size, randn


class FmhaSpec(OpSpec):
    name = "fmha"
    shape_keys = ("B", "H", "T", "D")
    shape_defaults = {"causal": True}
    bound = "compute"
    chunk_dim0 = True

    def make_inputs(self, shape, dtype, device, gen):
        s = self.full_shape(shape)
        dims = (s["B"], s["H"], s["T"], s["D"])
        q, k, v = (randn(dims, dtype, device, gen) for _ in range(3))
        return Inputs((q, k, v), {"causal": s["causal"]}, grad_args=(0, 1, 2))

    def math(self, q, k, v, causal=True, scale=None):
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        att = (q @ k.transpose(-2, -1)) * scale
        if causal:
            T, S = q.shape[-2], k.shape[-2]
            keep = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
            att = att.masked_fill(~keep, MASK_FLOOR)
        return torch.softmax(att, dim=-1) @ v

    def _ref_elements(self, inputs):
        q = inputs.args[0]
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
        return {0: "dq", 1: "dk", 2: "dv"}


SPEC = FmhaSpec()
