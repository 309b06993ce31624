"""sweeps.yaml and tuning/*.yaml: named sweeps as cartesian products of shapes, dtypes, impls, passes and tile
configs. sweeps.yaml holds what users run; each tuning/*.yaml holds the experiments behind one question about
the defaults (headed by the question, when it last ran and what it moved). `load_default()` reads them all, as
run_bench.py does unless --sweeps-file names one file (`load(path)`).

A file is validated on load; every problem is a SweepError whose one line names the file, the sweep
and the key."""
from __future__ import annotations

import dataclasses
import glob
import itertools
import os

import yaml

from bench import SHIPPED, SOURCE_ROOT
from bench.usage import did_you_mean
from bench.measure.compiled_baseline import COMPILE_BACKENDS, compiled_ours
from kernels.registry import DTYPES, OPS, impl_names, spec_of
from kernels.rows import point_id, timer_for

PASSES = ("fwd", "fwd+bwd")
SWEEP_KEYS = {
    "op": str, "description": str, "impls": list, "dtypes": list, "passes": list, "shapes": list,
    "cpu_shapes": list, "cpu_dtypes": list, "configs": dict, "presets": dict, "include": list, "quick": dict,
    # e2e sweeps (whole training steps)
    "models": list, "backends": list, "steps": int, "converge_iters": int, "cuda_graph": bool,
}
QUICK_KEYS = {"shapes": int, "dtypes": int, "passes": list}
E2E_BACKENDS = ("eager", "eager_sdpa", "triton", "cutile", "auto", *COMPILE_BACKENDS,
                "compile+triton", "compile+cutile", "compile+auto")


class SweepError(ValueError):
    pass


@dataclasses.dataclass
class Sweep:
    name: str
    op: str | None
    impls: list
    dtypes: list
    passes: list
    shapes: list
    cpu_shapes: list | None
    configs: dict
    presets: dict
    include: list
    quick: dict
    extra: dict
    description: str = ""
    source: str = ""     # the file that defines it

    @property
    def tuning(self) -> bool:
        """A tuning experiment (defined in a tuning/ file), not a sweep users run."""
        return os.path.basename(os.path.dirname(os.path.abspath(self.source))) == "tuning" if self.source else False


def _backend_error(b) -> str | None:
    """None for a known backend or a per-op mix such as "cutile,linear=eager" (model/ops.py's syntax)."""
    if b in E2E_BACKENDS:
        return None
    from model.ops import parse_choice
    ours = compiled_ours(b)
    try:
        parse_choice(ours[1] if ours else str(b))
    except ValueError as e:
        return (f"unknown backend {b!r} (known: {', '.join(E2E_BACKENDS)}, or a mix like 'cutile,linear=eager', "
                f"or compile+ any of those): {e}")
    return None


def shown(path: str) -> str:
    """A sweeps file as messages name it: its name, under tuning/ where it sits there."""
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return f"{parent}/{os.path.basename(path)}" if parent == "tuning" else os.path.basename(path)


def _err(path, sweep, key, msg):
    where = f"{shown(path)}: sweep '{sweep}'" if sweep else shown(path)
    return SweepError(f"{where}: key '{key}': {msg}" if key else f"{where}: {msg}")


def shipped_root() -> str:
    """Where the shipped sweeps are: bench/data/ in an installed copy (setup.py copies them there), else the checkout."""
    return SHIPPED if os.path.isfile(os.path.join(SHIPPED, "sweeps.yaml")) else SOURCE_ROOT


def default_files(root: str | None = None) -> list[str]:
    """sweeps.yaml, then every tuning/*.yaml, in name order."""
    root = root or shipped_root()
    return [os.path.join(root, "sweeps.yaml"), *sorted(glob.glob(os.path.join(root, "tuning", "*.yaml")))]


def load_default(root: str | None = None, cwd: str | None = None) -> dict[str, Sweep]:
    """Every sweep run_bench.py knows without --sweeps-file: the shipped sweeps.yaml's and tuning files', then a
    sweeps.yaml in the working directory (where it is not the shipped one), whose sweeps replace same-named ones
    and add to the rest."""
    files = default_files(root)
    sweeps = load_files(files)
    own = os.path.join(cwd or os.getcwd(), "sweeps.yaml")
    if os.path.isfile(own) and not any(os.path.exists(f) and os.path.samefile(own, f) for f in files):
        sweeps.update(_load_file(own))
        _check_includes(sweeps)
    return sweeps


def load_files(paths: list[str]) -> dict[str, Sweep]:
    """The sweeps of several files as one set: a name defined twice is an error naming both files; an
    include may name a sweep of another file."""
    sweeps: dict[str, Sweep] = {}
    for path in paths:
        for name, s in _load_file(path).items():
            if name in sweeps:
                raise SweepError(f"sweep '{name}' is defined twice: in {shown(sweeps[name].source)} and in "
                                 f"{shown(path)}")
            sweeps[name] = s
    _check_includes(sweeps)
    return sweeps


def load(path: str) -> dict[str, Sweep]:
    """The sweeps of one file (--sweeps-file), its includes resolved within it."""
    sweeps = _load_file(path)
    _check_includes(sweeps)
    return sweeps


def _check_includes(sweeps: dict[str, Sweep]) -> None:
    for s in sweeps.values():
        for inc in s.include:
            if inc not in sweeps:
                raise _err(s.source, s.name, "include", f"unknown sweep {inc!r} (known: {', '.join(sweeps)})")


def _load_file(path: str) -> dict[str, Sweep]:
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError:
        raise SweepError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise SweepError(f"{os.path.basename(path)}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sweeps"), dict):
        raise _err(path, None, "sweeps", "the file must be a mapping with a 'sweeps' mapping")
    unknown = set(doc) - {"sweeps", "defaults", "version"}
    if unknown:
        raise _err(path, None, sorted(unknown)[0], "unknown top-level key (known: sweeps, defaults, version)")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise _err(path, None, "defaults", "must be a mapping")
    sweeps = {}
    for name, body in doc["sweeps"].items():
        if not isinstance(body, dict):
            raise _err(path, name, None, "a sweep must be a mapping")
        sweeps[name] = _validate(path, str(name), {**defaults, **body})
    return sweeps


def _validate(path, name, body) -> Sweep:
    for k, v in body.items():
        if k not in SWEEP_KEYS:
            raise _err(path, name, k, f"unknown key (known: {', '.join(SWEEP_KEYS)})")
        if not isinstance(v, SWEEP_KEYS[k]) or (SWEEP_KEYS[k] is int and isinstance(v, bool)):
            raise _err(path, name, k, f"must be a {SWEEP_KEYS[k].__name__}, got {type(v).__name__}")
    if "\n" in body.get("description", "").strip():
        raise _err(path, name, "description", "must be one line (run_bench.py --list prints it beside the name)")
    include = body.get("include", [])
    op = body.get("op")
    if op is None and not include:
        raise _err(path, name, "op", "missing (or give 'include')")
    if op is not None and op != "e2e" and op not in OPS:
        raise _err(path, name, "op", f"unknown op {op!r}{did_you_mean(op, (*OPS, 'e2e'))} (known: {', '.join(OPS)}, e2e)")
    dtypes = body.get("dtypes", ["bf16"])
    for d in dtypes + body.get("cpu_dtypes", []):
        if d not in DTYPES:
            raise _err(path, name, "dtypes", f"unknown dtype {d!r}{did_you_mean(d, DTYPES)} (known: {', '.join(DTYPES)})")
    passes = body.get("passes", list(PASSES))
    for p in passes:
        if p not in PASSES:
            raise _err(path, name, "passes", f"unknown pass {p!r} (known: {', '.join(PASSES)})")
    impls = body.get("impls", [])
    if op and op != "e2e":
        known = impl_names(op)
        impls = impls or known
        for i in impls:
            if i not in known:
                raise _err(path, name, "impls", f"unknown impl {i!r} for {op}{did_you_mean(i, known)} (known: {', '.join(known)})")
    shapes = body.get("shapes", [])
    cpu_shapes = body.get("cpu_shapes")
    keys = set(spec_of(op).shape_keys) | set(spec_of(op).shape_defaults) | {"tokens"} if op and op != "e2e" else None
    # the sizes must be > 0; options (linear's part: 0, the whole op; fmha's causal) are not sizes
    sizes = {"B", "T"} if op == "e2e" else set(spec_of(op).shape_keys) | {"tokens"} if op else set()
    for field in ("shapes", "cpu_shapes"):
        for entry in body.get(field) or []:
            if not isinstance(entry, dict):
                raise _err(path, name, field, f"each shape must be a mapping, got {entry!r}")
            if keys is not None:
                bad = set(entry) - keys
                if bad:
                    raise _err(path, name, field, f"unknown shape key {sorted(bad)[0]!r} (known: {', '.join(sorted(keys))})")
                have = set(entry)
                if "tokens" in have:   # tokens fixes B*T: it needs T and replaces B
                    if "T" not in have or "B" in have:
                        raise _err(path, name, field, f"{entry}: `tokens` fixes B*T, so it needs T and no B")
                    have.add("B")
                spec = spec_of(op)
                missing = [k for k in spec.shape_keys if k not in have]
                if missing:
                    raise _err(path, name, field, f"{entry} lacks {missing[0]!r} (needs {', '.join(spec.shape_keys)})")
            if op == "e2e":
                bad = set(entry) - {"model", "B", "T"}
                if bad or not isinstance(entry.get("model"), str):
                    raise _err(path, name, field, "e2e shapes are mappings {model: NAME, B: int, T: int}")
            for k, v in entry.items():
                vals = v if isinstance(v, list) else [v]
                if op == "e2e" and k == "model":
                    continue
                if not vals or not all(isinstance(x, (int, bool)) for x in vals):
                    raise _err(path, name, field, f"{k} must be an int/bool or a list of them, got {v!r}")
                # a size of 0 or below would run and end as an `error` point
                bad_size = next((x for x in vals if isinstance(x, bool) or x <= 0), None) if k in sizes else None
                if bad_size is not None:
                    raise _err(path, name, field, f"{entry}: {k}={bad_size}: a size must be an int > 0")
    if op and not shapes and not include:
        raise _err(path, name, "shapes", "missing")
    configs = body.get("configs", {})
    for impl, axes in configs.items():
        if op and op != "e2e" and impl not in impls:
            raise _err(path, name, "configs", f"impl {impl!r} is not in this sweep's impls")
        if not isinstance(axes, dict) or not all(isinstance(v, list) and v for v in axes.values()):
            raise _err(path, name, "configs", f"{impl}: must map parameter names to non-empty lists of values")
        declared = _declared_impl(op, impl)
        if declared is not None:   # the impl imports here: its parameters and their types are known
            params = {p.name: p for p in declared.params}
            for pname, vals in axes.items():
                if pname not in params:
                    raise _err(path, name, "configs", f"{impl} has no tile parameter {pname!r} "
                                                      f"(has: {', '.join(params) or 'none'})")
                for v in vals:
                    why = params[pname].validate(v)
                    if why:
                        raise _err(path, name, "configs", f"{impl}: {why}")
    presets = body.get("presets", {})
    for impl, names in presets.items():
        if not isinstance(names, list):
            raise _err(path, name, "presets", f"{impl}: must be a list of preset names")
        if op and op != "e2e" and impl not in impls:
            raise _err(path, name, "presets", f"impl {impl!r} is not in this sweep's impls")
        declared = _declared_impl(op, impl)
        for n in names:   # a preset users pick per GPU, or an experiment's tuning config
            if declared is not None and n != DEFAULT_CONFIG and declared.named(n) is None:
                raise _err(path, name, "presets", f"{impl} has no preset {n!r} and no tuning config of that "
                                                  f"name ({declared.known_names()})")
    quick = body.get("quick", {})
    for k, v in quick.items():
        if k not in QUICK_KEYS or not isinstance(v, QUICK_KEYS[k]):
            raise _err(path, name, "quick", f"{k!r}: known keys shapes (int), dtypes (int), passes (list)")
        if k == "passes" and not set(v) <= set(PASSES):
            bad = sorted(set(v) - set(PASSES))[0]
            raise _err(path, name, "quick", f"unknown pass {bad!r}{did_you_mean(bad, PASSES)} (known: {', '.join(PASSES)})")
    if op == "e2e":
        for b in body.get("backends", []):
            why = _backend_error(b)
            if why:
                raise _err(path, name, "backends", why)
    for k in ("steps", "converge_iters"):
        if k in body and body[k] <= 0:
            raise _err(path, name, k, f"{body[k]}: must be > 0" + (" (leave it out: no training run)"
                                                                   if k == "converge_iters" else ""))
    if "cuda_graph" in body and op != "e2e":
        raise _err(path, name, "cuda_graph", "only e2e sweeps capture whole steps (kernel sweeps: --cuda-graph)")
    extra = {k: body[k] for k in ("models", "backends", "steps", "converge_iters", "cuda_graph") if k in body}
    extra["cpu_dtypes"] = body.get("cpu_dtypes")
    return Sweep(name, op, impls, dtypes, passes, shapes, cpu_shapes, configs, presets, include, quick, extra,
                 description=body.get("description", "").strip(), source=path)


def _declared_impl(op, impl):
    """The impl's declaration (tile params, presets) where it imports on this machine, else None: an impl
    whose toolchain is missing is checked when it runs (its points record `unavailable`)."""
    if not op or op == "e2e":
        return None
    from kernels import registry
    try:
        return registry._import_impl(op, impl)[0]
    except KeyError:
        return None


def expand_shapes(entries: list[dict]) -> list[dict]:
    """Each entry is a product over its list-valued keys; `tokens` fixes B*T (B = tokens // T)."""
    out = []
    for entry in entries:
        keys = list(entry)
        vals = [v if isinstance(v, list) else [v] for v in entry.values()]
        for combo in itertools.product(*vals):
            s = dict(zip(keys, combo))
            if "tokens" in s:
                tokens = s.pop("tokens")
                if tokens < s["T"]:     # validation guarantees T beside tokens
                    continue
                s["B"] = tokens // s["T"]
                s = {k: s[k] for k in ["B"] + [k for k in s if k != "B"]}
            if s not in out:
                out.append(s)
    return out


DEFAULT_CONFIG = "default"   # in a sweep's presets list: the impl's own default config


def expand_configs(sweep: Sweep, impl: str, impl_obj) -> list[tuple[str, dict]]:
    """(label, overrides) per tile config: the default, each named preset or tuning config, and the cartesian
    axes."""
    out = []
    axes = sweep.configs.get(impl, {})
    presets = sweep.presets.get(impl, [])
    if not axes and not presets:
        return [("default", {})]
    for name in presets:   # a preset or a tuning config: both labelled preset:NAME, as results always were
        if name == DEFAULT_CONFIG:   # the config the impl runs unasked, beside the others (--record-defaults)
            out.append(("default", {}))
            continue
        cfg = impl_obj.named(name) if impl_obj is not None else {}
        out.append((f"preset:{name}", {"__missing_preset__": name} if cfg is None else cfg))
    if axes:
        keys = list(axes)
        for combo in itertools.product(*axes.values()):
            cfg = dict(zip(keys, combo))
            out.append((",".join(f"{k}={v}" for k, v in cfg.items()), cfg))
    return out


def resolve_names(sweeps: dict[str, Sweep], names: list[str]) -> list[Sweep]:
    """Sweeps by name, includes flattened, each once, in order."""
    out: list[Sweep] = []

    def add(n, stack=()):
        if n in stack:
            raise SweepError(f"sweep '{n}': include cycle {' -> '.join(stack + (n,))}")
        s = sweeps[n]
        for inc in s.include:
            add(inc, stack + (n,))
        if s.op and s not in out:
            out.append(s)
    for n in names:
        if n not in sweeps:
            raise SweepError(f"unknown sweep {n!r}{did_you_mean(n, sweeps)} (known: {', '.join(sweeps)})")
        add(n)
    return out


def points(sweep: Sweep, device: str, quick: bool = False, impl_filter: list[str] | None = None,
           resolver=None, mode: str = "events") -> list[dict]:
    """Every point of a kernel sweep for `device`. resolver(op, impl) -> KernelImpl | None gives presets;
    mode: "events" (launched calls) or "graph" (graph replays, --cuda-graph), which sets each point's timer."""
    on_cpu = not device.startswith("cuda")
    entries = sweep.cpu_shapes if (on_cpu and sweep.cpu_shapes) else sweep.shapes
    shapes = expand_shapes(entries)
    if sweep.op != "e2e":   # canonical key order, so labels and ids do not depend on how the YAML was written
        order = list(spec_of(sweep.op).shape_keys) + list(spec_of(sweep.op).shape_defaults)
        shapes = [{k: s[k] for k in order if k in s} for s in shapes]
    dtypes = list(sweep.extra.get("cpu_dtypes") or sweep.dtypes) if on_cpu else list(sweep.dtypes)
    passes = list(sweep.passes)
    if quick:
        shapes = shapes[: sweep.quick.get("shapes", 2)]
        dtypes = dtypes[: sweep.quick.get("dtypes", 1)]
        passes = sweep.quick.get("passes", passes)
    if sweep.op == "e2e":
        return _e2e_points(sweep, shapes, dtypes, quick, impl_filter, device)
    timer = timer_for(device, mode)
    impls = [i for i in sweep.impls if not impl_filter or i in impl_filter]
    out = []
    for impl in impls:
        impl_obj = resolver(sweep.op, impl) if resolver else None
        # --quick: the impl's default config, as the README promises (not the first preset or axis value)
        configs = [("default", {})] if quick else expand_configs(sweep, impl, impl_obj)
        for shape, dtype, pass_, (label, cfg) in itertools.product(shapes, dtypes, passes, configs):
            p = {"sweep": sweep.name, "op": sweep.op, "impl": impl, "shape": shape, "dtype": dtype,
                 "pass": pass_, "config": cfg, "config_label": label, "timer": timer}
            p["point_id"] = point_id(p)
            out.append(p)
    return out


def shard(pts: list[dict], i: int, n: int) -> list[dict]:
    """A deterministic 1/n slice (by point id, so it does not depend on the order sweeps are listed)."""
    return [p for p in pts if int(p["point_id"], 16) % n == i]


def _e2e_points(sweep: Sweep, shapes, dtypes, quick, impl_filter, device) -> list[dict]:
    backends = [b for b in sweep.extra.get("backends", list(E2E_BACKENDS)) if not impl_filter or b in impl_filter]
    extra = {k: sweep.extra[k] for k in ("steps", "converge_iters", "cuda_graph") if k in sweep.extra}
    # a graphed step is its own point (its own id), labelled as a config of the backend
    config, label = ({"cuda_graph": True}, "cuda_graph") if extra.get("cuda_graph") else ({}, "default")
    if quick:
        extra["steps"] = min(extra.get("steps", 5), 5)
        extra.pop("converge_iters", None)
    out = []
    for shape, dtype, backend in itertools.product(shapes, dtypes, backends):
        p = {"sweep": sweep.name, "op": "e2e", "impl": backend, "shape": shape, "dtype": dtype, "pass": "train_step",
             "config": dict(config), "config_label": label, "extra": extra,
             "timer": timer_for(device, "graph" if extra.get("cuda_graph") else "events")}
        p["point_id"] = point_id(p)
        out.append(p)
    return out
