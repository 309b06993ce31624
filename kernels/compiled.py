"""torch.compile of an op's eager function: the peer every kernel is measured against."""
import os

import torch

from kernels.registry import KernelImpl


def compiled_impl(eager_fn, **kw) -> KernelImpl:
    cache = {}

    def fn(*args, **kwargs):
        if "f" not in cache:
            cache["f"] = torch.compile(eager_fn, dynamic=False)
        return cache["f"](*args, **kwargs)

    def available(device):
        if not device.startswith("cuda") and os.environ.get("TILEBENCH_COMPILE_ON_CPU") != "1":
            return "timed on CUDA only: inductor's CPU build time dwarfs the op (TILEBENCH_COMPILE_ON_CPU=1 forces it)"
        return None

    return KernelImpl(fn=fn, backend="compile", kind="peer", available=available,
                      doc="torch.compile(eager), first call's compile time reported apart", **kw)
