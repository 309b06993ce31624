"""Stress-battery verdicts kept across runs of the same code on the same toolchain and GPU.

A first look on a cold GPU pays the battery's compiles at its new sizes (docs/measuring.md); a second run of the
same code has nothing new to learn from them. A verdict is kept under a fingerprint of everything that could change
it: the content of every file under kernels/ and bench/measure/ (the gate and the battery), the versions of Python,
torch, Triton, cuda-tile, tileiras, cuBLAS, cuDNN and the peers (and their installed files' sizes and times, for an
editable install), the GPU, its SM count and driver, the settings that steer kernels (TILEBENCH_*, TRITON_*,
TORCHINDUCTOR_*, CUDA_TILE_*, ...) and the run's seed. Change any of them and every case is judged again.

Only impls the registry loads from kernels/ itself are kept: a plugin's, a test's or a zoo member's code lives in
files the fingerprint does not read. Nor are those of a config that autotunes, or of torch.compile, whose inductor
times its configs on a graph's first launch (the verdict is the pick's, which the next run may pick otherwise). A
source file whose size, mtime, ctime or inode differs from when the harness was imported (bench.STAMPS_AT_IMPORT: an
edit during the run, so the code in memory may not be the code on disk) turns the store off from then on: nothing is
taken, nothing more is written. Verdicts are written after each point.

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
from bench.measure.stress import TUNES_ON_FIRST_LAUNCH
from kernels import peers_env, registry

KEPT_STATUSES = ("ok", "declined", "wrong")
_PACKAGES = ("tilegym", "liger-kernel", "liger_kernel", "nvidia-cublas-cu12", "nvidia-cublas-cu13", "nvidia-cublas",
             "nvidia-cudnn-cu12", "nvidia-cudnn-cu13", "nvidia-cudnn")
_PEER_MODULES = ("tilegym", "liger_kernel")
_DEVICE_COLUMNS = ("python", "torch", "triton", "cuda_tile", "tileiras", "cuda_runtime", "device_name",
                   "compute_capability", "sm_count", "driver")
_ENV_PREFIXES = ("TILEBENCH_", "TRITON_", "TORCHINDUCTOR_", "TORCH_", "PYTORCH_", "CUDA_TILE_", "CUBLAS", "CUDNN",
                 "NVIDIA_TF32_OVERRIDE", "TILEGYM_", "LIGER_", "CUDA_HOME")
_ENV_NOT = ("TILEBENCH_VERDICTS", "TILEBENCH_GIT_COMMIT")
UNUSED_DAYS = 30
FINGERPRINT_CHARS = 24


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
        "source": {os.path.relpath(p, bench.SOURCE_ROOT): _file_digest(p) for p in bench.verdict_source_files()},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:FINGERPRINT_CHARS]


def edited() -> list[str]:
    """The source files whose size or mtime moved since the harness was imported (added and deleted ones too)."""
    now, then = bench.verdict_source_stamps(), bench.STAMPS_AT_IMPORT
    return sorted(os.path.relpath(p, bench.SOURCE_ROOT) for p in set(now) | set(then) if now.get(p) != then.get(p))


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
    """The verdicts of one fingerprint: read when opened, new ones appended by flush()."""

    def __init__(self, root: str, device: str, seed: int, read: bool = True):
        self.path = os.path.join(root, fingerprint(device, seed) + ".jsonl")
        self.kept: dict[str, dict] = {}
        self.new: list[dict] = []
        self.off = False
        if self.check() and read:
            self.kept = _read(self.path)
            _prune(root)

    def check(self) -> bool:
        """False, and off for good, once a source file moved since the harness was imported."""
        if not self.off and (changed := edited()):
            self.off, self.kept, self.new = True, {}, []
            print(f"stress verdicts: {', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''} changed while "
                  "this process ran; from now on every case is judged and none is kept", file=sys.stderr)
        return not self.off

    def key(self, case_key: str, op: str, name: str, cfg: dict | None, backend: str) -> str | None:
        if self.off or (cfg or {}).get("autotune") or backend in TUNES_ON_FIRST_LAUNCH or not keepable(op, name):
            return None
        return hashlib.sha256(case_key.encode()).hexdigest()

    def get(self, key: str | None) -> dict | None:
        return self.kept.get(key) if key and not self.off else None

    def put(self, key: str | None, verdict: dict) -> None:
        if key is None or self.off or verdict["status"] not in KEPT_STATUSES:
            return
        self.new.append({"key": key, **{k: v for k, v in verdict.items() if k != "kept"},
                         "judged": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "git_commit": devinfo.git_commit()})

    def flush(self) -> None:
        """Append the verdicts judged since the last flush, unless a source file moved meanwhile."""
        if not self.new or not self.check():
            return
        new, self.new = self.new, []
        data = "".join(json.dumps(e, default=str) + "\n" for e in new).encode()
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                while data:   # one append as a rule: another process's block lands before or after it
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
        except OSError:   # a read-only home costs the next run its shortcut, nothing else
            return
        for e in new:
            self.kept[e["key"]] = e

    close = flush


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
    for p in glob.glob(os.path.join(root, "[0-9a-f]" * FINGERPRINT_CHARS + ".jsonl")):   # ours alone
        try:
            if os.stat(p).st_mtime < cutoff:
                os.remove(p)
        except OSError:
            continue


def open_store(root: str | None, device: str, seed: int, fresh: bool = False) -> Store | None:
    return Store(root, device, seed, read=not fresh) if root else None
