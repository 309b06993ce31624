import dataclasses

import torch.nn.functional as F

from kernels.spec import Inputs, RowSpec, StressCase, outlier_columns, randn

EPS = 1e-5


class LayerNormSpec(RowSpec):
    name = "layer_norm"
    FLOPS = (8.0, 20.0)
    # fwd reads x, writes y; bwd reads x and dy, writes dx (weights and per-row stats are small)
    TRAFFIC = ((2, 2), (5, 4))

    def test_shapes(self):
        return [dict(M=37, C=65)]

    def make_inputs(self, shape, dtype, device, gen):
        s = self.full_shape(shape)
        x = randn((s["M"], s["C"]), dtype, device, gen, scale=2.0, shift=0.5)   # nonzero mean on purpose
        w = randn((s["C"],), dtype, device, gen, scale=0.1, shift=1.0)
        b = randn((s["C"],), dtype, device, gen, scale=0.1)
        return Inputs((x, w, b), {}, grad_args=(0, 1, 2))

    def stress_cases(self, shape, dtype):
        # the residual stream the model normalises is fp32, with rows far from 0 and outlier channels: a one-pass
        # variance E[x^2] - E[x]^2 cancels there (bf16 inputs cannot sit far from 0 relative to their spread)
        s = {**self.full_shape(shape), "M": self.RAGGED_ROWS}
        return super().stress_cases(shape, dtype) + [
            StressCase("far_mean", s, "fp32", _far_mean),
            StressCase("outlier_channels", s, "fp32", _outliers)]

    def math(self, x, w, b, eps=EPS):
        return F.layer_norm(x, (x.shape[-1],), w, b, eps)

    def grad_names(self):
        return {0: "dx", 1: "dw", 2: "db"}


def _far_mean(inputs, gen):
    x = inputs.args[0]
    far = randn(x.shape, x.dtype, x.device, gen, shift=1000.0)   # rows of mean 1000, spread 1
    return dataclasses.replace(inputs, args=(far, *inputs.args[1:]))


def _outliers(inputs, gen):
    return dataclasses.replace(inputs, args=(outlier_columns(inputs.args[0], gen), *inputs.args[1:]))


SPEC = LayerNormSpec()
