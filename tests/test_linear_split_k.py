"""Split-K and stream-K for the dW matmul (few output tiles, long K): how many slices the linear impls take
(kernels.linear.splitk, shared by the Triton and cuTile launchers), the Triton kernels' partial sums, and the
bias gradient summed inside the dW matmul."""
import itertools

import pytest

from kernels.linear.splitk import MAX_SPLIT, cdiv, modelled_s, slices


@pytest.mark.parametrize("M,N,K", [(768, 768, 16384), (2304, 768, 16384), (300, 20, 24), (768, 3072, 16384),
                                   (64, 64, 1000), (16384, 768, 768), (3072, 768, 16384)])
def test_slices_are_whole_tiles_and_never_empty(M, N, K):
    for BM, BN, BK, sms, want in itertools.product((64, 128), (64, 128, 256), (32, 64), (4, 132), (0, 1, 3, 16)):
        S, k_split = slices(M, N, K, BM, BN, BK, sms, want)
        assert 1 <= S <= max(MAX_SPLIT, want)
        assert k_split % BK == 0 and (S - 1) * k_split < K <= S * k_split   # every slice has work, K covered
        if want:
            assert S <= want
        elif S > 1:   # the model only splits when it predicts a gain
            assert modelled_s(M, N, K, BM, BN, S, sms) < modelled_s(M, N, K, BM, BN, 1, sms)


def test_model_splits_gpt2_dw_but_not_the_forward():
    # H100/H200: 132 SMs, 128x128 tiles. attn c_proj's dW has 36 output tiles over K = 16384: split.
    assert slices(768, 768, 16384, 128, 128, 64, 132)[0] > 1
    # the forward (16384 x 768 out, K = 768) already has 768 tiles
    assert slices(16384, 768, 768, 128, 128, 64, 132)[0] == 1
    # an explicit request wins, capped by the K tiles there are
    assert slices(768, 768, 16384, 128, 128, 64, 132, want=5)[0] == 5
    assert slices(300, 20, 24, 16, 32, 16, 4, want=8)[0] == cdiv(24, 16)


def test_cutile_launcher_uses_the_shared_model():
    mod = pytest.importorskip("kernels.linear.cutile")
    assert mod.slices is slices


# Under the interpreter the GPU has 4 "SMs": a 16 x 16 output is one tile, so a long K splits (ragged last slice).
SPLIT_SCRIPT = r"""
import json, torch
from kernels.linear import triton as L
from kernels.linear.splitk import slices
cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 1, "num_warps": 4, "num_stages": 1,
       "KERNEL": "blocked", "SPLIT_K": 3}     # 3 slices asked for (the model alone splits none this small)
out = {}
for M, N, K in ((16, 16, 200), (13, 16, 333), (16, 9, 256), (16, 16, 64)):
    g = torch.Generator().manual_seed(K)
    a, b = torch.randn(M, K, generator=g), torch.randn(K, N, generator=g)
    ref = a.double() @ b.double()
    y = L.matmul(a, b.t().contiguous().t(), cfg)[0]
    out[f"{M}x{N}x{K}"] = {"S": slices(M, N, K, 16, 16, 16, L.aot.sm_count(a), 3)[0],
                           "err": ((y.double() - ref).norm() / ref.norm()).item()}
print("RESULT " + json.dumps(out))
"""


def _interp(script):
    """Run script under the Triton interpreter in a child (the flag only counts before triton loads); its
    `RESULT <json>` line."""
    import json
    import os
    import subprocess
    import sys
    pytest.importorskip("triton")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, p.stderr[-3000:]
    return json.loads(line[-1][7:])


def test_triton_split_k_matmul_sums_every_slice():
    """The dW matmul with K split across programs (fp32 partials summed after, the last slice ragged): run under
    the interpreter and compared with float64, so a lost, doubled or short slice fails."""
    res = _interp(SPLIT_SCRIPT)
    assert [r["S"] for r in res.values()] == [3, 3, 3, 2], res    # K really split (64 = 2 slices of 2 tiles)
    for shape, r in res.items():
        assert r["err"] < 1e-5, f"{shape}: split into {r['S']}, rel err {r['err']:.3g}"


# Which stream-K tiles two or more programs share (the owner's fix-up runs for those), by the kernel's own split:
# whole waves data-parallel, the rest's (tile, K step) work cut evenly over the programs.
SPLIT_TILES = r"""
from kernels.linear.triton_tma import dp_tiles
def triton_tma_split_tiles(tiles, kt, sms):
    P = min(sms, tiles * kt); dp = dp_tiles(tiles, P); work = (tiles - dp) * kt
    starts = {p * work // P for p in range(P)}
    return sum(any(u * kt < a < (u + 1) * kt for a in starts) for u in range(tiles - dp))
"""


# dW = dY^T X through the TMA kernel (the interpreter emulates descriptors and atomics; 4 programs): stream-K,
# split-K and one slice, each with dY's column sums (db) on the way. `split` counts the tiles whose K steps
# span programs, so the owners' fix-up really runs.
DW_SCRIPT = r"""
import json, torch
from kernels import poison
from kernels.linear import triton as L, triton_tma
cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2, "num_warps": 4, "num_stages": 2,
       "KERNEL": "tma", "WARP_SPEC": False, "SUBTILE": True, "_family": "hopper"}
def split_tiles(T, N, K):   # tiles of the (N, K) output whose K steps two or more programs share
    return triton_tma_split_tiles(-(-N // 16) * -(-K // 16), -(-T // 16), 4)
out = {}
for sk in (-1, 0, 3):
    for T, N, K in ((200, 40, 24), (333, 48, 16), (37, 40, 72), (500, 24, 40)):
        for dt in (torch.float32, torch.bfloat16):
            g = torch.Generator().manual_seed(T)
            dy, x = torch.randn(T, N, generator=g).to(dt), torch.randn(T, K, generator=g).to(dt)
            with poison.poisoned():
                dw, _, db = L.matmul(dy.t(), x, {**cfg, "SPLIT_K": sk}, row_sums=True)
            ref, dref = dy.double().t() @ x.double(), dy.double().sum(0)
            out[f"{sk} {T}x{N}x{K} {dt}"] = {
                "dw": ((dw.double() - ref).norm() / ref.norm()).item(),
                "db": None if db is None else ((db.double() - dref).norm() / dref.norm()).item(),
                "dtypes": [str(dw.dtype), str(getattr(db, "dtype", None))],
                "split": split_tiles(T, N, K) if sk == -1 else None}
print("RESULT " + json.dumps(out))
"""


def test_triton_tma_dw_stream_k_split_k_and_row_sums():
    res = _interp(SPLIT_TILES + DW_SCRIPT)
    assert len(res) == 24, res
    assert all(r["split"] for k, r in res.items() if k.startswith("-1 ")), res   # the fix-up ran every time
    for key, r in res.items():
        tol = 1e-5 if "float32" in key else 8e-3
        assert r["dw"] < tol, f"{key}: {r}"
        if key.startswith("-1 "):   # stream-K leaves db to the standalone column sum (wrong dW on an H200 with it)
            assert r["db"] is None and r["dtypes"] == [key.split()[-1], "None"], f"{key}: {r}"
        else:
            assert r["db"] < tol and r["dtypes"] == [key.split()[-1]] * 2, f"{key}: {r}"


# The forward through stream-K: whole waves data-parallel, then split tiles, with the bias + GELU epilogue and the
# pre-activation kept (the owner applies it after the fix-up); 4 programs, 16 x 16 tiles.
FWD_SCRIPT = r"""
import json, torch
import torch.nn.functional as F
from kernels.linear import triton as L
cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2, "num_warps": 4, "num_stages": 2,
       "KERNEL": "tma", "WARP_SPEC": False, "SUBTILE": True, "_family": "hopper", "SPLIT_K": -1}
out = {}
for M, N, K in ((100, 48, 40), (37, 40, 72), (150, 48, 24)):
    g = torch.Generator().manual_seed(M)
    x, w, b = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g) / K ** 0.5, torch.randn(N, generator=g)
    y, pre, _ = L.matmul(x, w.t(), cfg, bias=b, gelu=True, store_pre=True)
    pref = x.double() @ w.double().t() + b.double()
    yref = F.gelu(pref, approximate="tanh")
    tiles = -(-M // 16) * -(-N // 16)
    out[f"{M}x{N}x{K}"] = {"y": ((y.double() - yref).norm() / yref.norm()).item(),
                           "pre": ((pre.double() - pref).norm() / pref.norm()).item(),
                           "dp": L.triton_tma.dp_tiles(tiles, 4),
                           "split": triton_tma_split_tiles(tiles, -(-K // 16), 4)}
print("RESULT " + json.dumps(out))
"""


def test_triton_stream_k_forward_with_epilogue():
    res = _interp(SPLIT_TILES + FWD_SCRIPT)
    assert res["100x48x40"]["dp"] > 0 and all(r["split"] for r in res.values()), res
    for shape, r in res.items():
        assert r["y"] < 1e-5 and r["pre"] < 1e-5, f"{shape}: {r}"


# Poisoned-safety of stream-K: (1) a partial whose flag never rises (the atomic patched out) makes its owner's
# tile NaN after MAX_POLLS instead of hanging; (2) a program that never runs leaves its tiles NaN.
STREAMK_FAIL_SCRIPT = r"""
import json, torch
import triton.language as tl
from kernels import poison
from kernels.linear import triton as L, triton_tma
cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2, "num_warps": 4, "num_stages": 2,
       "KERNEL": "tma", "WARP_SPEC": False, "SUBTILE": True, "_family": "hopper", "SPLIT_K": -1}
g = torch.Generator().manual_seed(0)
dy, x = torch.randn(200, 40, generator=g), torch.randn(200, 24, generator=g)
out = {}
xchg = tl.atomic_xchg
tl.atomic_xchg = lambda *a, **k: None
with poison.poisoned():
    dw = L.matmul(dy.t(), x, cfg)[0]
tl.atomic_xchg = xchg
out["no_flag_nan"], out["no_flag_finite"] = int(dw.isnan().sum()), int(dw.isfinite().sum())
launch = triton_tma._matmul_streamk.__getitem__
triton_tma._matmul_streamk.__class__.__getitem__ = lambda self, grid: launch((grid[0] - 1,))
with poison.poisoned():
    dw = L.matmul(dy.t(), x, cfg)[0]
out["lost_program_nan"] = int(dw.isnan().sum())
print("RESULT " + json.dumps(out))
"""


def test_triton_stream_k_missing_partials_fail_the_gate():
    res = _interp(STREAMK_FAIL_SCRIPT)
    assert res["no_flag_nan"] > 0 and res["lost_program_nan"] > 0, res
    assert res["no_flag_finite"] > 0, res   # whole tiles (those with no partials to wait for) still written


# The bias gradient: inside the TMA dW matmul (the standalone column sum must not run), standalone where
# there is no dW (frozen weight) or the pointer kernel runs dW.
DB_SCRIPT = r"""
import json, torch
from kernels.linear import triton as L
small = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "SUBTILE": True}
calls = []
standalone = L.column_sums
L.column_sums = lambda *a: (calls.append(1), standalone(*a))[1]
out = {}
for name, cfg, w_grad in (("tma", {"KERNEL": "tma", "FUSE_DB": True}, True),
                          ("tma_streamk", {"KERNEL": "tma", "SPLIT_K": -1, "FUSE_DB": True}, True),
                          ("tma_default", {"KERNEL": "tma"}, True),
                          ("blocked", {"KERNEL": "blocked", "FUSE_DB": True}, True),
                          ("tma_frozen_w", {"KERNEL": "tma", "FUSE_DB": True}, False)):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(333, 24, generator=g, requires_grad=True)
    w = torch.randn(40, 24, generator=g, requires_grad=w_grad)
    b = torch.randn(40, generator=g, requires_grad=True)
    dy = torch.randn(333, 40, generator=g)
    calls.clear()
    L.linear(x, w, b, **small, **cfg).backward(dy)
    ref = dy.double().sum(0)
    out[name] = {"db": ((b.grad.double() - ref).norm() / ref.norm()).item(), "standalone": len(calls)}
print("RESULT " + json.dumps(out))
"""


def test_triton_bias_gradient_fused_into_dw():
    res = _interp(DB_SCRIPT)
    # fused only where asked (FUSE_DB, off by default) and where it is right: not under stream-K
    assert [res[k]["standalone"] for k in ("tma", "tma_streamk", "tma_default", "blocked", "tma_frozen_w")] == \
        [0, 1, 1, 1, 1], res
    for name, r in res.items():
        assert r["db"] < 1e-5, f"{name}: {r}"
