"""Stress-battery verdicts kept across runs of the same code on the same toolchain and GPU.

A first look on a cold GPU pays the battery's compiles at its new sizes (docs/measuring.md); a second run of the
same code has nothing new to learn from them. A verdict is kept under a fingerprint of everything that could change
it: the source of kernels/ and of the gate (bench/measure), the impl's own source file (a kernel registered from
elsewhere too), the versions of Python, torch, Triton, cuda-tile, tileiras and the peers' packages, the GPU, its
driver, the TILEBENCH_* and TRITON_* settings, and the run's seed. Change any of them and every case is judged again.

Kept: `ok`, `declined` and `wrong` (facts about the code). Not kept: `error`, `oom`, `compile_error`, which may
belong to the moment (a full GPU, a busy disk). Rows count what they took from here (`stress_kept`).

Where: TILEBENCH_VERDICTS (a folder, or `off`), else $XDG_CACHE_HOME/tilebench/verdicts (~/.cache/...). One JSON
line per verdict in <fingerprint>.jsonl; a line cut by a crash is skipped. `--fresh-verdicts` judges every case
again and keeps the new verdicts; deleting the folder forgets them all."""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import time

import torch

import bench
from bench.measure import devinfo
from kernels import peers_env

KEPT_STATUSES = ("ok", "declined", "wrong")
# the gate and the battery: their rules and inputs decide a verdict as much as the kernel does
_HARNESS = ("bench/measure/check.py", "bench/measure/stress.py", "bench/measure/tunecap.py",
            "bench/measure/outcome.py", "bench/measure/verdict_store.py")
_PEERS = ("tilegym", "liger-kernel", "liger_kernel")
_FINGERPRINT_COLUMNS = ("python", "torch", "triton", "cuda_tile", "tileiras", "cuda_runtime", "device_name",
                        "compute_capability", "driver")


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
    """Size and mtime of each .py under a peer's source checkout (its version does not move with an edit)."""
    if not root or not os.path.isdir(root):
        return None
    h = hashlib.sha256()
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith((".", "__pycache__")))
        for f in sorted(files):
            if f.endswith(".py"):
                st = os.stat(os.path.join(d, f))
                h.update(f"{os.path.relpath(os.path.join(d, f), root)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def fingerprint(device: str, seed: int) -> str:
    info = devinfo.static_info(device)
    parts = {
        "device": {k: info.get(k) for k in _FINGERPRINT_COLUMNS},
        "peers": {p: devinfo.package_version(p) for p in _PEERS},
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "env": {k: v for k, v in sorted(os.environ.items())
                if k.startswith(("TILEBENCH_", "TRITON_")) and k not in ("TILEBENCH_VERDICTS", "TILEBENCH_GIT_COMMIT")
                and not k.endswith("_CACHE_DIR")},
        "seed": seed,
        "tilegym_checkout": _tree_stamp(os.environ.get(peers_env.TILEGYM_PATH_ENV)),
        "source": {os.path.relpath(p, bench.SOURCE_ROOT): _file_digest(p) for p in _source_files()},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _impl_source_digest(fn) -> str | None:
    """The digest of the file an impl's callable is defined in; None where it cannot be found (not kept then)."""
    try:
        return _cached_source_digest(fn)
    except TypeError:   # an unhashable callable
        return _source_digest(fn)


@functools.lru_cache(maxsize=None)
def _cached_source_digest(fn) -> str | None:
    return _source_digest(fn)


def _source_digest(fn) -> str | None:
    while isinstance(fn, functools.partial):
        fn = fn.func
    fn = inspect.unwrap(fn)
    try:
        path = inspect.getsourcefile(fn if inspect.isroutine(fn) or inspect.isclass(fn) else type(fn))
    except TypeError:
        return None
    return _file_digest(path) if path and os.path.isfile(path) else None


class Store:
    """The verdicts of one fingerprint: read once when opened, appended as cases are judged."""

    def __init__(self, root: str, device: str, seed: int, read: bool = True):
        self.path = os.path.join(root, fingerprint(device, seed) + ".jsonl")
        self.kept: dict[str, dict] = {}
        self.read_from = read
        if read and os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        self.kept[entry["key"]] = entry
                    except (ValueError, KeyError, TypeError):   # a line a crash cut short: judged again
                        continue

    def key(self, case_key: str, impl) -> str | None:
        src = _impl_source_digest(impl.fn)
        return None if src is None else hashlib.sha256(f"{case_key}\n{src}".encode()).hexdigest()

    def get(self, key: str | None) -> dict | None:
        return self.kept.get(key) if key and self.read_from else None

    def put(self, key: str | None, verdict: dict) -> None:
        if key is None or verdict["status"] not in KEPT_STATUSES:
            return
        entry = {"key": key, **{k: v for k, v in verdict.items() if k != "kept"}, "judged": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "git_commit": devinfo.git_commit()}
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:   # one short line per write: appends do not interleave
                f.write(json.dumps(entry, default=str) + "\n")
        except OSError:   # a read-only home costs the next run its shortcut, nothing else
            return
        self.kept[key] = entry


def open_store(root: str | None, device: str, seed: int, fresh: bool = False) -> Store | None:
    return Store(root, device, seed, read=not fresh) if root else None
