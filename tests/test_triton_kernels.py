"""The Triton kernels on the CPU: every op through the correctness gate under TRITON_INTERPRET=1 at small
odd shapes (forward and gradients, fp32/bf16/fp16), and every kernel's default config compiled ahead of
time for sm_80, sm_89, sm_90, sm_100 and sm_120.

Both run in a child process: the interpreter flag only takes effect for kernels defined after it is set,
and anything else in this pytest process may have imported the kernel modules already (or set the flag,
which would break compiling). One child per kind runs every selected case and reports JSON; the tests
here read their own case out of it.

Select: -k interp (interpreter), -k aot (ahead-of-time), -m triton (both), plus op markers (-m fmha).
"""
import json
import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("triton")
pytest.importorskip("torch")

from kernels import registry   # noqa: E402  (the registry and specs only: kernel modules load in the children)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = ("sm_80", "sm_89", "sm_90", "sm_100", "sm_120")
OPS = [op for op in registry.OPS if "triton" in registry.impl_names(op)]
DTYPES = ("fp32", "bf16", "fp16")
PASSES = ("fwd", "fwd+bwd")

# --- the cases: (op, shape, dtype, pass, config overrides, inputs builder or None, expect ok) -------------
# Shapes come from each spec's test_shapes(); `small` cases run the impl's test_config (small tiles so every
# odd size spans several blocks, edges and (causal) diagonals included) under their overrides.


def _first(op):
    return registry.spec_of(op).test_shapes()[0]


def _cases():
    cases = {}

    def add(cid, op, shape, dtype, pass_, cfg=None, build=None, expect_ok=True, small=True):
        cases[cid] = dict(op=op, shape=shape, dtype=dtype, pass_=pass_, cfg=cfg or {}, build=build,
                          expect_ok=expect_ok, small=small)

    for op in OPS:
        spec = registry.spec_of(op)
        shapes = spec.test_shapes()
        for shape in shapes:
            tag = spec.label(shape).replace(" ", "-") + "-" if len(shapes) > 1 else ""
            for dtype in DTYPES:
                for pass_ in PASSES:
                    add(f"{op}-{tag}{dtype}-{pass_}", op, shape, dtype, pass_)
        # the per-arch default config too (the interpreter counts as sm_80)
        add(f"{op}-default-bf16-fwd+bwd", op, shapes[0], "bf16", "fwd+bwd", small=False)
        # autotune mode (impls with an autotune parameter): it must run and report the config it used
        add(f"{op}-autotune-bf16-fwd+bwd", op, shapes[0], "bf16", "fwd+bwd", {"autotune": True}, small=False)
    for D, T in ((128, 33), (32, 45), (16, 29)):
        for causal in (True, False):
            add(f"fmha-D{D}-T{T}-{'causal' if causal else 'full'}-bf16-fwd+bwd", "fmha",
                {"B": 1, "H": 2, "T": T, "D": D, "causal": causal}, "bf16", "fwd+bwd")
    # the model's layout through the spec's wrapper: q, k, v views of one qkv, (B, T, C) out, one dqkv back
    for causal in (True, False):
        add(f"fmha-qkv-layout-{'causal' if causal else 'full'}-bf16-fwd+bwd", "fmha",
            {"B": 2, "H": 3, "T": 37, "D": 64, "causal": causal, "qkv": True}, "bf16", "fwd+bwd")
    for causal in (True, False):   # the (B*H, blocks) grids, heaviest blocks first
        add(f"fmha-lpt-{'causal' if causal else 'full'}-bf16-fwd+bwd", "fmha",
            {"B": 2, "H": 3, "T": 37, "D": 64, "causal": causal}, "bf16", "fwd+bwd", {"LPT": True})
    add("fmha-mixed-layouts-bf16-fwd+bwd", "fmha", {"B": 2, "H": 3, "T": 37, "D": 64}, "bf16", "fwd+bwd",
        build="mixed_layouts")
    add("fmha-T64-even-fp16-fwd+bwd", "fmha", {"B": 1, "H": 2, "T": 64, "D": 64}, "fp16", "fwd+bwd")
    # layouts the model produces: q/k/v from a qkv split + transpose, 3-D activations, a transposed view
    add("fmha-qkv-split-bf16-fwd+bwd", "fmha", {"B": 2, "H": 3, "T": 37, "D": 64}, "bf16", "fwd+bwd",
        build="qkv_split")
    add("layer_norm-3d-noncontig-bf16-fwd+bwd", "layer_norm", {"M": 39, "C": 65}, "bf16", "fwd+bwd", build="ln_3d")
    # the model's other add_layer_norm calls: 3-D, no bias (dropout on), no branch (the first block),
    # and the last one whose sum nobody reads (its gradient arrives as None)
    for build in ("aln_3d", "aln_nobias", "aln_nobranch", "aln_sum_unused"):
        add(f"add_layer_norm-{build[4:]}-bf16-fwd+bwd", "add_layer_norm", {"M": 39, "C": 65}, "bf16", "fwd+bwd",
            build=build)
    add("gelu-3d-bf16-fwd+bwd", "gelu", {"M": 39, "C": 65}, "bf16", "fwd+bwd", build="gelu_3d")
    add("gelu-tile-per-program-bf16-fwd+bwd", "gelu", {"M": 33, "C": 65}, "bf16", "fwd+bwd", {"BWD_PROGS": 0})
    add("gelu-nobias-fp32-fwd+bwd", "gelu", {"M": 33, "C": 65}, "fp32", "fwd+bwd", build="gelu_nobias")
    for dtype in DTYPES:
        add(f"linear-gelu-{dtype}-fwd+bwd", "linear", _first("linear"), dtype, "fwd+bwd", build="linear_gelu")
    add("linear-evenK-3d-bf16-fwd+bwd", "linear", {"M": 33, "N": 47, "K": 64}, "bf16", "fwd+bwd",
        {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32}, build="linear_3d")
    # dW = dY^T X with few output tiles and a long, uneven K: split-K partials (fp32) summed after
    for dtype in ("fp32", "bf16"):
        add(f"linear-splitk-{dtype}-fwd+bwd", "linear", {"M": 300, "N": 20, "K": 24}, dtype, "fwd+bwd")
    add("linear-nobias-bf16-fwd+bwd", "linear", _first("linear"), "bf16", "fwd+bwd", build="linear_nobias")
    # the TMA kernel (descriptors need 16-byte rows: N and K multiples of 8, M odd); split-K through it
    # (dX and dW in 3 slices); GELU's epilogue; an unaligned K takes the pointer kernel instead
    tma = {"KERNEL": "tma"}
    for dtype in ("fp32", "bf16"):
        add(f"linear-tma-{dtype}-fwd+bwd", "linear", {"M": 37, "N": 40, "K": 72}, dtype, "fwd+bwd", tma)
    add("linear-tma-splitk-bf16-fwd+bwd", "linear", {"M": 37, "N": 40, "K": 72}, "bf16", "fwd+bwd",
        {**tma, "SPLIT_K": 3})
    add("linear-tma-gelu-bf16-fwd+bwd", "linear", {"M": 37, "N": 40, "K": 72}, "bf16", "fwd+bwd", tma,
        build="linear_gelu")
    add("linear-tma-unaligned-bf16-fwd+bwd", "linear", _first("linear"), "bf16", "fwd+bwd", tma)
    # stream-K dW (the bias gradient by the standalone column sum), and the bias gradient with no dW wanted
    for dtype in ("fp32", "bf16"):
        add(f"linear-tma-streamk-{dtype}-fwd+bwd", "linear", {"M": 37, "N": 40, "K": 72}, dtype, "fwd+bwd",
            {**tma, "SPLIT_K": -1})
    for kernel in ("blocked", "tma"):
        add(f"linear-frozen-w-{kernel}-bf16-fwd+bwd", "linear", {"M": 37, "N": 40, "K": 72}, "bf16", "fwd+bwd",
            {"KERNEL": kernel}, build="linear_frozen_w")
    add("linear-tma-fused-db-bf16-fwd+bwd", "linear", {"M": 37, "N": 40, "K": 72}, "bf16", "fwd+bwd",
        {**tma, "FUSE_DB": True})    # opt-in; the default is the standalone sum
    # each matmul alone (kernels.linear.parts), both kernels
    for part in (1, 2, 3):
        for kernel in ("blocked", "tma"):
            add(f"linear-part{part}-{kernel}-bf16-fwd", "linear", {"M": 37, "N": 40, "K": 72, "part": part}, "bf16",
                "fwd", {"KERNEL": kernel, "SPLIT_K": 2})
    add("linear-part3-tma-streamk-bf16-fwd", "linear", {"M": 37, "N": 40, "K": 72, "part": 3}, "bf16", "fwd",
        {**tma, "SPLIT_K": -1})
    # the gate must catch a kernel that leaves outputs unwritten, or gets the mask wrong
    add("broken-half-unwritten", "gelu", _first("gelu"), "bf16", "fwd", build="broken_unwritten", expect_ok=False)
    add("broken-wrong-mask", "fmha", {**_first("fmha"), "causal": True}, "bf16", "fwd", build="broken_mask",
        expect_ok=False)
    return cases


CASES = _cases()


# --- child process: run the selected cases under the interpreter ----------------------------------------

# The interpreter truncates fp32 -> bf16/fp16 where a GPU rounds to nearest: our kernels' low-precision outputs
# carry about twice the rounding error there (3.3e-3 vs eager's 1.7e-3 for a bf16 matmul), so the gate's
# eager-relative factor is doubled under it; on a GPU the harness holds them to bench.measure.check.K.
INTERPRETER_K = 8.0


def _run_interp(ids):
    import torch

    from bench.measure.check import check
    from kernels import poison, registry
    from kernels.spec import Inputs, gen_for

    results = {}
    for cid in ids:
        c = CASES[cid]
        t0 = time.perf_counter()
        try:
            impl = registry.get(c["op"], "triton", "cpu")
            spec = registry.spec_of(c["op"])
            fn, inputs = spec.wrap(impl.fn, c["shape"]), None
            gen = gen_for(1, "cpu")
            baseline = None
            if c["build"]:
                fn, inputs, b_spec = _build(c["build"], spec, c, impl, gen, torch, Inputs, poison)
                if not c["build"].startswith("broken"):   # eager through the same layout wrapper sets the bar
                    eager = registry.get(c["op"], "eager", "cpu")
                    baseline = _build(c["build"], spec, c, eager, gen_for(1, "cpu"), torch, Inputs, poison)[0]
                spec = b_spec
            if c["cfg"].get("autotune") and "autotune" not in impl.defaults():
                results[cid] = {"ok": True, "skip": f"{c['op']}/triton has no autotune parameter", "message": ""}
                continue
            cfg = impl.config({**(impl.test_config if c["small"] else {}), **c["cfg"]})
            r = check(spec, fn, c["shape"], c["dtype"], c["pass_"], "cpu", cfg, inputs=inputs, baseline=baseline,
                      k=INTERPRETER_K)
            row = {"ok": r.ok, "message": r.message}
            if c["cfg"].get("autotune"):
                row = _check_picked(impl, row)
        except Exception as e:   # reported, not raised: the parent shows it under the case's own test
            row = {"ok": False, "message": f"{type(e).__name__}: {e}"}
        row["seconds"] = round(time.perf_counter() - t0, 2)
        results[cid] = row
    return results


def _check_picked(impl, row):
    """Autotune mode reports the config its last call used: every tile parameter set, as the harness
    records it (picked_config) and a rerun would pass it."""
    picked = impl.picked() if impl.picked else None
    if not picked:
        return {"ok": False, "message": "autotune mode reported no picked config"}
    unset = [p.name for p in impl.params if p.name != "autotune" and picked.get(p.name) is None]
    if unset:
        return {"ok": False, "message": f"picked config {picked} leaves {unset} unset"}
    impl.config({k: v for k, v in picked.items() if k in impl.defaults()})   # raises on a value out of range
    return {**row, "picked": picked}


def _build(kind, spec, c, impl, gen, torch, Inputs, poison):
    """(fn, inputs, spec) for the cases that need a particular layout or a deliberately broken kernel."""
    from kernels.registry import DTYPES as DT
    s, dt = c["shape"], DT[c["dtype"]]
    base = spec.make_inputs(s, c["dtype"], "cpu", gen)
    if kind == "qkv_split":
        B, H, T, D = s["B"], s["H"], s["T"], s["D"]
        qkv = torch.randn(B, T, 3 * H * D, generator=gen).to(dt)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=2))
        assert not q.is_contiguous()
        return impl.fn, Inputs((q, k, v), {"causal": True}, grad_args=(0, 1, 2)), spec
    if kind == "mixed_layouts":   # q in (B, T, H, D) memory, k and v contiguous: gradients of mixed layouts
        q, k, v = base.args
        qt = q.transpose(1, 2).contiguous().transpose(1, 2)
        assert qt.stride() != k.stride()
        return impl.fn, Inputs((qt, k, v), {"causal": True}, grad_args=(0, 1, 2)), spec
    if kind == "ln_3d":   # (3, 13, C) as a transposed view of (13, 3, C)
        x, w, b = base.args
        x3 = x.view(13, 3, -1).transpose(0, 1)
        return impl.fn, Inputs((x3, w, b), {}, grad_args=(0, 1, 2)), spec
    if kind.startswith("aln_"):
        return _aln_build(kind, spec, impl, base, torch, Inputs)
    if kind == "gelu_3d":
        x, b = base.args
        return impl.fn, Inputs((x.view(3, 13, -1), b), {}, grad_args=(0, 1)), spec
    if kind == "gelu_nobias":
        x, _ = base.args
        return (lambda x, **cfg: impl.fn(x, None, **cfg)), Inputs((x,), {}, grad_args=(0,)), _no_bias(spec)
    if kind == "linear_gelu":
        return impl.fn, Inputs(base.args, {"activation": "gelu"}, grad_args=(0, 1, 2)), spec
    if kind == "linear_3d":
        x, w, b = base.args
        return impl.fn, Inputs((x.view(3, 11, -1), w, b), {}, grad_args=(0, 1, 2)), spec
    if kind == "linear_frozen_w":   # db without dW: the standalone column sums
        x, w, b = base.args
        return impl.fn, Inputs((x, w, b), {}, grad_args=(0, 2)), spec
    if kind == "linear_nobias":
        x, w, _ = base.args
        return (lambda x, w, **cfg: impl.fn(x, w, None, **cfg)), Inputs((x, w), {}, grad_args=(0, 1)), _no_bias(spec)
    if kind == "broken_unwritten":   # a kernel that forgets the second half of its output
        def fn(x, bias, **cfg):
            y = impl.fn(x, bias, **cfg)
            out = poison.empty_like(y)
            out.view(-1)[: y.numel() // 2] = y.reshape(-1)[: y.numel() // 2]
            return out
        return fn, base, spec
    if kind == "broken_mask":        # a kernel that ignores the causal flag
        return (lambda q, k, v, causal=True, **cfg: impl.fn(q, k, v, causal=not causal, **cfg)), base, spec
    raise KeyError(kind)


def _aln_build(kind, spec, impl, base, torch, Inputs):
    x, y, bias, w, b = base.args
    kw = base.kwargs
    if kind == "aln_3d":
        return impl.fn, Inputs((x.view(3, 13, -1), y.view(3, 13, -1), bias, w, b), kw, grad_args=(0, 1, 2, 3, 4)), spec

    class Ref(type(spec)):
        def math(self, *a, **k):
            if kind == "aln_nobias":
                (x, y, w, b), bias = a, None
            elif kind == "aln_nobranch":
                (x, w, b), y, bias = a, None, None
            else:
                x, y, bias, w, b = a
            s = x if y is None else x + y + (bias if bias is not None else 0)
            h = torch.nn.functional.layer_norm(s, (s.shape[-1],), w, b, 1e-5)
            return h if kind == "aln_sum_unused" else (s, h)
    if kind == "aln_nobias":
        return ((lambda x, y, w, b, **k: impl.fn(x, y, None, w, b, **k)),
                Inputs((x, y, w, b), kw, grad_args=(0, 1, 2, 3)), _Renamed(Ref, {0: "dx", 1: "dy", 2: "dw", 3: "db"}))
    if kind == "aln_nobranch":
        return ((lambda x, w, b, **k: impl.fn(x, None, None, w, b, **k)),
                Inputs((x, w, b), kw, grad_args=(0, 1, 2)), _Renamed(Ref, {0: "dx", 1: "dw", 2: "db"}))
    # sum_unused: only h goes on, so s's gradient reaches the kernel as None
    return ((lambda *a, **k: impl.fn(*a, **k)[1]), base, _Renamed(Ref, spec.grad_names()))


def _Renamed(cls, names):
    class R(cls):
        def grad_names(self):
            return names
    return R()


def _no_bias(spec):
    """The op's spec with the reference called without its bias argument."""
    class NoBias(type(spec)):
        def math(self, *args, **kw):
            if self.name == "gelu":
                import torch.nn.functional as F
                return F.gelu(args[0], approximate="tanh")
            return super().math(*args, None, **kw)
    return NoBias()


# --- child process: ahead-of-time compile every kernel for every arch ---------------------------------------

def _aot_one(op_arch):
    op, arch = op_arch
    import importlib
    name, _, preset = op.partition(":")     # "linear:tma_128x256": that preset's or tuning config, else the default
    impl = importlib.import_module(f"kernels.{name}.triton").IMPL
    try:
        return op, arch, impl.aot(impl.config(impl.named(preset) if preset else {}), arch)
    except Exception as e:   # aot must never raise: recorded so the test can fail with the reason
        return op, arch, [{"kernel": "?", "status": "raised", "message": f"{type(e).__name__}: {e}"}]


def _run_aot(pairs):
    from concurrent.futures import ProcessPoolExecutor
    out = {}
    with ProcessPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        for op, arch, rows in pool.map(_aot_one, pairs):
            out[f"{op}-{arch}"] = rows
    return out


def _child(kind, arg, interp):
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    if interp:
        env["TRITON_INTERPRET"] = "1"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    p = subprocess.run([sys.executable, os.path.abspath(__file__), kind, json.dumps(arg)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{kind} child failed (rc {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


def _selected(request, prefix):
    """The case ids of this module's selected tests with the given prefix (so -k narrows the child's work)."""
    ids = []
    for item in request.session.items:
        if item.module.__name__ == __name__ and item.originalname == prefix:
            ids.append(item.callspec.params["case"])
    return ids


@pytest.fixture(scope="module")
def interp_results(request):
    return _child("interp", _selected(request, "test_interp"), interp=True)


@pytest.fixture(scope="module")
def aot_results(request):
    pairs = [tuple(x.split("|")) for x in _selected(request, "test_aot")]
    return _child("aot", pairs, interp=False)


def _marks(op):
    return [pytest.mark.triton, getattr(pytest.mark, op)]


@pytest.mark.parametrize("case", [pytest.param(cid, id=cid, marks=_marks(c["op"])) for cid, c in CASES.items()])
def test_interp(case, interp_results):
    r = interp_results[case]
    if r.get("skip"):
        pytest.skip(r["skip"])
    if CASES[case]["expect_ok"]:
        assert r["ok"], f"{case}: {r['message']}"
    else:
        assert not r["ok"], f"{case}: the gate passed a broken kernel ({r['message']})"


# the Hopper matmul variants where they are meant to run (sm_80 shows their pointer-kernel fallback)
AOT_PRESETS = [f"linear:{p}|{a}" for p in ("tma_128x256", "tma_128x128", "tma_128x256_ws")
               for a in ("sm_80", "sm_90", "sm_100")] + \
    [f"linear:{p}|sm_90" for p in ("tma_128x256_s4", "tma_128x256_whole", "tma_128x256_g16", "tma_128x256_g64",
                                   "tma_256x128", "tma_256x128_w16", "tma_streamk", "tma_128x128_streamk")]


@pytest.mark.slow
@pytest.mark.parametrize("case", [pytest.param(f"{op}|{arch}", id=f"{op}-{arch}", marks=_marks(op))
                                  for op in OPS for arch in ARCHS] +
                         [pytest.param(c, id=c.replace("|", "-").replace(":", "-"), marks=_marks("linear"))
                          for c in AOT_PRESETS])
def test_aot(case, aot_results):
    op, arch = case.split("|")
    rows = aot_results[f"{op}-{arch}"]
    assert rows, "aot returned no kernels"
    if ":tma" in op and arch == "sm_80":   # declared, and the pointer kernel that runs instead compiles
        assert [r["status"] for r in rows if r["kernel"] == "linear_tma"] == ["unsupported"]
        rows = [r for r in rows if r["kernel"] != "linear_tma"]
    for r in rows:
        assert r["status"] == "ok", f"{r['kernel']} on {arch}: {r['status']} {r['message']}"
        assert r["cubin_bytes"] and r["cubin_bytes"] > 0
        assert r["smem_bytes"] is not None
        assert r["compile_s"] is not None
        if r["registers"] is not None:   # cuobjdump ships with Triton's wheel; read where present
            assert 0 < r["registers"] <= 255
            assert r["spills"] is not None


def test_aot_failure_is_a_status():
    """A config that cannot compile comes back as compile_error with a message, not an exception."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import json; from kernels.fmha import triton as F; "
            "print('RESULT ' + json.dumps(F._aot({'BLOCK_M': 256, 'BLOCK_N': 128, 'num_stages': 5}, 'sm_89')[0]))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, p.stderr[-2000:]
    r = json.loads(line[-1][7:])
    assert r["status"] == "compile_error" and r["message"], r


if __name__ == "__main__":
    kind, arg = sys.argv[1], json.loads(sys.argv[2])
    res = _run_interp(arg) if kind == "interp" else _run_aot([tuple(x) for x in arg])
    print("RESULT " + json.dumps(res))
