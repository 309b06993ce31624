"""Can cuTile kernels run here, and if not, exactly why. (The full diagnosis is `run_bench.py --doctor`.)

Also the two settings every cuTile compile in this process shares, applied once by `configure()`:
- the tileiras timeout (TILEBENCH_CUTILE_COMPILE_TIMEOUT_S, default 120 s: TileGym's 5 s silently drops
  big fmha tiles from its tuning on an H100);
- the safe self-fix for a stale CUDA_HOME: tileiras found on PATH gets CUDA_HOME passed on and loads
  that toolkit's older libnvvm ("failed to compile Tile IR program"), so the compiler runs without it.
And `parallel_compiles()`: compiles from several threads overlap (the stress battery's compiles ahead of a sweep).
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import torch

log = logging.getLogger("tilebench.cutile")

TIMEOUT_ENV = "TILEBENCH_CUTILE_COMPILE_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 120.0


@functools.lru_cache(maxsize=None)
def import_error() -> str | None:
    try:
        import cuda.tile  # noqa: F401
        return None
    except Exception as e:   # any failure while importing (a driver, a DLL) is the recorded reason
        return f"cuda.tile not importable: {type(e).__name__}: {e} (pip install 'cuda-tile[tileiras]')"


def _compiler_bin():
    """cuda.tile's own choice of compiler (private API, but it is the truth), or None."""
    try:
        from cuda.tile._compile import _find_compiler_bin
        return _find_compiler_bin()
    except (ImportError, AttributeError, OSError) as e:   # no cuda.tile, or its private API moved
        log.debug("cuda.tile's compiler lookup unavailable: %s", e)
        return None


@functools.lru_cache(maxsize=None)
def tileiras_path() -> str | None:
    """The tileiras cuda.tile will use (it prefers the pip package, then PATH, then CUDA_HOME/bin)."""
    b = _compiler_bin()
    return b.path if b is not None else shutil.which("tileiras")


def tileiras_source(path: str | None = None) -> str:
    """Where that tileiras comes from, in words: pip package, PATH or CUDA_HOME."""
    path = path or tileiras_path()
    if not path:
        return "not found"
    if "site-packages" in path or "dist-packages" in path:
        return "pip package nvidia-cuda-tileiras"
    home = _cuda_home()
    if home and os.path.dirname(path) == os.path.join(home, "bin"):
        return "CUDA_HOME/bin"
    return "PATH"


@functools.lru_cache(maxsize=None)
def tileiras_version(path: str | None = None) -> str | None:
    path = path or tileiras_path()
    if not path:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):   # not runnable: the version is unknown, doctor says so
        return None
    m = re.search(r"release (\d+\.\d+)", out) or re.search(r"V(\d+\.\d+)", out)
    return m.group(1) if m else None


def _version_tuple(v: str | None) -> tuple:
    return tuple(int(x) for x in v.split(".")[:2]) if v else ()


def _cuda_home() -> str | None:
    return os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")


def toolkit_version(home: str) -> str | None:
    """CUDA version of a toolkit folder: version.json, else nvcc --version, else the nvvm folder name."""
    try:
        with open(os.path.join(home, "version.json")) as f:
            v = json.load(f).get("cuda", {}).get("version")
            if v:
                return ".".join(v.split(".")[:2])
    except (OSError, ValueError, AttributeError):   # no or unreadable version.json: try nvcc
        pass
    nvcc = os.path.join(home, "bin", "nvcc")
    if os.path.exists(nvcc):
        try:
            out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=20).stdout
            m = re.search(r"release (\d+\.\d+)", out)
            if m:
                return m.group(1)
        except (OSError, subprocess.SubprocessError):   # try the folder name
            pass
    m = re.search(r"cuda-(\d+\.\d+)", os.path.realpath(home))
    return m.group(1) if m else None


def stale_cuda_home(home: str | None = None, tileiras: str | None = None, passes_cuda_home: bool | None = None
                    ) -> str | None:
    """CUDA_HOME/CUDA_PATH whose libnvvm is older than tileiras: a tileiras that gets it passed loads it and fails.

    cuda.tile passes CUDA_HOME to a tileiras found on PATH or in CUDA_HOME, not to the pip one."""
    home = home if home is not None else _cuda_home()
    path = tileiras if tileiras is not None else tileiras_path()
    if not home or not path or os.path.dirname(os.path.abspath(path)) == os.path.join(os.path.abspath(home), "bin"):
        return None
    if passes_cuda_home is None:
        b = _compiler_bin() if tileiras is None else None
        passes_cuda_home = b.pass_cuda_home_var if b is not None else not (
            "site-packages" in path or "dist-packages" in path)
    if not passes_cuda_home:
        return None
    home_ver = toolkit_version(home)
    tv = tileiras_version(path)
    if home_ver and tv and _version_tuple(home_ver) < _version_tuple(tv):
        return f"CUDA_HOME={home} is CUDA {home_ver}, older than tileiras {tv} ({path}): its libnvvm would be loaded"
    return None


# --- settings applied once per process ----------------------------------------------------------

_fixes: list[str] = []
_configured = False


def compile_timeout_s() -> float:
    v = os.environ.get(TIMEOUT_ENV)
    if v:
        try:
            t = float(v)
            if t > 0:
                return t
        except ValueError:
            pass
        log.warning("ignoring %s=%r (want seconds > 0)", TIMEOUT_ENV, v)
    return DEFAULT_TIMEOUT_S


def configure() -> list[str]:
    """Apply the compile timeout and the stale-CUDA_HOME fix (once); returns what was fixed."""
    global _configured
    if _configured or import_error():
        return list(_fixes)
    _configured = True
    try:
        from cuda.tile._cext import default_tile_context
        default_tile_context.config.compiler_timeout_sec = compile_timeout_s()
    except (ImportError, AttributeError) as e:  # an API change: say so, do not fail
        log.warning("could not set the cuda.tile compiler timeout: %s", e)
    stale = stale_cuda_home()
    if stale:
        b = _compiler_bin()
        if b is not None and hasattr(b, "pass_cuda_home_var"):
            b.pass_cuda_home_var = False      # only tileiras loses CUDA_HOME; the rest of the process keeps it
        else:
            for k in ("CUDA_HOME", "CUDA_PATH"):
                os.environ.pop(k, None)
        msg = f"cuTile: {stale}; running tileiras without CUDA_HOME/CUDA_PATH"
        _fixes.append(msg)
        print(msg, file=sys.stderr, flush=True)   # said once per process
    return list(_fixes)


def fixes() -> list[str]:
    return list(_fixes)


@contextlib.contextmanager
def parallel_compiles():
    """Inside, cuTile compiles from several threads overlap. cuda.tile compiles under one process-wide lock, its
    tileiras subprocess included (seconds per fmha kernel); here a thread lets go of that lock while it waits on
    its tileiras, so the other threads' front ends and their own tileiras run meanwhile. The front ends stay one at
    a time, as cuda.tile wants. Yields whether it could (a cuda.tile without these internals compiles serially)."""
    try:
        from cuda.tile import _compile as ctc
    except ImportError:
        yield False
        return
    lock, original = getattr(ctc, "_compiler_lock", None), getattr(ctc, "compile_cubin", None)
    if original is None or not all(hasattr(lock, a) for a in ("_is_owned", "_release_save", "_acquire_restore")):
        yield False
        return

    @functools.wraps(original)
    def compile_cubin(*args, **kwargs):
        if not lock._is_owned():
            return original(*args, **kwargs)
        held = lock._release_save()
        try:
            return original(*args, **kwargs)
        finally:
            lock._acquire_restore(held)
    ctc.compile_cubin = compile_cubin
    try:
        yield True
    finally:
        ctc.compile_cubin = original


# --- can it run? -------------------------------------------------------------------------------

# Lowest tileiras release that targets each architecture (cuTile began on Blackwell; Hopper and
# Ampere/Ada came with 13.3).
MIN_TILEIRAS = {"sm_80": (13, 3), "sm_86": (13, 3), "sm_89": (13, 3), "sm_90": (13, 3),
                "sm_100": (13, 1), "sm_103": (13, 1), "sm_110": (13, 1), "sm_120": (13, 1), "sm_121": (13, 1)}


def arch_of(device: str) -> str | None:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    return f"sm_{major}{minor}"


def arch_unsupported(arch: str, version: str | None = None) -> str | None:
    tv = version or tileiras_version()
    need = MIN_TILEIRAS.get(arch)
    if need is None:
        return f"GPU architecture {arch} is not a cuTile target"
    if tv and _version_tuple(tv) < need:
        return f"tileiras {tv} does not support {arch} (needs >= {need[0]}.{need[1]})"
    return None


def why_not_compilable() -> str | None:
    if import_error():
        return import_error()
    if not tileiras_path():
        return "tileiras not found (pip install 'cuda-tile[tileiras]' or put CUDA >= 13.3 bin on PATH)"
    return None


def why_not_runnable(device: str) -> str | None:
    err = why_not_compilable()
    if err:
        return err
    configure()
    if not device.startswith("cuda"):
        return "no CUDA device (cuTile kernels still compile here for any GPU: run_bench.py --static)"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    stale = None if _fixes else stale_cuda_home()
    if stale:
        return stale + " (unset CUDA_HOME, or see run_bench.py --doctor)"
    return arch_unsupported(arch_of(device))
