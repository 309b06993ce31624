"""TileGym's cuTile LayerNorm (tilegym.ops.cutile.layer_norm_legacy) as a peer, forward only (its
backward raises NotImplementedError). `variant` picks the kernel: "legacy" (layer_norm_legacy: one row
per block, gathers) or "persistent" (persistent_layer_norm: TMA row tiles, autotuned, bf16 output)."""
import torch

from kernels import peers_env
from kernels.layer_norm.spec import EPS
from kernels.registry import KernelImpl, TileParam, Unsupported

peers_env.tilegym_import_error()
from tilegym.ops.cutile import layer_norm_legacy as _tg  # noqa: E402


def layer_norm(x, weight, bias, eps=EPS, variant="legacy"):
    C = x.shape[-1]
    if variant == "persistent":
        if x.dtype != torch.bfloat16:
            raise Unsupported("TileGym persistent_layer_norm writes bf16 only")
        y = _tg.persistent_layer_norm(x.reshape(-1, C), (C,), weight, bias, eps)[0]
        return y.view(x.shape)
    return _tg.layer_norm_legacy(x.reshape(-1, C), (C,), weight, bias, eps).view(x.shape)


IMPL = KernelImpl(fn=layer_norm, backend="tilegym", kind="peer", passes=("fwd",), dtypes=("bf16", "fp16", "fp32"),
                  params=(TileParam("variant", str, "legacy", ("legacy", "persistent"),
                                    "layer_norm_legacy or persistent_layer_norm"),),
                  doc="tilegym.ops.cutile.layer_norm_legacy (forward only)")
