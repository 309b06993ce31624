import torch.nn.functional as F

from kernels.spec import Inputs, OpSpec, elt_size, randn


class LinearSpec(OpSpec):
    name = "linear"
    shape_keys = ("M", "N", "K")
    bound = "compute"

    def test_shapes(self):
        return [dict(M=33, N=47, K=65)]

    def make_inputs(self, shape, dtype, device, gen):
        s = self.full_shape(shape)
        x = randn((s["M"], s["K"]), dtype, device, gen)
        w = randn((s["N"], s["K"]), dtype, device, gen, scale=s["K"] ** -0.5)
        b = randn((s["N"],), dtype, device, gen, scale=0.5)
        return Inputs((x, w, b), {}, grad_args=(0, 1, 2))

    def math(self, x, w, b=None, activation=None):
        y = F.linear(x, w, b)
        return F.gelu(y, approximate="tanh") if activation == "gelu" else y

    def flops(self, shape, pass_):
        s = self.full_shape(shape)
        return 2.0 * s["M"] * s["N"] * s["K"] * (3 if pass_ == "fwd+bwd" else 1)

    def bytes(self, shape, dtype, pass_):
        s = self.full_shape(shape)
        M, N, K, e = s["M"], s["N"], s["K"], elt_size(dtype)
        fwd = (M * K + N * K + M * N + N) * e
        return fwd if pass_ == "fwd" else fwd + (2 * M * N + 2 * M * K + 2 * N * K + N) * e

    def x_value(self, shape):
        return float(self.full_shape(shape)["M"])

    def grad_names(self):
        return {0: "dx", 1: "dw", 2: "db"}


SPEC = LinearSpec()
