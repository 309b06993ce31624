"""The model's view of the kernel registry: one Backend per model picks an impl per op and calls it.

    Backend("eager")                        every op in plain PyTorch (the reference)
    Backend("eager_sdpa")                   nanoGPT's model: the same, attention through F.scaled_dot_product_attention
    Backend("triton") / Backend("cutile")   one impl name for all ops
    Backend("triton,fmha=sdpa_flash")       a default plus per-op overrides (or pass a dict op -> impl)
    Backend("auto") / "auto:results/x.jsonl"  per op, the fastest correct impl measured on this GPU

Where the chosen impl is unavailable, or cannot take a shape/dtype/device (its why_not, or it raises
kernels.registry.Unsupported), that call runs the eager impl instead. Each such fallback is logged once
per (op, reason) and kept in `backend.fallbacks`, which the benchmark reports: never silent.

Under torch.compile (`torch.compiler.is_compiling()`) every op the backend does not run eagerly goes through its
impl's torch.library entry (`KernelImpl.traced`, kernels/library.py), which dynamo puts in the graph as ops: the
model compiles fullgraph with our kernels inside. What the eager path decides by calling (availability, why_not,
an Unsupported raised by the impl, fallbacks and their log lines) is decided at trace time by plain Python
(`_at_trace`, a torch._dynamo.assume_constant_result function) and baked into the graph: an impl's Unsupported is
found by a dry run of its traced entry on fake tensors. An impl without a traced entry falls back to eager there.
`standins=True` lets a CPU run use the library ops where the kernels cannot run (their eager-math stand-ins):
for tracing tests only, never a measurement.

Under autocast the backend casts what autocast would cast (linear and attention inputs) before calling
an impl, so a kernel sees the same dtypes the eager op would compute in. Each call sits in an "op:{name}"
profiler range (model/ranges.py); "auto" ranks measured results with model/ranking.py.
"""
from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import sys
import types
import weakref
from collections import defaultdict

import torch

from kernels import device as devices
from kernels import gpu_defaults
from kernels import registry
from kernels import library
from kernels.fmha.layout import heads_inside_rows, is_qkv_split
from kernels.registry import DTYPE_NAMES, Unsupported
from model import ranges
from model.op_list import OPS
from kernels.rows import timer_for
from model.ranking import default_results, fastest_by_shape, rank_impls, read_results, shape_key

EAGER_SDPA = "eager_sdpa"   # a baseline backend: nanoGPT's model (eager ops, F.scaled_dot_product_attention)


_ENTRIES = types.SimpleNamespace()   # "<op>__<impl>" -> the impl's traced entry (what a plan names)
_LIVE: "weakref.WeakValueDictionary[int, Backend]" = weakref.WeakValueDictionary()
_HANDLES = itertools.count(1)


@torch._dynamo.assume_constant_result
def _at_trace(handle: int, method: str, *args):
    """Backend method `method` run as plain Python while dynamo traces, its (constant) result baked into the graph.
    The backend is named by an int handle: older dynamo converts only constants into such a call."""
    return getattr(_LIVE[handle], method)(*args)


def _meta(a):
    """What a dry run needs of an argument: a tensor's metadata, anything else as it is."""
    if isinstance(a, torch.Tensor):
        return ("tensor", tuple(a.shape), tuple(a.stride()), a.dtype, a.device, a.requires_grad)
    return a


def _stderr_log(msg: str) -> None:
    print(f"[tilebench.model] {msg}", file=sys.stderr, flush=True)


def parse_choice(choice) -> tuple[str, dict[str, str], str | None]:
    """(mode, op -> impl, results path) from "eager", "eager_sdpa", "auto[:path]", "triton,fmha=eager" or a dict."""
    if isinstance(choice, dict):
        default = choice.get("default", "eager")
        unknown = set(choice) - set(OPS) - {"default"}
        if unknown:
            raise ValueError(f"unknown ops {sorted(unknown)} in backend mapping; ops are {', '.join(OPS)}")
        return "map", {op: choice.get(op, default) for op in OPS}, None
    text = str(choice).strip()
    if text == EAGER_SDPA:
        return "single", {op: "eager" for op in OPS}, None
    if text == "auto" or text.startswith("auto:"):
        return "auto", {op: "eager" for op in OPS}, (text[5:] or None)
    default, mapping = "eager", {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" in part:
            op, _, name = (s.strip() for s in part.partition("="))
            if op not in OPS:
                raise ValueError(f"unknown op {op!r} in backend {text!r}; ops are {', '.join(OPS)}")
            mapping[op] = name
        else:
            default = part
    names = {default, *mapping.values()}
    known = set(registry.all_impl_names())
    bad = names - known
    if bad:
        raise ValueError(f"unknown impl {sorted(bad)} in backend {text!r}; known: {', '.join(sorted(known))}")
    return ("single" if not mapping else "map"), {op: mapping.get(op, default) for op in OPS}, None


class Backend:
    def __init__(self, choice="eager", *, results: str | list | None = None, dtype: str = "bf16",
                 configs: dict | None = None, fuse_gelu: bool | None = None, annotate: bool = True, log=None,
                 graphed: bool = False, standins: bool = False):
        self.spec = choice if isinstance(choice, str) else json.dumps(choice, sort_keys=True)
        self.mode, self.choice, path = parse_choice(choice)
        self.results_given = bool(results or path)   # else auto reads (and may first measure into) results/
        self.results = results or path or default_results()
        self.dtype = dtype                       # which rows "auto" prefers
        self.graphed = graphed                   # the step is replayed as a CUDA graph: auto ranks graph timings
        self.configs = dict(configs or {})       # op -> tile-config overrides
        self.fuse_gelu = fuse_gelu               # None: when linear and gelu use the same non-eager impl
        self.annotate = annotate                 # record_function per op (off under torch.compile)
        self.profile_ranges = False              # backward ranges too (bench/e2e turns it on to profile)
        self.log = log or _stderr_log
        self.fallbacks: list[str] = []           # what the benchmark reports
        self.notes: list[str] = []               # auto's choices and the like
        self.used: dict[str, set] = defaultdict(set)   # op -> non-eager impls that actually ran
        self._eager = {op: registry.get(op, "eager").fn for op in OPS}
        if self.spec == EAGER_SDPA:   # nanoGPT's model: PyTorch ops, attention through SDPA's own dispatch
            self._eager["fmha"] = _sdpa_fmha
        self._auto_done = self.mode != "auto"
        self._by_shape: dict[str, dict[str, str]] = {}   # auto: op -> shape_key -> impl (measured shapes)
        self._said: set = set()
        self._decided: dict = {}
        self._cfg: dict = {}
        self._auto_configs: set = set()          # ops whose tile config auto took from result rows
        self._fused_off: str | None = None
        self._lce_off: str | None = None         # why the fused lm_head + loss was given up
        self._aln_off: str | None = None         # why the fused residual add + LayerNorm was given up
        # under torch.compile on a machine where the kernels cannot run, trace the library ops' CPU stand-ins
        # (eager math; kernels/library.py): a tracing test, never a measurement of the kernels
        self.standins = standins
        self._handle = next(_HANDLES)
        _LIVE[self._handle] = self

    def __repr__(self):
        return f"Backend({self.spec!r})"

    def describe(self) -> str:
        return ", ".join(f"{op}={name}" for op, name in self.choice.items())

    # --- auto --------------------------------------------------------------------------------------
    def resolve_auto(self, device: str) -> None:
        """Fill in auto's per-op choice for `device` (done at the first op call if not called before)."""
        if self._auto_done:
            return
        self._auto_done = True
        name = devices.name(device)
        rows = read_results(self.results)
        timer = timer_for(str(device), "graph" if self.graphed else "events")
        ranked = rank_impls(rows, name, self.dtype, timer=timer)
        for op, shapes in fastest_by_shape(rows, name, self.dtype, timer=timer).items():
            for key, impls in shapes.items():
                usable = [i for i in impls if registry.resolve(op, i, device).ok] if op in OPS else []
                if usable:
                    self._by_shape.setdefault(op, {})[key] = usable[0]
        for op in OPS:
            picked = None
            for cand in ranked.get(op, []):
                try:
                    r = registry.resolve(op, cand["impl"], device)
                except KeyError:
                    continue
                if r.ok:
                    picked = cand
                    break
                self._note(f"auto: {op}/{cand['impl']} ranked but unavailable here: {r.reason}")
            if picked is None:
                self.choice[op] = "eager"
                self._fallback(op, "auto", f"no usable ok fwd+bwd result rows for {name!r} in {self.results}")
                continue
            self.choice[op] = picked["impl"]
            if picked["config"] and op not in self.configs:
                self.configs[op] = picked["config"]
                self._auto_configs.add(op)
            self._note(f"auto: {op} -> {picked['impl']} (time/best {picked['score']:.3f} over "
                       f"{picked['shapes']}/{picked['of']} shapes, dtype {picked['dtype']})")
        for op, shapes in self._by_shape.items():
            for key, impl in shapes.items():
                if impl != self.choice[op]:
                    self._note(f"auto: {op} at {key} -> {impl} (fastest at that measured shape)")

    def impl_for(self, op: str, shape: dict) -> str:
        """The impl name this backend uses for op at shape: auto's winner at that measured shape if any,
        else the op's choice."""
        if self._by_shape:
            if torch.compiler.is_compiling():
                return _at_trace(self._handle, "_impl_for_items", op, tuple(sorted(shape.items())))
            return self._by_shape.get(op, {}).get(shape_key(shape), self.choice[op])
        return self.choice[op]

    def _impl_for_items(self, op, items):
        return self.impl_for(op, dict(items))

    # --- bookkeeping ------------------------------------------------------------------------------
    def _note(self, msg: str) -> None:
        if msg not in self._said:
            self._said.add(msg)
            self.notes.append(msg)
            self.log(msg)

    def _fallback(self, op: str, name: str, reason: str) -> None:
        key = (op, reason)
        if key in self._said:
            return
        self._said.add(key)
        msg = f"{op}: {name} -> eager: {reason}"
        self.fallbacks.append(msg)
        self.log("fallback " + msg)

    def _config(self, op, name, impl, device="cpu") -> dict:
        """The tile config op runs name with. A config the caller gave that the impl rejects is an error; one auto
        read from result rows (written by an older version of the impl) gives way to the defaults, recorded
        in `fallbacks` so the benchmark reports which config really ran."""
        key = (op, name)
        if key not in self._cfg:
            want = self.configs.get(op)
            try:
                # no config given: this GPU's recorded default if any (kernels/gpu_defaults.py), else the preset
                self._cfg[key], source = gpu_defaults.config(impl, op, name, want, device)
                if source not in ("caller", "preset"):
                    self._note(f"{op}/{name}: default config from {source}")
            except ValueError as e:
                if op not in self._auto_configs:
                    raise ValueError(f"{op}/{name}: tile config {want} rejected: {e}") from None
                msg = f"{op}: {name} measured tile config {want} rejected ({e}); ran its default config"
                self.fallbacks.append(msg)
                self.log("fallback " + msg)
                self._cfg[key] = impl.config()
        return self._cfg[key]

    # --- dispatch ---------------------------------------------------------------------------------
    def _pick(self, op, shape, x, grad):
        """(key, (name, impl, config) or None for eager); decided once per (op, shape, dtype, device, pass)."""
        device = str(x.device)
        if not self._auto_done:
            self.resolve_auto(device)
        name = self.impl_for(op, shape)
        if name == "eager":
            return None, None
        pass_ = "fwd+bwd" if grad else "fwd"
        dtype = DTYPE_NAMES.get(x.dtype, str(x.dtype))
        key = (op, name, tuple(sorted(shape.items())), dtype, device, pass_)
        if key not in self._decided:
            r = None
            if name not in registry.impl_names(op):
                why = f"op {op} has no impl named {name!r}"
            else:
                r = registry.resolve(op, name, device)
                why = r.reason or r.impl.why_not(shape, dtype, device, pass_)
            if why:
                self._fallback(op, name, why)
            self._decided[key] = None if why else (name, r.impl, self._config(op, name, r.impl, device))
        return key, self._decided[key]

    def _call(self, op, shape, args, kwargs, eager_ok=True, refuse=None):
        """Run op through the chosen impl, else eager. With eager_ok False: None when the impl cannot
        run, and its Unsupported propagates (linear_gelu then splits the op instead). Under torch.compile through
        the impl's library entry (_traced_call; `refuse` names the caller whose bookkeeping an Unsupported takes)."""
        if torch.compiler.is_compiling():
            return self._traced_call(op, shape, args, kwargs, eager_ok, refuse)
        if self._auto_done and not self.profile_ranges and self.impl_for(op, shape) == "eager":
            with self._range(op):   # the plain path: nothing to decide (and nothing for dynamo to trace)
                return self._eager[op](*args, **kwargs)
        x = args[0]
        grad = torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)
        key, pick = self._pick(op, shape, x, grad)
        if pick is None and not eager_ok:
            return None
        state = None
        if self.profile_ranges and grad:
            state, args = ranges.backward_range_inputs(op, args)
        out = None
        if pick is not None:
            name, impl, cfg = pick
            try:
                with self._range(op):
                    out = impl.fn(*args, **kwargs, **cfg)
                self.used[op].add(name)
            except Unsupported as e:
                if not eager_ok:
                    raise
                self._fallback(op, name, f"raised Unsupported: {e}")
                self._decided[key] = None
        if out is None:
            with self._range(op):
                out = self._eager[op](*args, **kwargs)
        if state is not None:
            out = ranges.backward_range_outputs(state, out)
        return out

    # --- under torch.compile ------------------------------------------------------------------------
    def _traced_call(self, op, shape, args, kwargs, eager_ok, refuse):
        grad = torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)
        plan = _at_trace(self._handle, "_plan", op, tuple(sorted(shape.items())), tuple(_meta(a) for a in args),
                         tuple(sorted(kwargs.items())), grad, refuse)
        if plan is None:
            return self._eager[op](*args, **kwargs) if eager_ok else None
        entry, config = plan
        return getattr(_ENTRIES, entry)(*args, **kwargs, config=config)

    def _plan(self, op, shape_items, metas, kw_items, grad, refuse):
        """At trace time: (name of the traced entry in _ENTRIES, config string) for this call, or None for eager (or, with `refuse`,
        for the caller's unfused path), with the eager path's bookkeeping (fallbacks, `used`, the fused paths'
        off switches). An impl's Unsupported comes from a dry run of its traced entry on fake tensors."""
        shape, kwargs = dict(shape_items), dict(kw_items)
        x = next(m for m in metas if isinstance(m, tuple) and m and m[0] == "tensor")
        dtype, device = DTYPE_NAMES.get(x[3], str(x[3])), str(x[4])
        if not self._auto_done:
            self.resolve_auto(device)
        name = self.impl_for(op, shape)
        if refuse == "linear_gelu":
            why = self._no_epilogue(name, device)
            if why:
                self._gelu_refused(why)
                return None
        if name == "eager":
            return None
        key = ("traced", op, name, shape_items, dtype, device, "fwd+bwd" if grad else "fwd", kw_items)
        if key not in self._decided:
            self._decided[key] = self._traced_pick(op, name, shape, dtype, device, grad, metas, kwargs, refuse)
        plan = self._decided[key]
        if plan is None:
            if refuse == "linear_gelu" and self._fused_off is None:
                self._fused_off = "linear impl cannot run here"
            elif refuse == "add_layer_norm" and self._aln_off is None:
                self._aln_off = "impl cannot run here"
            return None
        self.used[op].add(name)
        if refuse == "linear_gelu":
            self.used["linear+gelu"].add(name)
        return plan

    def _traced_pick(self, op, name, shape, dtype, device, grad, metas, kwargs, refuse):
        if name not in registry.impl_names(op):
            self._fallback(op, name, f"op {op} has no impl named {name!r}")
            return None
        r = registry.resolve(op, name, device)
        why = r.reason
        if why and self.standins and r.impl is not None and r.impl.traced is not None and device == "cpu":
            self._note(f"{op}: {name} traced with its CPU stand-in (eager math, not the kernels): {why}")
            why = None
        why = why or r.impl.why_not(shape, dtype, device, "fwd+bwd" if grad else "fwd")
        if not why and r.impl.traced is None:
            why = "no torch.library entry (kernels/library.py): under torch.compile it would break the graph"
        if why:
            self._fallback(op, name, why)
            return None
        try:
            config = library.config_json(self._config(op, name, r.impl, device))
            library.dry_run(r.impl.traced, metas, kwargs, config, grad)
        except Unsupported as e:
            if refuse == "add_layer_norm":
                self._aln_refused(name, e)
            elif refuse == "linear_gelu":
                self._gelu_refused(f"Unsupported: {e}")
            elif refuse == "linear_cross_entropy":
                self._lce_refused(name, e)
            else:
                self._fallback(op, name, f"raised Unsupported: {e}")
            return None
        entry = f"{op}__{name}"
        setattr(_ENTRIES, entry, r.impl.traced)
        return entry, config

    def _range(self, op):
        return ranges.forward_range(op) if self.annotate else contextlib.nullcontext()

    # --- the ops ------------------------------------------------------------------------------------
    def layer_norm(self, x, weight, bias, eps=1e-5):
        C = x.shape[-1]
        return self._call("layer_norm", {"M": x.numel() // C, "C": C}, (x, weight, bias), {"eps": eps})

    def linear(self, x, weight, bias=None):
        x, weight, bias = _amp(x, weight, bias)
        shape = {"M": x.numel() // x.shape[-1], "N": weight.shape[0], "K": weight.shape[1]}
        return self._call("linear", shape, (x, weight, bias), {})

    def residual_branch(self, x, weight, bias, dropout=0.0, training=False):
        """A block's output projection (attention's and the MLP's c_proj): nanoGPT's dropout(linear(x)).
        Where add_layer_norm runs fused and dropout is off, the bias is left out of the matmul and handed on
        as (y, bias) for the fused op to add (its gradient then comes from that kernel's column sums, not a
        separate reduction over dY)."""
        M = x.numel() // x.shape[-1]
        if bias is not None and not (dropout and training) and self._fused_residual(x, {"M": M, "C": weight.shape[0]}):
            return self.linear(x, weight, None), bias
        return torch.nn.functional.dropout(self.linear(x, weight, bias), dropout, training)

    def add_layer_norm(self, x, branch, weight, bias, eps=1e-5):
        """(s, LayerNorm(s)) for s = x + branch, the residual add and the next LayerNorm. branch is None, a
        tensor, or (y, bias) from residual_branch. Through the add_layer_norm op when its impl is not eager and
        can run (LayerNorm(s) then comes out in the autocast dtype, as the matmul after it reads it); otherwise
        nanoGPT's own order, the add then the layer_norm op."""
        y, ybias = branch if isinstance(branch, tuple) else (branch, None)
        C = x.shape[-1]
        shape = {"M": x.numel() // C, "C": C}
        if self._fused_residual(x, shape):
            amp = torch.is_autocast_enabled(x.device.type)
            out_dtype = torch.get_autocast_dtype(x.device.type) if amp else None
            if y is not None and amp and y.dtype != out_dtype and y.is_floating_point():
                y = y.to(out_dtype)
            try:
                out = self._call("add_layer_norm", shape, (x, y, ybias, weight, bias),
                                 {"eps": eps, "out_dtype": out_dtype}, eager_ok=False, refuse="add_layer_norm")
            except Unsupported as e:
                self._aln_refused(self.impl_for("add_layer_norm", shape), e)
                out = None
            if out is not None:
                return out
            if self._aln_off is None:
                self._aln_off = "impl cannot run here"   # its fallback is recorded already
        if y is not None:
            x = x + (y if ybias is None else y + ybias)
        return x, self.layer_norm(x, weight, bias, eps)

    def _aln_refused(self, name, e) -> None:
        self._aln_off = str(e)
        self._fallback("add_layer_norm", name, f"raised Unsupported: {e}")

    def _lce_refused(self, name, e) -> None:
        self._lce_off = str(e)
        self._fallback("linear_cross_entropy", name, f"raised Unsupported: {e}; linear then cross_entropy")

    def _fused_residual(self, x, shape) -> bool:
        if not self._auto_done:
            self._resolve_auto_now(x)
        return self._aln_off is None and self.impl_for("add_layer_norm", shape) != "eager"

    def _resolve_auto_now(self, x) -> None:
        if torch.compiler.is_compiling():
            _at_trace(self._handle, "resolve_auto", str(x.device))
        else:
            self.resolve_auto(str(x.device))

    def gelu(self, x, bias=None):
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)   # as if the bias had been added inside the (autocast) matmul
        C = x.shape[-1]
        return self._call("gelu", {"M": x.numel() // C, "C": C}, (x, bias), {})

    def linear_gelu(self, x, weight, bias=None):
        """gelu(x @ weight.T + bias): fused in the linear's epilogue where its impl can, else split."""
        lin = self.choice["linear"]
        fuse = self.fuse_gelu if self.fuse_gelu is not None else (lin != "eager" and lin == self.choice["gelu"])
        if fuse and self._fused_off is None and torch.compiler.is_compiling():
            xc, w, b = _amp(x, weight, bias)
            shape = {"M": xc.numel() // xc.shape[-1], "N": w.shape[0], "K": w.shape[1]}
            out = self._call("linear", shape, (xc, w, b), {"activation": "gelu"}, eager_ok=False, refuse="linear_gelu")
            if out is not None:
                return out
        elif fuse and self._fused_off is None:
            xc, w, b = _amp(x, weight, bias)
            shape = {"M": xc.numel() // xc.shape[-1], "N": w.shape[0], "K": w.shape[1]}
            why = self._no_epilogue(self.impl_for("linear", shape), str(x.device))
            if why is None:
                try:
                    out = self._call("linear", shape, (xc, w, b), {"activation": "gelu"}, eager_ok=False)
                    if out is not None:
                        self.used["linear+gelu"].add(lin)
                        return out
                    self._fused_off = "linear impl cannot run here"   # its fallback is recorded already
                except Unsupported as e:
                    why = f"Unsupported: {e}"
            if why:
                self._gelu_refused(why)
        if self.impl_for("gelu", {"M": x.numel() // x.shape[-1], "C": weight.shape[0]}) == "eager":
            # nanoGPT's own path: the bias rides in the matmul (addmm)
            return self.gelu(self.linear(x, weight, bias), None)
        return self.gelu(self.linear(x, weight, None), bias)   # the gelu kernel fuses the bias add

    def _gelu_refused(self, why: str) -> None:
        self._fused_off = why
        msg = f"linear+gelu: {self.choice['linear']} fused GELU epilogue not used ({why}); linear then gelu"
        self.fallbacks.append(msg)
        self.log("fallback " + msg)

    @staticmethod
    def _no_epilogue(name: str, device: str) -> str | None:
        """Why linear impl `name` cannot take activation="gelu" by its signature, else None (it may still raise
        Unsupported). Checked up front, so a TypeError raised inside a kernel stays the bug it is."""
        if name == "eager":
            return None
        r = registry.resolve("linear", name, device) if name in registry.impl_names("linear") else None
        if r is None or not r.ok:
            return None   # _call records why it cannot run
        try:
            params = inspect.signature(r.impl.fn).parameters
        except (TypeError, ValueError):   # no Python signature to read: the call itself will tell
            return None
        if "activation" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return None
        return f"{name}'s linear takes no activation keyword"

    def fmha(self, q, k, v, causal=True):
        q, k, v = _amp(q, k, v)
        B, H, T, D = q.shape
        shape = {"B": B, "H": H, "T": T, "D": D, "causal": causal}
        if _qkv_layout(q, k, v):   # as a qkv: true sweep point measures it, transposes and dqkv included
            shape["qkv"] = True
        return self._call("fmha", shape, (q, k, v), {"causal": causal})

    def cross_entropy(self, logits, targets, ignore_index=-1):
        M, V = logits.shape
        return self._call("cross_entropy", {"M": M, "V": V}, (logits, targets), {"ignore_index": ignore_index})

    def linear_cross_entropy(self, x, weight, targets, ignore_index=-1):
        """(loss, logits) for loss = cross_entropy(x @ weight.T, targets). Through the fused op when its impl
        is not eager and can run: then no logits exist and None comes back. Otherwise nanoGPT's own path,
        linear then cross_entropy (each dispatched by its own choice), which returns the logits too."""
        op = "linear_cross_entropy"
        if not self._auto_done:
            self._resolve_auto_now(x)
        shape = {"M": x.numel() // x.shape[-1], "K": x.shape[-1], "V": weight.shape[0]}
        if self._lce_off is None and self.impl_for(op, shape) != "eager":
            xc, w = _amp(x, weight)
            x2, t = xc.reshape(-1, xc.shape[-1]), targets.reshape(-1)
            try:
                loss = self._call(op, shape, (x2, w, t), {"ignore_index": ignore_index}, eager_ok=False,
                                  refuse="linear_cross_entropy")
            except Unsupported as e:   # e.g. a dtype the impl declines at run time: split from now on
                self._lce_refused(self.impl_for(op, shape), e)
                loss = None
            if loss is not None:
                return loss, None
        logits = self.linear(x, weight)
        loss = self.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index)
        return loss, logits


def _qkv_layout(q, k, v) -> bool:
    """is_qkv_split; under torch.compile (no data pointers on fake tensors) by the strides alone."""
    if torch.compiler.is_compiling():
        C = q.shape[1] * q.shape[3]
        return (k.shape == q.shape == v.shape and heads_inside_rows(q) and q.stride() == k.stride() == v.stride()
                and q.stride(2) == 3 * C)
    return is_qkv_split(q, k, v)


def _sdpa_fmha(q, k, v, causal=True):
    # nanoGPT's call. A causal row always sees its own key, so no row is fully masked and SDPA's -inf
    # mask never meets an empty row (the -1e20 floor matters only there).
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _amp(*ts):
    """Cast floating tensors to the autocast dtype when autocast is on (what it does for matmuls)."""
    x = ts[0]
    dev = x.device.type
    if not torch.is_autocast_enabled(dev):
        return ts
    dt = torch.get_autocast_dtype(dev)
    return tuple(t.to(dt) if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != dt else t
                 for t in ts)
