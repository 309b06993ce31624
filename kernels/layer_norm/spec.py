import torch.nn.functional as F

from kernels.spec import Inputs, RowSpec, randn

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

    def math(self, x, w, b, eps=EPS):
        return F.layer_norm(x, (x.shape[-1],), w, b, eps)

    def grad_names(self):
        return {0: "dx", 1: "dw", 2: "db"}


SPEC = LayerNormSpec()
