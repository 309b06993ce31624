"""What the Triton row-wise ops share (layer_norm, add_layer_norm, gelu's backward, linear's bias gradient):
rows as a 2-D view, presets with a wide-row override, the persistent split of a backward's rows over
programs, and the column sum that folds the per-program partial sums of the weight gradients."""
import torch
import triton
import triton.language as tl

from kernels import library, poison
from kernels import triton_aot as aot

# rows wider than 2048: one row per program and more warps (16 past 8192)
WIDE_C = 2048
WIDE = {"ROWS": 1, "num_warps": 8, "BWD_ROWS": 1, "bwd_num_warps": 16, "BWD_PROGS": 2}


def row_preset(presets: dict, arch: str, C: int) -> dict:
    """The arch family's preset for rows of C elements."""
    p = dict(presets[aot.family(arch)])
    if C > WIDE_C:
        p.update(WIDE)
        p["num_warps"] = 16 if C > 8192 else 8
    return p


def rows2d(t: torch.Tensor, C: int) -> torch.Tensor:
    """t as (rows, C) with unit column stride: a view where it can be, a copy where it must."""
    t2 = t if t.dim() == 2 else t.reshape(-1, C)
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def split_rows(M: int, R: int, programs: int) -> tuple[int, int]:
    """(G, rows_per_prog): M rows over at most `programs` programs, each taking whole steps of R rows."""
    G = max(1, min(aot.cdiv(M, R), programs))
    rows_per_prog = aot.cdiv(aot.cdiv(M, G), R) * R
    return aot.cdiv(M, rows_per_prog), rows_per_prog


@triton.jit
def _colsum(P, Out, G, N, stride_p, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr):
    """Out[n] = sum over g of P[g, n]: folds per-program partial sums (fp32) into one row."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for g in range(0, G, BLOCK_G):
        rows = g + tl.arange(0, BLOCK_G)
        m = (rows[:, None] < G) & (cols[None, :] < N)
        acc += tl.sum(tl.load(P + rows[:, None].to(tl.int64) * stride_p + cols[None, :], mask=m, other=0.0), axis=0)
    tl.store(Out + cols, acc.to(Out.dtype.element_ty), mask=cols < N)


def colsum(partial: torch.Tensor, dtype) -> torch.Tensor:
    G, N = partial.shape
    out = poison.empty(N, dtype=dtype, device=partial.device)
    BLOCK_N = 64
    library.kernel(_colsum)[(aot.cdiv(N, BLOCK_N),)](partial, out, G, N, partial.stride(0), BLOCK_G=32, BLOCK_N=BLOCK_N,
                                     num_warps=4)
    return out


def colsum_aot(arch: str) -> dict:
    return aot.compile_kernel(_colsum, "colsum", {"P": "*fp32", "Out": "*bf16", "G": "i32", "N": "i32",
                                                  "stride_p": "i32"}, {"BLOCK_G": 32, "BLOCK_N": 128}, arch, 4, 1)
