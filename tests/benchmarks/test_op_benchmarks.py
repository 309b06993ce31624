"""One pytest-benchmark per (op, impl) at the op's representative shape (the first of its sweep).

The timer synchronises the GPU after every round, so pytest-benchmark's statistics are device time
plus launch, not launch alone. A wrong impl fails here and is never timed."""
import os

import pytest
import torch

from bench.measure import check as checking
from bench import sweeps as sw
from kernels import registry
from kernels.spec import gen_for

pytest.importorskip("pytest_benchmark")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SWEEPS = sw.load(os.path.join(os.path.dirname(__file__), "..", "..", "sweeps.yaml"))


def _shape_and_dtype(op):
    """The first point of the op's sweep (the one named like it, else its first) in sweeps.yaml; without
    one, its spec's first test shape."""
    ours = [x for x in SWEEPS.values() if x.op == op and (x.shapes or x.cpu_shapes)]
    s = next((x for x in ours if x.name == op), ours[0] if ours else None)
    if s is None:
        return registry.spec_of(op).test_shapes()[0], "fp32" if DEVICE == "cpu" else "bf16"
    entries = s.cpu_shapes if (DEVICE == "cpu" and s.cpu_shapes) else s.shapes
    dtype = (s.extra.get("cpu_dtypes") or s.dtypes)[0] if DEVICE == "cpu" else s.dtypes[0]
    return sw.expand_shapes(entries)[0], dtype


def _cases():
    for op in registry.OPS:
        shape, dtype = _shape_and_dtype(op)
        for name in registry.impl_names(op):
            for pass_ in ("fwd", "fwd+bwd"):
                marks = [pytest.mark.benchmark, getattr(pytest.mark, op), getattr(pytest.mark, name)]
                yield pytest.param(op, name, shape, dtype, pass_, marks=marks, id=f"{op}-{name}-{dtype}-{pass_}")


@pytest.mark.parametrize("op,name,shape,dtype,pass_", list(_cases()))
def test_benchmark(benchmark, op, name, shape, dtype, pass_):
    res = registry.resolve(op, name, DEVICE)
    if not res.ok:
        pytest.skip(f"{op}/{name} unavailable: {res.reason}")
    impl, spec = res.impl, registry.spec_of(op)
    why = impl.why_not(spec.full_shape(shape), dtype, DEVICE, pass_)
    if why:
        pytest.skip(f"unsupported: {why}")
    cfg = impl.config()
    result = checking.check(spec, spec.wrap(impl.fn, shape), shape, dtype, pass_, DEVICE, cfg, seed=1)
    assert result.ok, f"{op}/{name} is wrong, not timed: {result.message}"
    gen = gen_for(2, DEVICE)
    inputs = spec.make_inputs(shape, dtype, DEVICE, gen)
    grad_out = None
    if pass_ == "fwd+bwd":
        with torch.no_grad():
            grad_out = checking.grad_out_for(spec.wrap(impl.fn, shape)(*inputs.args, **inputs.kwargs, **cfg), gen)
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)

    def target():
        checking.run_once(spec.wrap(impl.fn, shape), inputs, pass_, cfg, grad_out)
        sync()
    benchmark.extra_info.update({"op": op, "impl": name, "shape": spec.label(shape), "dtype": dtype, "pass": pass_,
                                 "device": DEVICE})
    benchmark.pedantic(target, rounds=10 if DEVICE == "cpu" else 50, warmup_rounds=2, iterations=1)
