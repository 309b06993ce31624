import dataclasses

import torch.nn.functional as F

from kernels.linear import parts
from kernels.spec import Inputs, OpSpec, StressCase, elt_size, outlier_columns, randn, rows_3d

RAGGED_ROWS = 302     # a multiple of no tile, 2 x 151 for the 3-D layout


class LinearSpec(OpSpec):
    name = "linear"
    shape_keys = ("M", "N", "K")
    # part 1, 2, 3: only the forward, dX or dW matmul (kernels.linear.parts); gelu: activation="gelu"
    shape_defaults = {"part": 0, "gelu": False}
    bound = "compute"

    def test_shapes(self):
        return [dict(M=33, N=47, K=65)]

    def full_shape(self, shape):
        s = super().full_shape(shape)
        if s["part"] not in (0, *parts.PARTS):
            raise ValueError(f"linear: part {s['part']!r} (0: the op; 1 fwd, 2 dX, 3 dW matmul alone)")
        if s["part"] and s["gelu"]:
            raise ValueError("linear: gelu is the whole op's epilogue; a part is a bare matmul")
        return s

    def label(self, shape):
        s = self.full_shape(shape)
        base = f"M{s['M']} N{s['N']} K{s['K']}"
        return f"{base} {parts.PARTS[s['part']]}" if s["part"] else base + (" gelu" if s["gelu"] else "")

    def wrap(self, fn, shape):
        part = self.full_shape(shape)["part"]
        return parts.wrap(fn, part) if part else fn

    def stress_cases(self, shape, dtype):
        """(B, T, K) activations as the model passes them (a part is a bare 2-D matmul: ragged rows instead), outlier
        input columns (a trained model's activations; through GELU too), and one row."""
        s = {**self.full_shape(shape), "M": RAGGED_ROWS}
        layout = StressCase("ragged_rows", s, dtype) if s["part"] else StressCase("rows_3d", s, dtype, rows_3d())
        return [layout, StressCase("outlier_columns", s, dtype, _outlier_columns),
                StressCase("one_row", {**s, "M": 1}, dtype)]

    def make_inputs(self, shape, dtype, device, gen):
        s = self.full_shape(shape)
        if s["part"]:
            sa, sb, _ = parts.operand_shapes(s["M"], s["N"], s["K"], s["part"])
            # activations and upstream gradients about unit scale; W at nn.Linear's 1/sqrt(K)
            a = randn(sa, dtype, device, gen)
            b = randn(sb, dtype, device, gen, scale=s["K"] ** -0.5 if s["part"] < 3 else 1.0)
            return Inputs((a, b), {"part": s["part"]}, grad_args=())
        x = randn((s["M"], s["K"]), dtype, device, gen)
        w = randn((s["N"], s["K"]), dtype, device, gen, scale=s["K"] ** -0.5)
        b = randn((s["N"],), dtype, device, gen, scale=0.5)
        return Inputs((x, w, b), {"activation": "gelu"} if s["gelu"] else {}, grad_args=(0, 1, 2))

    def math(self, x, w, b=None, activation=None, part=0):
        if part:
            return parts.reference(x, w, part)
        y = F.linear(x, w, b)
        return F.gelu(y, approximate="tanh") if activation == "gelu" else y

    def flops(self, shape, pass_):
        s = self.full_shape(shape)
        return 2.0 * s["M"] * s["N"] * s["K"] * (3 if pass_ == "fwd+bwd" and not s["part"] else 1)

    def bytes(self, shape, dtype, pass_):
        s = self.full_shape(shape)
        M, N, K, e = s["M"], s["N"], s["K"], elt_size(dtype)
        if s["part"]:
            return sum(r * c for r, c in parts.operand_shapes(M, N, K, s["part"])) * e
        fwd = (M * K + N * K + M * N + N) * e
        return fwd if pass_ == "fwd" else fwd + (2 * M * N + 2 * M * K + 2 * N * K + N) * e

    def x_value(self, shape):
        return float(self.full_shape(shape)["M"])

    def grad_names(self):
        return {0: "dx", 1: "dw", 2: "db"}


def _outlier_columns(inputs, gen):
    a = outlier_columns(inputs.args[0], gen, n=4, factor=50.0)
    return dataclasses.replace(inputs, args=(a, *inputs.args[1:]))


SPEC = LinearSpec()
