import torch
import torch.nn.functional as F

from kernels.spec import Inputs, RowSpec, randn

IGNORE_INDEX = -1


class CrossEntropySpec(RowSpec):
    name = "cross_entropy"
    shape_keys = ("M", "V")
    FLOPS = (4.0, 8.0)
    # fwd reads the logits once; a fused fwd+bwd reads them once more and writes their gradient
    TRAFFIC = ((1, 0), (3, 0))

    def test_shapes(self):
        return [dict(M=33, V=1003), dict(M=29, V=101)]

    def make_inputs(self, shape, dtype, device, gen):
        s = self.full_shape(shape)
        logits = randn((s["M"], s["V"]), dtype, device, gen, scale=3.0)
        targets = torch.randint(0, s["V"], (s["M"],), generator=gen, device=device)
        # about one row in 16 is ignored, so every impl's ignore path is checked
        ignored = torch.rand((s["M"],), generator=gen, device=device) < 1 / 16
        targets[ignored] = IGNORE_INDEX
        return Inputs((logits, targets), {}, grad_args=(0,))

    def math(self, logits, targets):
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)

    def grad_names(self):
        return {0: "dlogits"}


SPEC = CrossEntropySpec()
