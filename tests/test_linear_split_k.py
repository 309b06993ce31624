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
