"""model/ops.py: backend choice, fallbacks (recorded once, never silent), fused GELU, "auto" from results
(model/ranking.py), profiler ranges (model/ranges.py)."""
import json

import pytest
import torch
import torch.nn.functional as F

from kernels import registry
from kernels.device import name as device_name
from kernels.registry import KernelImpl, Resolved, Unsupported
from model import ranges
from model.config import preset
from model.gpt import GPT
from model.op_list import OPS as MODEL_OPS
from model.ops import Backend, parse_choice
from model.ranking import rank_impls


def test_parse_choice():
    assert parse_choice("eager")[1] == {op: "eager" for op in MODEL_OPS}
    mode, m, _ = parse_choice("triton,fmha=sdpa_flash")
    assert mode == "map" and m["fmha"] == "sdpa_flash" and m["linear"] == "triton"
    assert parse_choice({"gelu": "cutile"})[1]["gelu"] == "cutile"
    assert parse_choice("auto:x.jsonl")[0::2] == ("auto", "x.jsonl")
    for bad in ("no_such_impl", "fmha=nope", "attention=eager"):
        with pytest.raises(ValueError):
            parse_choice(bad)


def _run(backend, steps=2):
    torch.manual_seed(0)
    m = GPT(preset("tiny"), backend)
    idx = torch.randint(0, 65, (2, 16))
    for _ in range(steps):
        _, loss = m(idx, idx)
        loss.backward()
    return loss


def test_unavailable_impl_falls_back_once_per_reason():
    logged = []
    b = Backend("cutile", log=logged.append)     # no GPU here: every op unavailable
    ref = _run(Backend("eager"))
    loss = _run(b, steps=3)
    assert loss.item() == ref.item()
    ops_fell = {f.split(":")[0] for f in b.fallbacks}
    assert ops_fell == set(MODEL_OPS)
    assert len(b.fallbacks) == len(MODEL_OPS)            # three forwards, each reason once
    assert len([m for m in logged if m.startswith("fallback")]) == len(MODEL_OPS)
    assert all("cutile -> eager" in f for f in b.fallbacks)


def test_impl_missing_for_some_ops():
    b = Backend("sdpa_math")      # only fmha has an impl of that name
    _run(b, steps=1)
    assert b.used["fmha"] == {"sdpa_math"}
    assert any(f.startswith("linear:") and "no impl named" in f for f in b.fallbacks)


def _fake(fn, supports=None):
    return KernelImpl(fn=fn, backend="triton", supports=supports)


@pytest.fixture
def fake_triton(monkeypatch):
    """Fake 'triton' impls: linear raises Unsupported above K=64, layer_norm refuses C=64 via supports,
    gelu and fmha work (eager math, counted)."""
    calls = {"gelu": 0, "fmha": 0, "linear_gelu": 0}

    def linear(x, w, b=None, activation=None):
        if w.shape[1] > 64:
            raise Unsupported("K > 64")
        if activation == "gelu":
            calls["linear_gelu"] += 1
        y = F.linear(x, w, b)
        return F.gelu(y, approximate="tanh") if activation == "gelu" else y

    def gelu(x, bias=None):
        calls["gelu"] += 1
        return F.gelu(x + bias, approximate="tanh")

    def fmha(q, k, v, causal=True, scale=None):
        calls["fmha"] += 1
        return registry.get("fmha", "eager").fn(q, k, v, causal=causal)

    impls = {
        "linear": _fake(linear),
        "gelu": _fake(gelu),
        "fmha": _fake(fmha),
        "layer_norm": _fake(F.layer_norm, supports=lambda s, d, dev: "C=64 not supported" if s["C"] == 64 else None),
        "add_layer_norm": _fake(registry.get("add_layer_norm", "eager").fn,
                                supports=lambda s, d, dev: "C=64 not supported" if s["C"] == 64 else None),
        "cross_entropy": _fake(lambda *a, **k: (_ for _ in ()).throw(AssertionError("unreachable")),
                               supports=lambda s, d, dev: "no"),
        "linear_cross_entropy": _fake(lambda *a, **k: (_ for _ in ()).throw(AssertionError("unreachable")),
                                      supports=lambda s, d, dev: "no fused"),
    }
    real = registry.resolve
    monkeypatch.setattr(registry, "resolve",
                        lambda op, name, device="cpu": Resolved(op, name, impls[op], None) if name == "triton"
                        else real(op, name, device))
    return calls


def test_fallback_on_why_not_and_unsupported(fake_triton):
    b = Backend("triton", log=lambda m: None)
    loss = _run(b, steps=2)
    ref = _run(Backend("eager"), steps=2)
    assert abs(loss.item() - ref.item()) < 1e-5
    text = "\n".join(b.fallbacks)
    assert "add_layer_norm: triton -> eager: C=64 not supported" in text   # then the add and the layer_norm op
    assert "\nlayer_norm: triton -> eager: C=64 not supported" in "\n" + text
    assert "linear: triton -> eager: raised Unsupported: K > 64" in text    # mlp c_proj has K=256
    assert "cross_entropy: triton -> eager: no" in text
    assert "linear_cross_entropy: triton -> eager: no fused" in text      # then lm_head + cross_entropy
    assert fake_triton["fmha"] > 0 and b.used["fmha"] == {"triton"} and b.used["linear"] == {"triton"}
    # the fused GELU epilogue ran (c_fc has K=64): the gelu op itself is not needed
    assert fake_triton["linear_gelu"] > 0 and fake_triton["gelu"] == 0
    assert len(b.fallbacks) == len(set(b.fallbacks))


def test_split_gelu_when_linear_and_gelu_differ(fake_triton):
    b = Backend("triton,gelu=eager", log=lambda m: None)
    _run(b, steps=1)
    assert fake_triton["linear_gelu"] == 0 and "gelu" not in b.used


def test_fused_gelu_unsupported_splits_and_says_so(fake_triton, monkeypatch):
    b = Backend("triton", log=lambda m: None)
    impl = registry.resolve("linear", "triton").impl
    base = impl.fn

    def no_epilogue(x, w, b=None, activation=None):
        if activation:
            raise Unsupported("no epilogue")
        return base(x, w, b)
    monkeypatch.setattr(impl, "fn", no_epilogue)
    _run(b, steps=2)
    msgs = [f for f in b.fallbacks if f.startswith("linear+gelu")]
    assert len(msgs) == 1 and "no epilogue" in msgs[0]
    assert fake_triton["gelu"] > 0


def _rows(dev):
    ok = dict(status="ok", device_name=dev, dtype="bf16", **{"pass": "fwd+bwd"})
    rows = []
    for shape, ms in (({"T": 128}, (2.0, 1.0, 0.5)), ({"T": 256}, (4.0, 2.5, None)), ({"T": 512}, (8.0, 6.0, None))):
        rows.append({**ok, "op": "fmha", "impl": "eager", "shape": shape, "median_ms": ms[0]})
        rows.append({**ok, "op": "fmha", "impl": "sdpa_math", "shape": shape, "median_ms": ms[1],
                     "config": {}})
        if ms[2]:   # fastest, but measured at one shape of three: not trusted
            rows.append({**ok, "op": "fmha", "impl": "sdpa_efficient", "shape": shape, "median_ms": ms[2]})
    rows += [
        {**ok, "op": "fmha", "impl": "eager", "shape": {"T": 128}, "median_ms": 0.1, "device_name": "other GPU"},
        {**ok, "op": "fmha", "impl": "eager", "shape": {"T": 128}, "median_ms": 0.1, "pass": "fwd"},
        {**ok, "op": "fmha", "impl": "eager", "shape": {"T": 128}, "median_ms": 0.1, "status": "wrong"},
        {**ok, "op": "fmha", "impl": "eager", "shape": {"T": 128}, "median_ms": "nan"},
        {**ok, "op": "layer_norm", "impl": "torch_compile", "shape": {"M": 1}, "median_ms": 0.1},  # unavailable on CPU
        {**ok, "op": "layer_norm", "impl": "eager", "shape": {"M": 1}, "median_ms": 0.2},
        {**ok, "op": "gelu", "impl": "eager", "shape": {"M": 1}, "median_ms": 0.2, "dtype": "fp32"},
    ]
    return rows


def test_rank_impls():
    r = rank_impls(_rows("GPU X"), "gpu x", "bf16")
    assert [d["impl"] for d in r["fmha"]] == ["sdpa_math", "eager"]
    assert r["fmha"][0]["shapes"] == 3
    assert r["gelu"][0]["dtype"] == "any"            # no bf16 rows: all dtypes used
    assert "linear" not in r


def test_rank_impls_graph_rows_rank_a_graphed_step():
    """Graph-replay rows (no launch overhead) rank a CUDA-graphed step, and only they do: with none, the op is
    unranked rather than ranked on launch timings."""
    base = {"status": "ok", "pass": "fwd+bwd", "op": "layer_norm", "device_name": "GPU X", "dtype": "bf16",
            "shape": {"M": 1}}
    rows = [{**base, "impl": "eager", "median_ms": 0.15, "timer": "cuda_events"},
            {**base, "impl": "triton", "median_ms": 0.50, "timer": "cuda_events"},   # host-bound when launched
            {**base, "impl": "eager", "median_ms": 0.15, "timer": "cuda_graph"},
            {**base, "impl": "triton", "median_ms": 0.07, "timer": "cuda_graph"}]
    assert rank_impls(rows, "gpu x")["layer_norm"][0]["impl"] == "eager"
    assert rank_impls(rows, "gpu x", timer="cuda_graph")["layer_norm"][0]["impl"] == "triton"
    only_launch = [r for r in rows if r["timer"] == "cuda_events"]
    assert "layer_norm" not in rank_impls(only_launch, "gpu x", timer="cuda_graph")
    only_graph = [r for r in rows if r["timer"] == "cuda_graph"]
    assert "layer_norm" not in rank_impls(only_graph, "gpu x")


def test_rank_impls_plain_step_ranks_host_inclusive_time():
    """A plain step pays the host's launch cost: host_median_ms ranks it, not the flushed-event kernel time;
    rows written before host_* existed fall back to median_ms."""
    base = {"status": "ok", "pass": "fwd+bwd", "op": "gelu", "device_name": "GPU X", "dtype": "bf16",
            "timer": "cuda_events"}
    rows = [{**base, "shape": {"M": 1}, "impl": "eager", "median_ms": 0.020, "host_median_ms": 0.030},
            {**base, "shape": {"M": 1}, "impl": "triton", "median_ms": 0.008, "host_median_ms": 0.060},
            {**base, "shape": {"M": 2}, "impl": "eager", "median_ms": 0.040},            # an old row
            {**base, "shape": {"M": 2}, "impl": "triton", "median_ms": 0.050}]
    r = rank_impls(rows, "gpu x")["gelu"]
    assert [d["impl"] for d in r] == ["eager", "triton"]
    assert r[1]["score"] == pytest.approx(((0.060 / 0.030) * (0.050 / 0.040)) ** 0.5)


def test_auto_from_fake_results(tmp_path):
    dev = device_name("cpu")
    path = tmp_path / "res.jsonl"
    with open(path, "w") as f:
        f.write("not json\n\n[1, 2]\n{\"op\": \"fmha\"}\n")
        for r in _rows(dev):
            f.write(json.dumps(r) + "\n")
        f.write('{"op": "linear", "impl": "eager", "status": "ok", "pass": "fwd+b')   # cut off by a kill
    notes = []
    b = Backend(f"auto:{path}", log=notes.append)
    b.resolve_auto("cpu")
    assert b.choice["fmha"] == "sdpa_math"
    assert b.choice["layer_norm"] == "eager"         # torch_compile ranked first but unavailable on CPU
    assert any("torch_compile ranked but unavailable" in n for n in notes)
    assert b.choice["linear"] == "eager" and any(f.startswith("linear: auto -> eager") for f in b.fallbacks)
    _run(b, steps=1)
    assert b.used["fmha"] == {"sdpa_math"}


def test_auto_without_results_file_is_eager_and_says_so(tmp_path):
    b = Backend("auto", results=str(tmp_path / "missing.jsonl"), log=lambda m: None)
    _run(b, steps=1)
    assert all(n == "eager" for n in b.choice.values())
    assert len(b.fallbacks) == len(MODEL_OPS)


# the eager model computes its loss as nanoGPT does, lm_head then cross_entropy: the fused op never runs
EAGER_MODEL_OPS = [op for op in MODEL_OPS if op not in ("linear_cross_entropy", "add_layer_norm")]   # fused ops: not on the eager path


def test_profile_ranges_cover_backward():
    from torch.profiler import ProfilerActivity, profile
    b = Backend("eager")
    b.profile_ranges = True
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _run(b, steps=1)
    names = {e.name for e in prof.events()}
    for op in EAGER_MODEL_OPS:
        assert f"op:{op}" in names and f"op:{op}:bwd" in names, op
    assert not ranges._open_ranges


def test_fused_add_layer_norm_takes_the_projection_biases(monkeypatch):
    """With add_layer_norm fused, c_proj's bias rides into it (the matmul runs without one), every LayerNorm
    goes through it, and the loss and gradients match nanoGPT's order of ops."""
    seen = {"aln": 0, "aln_bias": 0, "ln": 0, "linear_nobias": 0}
    aln_eager, lin_eager = registry.get("add_layer_norm", "eager").fn, registry.get("linear", "eager").fn

    def aln(x, y, bias, w, b, eps=1e-5, out_dtype=None):
        seen["aln"] += 1
        seen["aln_bias"] += bias is not None
        return aln_eager(x, y, bias, w, b, eps, out_dtype)

    def linear(x, w, b=None, activation=None):
        seen["linear_nobias"] += b is None
        return lin_eager(x, w, b)

    def ln(*a, **k):
        seen["ln"] += 1
        return F.layer_norm(*a, **k)
    fakes = {"add_layer_norm": _fake(aln), "linear": _fake(linear), "layer_norm": _fake(ln)}
    real = registry.resolve
    monkeypatch.setattr(registry, "resolve", lambda op, name, device="cpu": Resolved(op, name, fakes[op], None)
                        if name == "triton" and op in fakes else real(op, name, device))
    cfg = preset("tiny")
    torch.manual_seed(0)
    a = GPT(cfg, Backend("eager"))
    b = GPT(cfg, Backend("add_layer_norm=triton,linear=triton", log=lambda m: None))
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    la, lb = a(idx, idx)[1], b(idx, idx)[1]
    la.backward()
    lb.backward()
    L = cfg.n_layer
    assert seen["aln"] == 2 * L + 1 and seen["ln"] == 0
    assert seen["aln_bias"] == 2 * L                      # every branch but the first block's input
    assert seen["linear_nobias"] >= 2 * L                  # attention's and the MLP's c_proj (+ lm_head)
    assert abs(la.item() - lb.item()) < 1e-5
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-4, atol=1e-6), n


def test_auto_takes_the_winner_at_a_measured_shape(tmp_path):
    """Overall eager wins fmha, but at the model's own (measured) attention shape sdpa_math was faster:
    auto runs sdpa_math there, and the op's overall choice elsewhere."""
    dev = device_name("cpu")
    cfg = preset("tiny")
    hs = cfg.n_embd // cfg.n_head
    model_shape = {"B": 2, "H": cfg.n_head, "T": 16, "D": hs, "causal": True, "qkv": True}   # as the model calls it
    ok = dict(status="ok", device_name=dev, dtype="bf16", op="fmha", **{"pass": "fwd+bwd"})
    rows = [{**ok, "impl": "eager", "shape": model_shape, "median_ms": 2.0},
            {**ok, "impl": "sdpa_math", "shape": model_shape, "median_ms": 1.0}]
    for T in (64, 128, 256):
        rows += [{**ok, "impl": "eager", "shape": {**model_shape, "T": T}, "median_ms": 1.0},
                 {**ok, "impl": "sdpa_math", "shape": {**model_shape, "T": T}, "median_ms": 3.0}]
    path = tmp_path / "res.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    notes = []
    b = Backend(f"auto:{path}", log=notes.append)
    b.resolve_auto("cpu")
    assert b.choice["fmha"] == "eager"
    assert b.impl_for("fmha", model_shape) == "sdpa_math" and b.impl_for("fmha", {**model_shape, "T": 64}) == "eager"
    assert any("fmha at" in n and "sdpa_math" in n for n in notes)
    _run(b, steps=1)
    assert b.used["fmha"] == {"sdpa_math"}


def test_model_ops_are_registry_ops():
    """The model's op list (model/op_list.py) names ops kernels/ holds; kernels/ may hold more."""
    assert set(MODEL_OPS) <= set(registry.OPS)
    for op in MODEL_OPS:
        assert callable(getattr(Backend, op, None)), f"Backend has no method for model op {op}"


def test_fused_gelu_type_error_inside_a_kernel_propagates(fake_triton, monkeypatch):
    """A TypeError raised inside a linear kernel is a bug, not a missing activation keyword: no quiet split."""
    impl = registry.resolve("linear", "triton").impl

    def buggy(x, w, b=None, activation=None):
        if activation:
            raise TypeError("unsupported operand type(s) for +: 'Tensor' and 'NoneType'")
        return F.linear(x, w, b)
    monkeypatch.setattr(impl, "fn", buggy)
    with pytest.raises(TypeError, match="unsupported operand"):
        _run(Backend("triton", log=lambda m: None), steps=1)


def test_fused_gelu_impl_without_activation_keyword_splits_and_says_so(fake_triton, monkeypatch):
    impl = registry.resolve("linear", "triton").impl
    monkeypatch.setattr(impl, "fn", lambda x, w, b=None: F.linear(x, w, b))
    b = Backend("triton", log=lambda m: None)
    _run(b, steps=1)
    msgs = [f for f in b.fallbacks if f.startswith("linear+gelu")]
    assert len(msgs) == 1 and "no activation keyword" in msgs[0]
    assert fake_triton["gelu"] > 0


def test_rejected_tile_config_given_is_an_error(fake_triton):
    b = Backend("triton", configs={"fmha": {"NO_SUCH": 1}}, log=lambda m: None)
    with pytest.raises(ValueError, match="fmha/triton: tile config .* rejected"):
        _run(b, steps=1)


def test_rejected_measured_tile_config_runs_defaults_and_is_reported(tmp_path):
    """A config auto read from rows that the impl no longer accepts: its defaults run, and fallbacks say so."""
    rows = [dict(r, config={"NO_SUCH": 1}) if r["impl"] == "sdpa_math" else r for r in _rows(device_name("cpu"))]
    path = tmp_path / "res.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    b = Backend(f"auto:{path}", log=lambda m: None)
    _run(b, steps=1)
    assert b.used["fmha"] == {"sdpa_math"}
    assert any(f.startswith("fmha: sdpa_math measured tile config") and "NO_SUCH" in f for f in b.fallbacks), b.fallbacks


def test_backward_ranges_take_an_op_with_two_outputs():
    """add_layer_norm's fused impls return (sum, normed): the range's opening node goes on both (the GPU
    e2e breakdown of triton and cutile failed on the tuple before)."""
    from torch.profiler import ProfilerActivity, profile
    x = torch.randn(4, 8, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        state, (xm,) = ranges.backward_range_inputs("add_layer_norm", [x])
        s, n = ranges.backward_range_outputs(state, (xm * 2, torch.nn.functional.layer_norm(xm, (8,))))
        (s.sum() + n.sum()).backward()
    assert "op:add_layer_norm:bwd" in {e.name for e in prof.events()}
    assert torch.allclose(x.grad, torch.full_like(x, 2.0), atol=1e-5)   # layer norm's rows sum to a constant
    assert not ranges._open_ranges
