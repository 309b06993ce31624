import dataclasses

import torch
import torch.nn.functional as F

from kernels.spec import Inputs, RowSpec, StressCase, randn

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

    def stress_cases(self, shape, dtype):
        """A ragged vocabulary (GPT-2's 50257 where the point pads to 50304), logits at a trained model's scale,
        and one row."""
        s = self.full_shape(shape)
        s = {**s, "M": 301, "V": ragged_vocab(s["V"])}
        return [StressCase("ragged_vocab", s, dtype), StressCase("trained_logits", s, dtype, trained_logits),
                StressCase("one_row", {**s, "M": 1}, dtype, none_ignored)]

    def math(self, logits, targets):
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)

    def grad_names(self):
        return {0: "dlogits"}


def ragged_vocab(V: int) -> int:
    """A vocabulary of no tile multiple near V: 50304 (GPT-2's padded vocabulary) -> 50257 (its real one)."""
    return V - 47 if V > 64 and V % 16 == 0 else V


def trained_logits(inputs, gen):
    """Logits as a trained GPT-2 gives them: mostly negative tens (-40 +- 12), one peak per row between 20 and 100,
    the target at the peak half the time. exp() of them without the row max subtracted overflows past 88."""
    logits, targets = inputs.args
    M, V = logits.shape
    dev = logits.device
    x = torch.randn(M, V, generator=gen, device=dev) * 12 - 40
    peak = torch.randint(0, V, (M,), generator=gen, device=dev)
    x[torch.arange(M, device=dev), peak] = torch.rand(M, generator=gen, device=dev) * 80 + 20
    hit = torch.rand(M, generator=gen, device=dev) < 0.5
    t = torch.where((targets >= 0) & hit, peak, targets)
    return dataclasses.replace(inputs, args=(x.to(logits.dtype), t, *inputs.args[2:]))


def none_ignored(inputs, gen):
    """Every target counted (a mean over no row is NaN, for eager as for any impl)."""
    args = list(inputs.args)
    args[-1] = args[-1].clamp(min=0)
    return dataclasses.replace(inputs, args=tuple(args))


SPEC = CrossEntropySpec()
