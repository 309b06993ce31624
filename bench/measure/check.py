"""The correctness gate: run an impl on fresh random inputs, its outputs landing on poisoned memory, and hold each
output and gradient to what eager PyTorch achieves on the same inputs in the same dtype. A point that fails here is
reported `wrong` and never timed.

The rule (FlashAttention's): error against the float64 reference within max(K x eager's own error, floor), and
never beyond CEILING x floor (a sloppy baseline must not license a wrong kernel), measured three ways: the whole
tensor (rel-L2), locally (the worst row or column, relative to the tensor's RMS row: a global rel-L2 alone lets
two unwritten rows of 16384 pass) and as a systematic scale (the least-squares <o - r, r> / <r, r>: rounding is
unbiased, so a kernel 0.3 % high in bf16 shows there long before rel-L2 sees it). Dtype and shape must be eager's,
no input may change, several calls are judged (a defect on one call in five fails), and the same `Expected`
answers for the last timed call (bench/measure/runner.py), so "right once, wrong when timed" fails too."""
from __future__ import annotations

import dataclasses
import math

import torch

from kernels import backends, poison
from kernels.registry import DTYPES
from kernels.spec import Inputs, gen_for

# An impl may be at most K times as far from the reference as eager is, in the same dtype on the same inputs.
# 4: our kernels round where eager does (fp32 accumulation, one rounding of the output), so a right kernel sits
# near 1x; a dropped tile or a missing mask lands far beyond. Where the dtype's floor rules (bf16: 8e-3, about two
# rounding units) a systematic scale error under ~0.8 % passes: below what bf16 itself resolves.
K = 4.0
# No tolerance is looser than CEILING x the dtype's floor (local: x the local floor), whatever eager's error: where
# eager itself is beyond it (CPU bf16 LayerNorm dW past ~1000 rows: PyTorch accumulates it in bf16), eager is `wrong`
# and so is any impl that matches it. 8: fp32 LayerNorm at a row mean of 1000 costs eager 3.2 x fp32's floor, and a
# right kernel must fit beside it.
CEILING = 8.0
# The scale bias is held to max(K x eager's, the dtype's floor / 8, what chance allows an unbiased error of the
# global tolerance: BIAS_SIGMAS / sqrt(effective elements)). floor / 8 is 1e-3 in bf16 (a quarter of its rounding
# unit): a 0.3 % scale error fails, where CPU eager's own bf16 GELU sits at 1.7e-4.
BIAS_FLOOR_FRACTION = 1 / 8
BIAS_SIGMAS = 4.0
# Triton's CPU interpreter converts fp32 to bf16 by truncation (measured: -0.27 % per conversion, where a GPU rounds
# to nearest with no bias), so under it a bf16 tensor's scale bias says nothing about the kernel: not judged there.
INTERPRETER_TRUNCATES = (torch.bfloat16,)
CALLS = 8    # calls of the checked point judged (the first poisoned like every other): a defect on 1 in 5 fails

@dataclasses.dataclass
class CheckResult:
    ok: bool
    message: str
    max_err_ratio: float           # worst error / tolerance over out and grads, global and local; > 1 fails
    errors: dict                   # name -> rel-L2 error
    tolerance: dict                # name -> rel-L2 tolerance
    local_errors: dict = dataclasses.field(default_factory=dict)     # name -> worst row/column error
    eager_errors: dict = dataclasses.field(default_factory=dict)     # name -> (global, local, bias) of eager
    expected: "Expected | None" = None     # what the runner re-checks the last timed call against
    bias_errors: dict = dataclasses.field(default_factory=dict)      # name -> signed scale bias
    calls: int = 1                          # calls judged

    def as_row(self) -> dict:
        return {"err_ratio": self.max_err_ratio, "errors": self.errors, "local_errors": self.local_errors,
                "bias_errors": self.bias_errors, "eager_errors": {k: list(v) for k, v in self.eager_errors.items()},
                "check": self.message, "check_calls": self.calls}


# --- error measures ---------------------------------------------------------------------------------------------

_SLICE = 1 << 24     # elements per float64 slice: the judge's temporaries stay ~3 x 128 MB at any problem size


def _square_sums(out: torch.Tensor, ref: torch.Tensor):
    """Per row and per column (rows: the last dim) sums of squared error and of squared reference, in float64,
    a slice of rows at a time (a 65536 x 50304 gradient would be 26 GB per float64 copy)."""
    cols = ref.shape[-1] if ref.dim() >= 1 else 1
    o2, r2 = out.detach().reshape(-1, cols), ref.detach().reshape(-1, cols)
    step = max(1, _SLICE // cols)
    err_rows, ref_rows = [], []
    err_cols = torch.zeros(cols, dtype=torch.float64, device=ref.device)
    ref_cols = torch.zeros(cols, dtype=torch.float64, device=ref.device)
    for s in range(0, r2.shape[0], step):
        r = r2[s:s + step].double()      # the reference itself when it is float64: never written
        d = (o2[s:s + step].double() - r).pow_(2)
        r = r.pow(2)
        err_rows.append(d.sum(1))
        ref_rows.append(r.sum(1))
        err_cols += d.sum(0)
        ref_cols += r.sum(0)
    return torch.cat(err_rows), torch.cat(ref_rows), err_cols, ref_cols


def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    err_rows, ref_rows, _, _ = _square_sums(out, ref)
    d, n = err_rows.sum().sqrt().item(), ref_rows.sum().sqrt().item()
    return d / n if n > 0 else d


def scale_bias(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(<o - r, r> / <r, r>, effective element count (sum r^2)^2 / sum r^4): the least-squares scale error, and how
    many elements carry the reference's weight (an unbiased error's bias shrinks as 1 / sqrt of that)."""
    o2, r2 = out.detach().reshape(-1), ref.detach().reshape(-1)
    dot = sq = quad = 0.0
    for s in range(0, r2.numel(), _SLICE):
        r = r2[s:s + _SLICE].double()
        p = r.pow(2)
        dot += ((o2[s:s + _SLICE].double() - r) * r).sum().item()
        sq += p.sum().item()
        quad += p.pow_(2).sum().item()
    if sq == 0:
        return 0.0, 1.0
    return dot / sq, max(1.0, sq * sq / quad) if quad > 0 else 1.0


def local_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """The worst row's or column's error norm over that row's reference norm or the RMS row norm, whichever is larger
    (rows: the last dim; columns: every other dim at one last-dim index). A tensor right on average but wrong in one
    row, one head's last queries or one gradient column scores ~1 here, where rel-L2 dilutes it by sqrt(rows); a row
    that carries most of the weight (the target's row of a one-token dW) is judged against its own size."""
    if ref.dim() == 0 or ref.numel() == 1:
        return rel_l2(out, ref)
    if ref.dim() == 1:      # a vector (bias gradient): per element, against its RMS
        d = (out.detach().double() - ref.detach().double()).abs().max().item()
        rms = ref.detach().double().pow(2).mean().sqrt().item()
        return d / rms if rms > 0 else d
    err_rows, ref_rows, err_cols, ref_cols = _square_sums(out, ref)
    if err_rows.numel() == 1:   # one row: its columns are single elements, which a global norm already weighs
        return rel_l2(out, ref)
    worst = 0.0
    for err, sq in ((err_rows, ref_rows), (err_cols, ref_cols)):
        rms = sq.mean().sqrt().item()
        if rms == 0:
            worst = max(worst, err.max().sqrt().item())
            continue
        worst = max(worst, (err.sqrt() / sq.sqrt().clamp(min=rms)).max().item())
    return worst


# --- calling an impl ------------------------------------------------------------------------------------------

def grad_out_for(out, gen: torch.Generator):
    """A random upstream gradient shaped like the output (a tuple of them for an op with several outputs)."""
    if isinstance(out, (tuple, list)):
        return tuple(grad_out_for(o, gen) for o in out)
    g = torch.randn(out.shape, generator=gen, device=out.device, dtype=torch.float32)
    return g.to(out.dtype)


def backward(out, grad_out) -> None:
    """out.backward(grad_out), for one output or a tuple of them (e.g. add_layer_norm's sum and norm). The
    gradient takes the output's dtype, so an output in the wrong dtype is judged by the gate, not a crash."""
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    gs = list(grad_out) if isinstance(grad_out, (tuple, list)) else [grad_out]
    gs = [g.to(o.dtype) if isinstance(o, torch.Tensor) and o.dtype != g.dtype else g for o, g in zip(outs, gs)]
    torch.autograd.backward(outs, gs)


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


# --- what a right answer looks like ---------------------------------------------------------------------------

@dataclasses.dataclass
class Bound:
    ref: torch.Tensor
    dtype: torch.dtype      # eager's
    tol: float              # global rel-L2
    local_tol: float
    bias_tol: float         # |scale bias|
    eager: tuple            # eager's (global, local, bias) error
    ceiling: tuple          # the (global, local) tolerances' ceilings: eager beyond one is named in the message


def bound_for(spec, ref: torch.Tensor, base: torch.Tensor, dtype: torch.dtype, k: float = K,
              bias: bool = True) -> Bound:
    """What an output or gradient is held to: k x eager's error (base against ref) within [floor, ceiling] per
    measure; the bias also within what chance allows an unbiased error of the global tolerance. The floor is the
    tensor's own dtype's; the ceiling is the point's `dtype`'s where that is coarser (an fp32 loss computed through
    bf16 logits cannot be held to fp32's ceiling)."""
    floor = spec.error_floor(base.dtype)
    e, l = rel_l2(base, ref), local_error(base, ref)
    b, n_eff = scale_bias(base, ref)
    coarse = max(floor, spec.error_floor(dtype))
    ceil, local_ceil = CEILING * coarse, CEILING * 4 * coarse
    # local errors of a right kernel spread wider than rel-L2 (a max over rows): a floor 4x the global one
    tol = min(max(k * e, floor), ceil)
    chance = BIAS_SIGMAS * tol / math.sqrt(n_eff)
    bias_tol = min(tol, max(k * abs(b), BIAS_FLOOR_FRACTION * floor, chance)) if bias else math.inf
    return Bound(ref, base.dtype, tol, min(max(k * l, 4 * floor), local_ceil), bias_tol, (e, l, b), (ceil, local_ceil))


@dataclasses.dataclass
class Expected:
    """The reference answer to one set of inputs and the tolerance each output and gradient is held to."""
    inputs: Inputs
    grad_out: object
    pass_: str
    bounds: dict             # name -> Bound, outputs first, then gradients
    out_keys: dict           # output key ("out", "out0", ...) -> name
    grad_keys: dict          # arg index -> name
    snapshot: list           # clones of the tensor inputs, to catch an impl that writes them

    def judge(self, out, grads) -> tuple[list[str], dict, dict, dict]:
        """(problems, name -> rel-L2, name -> local error, name -> scale bias) of one call's output and gradients."""
        problems, errors, local, bias = [], {}, {}, {}
        got = outputs(out)
        if set(got) != set(self.out_keys):
            problems.append(f"returned {len(got)} output(s), the reference {len(self.out_keys)}")
        pairs = [(n, got.get(k)) for k, n in self.out_keys.items()]
        pairs += [(n, grads.get(i)) for i, n in self.grad_keys.items()]
        for name, t in pairs:
            _judge_one(name, t, self.bounds[name], problems, errors, local, bias)
        problems += self.mutated_inputs()
        return problems, errors, local, bias

    def mutated_inputs(self) -> list[str]:
        tensors = [a for a in self.inputs.args if isinstance(a, torch.Tensor)]
        return [f"input {i} was written in place" for i, (a, b) in enumerate(zip(tensors, self.snapshot))
                if not torch.equal(a.detach(), b)]

    def ratio(self, errors: dict, local: dict, bias: dict | None = None) -> float:
        r = [errors[n] / self.bounds[n].tol for n in errors] + [local[n] / self.bounds[n].local_tol for n in local]
        r += [abs(v) / self.bounds[n].bias_tol for n, v in (bias or {}).items() if self.bounds[n].bias_tol > 0]
        return max(r, default=0.0)


def _beyond(eager: float, ceiling: float) -> str:
    return f"eager {eager:.3g}" + (f", itself beyond the ceiling {ceiling:.3g}" if eager > ceiling else "")


def _judge_one(name, t, b: Bound, problems, errors, local, bias):
    if not isinstance(t, torch.Tensor):
        problems.append(f"{name}: got {type(t).__name__}, expected a tensor")
        errors[name] = math.inf
        return
    if tuple(t.shape) != tuple(b.ref.shape):
        problems.append(f"{name}: shape {tuple(t.shape)} != reference {tuple(b.ref.shape)}")
        errors[name] = math.inf
        return
    if t.dtype != b.dtype:
        problems.append(f"{name}: dtype {str(t.dtype).replace('torch.', '')} != eager's "
                        f"{str(b.dtype).replace('torch.', '')}")
    bad = (~torch.isfinite(t.detach().float())).sum().item()
    if bad:
        problems.append(f"{name}: {bad} of {t.numel()} elements NaN/inf (unwritten or overflowed)")
        errors[name] = math.inf
        return
    errors[name], local[name] = rel_l2(t, b.ref), local_error(t, b.ref)
    bias[name] = scale_bias(t, b.ref)[0]
    if not errors[name] <= b.tol:
        problems.append(f"{name}: rel-L2 error {errors[name]:.3g} > tolerance {b.tol:.3g} "
                        f"({_beyond(b.eager[0], b.ceiling[0])})")
    if not local[name] <= b.local_tol:
        problems.append(f"{name}: worst row/column error {local[name]:.3g} > tolerance {b.local_tol:.3g} "
                        f"({_beyond(b.eager[1], b.ceiling[1])})")
    if not abs(bias[name]) <= b.bias_tol:
        problems.append(f"{name}: scale bias {bias[name]:+.3g} beyond {b.bias_tol:.3g} (eager {b.eager[2]:+.3g})")


def expect(spec, baseline, shape: dict, dtype: str, pass_: str, device: str, inputs: Inputs, gen,
           k: float = K, interpreted: bool = False) -> Expected:
    """Run the baseline (eager) on `inputs` and measure its error against the float64 reference: that sets each
    tolerance. The upstream gradient is random, shaped and typed like eager's output. interpreted: the impl judged
    runs under Triton's CPU interpreter (no scale bias on the bf16 tensors it truncates)."""
    snapshot = [a.detach().clone() for a in inputs.args if isinstance(a, torch.Tensor)]
    grad_out = None
    if pass_ == "fwd+bwd":
        with torch.no_grad():
            grad_out = grad_out_for(baseline(*inputs.args, **inputs.kwargs), gen)
    base_out, base_grads = run_once(baseline, inputs, pass_, {}, grad_out)
    ref, ref_grads = spec.reference(inputs, grad_out)
    out_keys = {k: spec.out_names().get(k, k) for k in outputs(ref)}
    names = spec.grad_names()
    grad_keys = {i: names.get(i, f"grad{i}") for i in ref_grads}
    base = {**{n: outputs(base_out)[k] for k, n in out_keys.items()},
            **{n: base_grads[i] for i, n in grad_keys.items()}}
    inputs_at = {a.untyped_storage().data_ptr() for a in inputs.args if isinstance(a, torch.Tensor)}
    refs = {**{n: outputs(ref)[k] for k, n in out_keys.items()}, **{n: ref_grads[i] for i, n in grad_keys.items()}}
    bounds = {}
    for name, r in refs.items():
        b = base[name].detach()
        bounds[name] = bound_for(spec, r, b, DTYPES[dtype], k, bias=not (interpreted and b.dtype in INTERPRETER_TRUNCATES))
        if b.is_floating_point() and b.untyped_storage().data_ptr() not in inputs_at:
            # eager's answer is freed next, and the impl's output may be handed the same block (a CPU allocator
            # does that every time): NaN there, so only what the impl writes can pass
            b.fill_(float("nan"))
    return Expected(inputs, grad_out, pass_, bounds, out_keys, grad_keys, snapshot)


def baseline_for(spec, shape: dict, device: str = "cpu"):
    """The op's eager impl, wrapped as the harness calls impls at `shape`."""
    from kernels import registry
    return spec.wrap(registry.get(spec.name, "eager", device).fn, shape)


def check(spec, fn, shape: dict, dtype: str, pass_: str, device: str, config: dict | None = None,
          seed: int = 0, inputs: Inputs | None = None, baseline=None, k: float = K, calls: int = 1,
          interpreted: bool | None = None) -> CheckResult:
    """Compare fn with spec's reference, tolerances set by the baseline (default: the op's eager impl) times k;
    `calls` calls on the same inputs, each on poisoned memory and each judged (the runner asks for CALLS: a defect
    that shows on one call in five fails). Exceptions propagate (the runner classifies them)."""
    config = config or {}
    gen = gen_for(seed, device)
    inputs = inputs or spec.make_inputs(shape, dtype, device, gen)
    if interpreted is None:   # a caller that does not say: a Triton-interpreting process on a CPU interprets it
        interpreted = backends.interpreting() and not device.startswith("cuda")
    exp = expect(spec, baseline or baseline_for(spec, shape, device), shape, dtype, pass_, device, inputs, gen, k,
                 interpreted)
    first = None
    for call in range(1, calls + 1):
        problems, errors, local, bias = call_and_judge(fn, exp, config, device)
        ratio = exp.ratio(errors, local, bias)
        if first is None:
            first = (errors, local, bias, ratio)
        if problems:
            where = f"call {call} of {calls}: " if call > 1 else ""
            return CheckResult(False, where + "; ".join(problems), max(ratio, first[3]), errors,
                               {n: b.tol for n, b in exp.bounds.items()}, local,
                               {n: b.eager for n, b in exp.bounds.items()}, exp, bias, call)
        first = (*first[:3], max(first[3], ratio))
    errors, local, bias, ratio = first
    msg = "max " + ", ".join(f"{n} {v:.2e} ({v / exp.bounds[n].tol:.2f} tol)" for n, v in errors.items())
    return CheckResult(True, msg, ratio, errors, {n: b.tol for n, b in exp.bounds.items()}, local,
                       {n: b.eager for n, b in exp.bounds.items()}, exp, bias, calls)


def call_and_judge(fn, exp: Expected, config: dict, device: str):
    """One call of fn on exp's inputs, its outputs landing on NaN, judged: (problems, errors, local, bias)."""
    with poison.poisoned():
        poison.poison_free_memory(device)   # outputs of any impl, peers too, land on NaN, not on eager's answer
        out, grads = run_once(fn, exp.inputs, exp.pass_, config, exp.grad_out)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    verdict = exp.judge(out, grads)
    del out, grads
    return verdict
