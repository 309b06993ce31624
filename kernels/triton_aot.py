"""The Triton adapter of kernels/aot.py: the interpreter, cached per-arch configs, an autotuner timing
with triton.testing.do_bench, and ahead-of-time compilation for a GPU we do not have (triton.compile
with a GPUTarget)."""
from __future__ import annotations

import torch

from kernels import aot
from kernels.aot import ARCHS, cdiv, family, fill, pow2, unique, unsupported  # noqa: F401  (the kernel modules' names)
from kernels.backends import interpreting

OFF_GPU_ARCH, OFF_GPU_SMS = "sm_80", 4   # the interpreter (CPU) runs the sm_80 presets with 4 "SMs"


def arch_of(t: torch.Tensor) -> str:
    """The arch a tensor's kernels will run on; the interpreter (CPU) counts as sm_80."""
    return OFF_GPU_ARCH if interpreting() else aot.device_arch(t, OFF_GPU_ARCH)


def sm_count(t: torch.Tensor) -> int:
    return OFF_GPU_SMS if interpreting() else aot.device_sm_count(t, OFF_GPU_SMS)


def needs_grad(*ts) -> bool:
    """Whether autograd will want a backward: if not, the impls skip the autograd.Function (and its
    saved tensors) and launch the forward kernel directly, since launch overhead is the cost at small shapes."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


class Configs:
    """Resolved tile configs, cached on (arch, shape class, requested overrides): resolving per call
    is pure Python overhead on every launch."""

    def __init__(self, params, preset_for):
        self.names = tuple(p.name for p in params)
        self.preset_for = preset_for      # (arch, key) -> preset dict
        self.cache = {}

    def get(self, arch, key, cfg: dict) -> dict:
        k = (arch, key, tuple(sorted(cfg.items())))
        hit = self.cache.get(k)
        if hit is None:
            hit = self.cache[k] = fill({**{n: None for n in self.names}, **cfg}, self.preset_for(arch, key))
        return hit


def _do_bench(fn) -> float:
    import triton.testing
    return triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median")


class Tuner(aot.Tuner):
    """choose(key, candidates, run): times run(cfg) per candidate (`bench`, do_bench by default) and keeps
    the fastest. A candidate that does not compile or launch on this GPU (shared memory, registers) is
    rejected with its status. Under the interpreter the first candidate is taken: timings there mean nothing."""

    def __init__(self, bench=_do_bench):
        super().__init__()
        self.bench = bench

    def _search(self, key, candidates, run):
        if interpreting():
            return candidates[0]
        from triton.compiler.errors import CompilationError
        from triton.runtime.errors import OutOfResources
        timed = []
        for cfg in candidates:
            try:
                timed.append((self.bench(lambda: run(cfg)), cfg))
            except (OutOfResources, CompilationError, RuntimeError) as e:   # RuntimeError: a failed launch
                self.reject(key, cfg, type(e).__name__, str(e))
        return min(timed, key=lambda x: x[0])[1] if timed else candidates[0]


def compile_kernel(kernel, name: str, signature: dict, constexprs: dict, arch: str,
                   num_warps: int = 4, num_stages: int = 3, not_divisible: tuple = ()) -> dict:
    """Compile one @triton.jit kernel for `arch` with no GPU; a failure is a status, never an exception.

    signature maps each runtime argument to its Triton type ("*bf16", "i32", "fp32"); constexprs gives
    the compile-time values. Pointers and integers are marked divisible by 16, as the JIT specialises
    them at GPT-2 shapes (without it there are no async copies, so no software pipelining), except the
    names in not_divisible. spills is the local memory per thread ptxas left (Triton kernels keep no
    local arrays, so that is spill space)."""
    r = aot.row(name, arch, num_warps=num_warps, num_stages=num_stages)
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        sig, attrs = {}, {}
        for i, a in enumerate(kernel.arg_names):
            sig[a] = "constexpr" if a in constexprs else signature[a]
            if a not in constexprs and a not in not_divisible and sig[a][0] in "*i":
                attrs[(i,)] = [["tt.divisibility", 16]]
        src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=dict(constexprs), attrs=attrs)
        target = GPUTarget("cuda", int(arch.split("_")[1]), 32)
        compiled = aot.timed(r, lambda: triton.compile(src, target=target, options={
            "num_warps": num_warps, "num_stages": num_stages, "enable_fp_fusion": True}))
    except Exception as e:   # any compiler failure (MLIR passes raise plain RuntimeError/IndexError...): a status
        return aot.error_row(r, e)
    cubin = compiled.asm.get("cubin")
    r["cubin_bytes"] = len(cubin) if cubin else None
    if cubin:
        usage = aot.resource_usage(cubin)
        r.update({k: v for k, v in usage.items() if k != "smem_bytes"})
    r["smem_bytes"] = getattr(compiled.metadata, "shared", None)   # Triton's shared memory is dynamic: cuobjdump shows 0
    return aot.check_smem(r)
