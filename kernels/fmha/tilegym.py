"""TileGym's cuTile flash attention as a peer: its autotuned inference kernel for fwd, and its
autograd path (fwd saving LSE, then dK/dV and dQ kernels, each autotuned) for fwd+bwd.

TileGym tunes under its own `ct.compiler_timeout(5)`: configs whose compile takes longer are dropped
from its search, as on our H100; that is part of what this peer measures."""
import math

import torch

from kernels import peers_env  # noqa: F401  (puts TILEBENCH_TILEGYM_PATH on sys.path)
from kernels.registry import KernelImpl, Unsupported

peers_env.tilegym_import_error()
from tilegym.ops.cutile import attention as _tg  # noqa: E402


def fmha(q, k, v, causal=True, scale=None):
    if q.shape[-1] not in (64, 128, 256):
        raise Unsupported(f"TileGym fmha tiles D in (64, 128, 256), got {q.shape[-1]}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _tg.tile_fmha_with_backward(q, k, v, scaling=scale, is_causal=causal)
    return _tg.tile_fmha(q, k, v, scaling=scale, is_causal=causal)


IMPL = KernelImpl(fn=fmha, backend="tilegym", kind="peer", dtypes=("bf16", "fp16"),
                  doc="tilegym.ops.cutile.attention: tile_fmha (fwd), tile_fmha_with_backward (fwd+bwd)")
