"""Can cuTile kernels run here, and if not, exactly why. (The full diagnosis is `run_bench.py --doctor`.)"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

import torch


@functools.lru_cache(maxsize=None)
def import_error() -> str | None:
    try:
        import cuda.tile  # noqa: F401
        return None
    except Exception as e:
        return f"cuda.tile not importable: {type(e).__name__}: {e} (pip install 'cuda-tile[tileiras]')"


@functools.lru_cache(maxsize=None)
def tileiras_path() -> str | None:
    """The tileiras cuda.tile will use (it prefers the pip package, then PATH, then CUDA_HOME/bin)."""
    try:
        from cuda.tile._compile import _find_compiler_bin  # private, but it is the truth
        return _find_compiler_bin().path
    except Exception:
        return shutil.which("tileiras")


@functools.lru_cache(maxsize=None)
def tileiras_version(path: str | None = None) -> str | None:
    path = path or tileiras_path()
    if not path:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20).stdout
    except Exception:
        return None
    m = re.search(r"release (\d+\.\d+)", out) or re.search(r"V(\d+\.\d+)", out)
    return m.group(1) if m else None


def _version_tuple(v: str | None) -> tuple:
    return tuple(int(x) for x in v.split(".")[:2]) if v else ()


def stale_cuda_home() -> str | None:
    """CUDA_HOME/CUDA_PATH whose libnvvm is older than tileiras: tileiras from PATH would load it and fail."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    path = tileiras_path()
    if not home or not path or os.path.dirname(path) == os.path.join(home, "bin"):
        return None
    if "site-packages" in path:  # cuda.tile drops CUDA_HOME for the pip tileiras itself
        return None
    home_ver = None
    try:
        out = subprocess.run([os.path.join(home, "bin", "nvcc"), "--version"], capture_output=True, text=True, timeout=20).stdout
        m = re.search(r"release (\d+\.\d+)", out)
        home_ver = m.group(1) if m else None
    except Exception:
        pass
    tv = tileiras_version(path)
    if home_ver and tv and _version_tuple(home_ver) < _version_tuple(tv):
        return f"CUDA_HOME={home} is CUDA {home_ver}, older than tileiras {tv}: its libnvvm would be loaded"
    return None


# Lowest tileiras release that targets each architecture (cuTile began on Blackwell; Hopper and
# Ampere/Ada came with 13.3).
MIN_TILEIRAS = {"sm_80": (13, 3), "sm_86": (13, 3), "sm_89": (13, 3), "sm_90": (13, 3),
                "sm_100": (13, 1), "sm_103": (13, 1), "sm_110": (13, 1), "sm_120": (13, 1), "sm_121": (13, 1)}


def arch_of(device: str) -> str | None:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(torch.device(device))
    return f"sm_{major}{minor}"


def arch_unsupported(arch: str) -> str | None:
    tv = tileiras_version()
    need = MIN_TILEIRAS.get(arch)
    if need is None:
        return f"GPU architecture {arch} is not a cuTile target"
    if tv and _version_tuple(tv) < need:
        return f"tileiras {tv} does not support {arch} (needs >= {need[0]}.{need[1]})"
    return None


def why_not_compilable() -> str | None:
    return import_error() or (None if tileiras_path() else "tileiras not found (pip install 'cuda-tile[tileiras]' or put CUDA >= 13.3 bin on PATH)")


def why_not_runnable(device: str) -> str | None:
    err = why_not_compilable()
    if err:
        return err
    if not device.startswith("cuda"):
        return "no CUDA device (cuTile kernels still compile here for any GPU: run_bench.py --static)"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    stale = stale_cuda_home()
    if stale:
        return stale + " (unset CUDA_HOME, or see run_bench.py --doctor)"
    return arch_unsupported(arch_of(device))
