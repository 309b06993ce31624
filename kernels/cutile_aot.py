"""The cuTile adapter of kernels/aot.py: hinted-kernel caching, the launch, an autotuner on
cuda.tile.tune.exhaustive_search, and ahead-of-time compilation for a GPU we do not have
(cuda.tile.compilation.export_kernel)."""
from __future__ import annotations

import contextlib
import io
import os

import torch

from kernels import aot, cutile_env
from kernels.aot import ARCHS, cdiv, family, fill, next_pow2, unique  # noqa: F401  (the kernel modules' names)

# Off a GPU (the CPU tests of the host plumbing, kernels stood in for) the impls plan for an H100.
OFF_GPU_ARCH, OFF_GPU_SMS = "sm_90", 132


def arch_of(t: torch.Tensor) -> str:
    return aot.device_arch(t, OFF_GPU_ARCH)


def sm_count(t: torch.Tensor) -> int:
    return aot.device_sm_count(t, OFF_GPU_SMS)


def rows2d(t: torch.Tensor, C: int) -> torch.Tensor:
    """t as (rows, C) with unit column stride and a row stride of whole 8 elements, as the row-wise kernels
    load it (TMA included): a view where it can be, a copy where it must."""
    t2 = t.reshape(-1, C)
    return t2 if t2.stride(-1) == 1 and t2.stride(0) % 8 == 0 else t2.contiguous()


# --- compile hints and the launch ------------------------------------------------------------------

_HINTED: dict = {}


def hinted(kernel, occupancy=None, num_ctas=None, num_worker_warps=None):
    """kernel.replace_hints(...) cached: each hinted kernel has its own JIT cache, so keep one per hint set."""
    hints = {k: v for k, v in (("occupancy", occupancy), ("num_ctas", num_ctas),
                                ("num_worker_warps", num_worker_warps)) if v}
    if not hints:
        return kernel
    key = (id(kernel), tuple(sorted(hints.items())))
    k = _HINTED.get(key)
    if k is None:
        k = _HINTED.setdefault(key, kernel.replace_hints(**hints))   # threads (the battery's prewarm) share one
    return k


_RAW_STREAM = [True]   # ct.launch takes the raw cudaStream_t; flipped off once if this cuda-tile refuses it


def _stream():
    # torch.cuda.current_stream() builds a Python Stream object per call, tens of microseconds of host
    # time per launch on our H100 machine; the raw handle is one C call
    if _RAW_STREAM[0]:
        return torch._C._cuda_getCurrentRawStream(torch.cuda.current_device())
    return torch.cuda.current_stream()


def launch(kernel, grid, args, **hints):
    import cuda.tile as ct
    cutile_env.configure()
    grid, k, args = tuple(int(g) for g in grid), hinted(kernel, **hints), tuple(args)
    if _RAW_STREAM[0] is True:   # first launch: find out whether this cuda-tile takes the raw handle
        try:
            ct.launch(_stream(), grid, k, args)
            _RAW_STREAM[0] = "yes"
            return
        except TypeError:   # this cuda-tile wants a Stream object; any other error is the kernel's own
            _RAW_STREAM[0] = False
    ct.launch(_stream(), grid, k, args)


class Tuner(aot.Tuner):
    """choose(key, candidates, grid_fn, kernel_fn, args_fn, hints_fn): cuda.tile.tune.exhaustive_search
    over the candidates; the ones it could not compile or launch are kept in `rejected[key]`."""

    def __init__(self):
        super().__init__()
        self.results: dict = {}

    def _search(self, key, candidates, grid_fn, kernel_fn, args_fn, hints_fn):
        from cuda.tile.tune import exhaustive_search
        # the harness caps peers' searches (bench/measure/tunecap.py), never this one: its answer is cached per shape
        exhaustive_search = getattr(exhaustive_search, "__wrapped__", exhaustive_search)
        cutile_env.configure()
        try:
            res = exhaustive_search(candidates, torch.cuda.current_stream(), grid_fn, kernel_fn, args_fn,
                                    hints_fn, quiet=True)
        except ValueError as e:          # nothing compiled or launched: keep the preset, say why
            self.reject(key, candidates[0], "ValueError", f"no candidate ran; {e}")
            return candidates[0]
        self.results[key] = res
        for cfg, exc_type, message in res.failures:
            self.reject(key, cfg, exc_type.__name__, message)
        return dict(res.best.config)


# --- ahead-of-time compilation ---------------------------------------------------------------------

def array(dtype: str | object, ndim: int, contiguous: bool = True, index64: bool = False):
    """An ArrayConstraint as the JIT would derive it for a fresh, aligned torch tensor (no aliasing)."""
    import cuda.tile as ct
    from cuda.tile.compilation import ArrayConstraint
    names = {"bf16": ct.bfloat16, "fp16": ct.float16, "fp32": ct.float32, "i64": ct.int64, "i32": ct.int32}
    dt = names.get(dtype, dtype)
    return ArrayConstraint(dt, ndim, index_dtype=ct.int64 if index64 else ct.int32, stride_lower_bound_incl=0,
                           alias_groups=(), may_alias_internally=False,
                           stride_constant=((None,) * (ndim - 1) + (1,)) if contiguous and ndim else None,
                           stride_divisible_by=((8,) * (ndim - 1) + (1,)) if ndim else 1,
                           base_addr_divisible_by=16)


def scalar(dtype: str = "fp32"):
    import cuda.tile as ct
    from cuda.tile.compilation import ScalarConstraint
    return ScalarConstraint({"fp32": ct.float32, "i32": ct.int32, "i64": ct.int64}[dtype])


def compile_kernel(kernel, name: str, params: list, arch: str, hints: dict | None = None) -> dict:
    """Compile one @ct.kernel for `arch` with no GPU; a failure is a status, never an exception.

    params gives one constraint per kernel parameter: array(...)/scalar(...) for runtime values,
    plain Python values for ct.Constant parameters."""
    why = cutile_env.why_not_compilable() or cutile_env.arch_unsupported(arch)
    if why:
        return aot.unsupported(name, arch, why)
    r = aot.row(name, arch)
    try:
        from cuda.tile.compilation import CallingConvention, KernelSignature, export_kernel
        cutile_env.configure()
        cc = CallingConvention.cutile_python_v1
        cc = cc() if callable(cc) else cc
        sig = KernelSignature(list(params), cc)
        k = hinted(kernel, **(hints or {}))
        buf = io.BytesIO()
        with _no_disk_cache():
            aot.timed(r, lambda: export_kernel(k, [sig], buf, gpu_code=arch, output_format="cubin"))
    except Exception as e:   # tileiras and cuda.tile raise many types (TileCompilerError, Timeout, TypeError): a status
        timeout = f"{type(e).__name__}: tileiras exceeded {cutile_env.compile_timeout_s():g} s " \
                  f"(raise {cutile_env.TIMEOUT_ENV})" if "Timeout" in type(e).__name__ else None
        return aot.error_row(r, e, timeout)
    cubin = buf.getvalue()
    r["cubin_bytes"] = len(cubin)
    r.update(aot.resource_usage(cubin))
    return r


@contextlib.contextmanager
def _no_disk_cache():
    """Bypass cuda.tile's on-disk cubin cache so compile_s measures the compiler, not a cache hit
    (TILEBENCH_CUTILE_AOT_CACHE=1 keeps it, for quick repeated runs)."""
    cfg = None
    if os.environ.get("TILEBENCH_CUTILE_AOT_CACHE", "0") in ("", "0"):
        try:
            from cuda.tile._cext import default_tile_context
            cfg = default_tile_context.config
        except (ImportError, AttributeError) as e:   # private API moved: compile_s may then be a cache hit
            cutile_env.log.warning("cannot bypass the cuda.tile disk cache (%s): compile_s may be a cache hit", e)
    old = cfg.cache_dir if cfg is not None else None
    if cfg is not None:
        cfg.cache_dir = None
    try:
        yield
    finally:
        if cfg is not None:
            cfg.cache_dir = old
