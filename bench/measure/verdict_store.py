"""Stress-battery verdicts kept across runs of the same code on the same toolchain and GPU.

A first look on a cold GPU pays the battery's compiles at its new sizes (docs/measuring.md); a second run of the
same code has nothing new to learn from them. A verdict is kept under a fingerprint of everything that could change
it: the content of every file under kernels/ and of the gate's files (bench/measure), the versions of Python,
torch, Triton, cuda-tile, tileiras, cuBLAS, cuDNN and the peers (and their installed files' sizes and times, for an
editable install), the GPU, its SM count and driver, the settings that steer kernels (TILEBENCH_*, TRITON_*,
TORCHINDUCTOR_*, CUDA_TILE_*, ...) and the run's seed. Change any of them and every case is judged again.

Only impls the registry loads from kernels/ itself are kept: a plugin's, a test's or a zoo member's code lives in
files the fingerprint does not read. A file under kernels/ or of the gate written after this process started (an
edit during a run: the code in memory may not be the code on disk) turns the store off for the run: nothing is
taken, nothing is written. Verdicts are written when the run ends.

Kept: `ok`, `declined` and `wrong` (facts about the code). Not kept: `error`, `oom`, `compile_error`, which may
belong to the moment (a full GPU, a busy disk). Rows count what they took from here (`stress_kept`).

Where: TILEBENCH_VERDICTS (a folder, or `off`), else $XDG_CACHE_HOME/tilebench/verdicts (~/.cache/...). One JSON
line per verdict in <fingerprint>.jsonl; a line cut by a crash is skipped; files unused for 30 days are deleted.
`--fresh-verdicts` judges every case again and keeps the new verdicts; deleting the folder forgets them all."""
from __future__ import annotations

import functools
import glob
import hashlib
import importlib.util
import json
import os
import sys
import time

import torch

import bench
from bench.measure import devinfo
from kernels import peers_env, registry

KEPT_STATUSES = ("ok", "declined", "wrong")
# the gate, the battery and the runner that hands them seeds, configs and the interpreter flag
_HARNESS = ("bench/measure/check.py", "bench/measure/stress.py", "bench/measure/tunecap.py",
            "bench/measure/outcome.py", "bench/measure/runner.py", "bench/measure/verdict_store.py")
_PACKAGES = ("tilegym", "liger-kernel", "liger_kernel", "nvidia-cublas-cu12", "nvidia-cublas-cu13", "nvidia-cublas",
             "nvidia-cudnn-cu12", "nvidia-cudnn-cu13", "nvidia-cudnn")
_PEER_MODULES = ("tilegym", "liger_kernel")
_DEVICE_COLUMNS = ("python", "torch", "triton", "cuda_tile", "tileiras", "cuda_runtime", "device_name",
                   "compute_capability", "sm_count", "driver")
_ENV_PREFIXES = ("TILEBENCH_", "TRITON_", "TORCHINDUCTOR_", "TORCH_", "PYTORCH_", "CUDA_TILE_", "CUBLAS", "CUDNN",
                 "NVIDIA_TF32_OVERRIDE")
_ENV_NOT = ("TILEBENCH_VERDICTS", "TILEBENCH_GIT_COMMIT")
UNUSED_DAYS = 30


def folder() -> str | None:
    """The store's folder, or None where TILEBENCH_VERDICTS is `off`."""
    env = os.environ.get("TILEBENCH_VERDICTS", "")
    if env.lower() == "off":
        return None
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "tilebench", "verdicts")


def _file_digest(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return "unreadable"


def _source_files() -> list[str]:
    root = bench.SOURCE_ROOT
    out = [os.path.join(root, p) for p in _HARNESS]
    for d, dirs, files in os.walk(os.path.join(root, "kernels")):
        dirs[:] = sorted(x for x in dirs if x != "__pycache__")
        out += [os.path.join(d, f) for f in sorted(files) if f.endswith(".py")]
    return out


def _tree_stamp(root: str | None) -> str | None:
    """Size and mtime of each .py under a peer's files (its version does not move with an edit)."""
    if not root or not os.path.isdir(root):
        return None
    h = hashlib.sha256()
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith((".", "__pycache__")))
        for f in sorted(files):
            if f.endswith(".py"):
                try:
                    st = os.stat(os.path.join(d, f))
                except OSError:   # a broken link
                    continue
                h.update(f"{os.path.relpath(os.path.join(d, f), root)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _module_dir(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return os.path.dirname(spec.origin) if spec and spec.origin else None


def fingerprint(device: str, seed: int) -> str:
    info = devinfo.static_info(device)
    driver = getattr(torch._C, "_cuda_getDriverVersion", None)
    parts = {
        "device": {k: info.get(k) for k in _DEVICE_COLUMNS},
        "cuda_driver": driver() if driver and device.startswith("cuda") else None,
        "packages": {p: devinfo.package_version(p) for p in _PACKAGES},
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "peer_files": {m: _tree_stamp(_module_dir(m)) for m in _PEER_MODULES},
        "tilegym_checkout": _tree_stamp(os.environ.get(peers_env.TILEGYM_PATH_ENV)),
        "env": {k: v for k, v in sorted(os.environ.items())
                if k.startswith(_ENV_PREFIXES) and k not in _ENV_NOT and not k.endswith("_CACHE_DIR")},
        "seed": seed,
        "source": {os.path.relpath(p, bench.SOURCE_ROOT): _file_digest(p) for p in _source_files()},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def process_start() -> float:
    """When this process started (Linux), else when the harness was imported: any source file written later may
    differ from the code this process runs."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rpartition(")")[2].split()[19])   # field 22: start, in clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age - 0.05   # a tick is 10 ms
    except (OSError, ValueError, IndexError, AttributeError):
        return bench.IMPORTED_AT


def edited_since(t: float) -> list[str]:
    out = []
    for p in _source_files():
        try:
            if os.stat(p).st_mtime > t:
                out.append(os.path.relpath(p, bench.SOURCE_ROOT))
        except OSError:
            continue
    return out


@functools.lru_cache(maxsize=None)
def keepable(op: str, name: str) -> bool:
    """Whether (op, impl)'s code is all in files the fingerprint reads: an impl the registry loads from kernels/."""
    try:
        ref = registry.op_package(op).IMPLS.get(name)
    except (KeyError, ImportError):
        return False
    if not isinstance(ref, str) or not ref.startswith("kernels."):
        return False
    mod_dir = _module_dir(ref.partition(":")[0])
    inside = os.path.join(bench.SOURCE_ROOT, "kernels") + os.sep
    return bool(mod_dir) and (os.path.abspath(mod_dir) + os.sep).startswith(inside)


class Store:
    """The verdicts of one fingerprint: read when opened, new ones written by close()."""

    def __init__(self, root: str, device: str, seed: int, read: bool = True):
        self.started = process_start()
        self.path = os.path.join(root, fingerprint(device, seed) + ".jsonl")
        self.kept: dict[str, dict] = {}
        self.new: list[dict] = []
        edited = edited_since(self.started)
        self.off = bool(edited)
        if edited:
            print(f"stress verdicts: {', '.join(edited[:3])}{' ...' if len(edited) > 3 else ''} changed while "
                  "this process ran; every case is judged and none is kept", file=sys.stderr)
        elif read:
            self.kept = _read(self.path)
            _prune(root)

    def key(self, case_key: str, op: str, name: str) -> str | None:
        if self.off or not keepable(op, name):
            return None
        return hashlib.sha256(case_key.encode()).hexdigest()

    def get(self, key: str | None) -> dict | None:
        return self.kept.get(key) if key else None

    def put(self, key: str | None, verdict: dict) -> None:
        if key is None or verdict["status"] not in KEPT_STATUSES:
            return
        self.new.append({"key": key, **{k: v for k, v in verdict.items() if k != "kept"},
                         "judged": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "git_commit": devinfo.git_commit()})

    def close(self) -> None:
        """Write the run's new verdicts, unless a source file changed since the process started."""
        new, self.new = self.new, []
        if not new or self.off or edited_since(self.started):
            return
        data = "".join(json.dumps(e, default=str) + "\n" for e in new).encode()
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)   # one append: another process's block lands before or after it
            finally:
                os.close(fd)
        except OSError:   # a read-only home costs the next run its shortcut, nothing else
            return


def _read(path: str) -> dict[str, dict]:
    kept = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                    kept[entry["key"]] = entry
                except (ValueError, KeyError, TypeError):   # a line a crash cut short: judged again
                    continue
    except OSError:
        return {}
    if kept:
        try:
            os.utime(path)   # in use: not pruned
        except OSError:
            pass
    return kept


def _prune(root: str) -> None:
    cutoff = time.time() - UNUSED_DAYS * 86400
    for p in glob.glob(os.path.join(root, "*.jsonl")):
        try:
            if os.stat(p).st_mtime < cutoff:
                os.remove(p)
        except OSError:
            continue


def open_store(root: str | None, device: str, seed: int, fresh: bool = False) -> Store | None:
    return Store(root, device, seed, read=not fresh) if root else None
