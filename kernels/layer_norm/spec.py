import torch.nn.functional as F

from kernels.spec import Inputs, OpSpec, elt_size, randn

EPS = 1e-5


class LayerNormSpec(OpSpec):
    name = "layer_norm"
    shape_keys = ("M", "C")
    bound = "memory"

    def test_shapes(self):
        return [dict(M=37, C=65)]

    def make_inputs(self, shape, dtype, device, gen):
        s = self.full_shape(shape)
        x = randn((s["M"], s["C"]), dtype, device, gen, scale=2.0, shift=0.5)   # nonzero mean on purpose
        w = randn((s["C"],), dtype, device, gen, scale=0.1, shift=1.0)
        b = randn((s["C"],), dtype, device, gen, scale=0.1)
        return Inputs((x, w, b), {}, grad_args=(0, 1, 2))

    def math(self, x, w, b, eps=EPS):
        return F.layer_norm(x, (x.shape[-1],), w, b, eps)

    def flops(self, shape, pass_):
        s = self.full_shape(shape)
        return s["M"] * s["C"] * (8.0 if pass_ == "fwd" else 20.0)

    def bytes(self, shape, dtype, pass_):
        s = self.full_shape(shape)
        mc, e = s["M"] * s["C"], elt_size(dtype)
        # fwd reads x, writes y; bwd reads x and dy, writes dx (weights and per-row stats are small)
        return (2 * mc + 2 * s["C"]) * e if pass_ == "fwd" else (5 * mc + 4 * s["C"]) * e

    def grad_names(self):
        return {0: "dx", 1: "dw", 2: "db"}


SPEC = LayerNormSpec()
