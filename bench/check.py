"""The correctness gate: run an impl once on fresh random inputs with poisoned outputs and compare with
the op's high-precision reference. A point that fails here is reported `wrong` and never timed."""
from __future__ import annotations

import dataclasses
import math

import torch

from kernels import poison
from kernels.spec import Inputs, gen_for


@dataclasses.dataclass
class CheckResult:
    ok: bool
    message: str
    max_err_ratio: float           # worst (rel-L2 error / tolerance) over out and grads; > 1 fails
    errors: dict                   # name -> rel-L2 error
    tolerance: dict                # name -> tolerance

    def as_row(self) -> dict:
        return {"err_ratio": self.max_err_ratio, "errors": self.errors, "check": self.message}


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    d = (out.detach().double() - ref.detach().double()).norm().item()
    n = ref.detach().double().norm().item()
    return d / n if n > 0 else d


def _compare(name, out, ref, tol, errors, tols, problems):
    tols[name] = tol
    if not isinstance(out, torch.Tensor):
        problems.append(f"{name}: got {type(out).__name__}, expected a tensor")
        errors[name] = math.inf
        return
    if tuple(out.shape) != tuple(ref.shape):
        problems.append(f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
        errors[name] = math.inf
        return
    bad = (~torch.isfinite(out.detach().float())).sum().item()
    if bad:
        problems.append(f"{name}: {bad} of {out.numel()} elements NaN/inf (unwritten or overflowed)")
        errors[name] = math.inf
        return
    e = rel_l2(out, ref)
    errors[name] = e
    if not e <= tol:
        problems.append(f"{name}: rel-L2 error {e:.3g} > tolerance {tol:.3g}")


def grad_out_for(out, gen: torch.Generator):
    """A random upstream gradient shaped like the output (a tuple of them for an op with several outputs)."""
    if isinstance(out, (tuple, list)):
        return tuple(grad_out_for(o, gen) for o in out)
    g = torch.randn(out.shape, generator=gen, device=out.device, dtype=torch.float32)
    return g.to(out.dtype)


def backward(out, grad_out) -> None:
    """out.backward(grad_out), for one output or a tuple of them (e.g. add_layer_norm's sum and norm)."""
    if isinstance(out, (tuple, list)):
        torch.autograd.backward(list(out), list(grad_out))
    else:
        out.backward(grad_out)


def outputs(out) -> dict:
    """name -> tensor: "out" for a single output, "out0", "out1", ... for a tuple."""
    if isinstance(out, (tuple, list)):
        return {f"out{i}": o for i, o in enumerate(out)}
    return {"out": out}


def run_once(fn, inputs: Inputs, pass_: str, config: dict, grad_out=None):
    """One call of the impl (and its backward for fwd+bwd): output and the input gradients."""
    inp = inputs.detached(requires_grad=(pass_ == "fwd+bwd"))
    out = fn(*inp.args, **inp.kwargs, **config)
    grads = {}
    if pass_ == "fwd+bwd":
        backward(out, grad_out)
        grads = {i: inp.args[i].grad for i in inputs.grad_args}
    return out, grads


def check(spec, fn, shape: dict, dtype: str, pass_: str, device: str, config: dict | None = None,
          seed: int = 0, inputs: Inputs | None = None) -> CheckResult:
    """Compare fn with spec's reference; exceptions propagate (the runner classifies them)."""
    config = config or {}
    gen = gen_for(seed, device)
    inputs = inputs or spec.make_inputs(shape, dtype, device, gen)
    grad_out = None
    with poison.poisoned():
        if pass_ == "fwd+bwd":
            # the grad_out shape comes from a first forward; the checked call is a fresh one
            with torch.no_grad():
                probe = fn(*inputs.args, **inputs.kwargs, **config)
            grad_out = grad_out_for(probe, gen)
            del probe
        out, grads = run_once(fn, inputs, pass_, config, grad_out)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    ref, ref_grads = spec.reference(inputs, grad_out)
    errors, tols, problems = {}, {}, []
    refs, got = outputs(ref), outputs(out)
    if set(got) != set(refs):
        problems.append(f"returned {len(got)} output(s), the reference {len(refs)}")
    for key, r in refs.items():
        name = spec.out_names().get(key, key)
        _compare(name, got.get(key), r, spec.tolerance_for(name, dtype), errors, tols, problems)
    names = spec.grad_names()
    for i, rg in ref_grads.items():
        name = names.get(i, f"grad{i}")
        _compare(name, grads.get(i), rg, spec.tolerance_for(name, dtype, grad=True), errors, tols, problems)
    ratio = max((errors[k] / tols[k] for k in errors), default=0.0)
    msg = "; ".join(problems) if problems else "max " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
    return CheckResult(not problems, msg, ratio, errors, tols)
