"""How many K slices a matmul takes (backend-neutral: the Triton and cuTile launchers share it).

Few output tiles and a long K (the dW = dY^T X matmuls: N x K outputs, K = B*T = 16384) leave SMs idle
in the last (or only) wave. Slicing K makes S times the tiles, each 1/S the work, at the price of
writing S fp32 partials and a pass that sums them. The choice minimises a rough time model:

    t(S) = waves(S) / S * t_tile + (S > 1) * (S * M * N * 8 B / RED_BW + RED_LAUNCH_S)

with t_tile = one output tile over the whole K at SM_FLOPS. The constants are H100/H200-class
estimates (660 TFLOP/s of bf16 mma over 132 SMs; partials mostly in L2); the `SPLIT_K` tile parameter
overrides the model, and the gemm sweep times both."""

SM_FLOPS = 5.0e12        # bf16 mma per SM, sustained
RED_BW = 3.0e12          # B/s for writing + reading the fp32 partials (L2-resident at GPT-2's dW sizes)
RED_LAUNCH_S = 3e-6      # the reduction kernel's launch and tail
MAX_SPLIT = 16
MIN_K_TILES = 4          # K tiles per slice: below this the pipeline never fills


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def modelled_s(M, N, K, BM, BN, S, sms) -> float:
    tiles = cdiv(M, BM) * cdiv(N, BN)
    t_tile = 2.0 * BM * BN * K / SM_FLOPS
    t = cdiv(tiles * S, sms) / S * t_tile
    return t + (S * M * N * 8 / RED_BW + RED_LAUNCH_S if S > 1 else 0.0)


def slices(M, N, K, BM, BN, BK, sms, want: int = 0) -> tuple[int, int]:
    """(S, k_split): S slices of k_split elements of K each (a multiple of BK), none empty.
    want > 0 asks for that many slices (fewer if K is too short)."""
    k_tiles = cdiv(K, BK)
    most = max(1, min(MAX_SPLIT, k_tiles // MIN_K_TILES))
    if want > 0:
        S = min(want, max(1, k_tiles))
    elif most == 1:
        S = 1
    else:
        S = min(range(1, most + 1), key=lambda s: (modelled_s(M, N, K, BM, BN, s, sms), s))
    k_split = cdiv(k_tiles, S) * BK
    return cdiv(K, k_split), k_split
