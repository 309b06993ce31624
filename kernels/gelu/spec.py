import torch.nn.functional as F

from kernels.spec import Inputs, RowSpec, randn


class GeluSpec(RowSpec):
    name = "gelu"
    FLOPS = (10.0, 30.0)
    TRAFFIC = ((2, 1), (5, 3))

    def test_shapes(self):
        return [dict(M=33, C=65), dict(M=17, C=41)]

    def make_inputs(self, shape, dtype, device, gen):
        s = self.full_shape(shape)
        x = randn((s["M"], s["C"]), dtype, device, gen, scale=2.0)
        b = randn((s["C"],), dtype, device, gen, scale=0.5)
        return Inputs((x, b), {}, grad_args=(0, 1))

    def math(self, x, bias=None):
        return F.gelu(x if bias is None else x + bias, approximate="tanh")

    def grad_names(self):
        return {0: "dx", 1: "dbias"}


SPEC = GeluSpec()
