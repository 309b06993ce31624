"""Split-K for the dW matmul (few output tiles, long K): how many slices each linear impl takes."""
import itertools

import pytest


def _cdiv(a, b):
    return -(-a // b)


@pytest.mark.parametrize("M,N,K", [(768, 768, 16384), (2304, 768, 16384), (300, 20, 24), (768, 3072, 16384),
                                   (64, 64, 1000), (16384, 768, 768)])
def test_triton_split_k_slices_are_never_empty(M, N, K):
    pytest.importorskip("triton")
    from kernels.linear.triton import split_k
    for BM, BN, BK, sms in itertools.product((64, 128), (64, 128), (32, 64), (4, 132)):
        S = split_k(M, N, K, BM, BN, BK, sms)
        assert 1 <= S <= 16
        tiles = _cdiv(M, BM) * _cdiv(N, BN)
        if tiles >= sms:
            assert S == 1   # the grid already fills the GPU
        # what matmul() does with S: slices of whole BK tiles, none empty
        k_split = _cdiv(_cdiv(K, S), BK) * BK
        S2 = _cdiv(K, k_split)
        assert S2 <= S and (S2 - 1) * k_split < K


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
