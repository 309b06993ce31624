"""kernels/library.py on the CPU: every torch.library op passes torch.library.opcheck (schema, fake, autograd
registration, AOT dispatch) on its stand-in (linear_cross_entropy's too: its op returns dx and dW beside the loss); the GPT with Backend("triton") / Backend("cutile") compiles fullgraph
(aot_eager) to one graph with the ops inside and matches the eager model's loss and gradients; under Triton's
interpreter the Triton ops run the real kernels, whose outputs match the fakes' metadata and pass the correctness
gate; the e2e compile+ backends get a clean status off a GPU and run end to end as a CPU tracing check."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernels import library, registry

ROOT = Path(__file__).resolve().parents[1]
OPS_WITH_ENTRIES = ("layer_norm", "gelu", "cross_entropy", "linear", "fmha", "linear_cross_entropy")
IMPLS = ("triton", "cutile")


def _load_all():
    for op in OPS_WITH_ENTRIES:
        for impl in IMPLS:
            registry.op_package(op)
            __import__(f"kernels.{op}.{impl}")


_load_all()
CFG = library.config_json({})
DTYPES = (torch.float32, torch.bfloat16)


def _rand(*shape, dtype, rg=False):
    return torch.randn(*shape).to(dtype).requires_grad_(rg)


def _samples(op, impl, dtype):
    """(fwd op, fwd args, [(bwd op, bwd args)]) on small odd shapes; bwd args from the forward's own outputs."""
    mod = sys.modules[f"kernels.{op}.{impl}"]
    fwd, bwd = mod.FWD_OP, getattr(mod, "BWD_OP", None)
    if op == "layer_norm":
        a = (_rand(7, 33, dtype=dtype, rg=True), _rand(33, dtype=dtype, rg=True), _rand(33, dtype=dtype, rg=True),
             1e-5, CFG)
        out = fwd(*(t.detach() if isinstance(t, torch.Tensor) else t for t in a))
        return fwd, [a], [(bwd, (_rand(7, 33, dtype=dtype), a[0].detach(), a[1].detach(), *out[1:], CFG))]
    if op == "gelu":
        x, b = _rand(7, 33, dtype=dtype, rg=True), _rand(33, dtype=dtype, rg=True)
        dy = _rand(7, 33, dtype=dtype)
        return fwd, [(x, b, CFG), (x, None, CFG)], [(bwd, (dy, x.detach(), b.detach(), True, CFG)),
                                                    (bwd, (dy, x.detach(), None, False, CFG))]
    if op == "cross_entropy":
        lg, t = _rand(9, 37, dtype=dtype, rg=True), torch.randint(0, 37, (9,))
        t[2] = -1
        if impl == "triton":
            return fwd, [(lg, t, -1, True, CFG), (lg.detach(), t, -1, False, CFG)], []
        out = fwd(lg.detach(), t, -1, CFG)
        return fwd, [(lg, t, -1, CFG)], [(bwd, (torch.tensor(1.5), lg.detach(), t, out[1], out[2], -1, CFG))]
    if op == "linear":
        x, w, b = _rand(9, 24, dtype=dtype, rg=True), _rand(40, 24, dtype=dtype, rg=True), _rand(40, dtype=dtype, rg=True)
        fw, bw = [], []
        for gelu in (False, True):
            fw.append((x, w, b, gelu, gelu, CFG))
            pre = fwd(x.detach(), w.detach(), b.detach(), gelu, gelu, CFG)[1]
            bw.append((bwd, (_rand(9, 40, dtype=dtype), x.detach(), w.detach(), pre, gelu, True, True, True, CFG)))
        bw.append((bwd, (_rand(9, 40, dtype=dtype), x.detach(), w.detach(), x.new_empty(0), False, True, False, False,
                         CFG)))
        return fwd, fw + [(x.detach(), w.detach(), None, False, False, CFG)], bw
    if op == "fmha":
        B, H, T, D = 2, 2, 11, 16
        qkv = _rand(B, T, 3 * H * D, dtype=dtype)
        q, k, v = (u.view(B, T, H, D).transpose(1, 2).requires_grad_() for u in qkv.split(H * D, dim=2))
        o, lse = fwd(q.detach(), k.detach(), v.detach(), True, 0.25, CFG)
        return fwd, [(q, k, v, True, 0.25, CFG)], [(bwd, (torch.randn_like(o), q.detach(), k.detach(), v.detach(), o,
                                                          lse, True, 0.25, CFG))]
    if op == "linear_cross_entropy":
        x, w = _rand(9, 24, dtype=dtype, rg=True), _rand(37, 24, dtype=dtype, rg=True)
        t = torch.randint(0, 37, (9,))
        t[3] = -1
        return fwd, [(x, w, t, -1, True, True, CFG), (x.detach(), w, t, -1, False, True, CFG),
                     (x.detach(), w.detach(), t, -1, False, False, CFG)], []
    raise AssertionError(op)


CASES = [(op, impl, dt) for op in OPS_WITH_ENTRIES for impl in IMPLS for dt in DTYPES]


@pytest.mark.parametrize("op,impl,dtype", CASES, ids=[f"{o}-{i}-{str(d)[6:]}" for o, i, d in CASES])
def test_opcheck(op, impl, dtype):
    """Schema, fake (the stand-in's real outputs against the fake's metadata), autograd registration and AOT
    dispatch of the forward op (with gradients) and the backward op."""
    torch.manual_seed(0)
    fwd, fwd_args, bwd_cases = _samples(op, impl, dtype)
    for args in fwd_args:
        torch.library.opcheck(fwd, args)
    for bwd, args in bwd_cases:
        torch.library.opcheck(bwd, args)


def test_registered_ops_and_kinds():
    """Every op registered: Triton's through triton_op where make_fx can trace the launch and inductor can recompile
    the kernels (not fmha's: see kernels/fmha/triton.py), else custom_op."""
    kinds = {q.split("::")[1]: k for q, k in library.KINDS.items()}
    for op in OPS_WITH_ENTRIES:
        for impl in IMPLS:
            assert f"{op}_fwd_{impl}" in kinds
            assert registry.resolve(op, impl, "cpu").impl.traced is not None
    assert all(kinds[n] == "custom_op" for n in kinds if n.endswith("_cutile"))
    assert {n for n, k in kinds.items() if k == "triton_op"} == {
        "layer_norm_fwd_triton", "layer_norm_bwd_triton", "gelu_fwd_triton", "gelu_bwd_triton",
        "cross_entropy_fwd_triton"}


def test_stand_ins_are_never_the_harness_kernels():
    """On a CPU the harness still reports Triton (without its interpreter) and cuTile unavailable, as before: no
    sweep point times a stand-in."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the interpreter makes Triton available on the CPU")
    for op in OPS_WITH_ENTRIES:
        for impl in IMPLS:
            assert not registry.resolve(op, impl, "cpu").ok


def _tiny():
    from model.config import preset
    return dataclasses.replace(preset("tiny"), n_layer=2, n_embd=32, n_head=2, block_size=16)


@pytest.mark.parametrize("name", IMPLS)
def test_gpt_compiles_fullgraph_with_the_ops_inside(name):
    """torch.compile(GPT(Backend(name)), fullgraph=True, backend=aot_eager): one graph (fullgraph raises on any
    break), the library ops in it, and the eager model's loss and gradients from the same weights."""
    from torch._dynamo.utils import counters

    from model.gpt import GPT
    from model.ops import Backend
    cfg = _tiny()
    torch.manual_seed(0)
    ref = GPT(cfg, Backend("eager"))
    torch.manual_seed(0)
    b = Backend(name, standins=True, annotate=False, log=lambda m: None)
    model = GPT(cfg, b)
    idx = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    torch._dynamo.reset()
    counters.clear()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    compiled = torch.compile(model, fullgraph=True, backend=backend)
    _, loss = compiled(idx, idx)
    loss.backward()
    _, ref_loss = ref(idx, idx)
    ref_loss.backward()
    assert len(graphs) == 1 and counters["stats"]["unique_graphs"] == 1
    ops_in_graph = {str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"}
    for op in ("layer_norm", "fmha", "linear", "linear_cross_entropy"):
        assert any(f"tilebench.{op}_fwd_{name}" in t for t in ops_in_graph), (op, sorted(ops_in_graph))
    assert {"layer_norm", "fmha", "linear", "linear_cross_entropy"} <= set(b.used) and b.used["linear+gelu"] == {name}
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    grads = dict(model.named_parameters())
    for n, p in ref.named_parameters():
        torch.testing.assert_close(grads[n].grad, p.grad, rtol=1e-4, atol=1e-5)
    # what has no library entry (add_layer_norm) fell back, said so, and stayed in the graph as eager ops
    assert any(f.startswith("add_layer_norm:") for f in b.fallbacks)
    assert not any(f.startswith("linear_cross_entropy:") for f in b.fallbacks)


def test_unsupported_found_at_trace_time_falls_back():
    """An impl's Unsupported (here the Triton layer_norm's row limit, raised by its traced entry) is found by the
    dry run while dynamo traces: the op falls back to eager, recorded once, and the graph stays whole."""
    from model.ops import Backend
    from kernels.layer_norm import triton as ln
    b = Backend("triton", standins=True, annotate=False, log=lambda m: None)
    old = ln.ROW_LIMIT
    ln.ROW_LIMIT = registry.RowLimit(16, "program")
    try:
        f = torch.compile(lambda x, w, bb: b.layer_norm(x, w, bb), fullgraph=True, backend="aot_eager")
        x, w, bb = torch.randn(5, 33), torch.randn(33), torch.randn(33)
        torch.testing.assert_close(f(x, w, bb), torch.nn.functional.layer_norm(x, (33,), w, bb))
    finally:
        ln.ROW_LIMIT = old
    assert any(x.startswith("layer_norm: triton -> eager: raised Unsupported: C=33 > 16") for x in b.fallbacks)
    assert "layer_norm" not in b.used


def test_e2e_compile_backends_on_cpu():
    from bench.measure.e2e import run_e2e_point
    point = {"model": "tiny", "B": 2, "T": 16, "dtype": "fp32", "steps": 2, "warmup": 1, "profile_steps": 0}
    r = run_e2e_point({**point, "backend": "compile+triton"}, "cpu")
    assert r["status"] == "unsupported" and "CUDA only" in r["message"] and "\n" not in r["message"]
    r = run_e2e_point({**point, "backend": "compile_graphs+cutile", "standins": True, "compile_backend": "aot_eager"},
                      "cpu")
    assert r["status"] == "unsupported" and "reduce-overhead" in r["message"]
    r = run_e2e_point({**point, "backend": "compile+triton,fmha=cutile", "standins": True,
                       "compile_backend": "aot_eager"}, "cpu")
    assert r["status"] == "ok", (r["message"], r.get("traceback"))
    assert r["standins"] and "stand-ins" in r["message"] and r["graphs_compiled"] == 1
    assert r["loss_check"]["ok"] and r["loss_check"]["reference"] == "eager"
    assert {"fmha", "layer_norm", "linear", "linear_cross_entropy"} <= set(r["ops_ran"])
    assert r["impls_used"]["fmha"] == ["cutile"] and r["impls_used"]["linear"] == ["triton"]
    json.dumps(r)


def test_sweeps_accept_compile_backends():
    from bench.sweeps import _backend_error
    for b in ("compile+triton", "compile+cutile", "compile+auto", "compile_max_autotune+triton,fmha=cutile"):
        assert _backend_error(b) is None, b
    assert "unknown" in _backend_error("compile+nope")


# --- under Triton's interpreter: the real kernels behind the Triton ops ----------------------------------------

CHILD = r"""
import json, sys, torch
from bench.measure.check import check
from kernels import library, registry
out = {}
for op in %r:
    impl = registry.get(op, "triton", "cpu")
    spec = registry.spec_of(op)
    shape = spec.test_shapes()[0]
    fn = spec.wrap(library.as_fn(impl.traced), shape)
    r = check(spec, fn, shape, "fp32", "fwd+bwd", "cpu", impl.config(impl.test_config), k=8.0)
    out[op] = [r.ok, r.message]
sys.path.insert(0, "tests")
import test_library_ops as t
for op in %r:
    fwd, fwd_args, bwd_cases = t._samples(op, "triton", torch.float32)
    for a in fwd_args:
        torch.library.opcheck(fwd, a, test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    for bwd, a in bwd_cases:
        torch.library.opcheck(bwd, a, test_utils=("test_schema", "test_faketensor"))
    out[op + ":opcheck"] = [True, ""]
print(json.dumps(out))
"""


def test_triton_ops_run_the_kernels_under_the_interpreter():
    """The Triton ops on real CPU tensors under TRITON_INTERPRET=1 run the kernels (not the stand-ins): through
    the correctness gate (fwd+bwd, fp32, several blocks per shape), and with outputs whose shapes, dtypes and
    strides are the fakes' (opcheck's test_faketensor compares the kernels' real outputs with them)."""
    ops = [op for op in OPS_WITH_ENTRIES if op != "linear"] + ["linear"]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", CHILD % (tuple(ops), tuple(ops))], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    bad = {k: v[1] for k, v in res.items() if not v[0]}
    assert not bad, bad
    assert len(res) == 2 * len(ops)


def test_lm_head_loss_computes_no_gradients_in_evaluation():
    """A weight is a Parameter under no_grad too: the op is asked for neither dx nor dW there, both in training."""
    from torch.utils._python_dispatch import TorchDispatchMode
    seen = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if "linear_cross_entropy_fwd" in str(func):
                seen.append(tuple(args[4:6]))
            return func(*args, **(kwargs or {}))

    traced = registry.resolve("linear_cross_entropy", "triton", "cpu").impl.traced
    x, w = torch.randn(6, 8, requires_grad=True), torch.nn.Parameter(torch.randn(11, 8))
    t = torch.randint(0, 11, (6,))
    with Spy():
        with torch.no_grad():
            traced(x, w, t, config=CFG)
        traced(x, w, t, config=CFG)
    assert seen == [(False, False), (True, True)]
