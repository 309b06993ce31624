"""Split-K for the dW matmul (few output tiles, long K): how many slices each linear impl takes."""
import itertools
import json
import os
import subprocess
import sys

import pytest


def _cdiv(a, b):
    return -(-a // b)


@pytest.mark.parametrize("M,N,K", [(768, 768, 16384), (2304, 768, 16384), (300, 20, 24), (768, 3072, 16384),
                                   (64, 64, 1000), (16384, 768, 768)])
def test_triton_split_k_count(M, N, K):
    pytest.importorskip("triton")
    from kernels.linear.triton import split_k
    for BM, BN, BK, sms in itertools.product((64, 128), (64, 128), (32, 64), (4, 132)):
        S = split_k(M, N, K, BM, BN, BK, sms)
        assert 1 <= S <= 16
        if _cdiv(M, BM) * _cdiv(N, BN) >= sms or K < 8 * BK:
            assert S == 1   # the grid already fills the GPU, or K is too short to share


# Under the interpreter the GPU has 4 "SMs": a 16 x 16 output is one 16 x 16 tile, so a long K splits.
SPLIT_SCRIPT = r"""
import json, torch
from kernels.linear import triton as L
cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 1, "num_warps": 4, "num_stages": 1}
out = {}
for M, N, K in ((16, 16, 200), (13, 16, 333), (16, 9, 256), (16, 16, 64)):
    g = torch.Generator().manual_seed(K)
    a, b = torch.randn(M, K, generator=g), torch.randn(K, N, generator=g)
    ref = a.double() @ b.double()
    y, _ = L.matmul(a, b.t().contiguous().t(), cfg)
    out[f"{M}x{N}x{K}"] = {"S": L.split_k(M, N, K, 16, 16, 16, L.aot.sm_count(a)),
                           "err": ((y.double() - ref).norm() / ref.norm()).item()}
print("RESULT " + json.dumps(out))
"""


def test_triton_split_k_matmul_sums_every_slice():
    """The dW matmul with K split across programs (fp32 partials summed after, the last slice ragged):
    run under the interpreter and compared with torch, so a lost, doubled or short slice fails."""
    pytest.importorskip("triton")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-c", SPLIT_SCRIPT], cwd=root, env=env, capture_output=True, text=True,
                       timeout=600)
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, p.stderr[-3000:]
    res = json.loads(line[-1][7:])
    assert [r["S"] for r in res.values()] == [3, 5, 4, 1], res      # split (ragged, uneven M/N), and not
    for shape, r in res.items():
        assert r["err"] < 1e-5, f"{shape}: split into {r['S']}, rel err {r['err']:.3g}"


@pytest.mark.parametrize("M,N,K", [(768, 768, 16384), (2304, 768, 16384), (300, 20, 24), (64, 64, 1000)])
def test_cutile_split_k_slices_are_never_empty(M, N, K):
    mod = pytest.importorskip("kernels.linear.cutile")
    for TM, TN, TK, sms in itertools.product((64, 128), (64, 128), (32, 64), (4, 132)):
        c = {"TILE_M": TM, "TILE_N": TN, "TILE_K": TK}
        S = mod.split_k(M, N, K, c, sms)
        nk = _cdiv(K, TK)
        assert 1 <= S <= 16
        if _cdiv(M, TM) * _cdiv(N, TN) >= sms or nk < 8:
            assert S == 1
        per = _cdiv(nk, S)   # the kernel's slice length in K tiles
        assert (S - 1) * per < nk
