"""The op registry: which implementations exist for each op, what each accepts, and whether it can run here.

Each op is a package under kernels/ whose __init__ names its spec and its implementations; the registry
finds every such package by itself, so adding an op is adding a folder (docs/CONTRACTS.md, "A new op"):

    SPEC = "kernels.fmha.spec:SPEC"
    IMPLS = {"eager": "kernels.fmha.eager:IMPL", "triton": "kernels.fmha.triton:IMPL", ...}

Implementation modules are imported lazily, so a missing toolchain (no triton, no cuda.tile) makes
that one impl `unavailable: <reason>` instead of breaking the registry.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import pkgutil
import traceback
from typing import Any, Callable

import torch

from kernels import backends


def discover_ops() -> tuple[str, ...]:
    """Every package under kernels/ whose __init__ names a SPEC and IMPLS (others, helpers, are skipped)."""
    import kernels
    found = []
    for m in pkgutil.iter_modules(kernels.__path__):
        if m.ispkg:
            pkg = importlib.import_module(f"kernels.{m.name}")
            if hasattr(pkg, "SPEC") and hasattr(pkg, "IMPLS"):
                found.append(m.name)
    return tuple(sorted(found))


OPS = discover_ops()   # every op kernels/ holds; the model's own list is model/op_list.py

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


@dataclasses.dataclass(frozen=True)
class TileParam:
    """One tunable parameter of a kernel (a sweep axis): its name, type, default and allowed values."""
    name: str
    type: type
    default: Any
    choices: tuple | None = None   # None: any value of `type`
    doc: str = ""

    def validate(self, value) -> str | None:
        if self.type is int and isinstance(value, bool) or not isinstance(value, self.type):
            return f"{self.name} must be {self.type.__name__}, got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"{self.name}={value!r} not in {list(self.choices)}"
        return None


@dataclasses.dataclass
class KernelImpl:
    """An implementation of an op: a differentiable callable with the op's signature plus what it accepts.

    fn(*args, **op_kwargs, **tile_config) must behave like the op's eager version (autograd included).
    backend names the toolchain probed for availability (see kernels.backends).
    supports(shape, dtype, device) returns None or the reason it cannot take that point.
    """
    fn: Callable
    backend: str
    dtypes: tuple = ("bf16", "fp16", "fp32")
    params: tuple[TileParam, ...] = ()
    supports: Callable[[dict, str, str], str | None] | None = None
    available: Callable[[str], str | None] | None = None   # extra per-impl probe: None or reason
    kind: str = "ours"         # ours | baseline (eager) | peer (cuDNN, flash, TileGym, Liger, compile)
    presets: dict[str, dict] = dataclasses.field(default_factory=dict)  # named tile configs users pick per GPU
    # experiment configs a tuning sweep can name (tuning/*.yaml); never compiled by --static unless asked
    tuning: dict[str, dict] = dataclasses.field(default_factory=dict)
    passes: tuple = ("fwd", "fwd+bwd")
    doc: str = ""
    # Ahead-of-time compile for a GPU generation without a GPU: aot(config, arch) -> list of dicts, one per
    # kernel, with keys kernel, status ("ok" | "compile_error" | "unsupported"), message, compile_s,
    # cubin_bytes, registers, smem_bytes, spills (None where unreadable). See bench/machine/static.py.
    aot: Callable[[dict, str], list[dict]] | None = None
    picked: Callable[[], dict] | None = None   # the config the last call used (after autotuning)
    # The tile config the CPU tests (Triton's interpreter) run at the spec's test_shapes(): small tiles, so
    # every odd size spans several blocks, edges and diagonals included.
    test_config: dict = dataclasses.field(default_factory=dict)
    # timer_refusal(full config, timer) -> None or why that config cannot be timed by `timer` ("events":
    # launch-timed calls, "graph": CUDA-graph replays), e.g. torch_compile's reduce-overhead (graphs only)
    timer_refusal: Callable[[dict, str], str | None] | None = None
    # The op through its torch.library ops (kernels/library.py), what torch.compile traces: the signature of fn
    # with the tile config as one keyword, `config` (library.config_json). None: the impl has no such entry.
    traced: Callable | None = None

    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params}

    def named(self, name: str) -> dict | None:
        """The preset or tuning config of that name (its overrides), None if neither has it."""
        hit = self.presets.get(name, self.tuning.get(name))
        return dict(hit) if hit is not None else None

    def known_names(self) -> str:
        """The names `named` takes, for messages: "presets: a, b; tuning: c"."""
        out = f"presets: {', '.join(self.presets) or 'none'}"
        return out + (f"; tuning: {', '.join(self.tuning)}" if self.tuning else "")

    def config(self, overrides: dict | None = None) -> dict:
        """Full tile config: defaults, then overrides; raises ValueError on an unknown or bad value."""
        cfg = self.defaults()
        known = {p.name: p for p in self.params}
        for k, v in (overrides or {}).items():
            if k not in known:
                raise ValueError(f"unknown tile parameter {k!r}; known: {sorted(known) or 'none'}")
            err = known[k].validate(v)
            if err:
                raise ValueError(err)
            cfg[k] = v
        return cfg

    def why_not(self, shape: dict, dtype: str, device: str, pass_: str = "fwd") -> str | None:
        if dtype not in self.dtypes:
            return f"dtype {dtype} not supported (takes {', '.join(self.dtypes)})"
        if pass_ not in self.passes:
            return f"pass {pass_} not supported"
        if self.supports is not None:
            return self.supports(shape, dtype, device)
        return None


def _load(ref: str):
    mod, _, attr = ref.partition(":")
    return getattr(importlib.import_module(mod), attr)


PLUGINS_ENV = "TILEBENCH_PLUGINS"


@functools.lru_cache(maxsize=None)
def op_package(op: str):
    if op not in OPS:
        raise KeyError(f"unknown op {op!r}; known ops: {', '.join(OPS)}")
    pkg = importlib.import_module(f"kernels.{op}")
    # Out-of-tree impls: TILEBENCH_PLUGINS="gelu:mine=my_pkg.gelu:IMPL,fmha:x=other.mod:IMPL"
    for item in filter(None, os.environ.get(PLUGINS_ENV, "").split(",")):
        target, _, ref = item.partition("=")
        p_op, _, name = target.partition(":")
        if p_op == op and name and ":" in ref:
            pkg.IMPLS.setdefault(name.strip(), ref.strip())
    return pkg


def spec_of(op: str):
    return _load(op_package(op).SPEC)


def impl_names(op: str) -> list[str]:
    return list(op_package(op).IMPLS)


def all_impl_names() -> list[str]:
    seen = []
    for op in OPS:
        seen += [n for n in impl_names(op) if n not in seen]
    return seen


@dataclasses.dataclass
class Resolved:
    op: str
    name: str
    impl: KernelImpl | None
    reason: str | None          # None when available on the probed device

    @property
    def ok(self) -> bool:
        return self.reason is None


@functools.lru_cache(maxsize=None)
def _import_impl(op: str, name: str):
    names = impl_names(op)
    if name not in names:
        raise KeyError(f"unknown impl {name!r} for op {op!r}; known: {', '.join(names)}")
    ref = op_package(op).IMPLS[name]
    try:
        return _load(ref), None
    except Exception as e:  # ImportError, or a toolchain that fails while defining kernels
        mod = ref.split(":")[0]
        if isinstance(e, ModuleNotFoundError) and e.name == mod:
            return None, f"{mod} does not exist (no {name} implementation of {op} yet)"
        frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith("<")]
        at = f" ({frames[-1].filename.split('/')[-1]}:{frames[-1].lineno})" if frames else ""
        return None, f"import of {mod} failed: {type(e).__name__}: {e}{at}"


@functools.lru_cache(maxsize=None)
def resolve(op: str, name: str, device: str = "cpu") -> Resolved:
    """The impl and, if it cannot run on `device`, why. Probed once per (op, impl, device)."""
    impl, err = _import_impl(op, name)
    if impl is None:
        # Report the toolchain's own diagnosis first when it explains the import failure.
        why = backends.probe(_backend_of_ref(op, name), device)
        return Resolved(op, name, None, why or err)
    why = backends.probe(impl.backend, device)
    if why is None and impl.available is not None:
        why = impl.available(device)
    return Resolved(op, name, impl, why)


def _backend_of_ref(op: str, name: str) -> str:
    mod = op_package(op).IMPLS[name].split(":")[0].rsplit(".", 1)[-1]
    return {"triton": "triton", "cutile": "cutile", "tilegym": "tilegym", "liger": "liger"}.get(mod, "torch")


def get(op: str, name: str, device: str = "cpu") -> KernelImpl:
    """The impl, or a RuntimeError with the reason it is unavailable."""
    r = resolve(op, name, device)
    if not r.ok:
        raise RuntimeError(f"{op}/{name} unavailable: {r.reason}")
    return r.impl


def table(device: str = "cpu") -> list[dict]:
    """Every (op, impl) with availability and reason: what `run_bench.py --list` prints."""
    rows = []
    for op in OPS:
        for name in impl_names(op):
            r = resolve(op, name, device)
            rows.append({
                "op": op, "impl": name,
                "kind": r.impl.kind if r.impl else "?",
                "status": "available" if r.ok else "unavailable",
                "reason": r.reason or "",
                "dtypes": ",".join(r.impl.dtypes) if r.impl else "",
                "params": ", ".join(f"{p.name}:{p.type.__name__}={p.default}" for p in r.impl.params) if r.impl else "",
            })
    return rows


class Unsupported(ValueError):
    """Raised by an impl for an input it cannot take (shape, dtype, layout): recorded as `unsupported`."""


@dataclasses.dataclass(frozen=True)
class RowLimit:
    """The widest row C an impl takes that holds a whole row in one program (Triton) or block (cuTile)."""
    max_c: int
    unit: str   # "program" | "block": what a row must fit

    def check(self, C: int) -> None:
        if C > self.max_c:
            raise Unsupported(f"C={C} > {self.max_c}: a row must fit one {self.unit}")

    def supports(self, shape, dtype, device):
        """KernelImpl.supports for a spec with a C key: why a point is too wide, else None."""
        return f"C={shape['C']} > {self.max_c}" if shape.get("C", 0) > self.max_c else None
