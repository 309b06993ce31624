"""Split-K for the dW matmul (few output tiles, long K): how many slices the linear impls take
(kernels.linear.splitk, shared by the Triton and cuTile launchers)."""
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
    y, _ = L.matmul(a, b.t().contiguous().t(), cfg)
    out[f"{M}x{N}x{K}"] = {"S": slices(M, N, K, 16, 16, 16, L.aot.sm_count(a), 3)[0],
                           "err": ((y.double() - ref).norm() / ref.norm()).item()}
print("RESULT " + json.dumps(out))
"""


def test_triton_split_k_matmul_sums_every_slice():
    """The dW matmul with K split across programs (fp32 partials summed after, the last slice ragged): run under
    the interpreter and compared with float64, so a lost, doubled or short slice fails."""
    import json
    import os
    import subprocess
    import sys
    pytest.importorskip("triton")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-c", SPLIT_SCRIPT], cwd=root, env=env, capture_output=True, text=True,
                       timeout=600)
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, p.stderr[-3000:]
    res = json.loads(line[-1][7:])
    assert [r["S"] for r in res.values()] == [3, 3, 3, 2], res    # K really split (64 = 2 slices of 2 tiles)
    for shape, r in res.items():
        assert r["err"] < 1e-5, f"{shape}: split into {r['S']}, rel err {r['err']:.3g}"
