import dataclasses

import torch
import torch.nn.functional as F

from kernels.registry import DTYPES
from kernels.spec import Inputs, RowSpec, StressCase, elt_size, outlier_columns, randn, rows_3d

EPS = 1e-5


def out_dtype_of(out_dtype, x):
    """out_dtype may be None (x's dtype), a torch dtype or a name ("bf16")."""
    if out_dtype is None:
        return x.dtype
    return DTYPES[out_dtype] if isinstance(out_dtype, str) else out_dtype


class AddLayerNormSpec(RowSpec):
    """The model's case: x is the fp32 residual stream, y a branch output in the point's dtype, bias and the
    LayerNorm parameters fp32 (autocast keeps parameters fp32), h comes out in the point's dtype."""
    name = "add_layer_norm"
    FLOPS = (10.0, 24.0)

    def test_shapes(self):
        return [dict(M=37, C=65)]

    def make_inputs(self, shape, dtype, device, gen):
        s = self.full_shape(shape)
        M, C = s["M"], s["C"]
        x = randn((M, C), "fp32", device, gen, scale=2.0, shift=0.5)
        y = randn((M, C), dtype, device, gen)
        bias = randn((C,), "fp32", device, gen, scale=0.1, shift=0.2)
        w = randn((C,), "fp32", device, gen, scale=0.1, shift=1.0)
        b = randn((C,), "fp32", device, gen, scale=0.1)
        return Inputs((x, y, bias, w, b), {"out_dtype": dtype}, grad_args=(0, 1, 2, 3, 4))

    def stress_cases(self, shape, dtype):
        # x is the fp32 residual stream already: rows far from 0 and outlier channels in the point's own dtype
        s = {**self.full_shape(shape), "M": self.RAGGED_ROWS}
        return [StressCase("rows_3d", s, dtype, rows_3d(0, 1)),
                StressCase("one_row", {**s, "M": 1}, dtype),
                StressCase("far_mean", s, dtype, _far_mean),
                StressCase("outlier_channels", s, dtype, _outliers)]

    def math(self, x, y, bias, w, b, eps=EPS, out_dtype=None):
        s = x + y + bias
        return s, F.layer_norm(s, (s.shape[-1],), w, b, eps)

    def bytes(self, shape, dtype, pass_):   # not one dtype: x, s and their gradients are fp32
        M, C = self.rows(shape)
        mc, e = M * C, elt_size(dtype)
        fwd = (4 + e + 4 + e) * mc                 # read x, y; write s, h
        bwd = (4 + e + 4 + 4 + e) * mc             # read s, dh, ds; write dx, dy (params and row stats are small)
        return fwd if pass_ == "fwd" else fwd + bwd

    def grad_names(self):
        return {0: "dx", 1: "dy", 2: "dbias", 3: "dw", 4: "db"}

    def out_names(self):
        return {"out0": "sum", "out1": "norm"}


def _far_mean(inputs, gen):
    x = inputs.args[0]
    far = randn(x.shape, x.dtype, x.device, gen, shift=1000.0)   # residual rows of mean 1000, spread 1
    return dataclasses.replace(inputs, args=(far, *inputs.args[1:]))


def _outliers(inputs, gen):
    return dataclasses.replace(inputs, args=(outlier_columns(inputs.args[0], gen), *inputs.args[1:]))


SPEC = AddLayerNormSpec()


def check_args(x, y, bias):
    if y is None and bias is not None:
        raise ValueError("add_layer_norm: a bias needs a branch y to add it to")
    if y is not None and y.shape != x.shape:
        raise ValueError(f"add_layer_norm: y shape {tuple(y.shape)} != x shape {tuple(x.shape)}")


def kernel_params(bias, weight, ln_bias):
    """(bias, weight, ln_bias) as both kernel impls take them: contiguous, ln_bias zeros where None."""
    if ln_bias is None:   # nanoGPT's bias=False LayerNorm
        ln_bias = torch.zeros_like(weight)
    return (bias.contiguous() if bias is not None else None), weight.contiguous(), ln_bias.contiguous()


# --- the autograd bookkeeping both kernel impls share ------------------------------------------------------

def save_meta(ctx, x, y, bias, cfg):
    ctx.cfg, ctx.shape = cfg, x.shape
    ctx.y_dtype = y.dtype if y is not None else None
    ctx.has_bias = bias is not None
    ctx.set_materialize_grads(False)   # an unused s (ln_f's) sends None, not a tensor of zeros


def outputs(x, y, s, h):
    """(s, h) with a branch; h alone without one (the caller's s is then x itself)."""
    return h.view(x.shape) if y is None else (s.view(x.shape), h.view(x.shape))


def upstream(ctx, grads, device):
    """(ds or None, dh, the branch gradient's dtype or None when not needed, whether dbias is needed)."""
    ds, dh = grads if ctx.y_dtype is not None else (None, grads[0])
    if dh is None:   # h unused: the gradient is ds alone
        dh = torch.zeros(ctx.shape, dtype=torch.float32, device=device)
    need_dy = ctx.y_dtype is not None and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
    return ds, dh, (ctx.y_dtype if need_dy else None), ctx.has_bias and ctx.needs_input_grad[2]


def input_grads(ctx, dx, dy, dbias, dw, db):
    """backward's return value for (x, y, bias, weight, ln_bias, eps, out_dtype, cfg)."""
    return dx.view(ctx.shape), (dy.view(ctx.shape) if dy is not None else None), dbias, dw, db, None, None, None
