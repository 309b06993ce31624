"""cuTile linear's Hopper variants (its tuning configs): each compiles for sm_90 without spilling registers, the
resource reader sees spills where they are, the launcher passes each variant's hints and grid and splits
dW as measured best; with the kernels stood in by torch, the whole op passes the gate with the bias
gradient fused into dW and split-K summed in the kernel, bitwise the two-kernel sum (what
tools/cutile_fixup_check.py checks on a GPU)."""
import pytest
import torch

from kernels import aot, cutile_env

m = pytest.importorskip("kernels.linear.cutile")   # needs cuda.tile importable

compilable = pytest.mark.skipif(cutile_env.why_not_compilable() is not None,
                                reason=f"cuTile cannot compile here: {cutile_env.why_not_compilable()}")
needs_cuobjdump = pytest.mark.skipif(aot.cuobjdump_path() is None, reason="no cuobjdump to read spills")


def test_spills_count_the_stack_frame():
    """tileiras spills into the stack frame: LOCAL stays 0 (the reader once said 0 spills for 1.8 KB)."""
    text = (" Function a:\n  REG:255 STACK:1816 SHARED:197752 LOCAL:0 CONSTANT[0]:1088 TEXTURE:0\n"
            " Function b:\n  REG:40 STACK:0 SHARED:0 LOCAL:8 CONSTANT[0]:1088 TEXTURE:0\n")
    assert aot.parse_resource_usage(text) == {"registers": 255, "smem_bytes": 197752, "spills": 1816}
    assert aot.parse_resource_usage("Resource usage:\n Common:\n  GLOBAL:0\n") == {}


@compilable
@needs_cuobjdump
def test_the_old_128x256_config_is_seen_spilling():
    """128x256 on the compiler's default 4 math warps (the preset that ran 0.07-0.3x) spills: the variants'
    no-spill test below can fail."""
    cfg = {**m.TUNING["tile_128x256"], "num_worker_warps": None}
    rows = m._aot(cfg, "sm_90")
    fwd = next(r for r in rows if r["kernel"] == "linear_fwd")
    assert fwd["status"] == "ok" and fwd["spills"] > 0


@compilable
@needs_cuobjdump
@pytest.mark.parametrize("name", ["hopper", *m.HOPPER_VARIANTS])
def test_hopper_variant_exports_for_sm90_without_spills(name):
    """Each variant as preset, and the non-persistent ones with the dW options too (fused bias gradient,
    split-K summed in the kernel): every kernel they run compiles for sm_90 and keeps to its registers."""
    preset = m.NAMED[name]
    dw_options = [] if preset["PERSISTENT"] else [{**preset, "DB_FUSED": True, "SPLIT_FIXUP": True}]
    for cfg in [preset, *dw_options]:
        rows = m._aot(m.IMPL.config(cfg), "sm_90")
        bad = [f"{r['kernel']}: {r['status']} {r['message']} spills={r['spills']}" for r in rows
               if r["status"] != "ok" or r["spills"]]
        assert rows and not bad, f"{name} {cfg}: " + "; ".join(bad)
        assert all(r["smem_bytes"] <= aot.SMEM_LIMIT["hopper"] for r in rows)


def test_variants_are_few_and_leave_the_default_alone():
    assert len(m.HOPPER_VARIANTS) <= 6 and set(m.HOPPER_VARIANTS) <= set(m.TUNING)   # experiments, not presets
    assert m.PRESETS["hopper"]["TILE_N"] == 128 and "num_worker_warps" not in m.PRESETS["hopper"]
    for name in m.HOPPER_VARIANTS:
        m.IMPL.config(m.TUNING[name])      # every value is a valid choice


@pytest.mark.parametrize("name", ["hopper", "tile_128x256", "persistent_128x256", "cluster_256x256"])
def test_launcher_passes_each_variants_hints_and_grid(monkeypatch, name):
    """The forward at GPT-2's c_fc shape on an H100-sized GPU (132 SMs off a GPU), kernels stood in."""
    calls = []
    monkeypatch.setattr(m.aot, "launch", lambda k, grid, args, **hints: calls.append((k, grid, hints)))
    c = m._config("sm_90", m.NAMED[name])
    x, w = torch.empty(16384, 768, dtype=torch.bfloat16), torch.empty(3072, 768, dtype=torch.bfloat16)
    m.matmul(x, w, False, True, c)
    (k, grid, hints), = calls
    tiles = (16384 // c["TILE_M"]) * (3072 // c["TILE_N"])
    # a block is a cluster of num_ctas SMs: a persistent grid fills the SMs with clusters
    assert grid == ((min(tiles, 132 * c["occupancy"] // c["num_ctas"]),) if c["PERSISTENT"] else (tiles,))
    assert hints == {"occupancy": c["occupancy"], "num_ctas": c["num_ctas"],
                     "num_worker_warps": c.get("num_worker_warps")}
    assert (hints["num_worker_warps"] == 8) == (c["TILE_N"] == 256)


# --- the host plumbing through the gate, kernels stood in ------------------------------------------

def _op(x, trans):
    return x.t() if trans else x


def _fake_launch(calls):
    """aot.launch as torch: _matmul tile by tile over its grid (a tile no block covers stays poisoned), the
    split-K partials, the fixup's counters and _sum_slices as the kernels define them."""
    def launch(kernel, grid, args, **hints):
        calls.append((kernel, grid, args))
        if kernel is m._sum_slices:
            P, C, DBP, DB, _, _, has_db = args
            C.copy_(P.sum(0).to(C.dtype))
            if has_db:
                DB.copy_(DBP.sum(0).to(DB.dtype))
            return
        assert kernel is m._matmul, kernel
        (A, B, Bias, C, Z, P, DB, DBP, Cnt, kt_per, ta, tb, has_bias, gelu, TM, TN, TK, _, _, S, persistent,
         has_db, fixup) = args
        M, N = C.shape
        gm, gn = -(-M // TM), -(-N // TN)
        a, b = _op(A, ta).float(), _op(B, tb).float()
        blocks = range(grid[0])
        tiles = [t for blk in blocks for t in (range(blk, gm * gn * S, grid[0]) if persistent else [blk])]
        for t in tiles:
            s, u = divmod(t, gm * gn)
            i, j = divmod(u, gn)
            rows, cols, ks = slice(i * TM, (i + 1) * TM), slice(j * TN, (j + 1) * TN), \
                slice(s * kt_per * TK, (s + 1) * kt_per * TK)
            acc = a[rows, ks] @ b[ks, cols]
            db = a[rows, ks].sum(1)
            if S > 1:
                P[s, rows, cols] = acc
                if has_db and j == 0:
                    DBP[s, rows] = db
                if fixup:
                    Cnt[u] += 1
                    if Cnt[u] == S:
                        C[rows, cols] = P[:, rows, cols].sum(0).to(C.dtype)
                        if has_db and j == 0:
                            DB[rows] = DBP[:, rows].sum(0).to(DB.dtype)
                        Cnt[u] = 0
                continue
            if has_bias:
                acc = acc + Bias[cols].float()
            if gelu:
                Z[rows, cols] = acc.to(Z.dtype)
                acc = torch.nn.functional.gelu(acc, approximate="tanh")
            C[rows, cols] = acc.to(C.dtype)
            if has_db and j == 0:
                DB[rows] = db.to(DB.dtype)
    return launch


SMALL = {"TILE_M": 32, "TILE_N": 32, "TILE_K": 16, "GROUP_M": 1, "occupancy": 1}


@pytest.mark.parametrize("split,fixup,db_fused,persistent", [
    (0, False, False, False), (3, False, True, False), (3, True, True, False), (3, True, False, False),
    (0, False, True, True), (2, False, True, True)])
@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_linear_fwd_bwd_through_the_gate_kernels_stood_in(monkeypatch, split, fixup, db_fused, persistent, dtype):
    """The whole op, forward and backward, on CPU: dW split into K slices (summed by a second kernel or by
    the fixup), the bias gradient from the dW kernel or the column-sum pass, each within eager's error."""
    from bench.measure.check import check
    from kernels import registry
    from kernels.layer_norm import cutile as ln
    calls = []
    monkeypatch.setattr(m.aot, "launch", _fake_launch(calls))
    colsums = []
    monkeypatch.setattr(ln, "colsum", lambda p, dtype: colsums.append(p) or p.float().sum(0).to(dtype))
    monkeypatch.setattr(m, "_COUNTERS", {})
    cfg = m.IMPL.config({**SMALL, "SPLIT_K": split, "SPLIT_FIXUP": fixup, "DB_FUSED": db_fused,
                         "PERSISTENT": persistent})
    r = check(registry.spec_of("linear"), m.IMPL.fn, {"M": 100, "N": 47, "K": 65}, dtype, "fwd+bwd", "cpu", cfg)
    assert r.ok, r.message
    dw_calls = [c for c in calls if c[0] is m._matmul and c[2][10]]     # TRANS_A: the dW matmul
    S = dw_calls[-1][2][19]
    assert S == (split or 1)
    assert bool(colsums) != db_fused and dw_calls[-1][2][21] == db_fused
    assert any(c[0] is m._sum_slices for c in calls) == (S > 1 and not fixup)
    for buf in m._COUNTERS.values():
        assert not buf.any()          # every tile's counter back at zero for the next call


def test_gelu_linear_takes_db_from_the_gelu_backward(monkeypatch):
    """With GELU the bias gradient is summed by the GELU backward pass it needs anyway, not by a second pass."""
    from kernels.gelu import cutile as g
    from kernels.layer_norm import cutile as ln
    seen = []
    monkeypatch.setattr(m.aot, "launch", _fake_launch([]))
    monkeypatch.setattr(ln, "colsum", lambda p, dtype: pytest.fail("a column-sum pass over dY"))

    def gelu_backward(z, bias, dy, c, need_db):
        seen.append(need_db)
        d = dy.float() * torch.func.grad(lambda v: torch.nn.functional.gelu(v, approximate="tanh").sum())(z.float())
        return d.to(dy.dtype), (d.sum(0).to(z.dtype) if need_db else None)
    monkeypatch.setattr(g, "gelu_backward", gelu_backward)
    x = torch.randn(40, 24, requires_grad=True)
    w = torch.randn(33, 24, requires_grad=True)
    b = torch.randn(33, requires_grad=True)
    m.IMPL.fn(x, w, b, activation="gelu", **m.IMPL.config({**SMALL, "DB_FUSED": True})).sum().backward()
    assert seen == [True]
    dz = torch.func.grad(lambda v: torch.nn.functional.gelu(v, approximate="tanh").sum())(
        x.detach() @ w.detach().t() + b.detach())
    torch.testing.assert_close(b.grad, dz.sum(0), rtol=1e-4, atol=1e-4)


def test_fixup_with_persistent_is_refused():
    from kernels.registry import Unsupported
    x = torch.randn(8, 8)
    with pytest.raises(Unsupported, match="PERSISTENT"):
        m.IMPL.fn(x, torch.randn(8, 8), **m.IMPL.config({"SPLIT_FIXUP": True, "PERSISTENT": True}))
    with pytest.raises(Unsupported, match="PERSISTENT"):
        m.matmul_part(x, x, 3, **m.IMPL.config({"SPLIT_FIXUP": True, "PERSISTENT": True}))


def _dw(dy, x, c):
    """dW = dY^T X and db = dY's column sums, as the linear's backward calls them."""
    out, _, db = m.matmul(dy, x, True, False, c, db_dtype=dy.dtype)
    return out, db


def test_fixup_is_bitwise_the_two_kernel_sum_and_a_race_shows(monkeypatch):
    """What tools/cutile_fixup_check.py checks on a GPU, with the kernels stood in (no graph replays off a GPU):
    the fixup sums the same fp32 partials in the same order as the two-kernel sum, so its dW and fused bias
    gradient are bitwise those, call after call, and its counters end at zero; a fixup that sums a slice short
    (what a race would leave) is not."""
    monkeypatch.setattr(m, "_COUNTERS", {})
    calls = []
    monkeypatch.setattr(m.aot, "launch", _fake_launch(calls))
    g = torch.Generator().manual_seed(0)
    dy, x = torch.randn(100, 47, generator=g).bfloat16(), torch.randn(100, 65, generator=g).bfloat16()
    c = {**m._config(m.aot.arch_of(dy), {**m.PRESETS["hopper"], **SMALL, "SPLIT_K": 3}), "DB_FUSED": True,
         "SPLIT_FIXUP": False}
    ref, db_ref = _dw(dy, x, c)
    fix = {**c, "SPLIT_FIXUP": True}
    calls.clear()
    for _ in range(2):
        out, db = _dw(dy, x, fix)
        assert torch.equal(out, ref) and torch.equal(db, db_ref)
    assert any(call[2][-1] for call in calls if call[0] is m._matmul)      # the fixup ran
    assert sum(int(b.count_nonzero()) for b in m._COUNTERS.values()) == 0

    def short_fixup(kernel, grid, args, **hints):
        _fake_launch([])(kernel, grid, args, **hints)
        if kernel is m._matmul and args[-1]:            # FIXUP: one row summed before a slice's partial landed
            args[3][0] -= args[5][0, 0].to(args[3].dtype)
    monkeypatch.setattr(m.aot, "launch", short_fixup)
    out, db = _dw(dy, x, fix)
    assert not (torch.equal(out, ref) and torch.equal(db, db_ref))


@pytest.mark.parametrize("N,K,want", [(2304, 768, 2), (768, 768, 7), (3072, 768, 3), (768, 3072, 3),
                                      (50304, 768, 1)])
def test_dw_split_counts_resident_blocks(monkeypatch, N, K, want):
    """The default (128x128 at occupancy 2) splits GPT-2's dW 2/7/3/3, near the hand-timed SPLIT_K sweep's best
    (2/6/3/3 on an H200): the model's waves are of 2 x 132 resident blocks, not of 132 SMs (it chose 1/3/4/4)."""
    calls = []
    monkeypatch.setattr(m.aot, "launch", lambda k, grid, args, **hints: calls.append((k, grid, args)))
    c = m._config("sm_90", {})
    dy, x = torch.empty(16384, N, dtype=torch.bfloat16), torch.empty(16384, K, dtype=torch.bfloat16)
    m.matmul(dy, x, True, False, c)
    assert calls[0][2][19] == want       # SPLIT
    assert calls[0][1] == ((N // 128) * (K // 128) * want,)
