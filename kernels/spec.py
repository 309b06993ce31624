"""What an op is, independent of how it is implemented: inputs, a high-precision reference, error floors,
and the work it does (FLOPs and the fewest bytes it must move) for TFLOP/s, GB/s and roofline fractions."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch

from kernels.registry import DTYPES


@dataclasses.dataclass
class Inputs:
    args: tuple            # tensors (and other positional values) passed to the op
    kwargs: dict           # non-tensor options, e.g. causal=True
    grad_args: tuple = ()  # indices of args that receive gradients in the fwd+bwd pass

    def detached(self, requires_grad: bool) -> "Inputs":
        args = tuple(
            a.detach().requires_grad_(requires_grad and i in self.grad_args) if isinstance(a, torch.Tensor) else a
            for i, a in enumerate(self.args))
        return Inputs(args, dict(self.kwargs), self.grad_args)


@dataclasses.dataclass
class StressCase:
    """One case of the stress battery (bench/measure/stress.py): inputs the timed shape's plain randn never shows, which an
    impl must also pass before it is timed. An op's spec lists its cases (OpSpec.stress_cases)."""
    regime: str                  # what it stresses; a failure reads "stress:<regime>"
    shape: dict                  # a full shape of the op
    dtype: str
    values: Callable[[Inputs, torch.Generator], Inputs] | None = None   # the regime's values, from plain inputs


# The gate (bench/measure/check.py) holds an impl to K x eager's own error; these floors are the least error a right kernel
# is granted however close eager comes, by the compared tensor's dtype: a few units of its rounding (bf16 2^-9,
# fp16 2^-11), and for fp32 outputs of compute-bound ops tf32's (Triton's default for a float32 dot, ~3e-4).
ERROR_FLOOR = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
TF32_FLOOR = 2e-3


class OpSpec:
    name: str = ""
    shape_keys: tuple[str, ...] = ()
    shape_defaults: dict[str, Any] = {}
    bound: str = "memory"             # "compute": report TFLOP/s; "memory": GB/s
    # The op is independent per index of dim 0 of its chunk_args and of every output (fmha: per batch), so
    # the reference may be computed in slices. chunk_args None: every tensor arg; args not listed (weights)
    # go whole to each slice and their gradients are summed. Not for ops reducing over rows (a mean loss).
    chunk_dim0: bool = False
    chunk_args: tuple[int, ...] | None = None
    REF_CHUNK_ELEMENTS = 1 << 26      # the reference's working-set budget per slice (elements)

    # --- to implement per op ---
    def make_inputs(self, shape: dict, dtype: str, device: str, gen: torch.Generator) -> Inputs:
        raise NotImplementedError

    def math(self, *args, **kwargs):
        """The op in plain torch, run by the reference on upcast inputs."""
        raise NotImplementedError

    def flops(self, shape: dict, pass_: str) -> float:
        raise NotImplementedError

    def bytes(self, shape: dict, dtype: str, pass_: str) -> float:
        raise NotImplementedError

    def stress_cases(self, shape: dict, dtype: str) -> list[StressCase]:
        """The battery a point at (full) `shape` and `dtype` must also pass: the model's layouts, value regimes
        that break naive kernels, ragged and edge sizes. Sizes that pick kernels (C, D, N, K) stay the point's, so
        a sweep pays each case once; a size only tiles cover (M, T) becomes ragged or 1. Default: none."""
        return []

    def test_shapes(self) -> list[dict]:
        """Small odd shapes (multiples of no tile) the CPU tests check every impl at; the first is also the
        Triton interpreter's, with each impl's `test_config`. Default: every shape key 19."""
        return [{k: 19 for k in self.shape_keys}]

    # --- shared machinery ---
    def full_shape(self, shape: dict) -> dict:
        missing = [k for k in self.shape_keys if k not in shape]
        if missing:
            raise ValueError(f"{self.name}: shape lacks {missing} (needs {list(self.shape_keys)})")
        extra = [k for k in shape if k not in self.shape_keys and k not in self.shape_defaults]
        if extra:
            raise ValueError(f"{self.name}: unknown shape keys {extra} (takes {list(self.shape_keys) + list(self.shape_defaults)})")
        return {**self.shape_defaults, **shape}

    def label(self, shape: dict) -> str:
        s = self.full_shape(shape)
        parts = [f"{k}{s[k]}" for k in self.shape_keys]
        parts += [k if s[k] is True else f"no-{k}" if s[k] is False else f"{k}={s[k]}" for k in self.shape_defaults]
        return " ".join(parts)

    def x_value(self, shape: dict) -> float:
        """Where a point sits on a chart's x axis (problem size)."""
        return float(math.prod(v for v in self.full_shape(shape).values() if isinstance(v, int) and not isinstance(v, bool)))

    def error_floor(self, dtype: torch.dtype) -> float:
        """The least rel-L2 error the gate allows a tensor of `dtype` (an output or gradient) of this op."""
        if dtype == torch.float32 and self.bound == "compute":
            return TF32_FLOOR
        return ERROR_FLOOR.get(dtype, ERROR_FLOOR[torch.float32])

    def element_count(self, inputs: Inputs) -> int:
        return sum(a.numel() for a in inputs.args if isinstance(a, torch.Tensor))

    def reference(self, inputs: Inputs, grad_out: torch.Tensor | None = None):
        """(out, {arg_index: grad}) in float64 (float32 for large problems) from `math` on upcast inputs.

        With chunk_dim0, a problem over REF_CHUNK_ELEMENTS is computed in slices of dim 0: the chunk_args
        (and every output and upstream gradient) are sliced, the other args go whole to each slice, and
        their gradients are summed over the slices."""
        ref_dtype = torch.float64 if self.element_count(inputs) <= (1 << 26) else torch.float32
        sliced = self._chunked_args(inputs)
        n0 = inputs.args[sliced[0]].shape[0] if sliced else 1
        step = max(1, min(n0, int(n0 * self.REF_CHUNK_ELEMENTS / max(1, self._ref_elements(inputs))))) \
            if sliced else n0
        outs, grads = [], {}
        for s in range(0, n0, step):
            sl = slice(s, s + step)
            args = []
            for i, a in enumerate(inputs.args):
                if isinstance(a, torch.Tensor):
                    a = a[sl] if i in sliced else a
                    a = a.detach().to(ref_dtype) if a.is_floating_point() else a
                    if grad_out is not None and i in inputs.grad_args:
                        a.requires_grad_(True)
                args.append(a)
            with torch.autocast(device_type=args[0].device.type, enabled=False):
                out = self.math(*args, **inputs.kwargs)
            multi = isinstance(out, (tuple, list))
            if grad_out is not None:
                gs = grad_out if multi else (grad_out,)
                gs = [(g[sl] if sliced else g).to(ref_dtype) for g in gs]
                torch.autograd.backward(list(out) if multi else [out], gs)
                for i in inputs.grad_args:
                    grads.setdefault(i, []).append(args[i].grad.detach())
            outs.append(tuple(o.detach() for o in out) if multi else out.detach())
        join = (lambda parts: torch.cat(parts)) if len(outs) > 1 else (lambda parts: parts[0])
        out = tuple(join(o) for o in zip(*outs)) if multi else join(outs)
        return out, {i: join(g) if i in sliced else sum(g[1:], g[0]) for i, g in grads.items()}

    def _chunked_args(self, inputs: Inputs) -> tuple[int, ...]:
        """The indices of the args the reference slices along dim 0 (none without chunk_dim0)."""
        if not self.chunk_dim0:
            return ()
        if self.chunk_args is not None:
            return tuple(self.chunk_args)
        return tuple(i for i, a in enumerate(inputs.args) if isinstance(a, torch.Tensor))

    def _ref_elements(self, inputs: Inputs) -> int:
        return self.element_count(inputs)

    def grad_names(self) -> dict[int, str]:
        return {}

    def wrap(self, fn, shape: dict):
        """The callable the harness times and checks at `shape`: the impl itself, or the impl inside the
        layout changes the model puts around it (fmha with qkv: true)."""
        return fn

    def out_names(self) -> dict[str, str]:
        """Names for the outputs of an op that returns a tuple ("out0" -> "sum", ...)."""
        return {}


class RowSpec(OpSpec):
    """A memory-bound op over M rows of C elements (the last shape key: C, or V for a vocabulary) whose cost
    is so much per element: each op states its FLOPs and traffic as (fwd, fwd+bwd) tables, not the arithmetic."""
    shape_keys = ("M", "C")
    bound = "memory"
    FLOPS: tuple[float, float] = (0.0, 0.0)        # per element of the (M, C) input
    # (M x C tensors, C-vectors) moved in the point's dtype; the fewest an impl must move, small stats left out
    TRAFFIC: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))

    # rows a ragged stress case takes: a multiple of no tile (2 x 151, so the 3-D layout splits it evenly)
    RAGGED_ROWS = 302

    def stress_cases(self, shape, dtype):
        """As the model calls a row op: (B, T, C) tensors at a ragged row count, and a single row."""
        s = self.full_shape(shape)
        return [StressCase("rows_3d", {**s, "M": self.RAGGED_ROWS}, dtype, rows_3d()),
                StressCase("one_row", {**s, "M": 1}, dtype)]

    def rows(self, shape: dict) -> tuple[int, int]:
        s = self.full_shape(shape)
        return s["M"], s[self.shape_keys[-1]]

    def flops(self, shape, pass_):
        M, C = self.rows(shape)
        fwd, both = self.FLOPS
        return M * C * (fwd if pass_ == "fwd" else both)

    def bytes(self, shape, dtype, pass_):
        M, C = self.rows(shape)
        tensors, vectors = self.TRAFFIC[0 if pass_ == "fwd" else 1]
        return (tensors * M * C + vectors * C) * elt_size(dtype)


def rows_3d(*which: int, batch: int = 2) -> Callable[[Inputs, torch.Generator], Inputs]:
    """A values function viewing args `which` (default the first) as (batch, M / batch, C), as the model passes
    its (B, T, C) activations."""
    which = which or (0,)

    def view(inputs: Inputs, gen) -> Inputs:
        args = tuple(a.view(batch, -1, a.shape[-1]) if i in which else a for i, a in enumerate(inputs.args))
        return dataclasses.replace(inputs, args=args)
    return view


def outlier_columns(t: torch.Tensor, gen: torch.Generator, n: int = 6, factor: float = 150.0) -> torch.Tensor:
    """t with n random last-dim columns scaled by factor: the outlier channels of a trained transformer's activations
    (GPT-2's residual stream has a few in the hundreds)."""
    cols = torch.randperm(t.shape[-1], generator=gen, device=gen.device)[:n].to(t.device)
    out = t.clone()
    out[..., cols] = (t[..., cols].float() * factor).to(t.dtype)
    return out


def then(*steps):
    """Values functions applied in order."""
    def run(inputs, gen):
        for f in steps:
            inputs = f(inputs, gen)
        return inputs
    return run


def gen_for(seed: int, device: str) -> torch.Generator:
    g = torch.Generator(device=device if device.startswith("cuda") else "cpu")
    g.manual_seed(seed)
    return g


def randn(shape, dtype, device, gen, scale=1.0, shift=0.0):
    """Random normal on the device (fresh per call, never zeros)."""
    t = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
    return (t * scale + shift).to(DTYPES[dtype] if isinstance(dtype, str) else dtype)


def elt_size(dtype: str) -> int:
    return torch.empty((), dtype=DTYPES[dtype]).element_size()
