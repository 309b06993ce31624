import dataclasses

import torch
import torch.nn.functional as F

from kernels.cross_entropy.spec import none_ignored, ragged_vocab
from kernels.spec import Inputs, OpSpec, StressCase, elt_size, randn

IGNORE_INDEX = -1


class LinearCrossEntropySpec(OpSpec):
    name = "linear_cross_entropy"
    shape_keys = ("M", "K", "V")    # rows (tokens), n_embd, vocabulary
    bound = "compute"

    def test_shapes(self):
        return [dict(M=29, K=23, V=101)]

    def make_inputs(self, shape, dtype, device, gen):
        s = self.full_shape(shape)
        x = randn((s["M"], s["K"]), dtype, device, gen)                 # ln_f output: about unit scale
        # 1/sqrt(K): 0.036 at K=768, near GPT-2's 0.02 tied-embedding init, and unit-spread logits at any K
        w = randn((s["V"], s["K"]), dtype, device, gen, scale=s["K"] ** -0.5)
        targets = torch.randint(0, s["V"], (s["M"],), generator=gen, device=device)
        # about one row in 16 is ignored, so every impl's ignore path is checked
        ignored = torch.rand((s["M"],), generator=gen, device=device) < 1 / 16
        targets[ignored] = IGNORE_INDEX
        return Inputs((x, w, targets), {}, grad_args=(0, 1))

    def stress_cases(self, shape, dtype):
        """Ragged rows and vocabulary (50257), logits at a trained model's scale (one dominant per row), one row."""
        s = self.full_shape(shape)
        s = {**s, "M": 301, "V": ragged_vocab(s["V"])}
        return [StressCase("ragged_vocab", s, dtype), StressCase("trained_logits", s, dtype, _dominant_logits),
                StressCase("one_row", {**s, "M": 1}, dtype, none_ignored)]

    def math(self, x, w, targets):
        return F.cross_entropy(F.linear(x, w), targets, ignore_index=IGNORE_INDEX)

    def element_count(self, inputs):
        # the reference materialises the (M, V) logits and their gradient: count them when choosing
        # float64 or float32, else GPT-2's shape would ask for 6.6 GB of float64 logits
        x, w = inputs.args[0], inputs.args[1]
        return super().element_count(inputs) + x.shape[0] * w.shape[0]

    def flops(self, shape, pass_):
        s = self.full_shape(shape)
        return 2.0 * s["M"] * s["K"] * s["V"] * (3 if pass_ == "fwd+bwd" else 1)

    def bytes(self, shape, dtype, pass_):
        s = self.full_shape(shape)
        M, K, V, e = s["M"], s["K"], s["V"], elt_size(dtype)
        # the fewest a fused impl must move: read x, W and targets; fwd+bwd also writes dx and dW
        fwd = (M * K + V * K) * e + 8 * M
        return fwd if pass_ == "fwd" else fwd + (M * K + V * K) * e

    def x_value(self, shape):
        return float(self.full_shape(shape)["M"])

    def grad_names(self):
        return {0: "dx", 1: "dw"}


def _dominant_logits(inputs, gen):
    """Each row's own vocabulary entry (W's row aimed at it) scores 100 and every other logit stays within a few:
    a trained model's confident prediction, past where exp() overflows (88), with softmax one-hot so that rounding
    the logits to bf16 (eager's lm_head) costs nothing. Targets are other tokens, so the loss is ~100 a row."""
    x, w, targets = inputs.args
    rows = torch.randperm(w.shape[0], generator=gen, device=gen.device)[:x.shape[0]].to(w.device)
    n = len(rows)       # a vocabulary smaller than the batch: the tokens past it keep plain logits
    xf = x[:n].float()
    w = w.clone()
    w[rows] = (xf * 100 / xf.pow(2).sum(-1, keepdim=True)).to(w.dtype)
    t = targets.clone()
    t[:n] = torch.where(t[:n] == rows, (t[:n] + 1) % w.shape[0], t[:n])
    return dataclasses.replace(inputs, args=(x, w, t))


SPEC = LinearCrossEntropySpec()
