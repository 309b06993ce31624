"""linear_cross_entropy's cuTile impl on the CPU: its kernels cannot run here, so aot.launch is stood in
for by torch versions of the same math, block by block over the launch grid, and the impl (chunk loop,
in-place dlogits, the backward's scale, ignored rows) goes through the correctness gate and against
eager with a grad_output != 1; its kernels compile for every generation."""
import math

import pytest
import torch
import torch.nn.functional as F

from bench.measure.check import check
from kernels import cutile_env, registry
from tests.test_linear_cross_entropy import (BIAS_BOUND, assert_3d_all_ignored_chunk_matches_eager,
                                          gradient_scale_bias)

pytestmark = pytest.mark.skipif(cutile_env.why_not_compilable() is not None, reason="cuda.tile not importable")
OP = "linear_cross_entropy"


def _fake_launch(mod):
    def launch(kernel, grid, args, **hints):
        if kernel is mod._ce_rows:
            L, tgt, loss, lse2, ignore, ROWS, _, _ = args
            for b in range(grid[0]):          # each block its ROWS rows: a short grid leaves rows poisoned
                r = slice(b * ROWS, min((b + 1) * ROWS, L.shape[0]))
                x = L[r].float()
                lse = torch.logsumexp(x, 1)
                valid = tgt[r] != ignore
                safe = torch.where(valid, tgt[r], 0)
                loss[r] = torch.where(valid, lse - x.gather(1, safe[:, None])[:, 0], 0.0)
                lse2[r] = lse / math.log(2)
        elif kernel is mod._ce_grad:
            L, tgt, lse2, ignore, ROWS, BV, _ = args
            for b in range(grid[0]):          # each block one (ROWS, BV) tile
                r = slice(b * ROWS, min((b + 1) * ROWS, L.shape[0]))
                valid = tgt[r] != ignore
                for c in range(grid[1]):
                    v = slice(c * BV, min((c + 1) * BV, L.shape[1]))
                    p = torch.exp(L[r, v].float() - lse2[r, None] * math.log(2))
                    onehot = (torch.arange(v.start, v.stop)[None, :] == tgt[r, None]).float()
                    L[r, v] = ((p - onehot) * valid[:, None]).to(L.dtype)
        elif kernel is mod._scale:
            T, G, BLOCK = args
            assert grid[0] * BLOCK >= T.numel()
            if G.item() != 1.0:
                T.mul_(G)
        else:
            raise AssertionError(f"unexpected kernel {kernel}")
    return launch


@pytest.fixture
def cutile_lce(monkeypatch):
    from kernels.linear_cross_entropy import cutile as mod
    monkeypatch.setattr(mod.aot, "launch", _fake_launch(mod))
    return registry._import_impl(OP, "cutile")[0]


@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("rows", [1, 4])
def test_gate_with_kernels_stood_in(cutile_lce, dtype, pass_, rows):
    spec = registry.spec_of(OP)
    r = check(spec, cutile_lce.fn, {"M": 37, "K": 24, "V": 1003}, dtype, pass_, "cpu",
              cutile_lce.config({"CHUNK_ROWS": 16, "ROWS": rows, "BWD_BV": 256}), seed=4)
    assert r.ok, r.message


def test_grad_output_scales_and_3d_input(cutile_lce):
    assert_3d_all_ignored_chunk_matches_eager(cutile_lce.fn)


def test_the_gradient_scale_is_not_one_rounded_constant(cutile_lce):
    assert gradient_scale_bias(cutile_lce.fn, CHUNK_ROWS=64, BV=128, BWD_BV=128) < BIAS_BOUND


@pytest.mark.parametrize("arch", ["sm_80", "sm_89", "sm_90", "sm_100", "sm_120"])
def test_kernels_compile(arch):
    impl = registry._import_impl(OP, "cutile")[0]
    rows = impl.aot(impl.config(), arch)
    assert [r["kernel"] for r in rows] == ["linear_cross_entropy_ce_rows", "linear_cross_entropy_ce_grad",
                                           "linear_cross_entropy_scale"]
    assert all(r["status"] == "ok" and r["cubin_bytes"] for r in rows), rows
