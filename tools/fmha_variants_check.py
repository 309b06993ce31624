"""GPU correctness of every fmha tuning variant (the presets the fmha_tune sweep times) at odd shapes: partial
tiles, a causal diagonal inside a tile, T not a multiple of 128, the model's qkv layout; bf16 (fp16 with
--fp16), fwd+bwd, through the harness's gate (bench.measure.check). The sweep itself checks only GPT-2's even shape.

    PYTHONPATH=. python tools/fmha_variants_check.py      # ~1 min on an H200; exit 1 if any is wrong
    TRITON_INTERPRET=1 PYTHONPATH=. python tools/fmha_variants_check.py --device cpu --impl triton --short
"""
import argparse
import sys
import time

import torch

from bench.measure.check import check
from kernels import registry

SHAPES = [
    {"B": 2, "H": 3, "T": 37, "D": 64, "causal": True},
    {"B": 2, "H": 3, "T": 37, "D": 64, "causal": False},
    {"B": 1, "H": 2, "T": 200, "D": 64, "causal": True},
    {"B": 1, "H": 2, "T": 1000, "D": 64, "causal": True},
    {"B": 2, "H": 3, "T": 129, "D": 64, "causal": True, "qkv": True},
]


def variants(impl_name, device):
    impl = registry.get("fmha", impl_name, device)
    return impl, ["hopper"] + list(impl.tuning)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--impl", action="append", choices=("cutile", "triton"))
    ap.add_argument("--short", action="store_true", help="the first two shapes only (the CPU interpreter)")
    ap.add_argument("--fp16", action="store_true", help="fp16 too (each dtype compiles its own kernels)")
    args = ap.parse_args(argv)
    spec = registry.spec_of("fmha")
    bad = 0
    for impl_name in args.impl or ("cutile", "triton"):
        impl, names = variants(impl_name, args.device)
        for name in names:
            for shape in SHAPES[:2] if args.short else SHAPES:
                for dtype in ("bf16", "fp16") if args.fp16 else ("bf16",):
                    t0 = time.time()
                    try:
                        r = check(spec, spec.wrap(impl.fn, shape), shape, dtype, "fwd+bwd", args.device,
                                  impl.config(impl.named(name)))
                        status, msg = ("ok" if r.ok else "WRONG"), r.message
                    except registry.Unsupported as e:
                        status, msg = "unsupported", str(e)
                    except Exception as e:   # reported per point; the rest still run
                        status, msg = "ERROR", f"{type(e).__name__}: {str(e)[:300]}"
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    bad += status in ("WRONG", "ERROR")
                    print(f"{impl_name:7s} {name:20s} {spec.label(shape):34s} {dtype} {status:11s} "
                          f"{time.time() - t0:5.1f}s {msg[:160]}", flush=True)
    print(f"{bad} wrong or failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
