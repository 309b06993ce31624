"""torch.compile of an op's eager function: the peer every kernel is measured against.

A torch_compile row is compiled code or it is not an `ok` row:
- one compiled callable per call signature (shapes, strides, dtypes, requires_grad, options, mode), each
  around its own copy of the eager function's code object. Dynamo keeps its cache and its recompile limit
  (8) per code object, so with one shared callable a sweep's 9th shape silently ran eager; with a copy per
  signature every shape compiles like the first, and nothing is reset for other compiled code;
- fullgraph=True makes a graph break or a hit recompile limit raise instead of running eager, and a first
  call that compiled no graph (dynamo disabled, frame skipped) raises too. All of it becomes
  CompileFallback, which the runner records as `compile_error` with the reason.

Modes are the tile config `mode`: default, max-autotune-no-cudagraphs, reduce-overhead. reduce-overhead is
inductor's default kernels replayed as a CUDA graph, so it is timed only by graph replay (--cuda-graph):
there the harness's graph replays the compiled kernels, as it does every impl's (inductor's own graphs
cannot be captured inside it); in launch-timed runs it is `unsupported` (timer_refusal).
"""
import os
import types
from collections import OrderedDict

import torch

from kernels.registry import KernelImpl, TileParam

MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead")
# the inductor mode each runs under; reduce-overhead's CUDA graph is the harness's (see above)
INDUCTOR_MODE = {"default": None, "max-autotune-no-cudagraphs": "max-autotune-no-cudagraphs", "reduce-overhead": None}
MAX_CALLABLES = 64   # compiled signatures kept per op (a sweep needs a few at a time, a model ~10)


class CompileFallback(RuntimeError):
    """torch.compile did not run compiled code; the runner's classify() reads the name as compile_error."""


def _is_fallback(e: BaseException) -> bool:
    """A graph break, a hit recompile limit, a failed backend, or (torch >= 2.13) fullgraph's own check."""
    from torch._dynamo import exc
    # FailOnRecompileLimitHit is no TorchDynamoException (torch 2.13)
    kinds = tuple(c for c in (getattr(exc, "TorchDynamoException", None), getattr(exc, "FailOnRecompileLimitHit", None))
                  if c is not None)
    return isinstance(e, kinds) or (isinstance(e, RuntimeError) and str(e).startswith("torch.compile with fullgraph"))


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process (grows by one per compile, cache hits included)."""
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"]


def fresh_code(fn):
    """fn with a copy of its code object: a torch.compile of it has a dynamo cache of its own."""
    f = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    f.__kwdefaults__ = fn.__kwdefaults__
    return f


def _signature(args, kwargs) -> tuple:
    def sig(a):
        if isinstance(a, torch.Tensor):
            return ("T", tuple(a.shape), a.stride(), a.dtype, str(a.device), a.requires_grad)
        return ("V", repr(a))
    return tuple(sig(a) for a in args) + tuple((k, sig(v)) for k, v in sorted(kwargs.items()))


def call_compiled(compiled, what: str, *args, **kwargs):
    """compiled(*args, **kwargs), every way it falls back to eager raised as CompileFallback."""
    try:
        return compiled(*args, **kwargs)
    except Exception as e:   # noqa: BLE001 - narrowed by _is_fallback, everything else re-raised as is
        if not _is_fallback(e):
            raise
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CompileFallback(f"{what} would run eager: {type(e).__name__}: {text}") from e


class _Entry:
    __slots__ = ("fn", "graphs")

    def __init__(self, fn):
        self.fn, self.graphs = fn, 0


def compiled_impl(eager_fn, **kw) -> KernelImpl:
    cache: "OrderedDict[tuple, _Entry]" = OrderedDict()
    last = {}

    def fn(*args, mode="default", **kwargs):
        imode = INDUCTOR_MODE[mode]
        key = (imode, _signature(args, kwargs))
        entry = cache.get(key)
        new = entry is None
        if new:
            entry = cache[key] = _Entry(torch.compile(fresh_code(eager_fn), mode=imode, fullgraph=True, dynamic=False))
            while len(cache) > MAX_CALLABLES:
                cache.popitem(last=False)
        cache.move_to_end(key)
        before = graphs_compiled()
        what = f"torch.compile({eager_fn.__name__}, mode={mode})"
        try:
            out = call_compiled(entry.fn, what, *args, **kwargs)
            entry.graphs += graphs_compiled() - before
            if new and entry.graphs == 0:
                raise CompileFallback(f"{what} compiled no graph on its first call and ran eager "
                                      "(dynamo disabled or the frame skipped)")
        except BaseException:
            # a failed first call keeps no callable: a caller that catches the failure and calls this signature
            # again meets it again, instead of a cached callable that quietly runs eager
            if new:
                cache.pop(key, None)
            raise
        last.update(mode=mode, graphs_compiled=entry.graphs)
        return out

    def available(device):
        if not device.startswith("cuda") and os.environ.get("TILEBENCH_COMPILE_ON_CPU") != "1":
            return "timed on CUDA only: inductor's CPU build time dwarfs the op (TILEBENCH_COMPILE_ON_CPU=1 forces it)"
        return None

    def timer_refusal(config, timer):
        if config.get("mode") == "reduce-overhead" and timer != "graph":
            return ("mode reduce-overhead is inductor's kernels replayed as a CUDA graph: time it with --cuda-graph "
                    "(launch-timed, it would be mode default under another name)")
        return None

    return KernelImpl(fn=fn, backend="compile", kind="peer", available=available, timer_refusal=timer_refusal,
                      params=(TileParam("mode", str, "default", MODES, "torch.compile mode"),),
                      picked=lambda: dict(last),
                      doc="torch.compile(eager, fullgraph=True), one compile per signature; first call's compile "
                          "time reported apart", **kw)
