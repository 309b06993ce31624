"""Shared plumbing for the cuTile impls: per-generation presets, hinted-kernel caching, the tuner,
and ahead-of-time compilation for a GPU we do not have (cuda.tile.compilation.export_kernel)."""
from __future__ import annotations

import contextlib
import functools
import io
import os
import subprocess
import tempfile
import time

import torch

from kernels import cutile_env

ARCHS = ("sm_80", "sm_89", "sm_90", "sm_100", "sm_120")

# Which preset a generation uses. sm_89 and sm_120 have ~100 KB of shared memory per SM ("consumer");
# sm_80 164 KB, sm_90 and sm_100 227 KB.
FAMILY = {"sm_80": "ampere", "sm_86": "consumer", "sm_89": "consumer", "sm_90": "hopper",
          "sm_100": "blackwell", "sm_103": "blackwell", "sm_110": "blackwell", "sm_120": "consumer",
          "sm_121": "consumer"}


def family(arch: str) -> str:
    if arch in FAMILY:
        return FAMILY[arch]
    major = int(arch[3:]) // 10
    return "blackwell" if major >= 10 else "hopper" if major == 9 else "ampere"


@functools.lru_cache(maxsize=None)
def _device_arch(index: int) -> str:
    major, minor = torch.cuda.get_device_capability(index)
    return f"sm_{major}{minor}"


def arch_of(t: torch.Tensor) -> str:
    return _device_arch(t.device.index or 0) if t.device.type == "cuda" else "sm_90"


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(t: torch.Tensor) -> int:
    return _sm_count(t.device.index or 0) if t.device.type == "cuda" else 132


def fill(cfg: dict, preset: dict) -> dict:
    """The config with every None (choose per arch) taken from the preset; the autotune flag dropped."""
    out = {k: (preset[k] if v is None and k in preset else v) for k, v in cfg.items() if k != "autotune"}
    for k, v in preset.items():
        out.setdefault(k, v)
    return out


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


# --- compile hints ---------------------------------------------------------------------------------

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
        k = _HINTED[key] = kernel.replace_hints(**hints)
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


class Tuner:
    """Autotune mode: cuda.tile.tune.exhaustive_search over candidate configs once per shape key;
    remembers the pick (picked() reports the config the last call used)."""

    def __init__(self):
        self.best: dict = {}
        self.last: dict = {}
        self.results: dict = {}

    def choose(self, key, candidates: list[dict], grid_fn, kernel_fn, args_fn, hints_fn) -> dict:
        if key not in self.best:
            import cuda.tile as ct
            from cuda.tile.tune import exhaustive_search
            cutile_env.configure()
            if len(candidates) == 1:
                self.best[key] = candidates[0]
            else:
                try:
                    res = exhaustive_search(candidates, torch.cuda.current_stream(), grid_fn, kernel_fn, args_fn,
                                            hints_fn, quiet=True)
                    self.best[key] = dict(res.best.config)
                    self.results[key] = res
                except ValueError:          # nothing compiled or launched: keep the preset
                    self.best[key] = candidates[0]
        self.last = dict(self.best[key])
        return self.best[key]

    def note(self, cfg: dict):
        self.last = dict(cfg)

    def picked(self) -> dict:
        return dict(self.last)


def unique(cfgs: list[dict]) -> list[dict]:
    seen, out = set(), []
    for c in cfgs:
        key = tuple(sorted(c.items()))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


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


def _resource_usage(cubin: bytes) -> dict:
    """registers, shared memory and local (spill) bytes per thread as cuobjdump reads them; {} if it cannot."""
    tool = cutile_env.cuobjdump_path()
    if tool is None:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True,
                                 timeout=60).stdout
        except Exception:
            return {}
    got = {}
    for tok in out.split():
        for key, name in (("REG:", "registers"), ("SHARED:", "smem_bytes"), ("LOCAL:", "spills")):
            if tok.startswith(key):
                try:
                    got[name] = max(got.get(name, 0), int(tok[len(key):]))
                except ValueError:
                    pass
    return got


def _error_row(row: dict, e: BaseException) -> dict:
    lines = [ln for ln in str(getattr(e, "message", None) or e).strip().splitlines() if ln.strip()]
    name = type(e).__name__
    row["status"] = "compile_error"
    if "Timeout" in name:
        row["message"] = f"{name}: tileiras exceeded {cutile_env.compile_timeout_s():g} s " \
                         f"(raise {cutile_env.TIMEOUT_ENV})"
    else:
        row["message"] = f"{name}: {lines[0] if lines else ''}"[:300]
    return row


def compile_kernel(kernel, name: str, params: list, arch: str, hints: dict | None = None) -> dict:
    """Compile one @ct.kernel for `arch` with no GPU; a failure is a status, never an exception.

    params gives one constraint per kernel parameter: array(...)/scalar(...) for runtime values,
    plain Python values for ct.Constant parameters."""
    row = {"kernel": name, "arch": arch, "status": "ok", "message": "", "compile_s": None,
           "cubin_bytes": None, "registers": None, "smem_bytes": None, "spills": None}
    why = cutile_env.why_not_compilable()
    if why:
        return {**row, "status": "unsupported", "message": why}
    too_old = cutile_env.arch_unsupported(arch)
    if too_old:
        return {**row, "status": "unsupported", "message": too_old}
    try:
        from cuda.tile.compilation import CallingConvention, KernelSignature, export_kernel
        cutile_env.configure()
        cc = CallingConvention.cutile_python_v1
        cc = cc() if callable(cc) else cc
        sig = KernelSignature(list(params), cc)
        k = hinted(kernel, **(hints or {}))
        buf = io.BytesIO()
        with _no_disk_cache():
            t0 = time.perf_counter()
            export_kernel(k, [sig], buf, gpu_code=arch, output_format="cubin")
            row["compile_s"] = round(time.perf_counter() - t0, 3)
        cubin = buf.getvalue()
        row["cubin_bytes"] = len(cubin)
        row.update(_resource_usage(cubin))
    except Exception as e:
        return _error_row(row, e)
    return row


def unsupported(name: str, arch: str, why: str) -> dict:
    return {"kernel": name, "arch": arch, "status": "unsupported", "message": why, "compile_s": None,
            "cubin_bytes": None, "registers": None, "smem_bytes": None, "spills": None}


@contextlib.contextmanager
def _no_disk_cache():
    """Bypass cuda.tile's on-disk cubin cache so compile_s measures the compiler, not a cache hit
    (TILEBENCH_CUTILE_AOT_CACHE=1 keeps it, for quick repeated runs)."""
    cfg = None
    if os.environ.get("TILEBENCH_CUTILE_AOT_CACHE", "0") in ("", "0"):
        try:
            from cuda.tile._cext import default_tile_context
            cfg = default_tile_context.config
        except Exception:
            cfg = None
    old = cfg.cache_dir if cfg is not None else None
    if cfg is not None:
        cfg.cache_dir = None
    try:
        yield
    finally:
        if cfg is not None:
            cfg.cache_dir = old
