import torch.nn.functional as F

from kernels.spec import Inputs, OpSpec, elt_size, randn


class GeluSpec(OpSpec):
    name = "gelu"
    shape_keys = ("M", "C")
    bound = "memory"

    def test_shapes(self):
        return [dict(M=33, C=65), dict(M=17, C=41)]

    def make_inputs(self, shape, dtype, device, gen):
        s = self.full_shape(shape)
        x = randn((s["M"], s["C"]), dtype, device, gen, scale=2.0)
        b = randn((s["C"],), dtype, device, gen, scale=0.5)
        return Inputs((x, b), {}, grad_args=(0, 1))

    def math(self, x, bias=None):
        return F.gelu(x if bias is None else x + bias, approximate="tanh")

    def flops(self, shape, pass_):
        s = self.full_shape(shape)
        return s["M"] * s["C"] * (10.0 if pass_ == "fwd" else 30.0)

    def bytes(self, shape, dtype, pass_):
        s = self.full_shape(shape)
        mc, e = s["M"] * s["C"], elt_size(dtype)
        return (2 * mc + s["C"]) * e if pass_ == "fwd" else (5 * mc + 3 * s["C"]) * e

    def grad_names(self):
        return {0: "dx", 1: "dbias"}


SPEC = GeluSpec()
