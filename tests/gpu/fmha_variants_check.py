"""GPU correctness of every fmha tuning variant (the presets the fmha_tune sweep times) at odd shapes: partial
tiles, a causal diagonal inside a tile, T not a multiple of 128, the model's qkv layout; bf16 and fp16,
fwd+bwd, through the harness's gate (bench.check). The sweep itself checks only GPT-2's even shape.

    PYTHONPATH=. python tests/gpu/fmha_variants_check.py      # ~1 min on an H200; exit 1 if any is wrong
"""
import sys
import time

import torch

from bench.check import check
from kernels import registry

SHAPES = [
    {"B": 2, "H": 3, "T": 37, "D": 64, "causal": True},
    {"B": 2, "H": 3, "T": 37, "D": 64, "causal": False},
    {"B": 1, "H": 2, "T": 200, "D": 64, "causal": True},
    {"B": 1, "H": 2, "T": 1000, "D": 64, "causal": True},
    {"B": 2, "H": 3, "T": 129, "D": 64, "causal": True, "qkv": True},
    {"B": 1, "H": 2, "T": 300, "D": 128, "causal": True},
]


def variants(impl_name):
    impl = registry.get("fmha", impl_name, "cuda")
    return impl, ["hopper"] + [n for n in impl.presets if n.startswith("tune_")]


def main():
    spec = registry.spec_of("fmha")
    bad = 0
    for impl_name in ("cutile", "triton"):
        impl, names = variants(impl_name)
        for name in names:
            for shape in SHAPES:
                for dtype in ("bf16", "fp16"):
                    t0 = time.time()
                    try:
                        r = check(spec, spec.wrap(impl.fn, shape), shape, dtype, "fwd+bwd", "cuda",
                                  impl.config(impl.presets[name]))
                        status, msg = ("ok" if r.ok else "WRONG"), r.message
                    except registry.Unsupported as e:
                        status, msg = "unsupported", str(e)
                    except Exception as e:   # reported per point; the rest still run
                        status, msg = "ERROR", f"{type(e).__name__}: {str(e)[:300]}"
                    torch.cuda.synchronize()
                    bad += status in ("WRONG", "ERROR")
                    print(f"{impl_name:7s} {name:20s} {spec.label(shape):34s} {dtype} {status:11s} "
                          f"{time.time() - t0:5.1f}s {msg[:160]}", flush=True)
    print(f"{bad} wrong or failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
