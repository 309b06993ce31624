"""Our kernels as torch.library ops (namespace `tilebench`), so torch.compile can trace a model with them inside.

Each impl that has them registers a forward op and a backward op (`tilebench::<op>_fwd_<impl>`,
`tilebench::<op>_bwd_<impl>`), joined by `register_autograd`, and names a `traced` entry on its KernelImpl: the
op with the impl's own signature plus `config` (the tile config as JSON, `config_json`), what model/ops.py's
Backend calls while torch.compile traces. The harness keeps calling `KernelImpl.fn`, the autograd.Function
around the same host code: a custom op's dispatch costs host time per call that launch-timed rows would pay.

- Triton kernels whose launch make_fx can trace become `torch.library.triton_op`s: inductor sees each Triton
  kernel (`kernel(k)` wraps a launch in `torch.library.wrap_triton` while an op body is traced, and returns
  the kernel itself otherwise). Their fake implementation is their body, run on fake tensors.
- The rest (cuTile, Triton launches with host-built TMA descriptors, in-place chunk loops) are
  `torch.library.custom_op`s, opaque to inductor, with an explicit fake: `alloc`, the outputs' shapes, dtypes
  and strides exactly as the kernels allocate them, saved statistics included.

CPU stand-ins. Where a kernel cannot run (cuTile anywhere but a GPU; Triton on a CPU without its interpreter,
and on fake tensors there), the op computes its outputs with the op's eager math (`standin`) into `alloc`'s
buffers. They exist so that `torch.library.opcheck` and `torch.compile(..., backend="aot_eager")` exercise the
registration (schemas, fakes, autograd) on a machine without a GPU: for tracing tests only. The harness never
times a stand-in: `kernels.registry.resolve` still reports Triton and cuTile unavailable on a CPU, so no sweep
point and no Backend reaches one unless it asks for stand-ins by name (`Backend(..., standins=True)`).
"""
from __future__ import annotations

import functools
import json
import threading
from typing import Callable

import torch

from kernels.backends import interpreting
from kernels.registry import Unsupported

NS = "tilebench"
_tls = threading.local()
OPS: dict[str, object] = {}   # qualified name -> torch.ops.tilebench.<name>, every op registered here
KINDS: dict[str, str] = {}    # qualified name -> "triton_op" | "custom_op"
_DEFS: dict[str, object] = {}   # qualified name -> its CustomOpDef (for register_autograd)


# --- the tile config, a schema-friendly string -------------------------------------------------------

def config_json(cfg: dict) -> str:
    """The tile config as the ops take it. Autotune times candidates on real tensors per call, which a traced
    graph cannot do: a config that asks for it is Unsupported here (give the config autotune picked)."""
    if cfg.get("autotune"):
        raise Unsupported("autotune times candidates per call on real tensors: under torch.compile pass the "
                          "config it picked")
    return json.dumps({k: v for k, v in cfg.items() if k != "autotune"}, sort_keys=True)


@functools.lru_cache(maxsize=512)
def _parsed(config: str) -> tuple:
    return tuple(json.loads(config).items())


def config(config: str) -> dict:
    """The tile config dict of a config string (parsed once per string)."""
    return dict(_parsed(config))


def as_fn(traced: Callable) -> Callable:
    """traced(*args, **op_kwargs, config=json) with the KernelImpl.fn signature (tile config as keywords), for
    the correctness gate and tests."""
    def fn(*args, **kwargs):
        op_kwargs = {k: v for k, v in kwargs.items() if k in _op_kwarg_names(traced)}
        cfg = {k: v for k, v in kwargs.items() if k not in op_kwargs}
        return traced(*args, **op_kwargs, config=config_json(cfg))
    fn.__name__ = getattr(traced, "__name__", "traced")
    return fn


@functools.lru_cache(maxsize=None)
def _op_kwarg_names(traced) -> frozenset:
    import inspect
    return frozenset(n for n in inspect.signature(traced).parameters if n != "config")


# --- kernels inside an op body -------------------------------------------------------------------------

def kernel(k):
    """A Triton kernel to launch from host code that an op body shares with KernelImpl.fn: while a triton_op's
    body is traced (fake tensors, or inductor's functional decomposition) the launch goes through
    `torch.library.wrap_triton`, so the graph holds the kernel; anywhere else (the op run on real tensors,
    which torch runs with wrap_triton off, or the harness's own path) it is the kernel itself."""
    if getattr(_tls, "depth", 0) and not interpreting():
        from torch._library.triton import is_wrap_triton_enabled
        if is_wrap_triton_enabled():
            return torch.library.wrap_triton(k)
    return k


# True only while a Backend dry-runs a traced entry on fake tensors at trace time (plain Python, not traced):
# an entry may then run host checks dynamo could not trace (configs per GPU arch) and raise Unsupported.
CHECKING = False


def dry_run(fn, metas, kwargs: dict, config: str, grad: bool) -> None:
    """fn(*args, **kwargs, config=config) on fake tensors made from metas (("tensor", shape, stride, dtype,
    device, requires_grad) or a plain value), raising what fn raises (Unsupported: the impl declines the call)."""
    global CHECKING
    from torch._subclasses.fake_tensor import FakeTensorMode
    CHECKING = True
    try:
        with FakeTensorMode(), torch.set_grad_enabled(grad):
            args = [_fake(m) if isinstance(m, tuple) and m and m[0] == "tensor" else m for m in metas]
            fn(*args, **kwargs, config=config)
    finally:
        CHECKING = False


def _fake(meta) -> torch.Tensor:
    _, shape, stride, dtype, device, requires_grad = meta
    size = 1 + sum((n - 1) * st for n, st in zip(shape, stride) if n > 0)
    t = torch.empty(size, dtype=dtype, device=device).as_strided(shape, stride)
    return t.requires_grad_() if requires_grad and t.is_floating_point() else t


def _is_fake(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import is_fake
    return is_fake(t)


def kernel_runs(t: torch.Tensor, triton: bool) -> bool:
    """Whether the kernels run for inputs like t: on a GPU always; on a CPU only Triton's (triton: the body's
    kernels are Triton's), under its interpreter and on real tensors. Elsewhere the op runs its stand-in."""
    if t.device.type == "cuda":
        return True
    return triton and interpreting() and not _is_fake(t)


# --- registration --------------------------------------------------------------------------------------

def define(name: str, body: Callable, *, alloc: Callable, standin: Callable, triton: bool = False,
           interpreted: bool = False) -> object:
    """Register `tilebench::name` and return it as torch.ops.tilebench.name (what dynamo puts in a graph).

    body(*args): runs the kernels and returns the outputs (a tensor or a tuple); its annotations give the
    schema. alloc(*args): empty outputs with the kernels' shapes, dtypes and strides (a custom op's fake; the
    buffers a stand-in fills). standin(*args): the op's eager math, the same outputs as values, for where the
    kernels cannot run (tracing tests on a CPU; see the module docstring). triton: a triton_op (body launches
    only through `kernel(...)`, and is make_fx-traceable) rather than an opaque custom_op. interpreted: an opaque
    op whose body launches Triton kernels, so that under the interpreter it runs them on a CPU as a triton_op does
    (its launches stay plain: only a triton_op's body goes through wrap_triton)."""
    qual = f"{NS}::{name}"

    @functools.wraps(body)
    def impl(*args):
        x = next(a for a in args if isinstance(a, torch.Tensor))
        if not kernel_runs(x, triton or interpreted):
            return fill(alloc(*args), standin(*args))
        if not triton:   # an opaque op launches its kernels as they are (wrap_triton would log every launch)
            return body(*args)
        _tls.depth = getattr(_tls, "depth", 0) + 1
        try:
            return body(*args)
        finally:
            _tls.depth -= 1

    if triton:
        op = torch.library.triton_op(qual, impl, mutates_args=())
    else:
        op = torch.library.custom_op(qual, impl, mutates_args=())
        op.register_fake(alloc)
    _DEFS[qual] = op
    OPS[qual] = packet = getattr(torch.ops.tilebench, name)
    KINDS[qual] = "triton_op" if triton else "custom_op"
    return packet


def fill(outs, values):
    """Copy the stand-in's values into the op's own buffers (so its outputs have the kernels' strides)."""
    if isinstance(outs, torch.Tensor):
        return outs.copy_(values)
    for o, v in zip(outs, values):
        o.copy_(v)
    return outs


def autograd(op, backward: Callable, setup_context: Callable) -> None:
    """op.register_autograd(backward, setup_context=...): the backward calls the impl's backward op."""
    _DEFS[_qual(op)].register_autograd(backward, setup_context=setup_context)


def _qual(op) -> str:
    return op if isinstance(op, str) else op._qualified_op_name
