"""Tile-config defaults per GPU, as data.

An impl's default config is its architecture family's preset (hopper, blackwell, ...), but two GPUs of one
architecture need not agree: the matmul defaults chosen on an H200 left Triton at 0.75x cuBLAS on some H100
matmuls. So a tuned choice is recorded per GPU name (torch.cuda.get_device_name) and op/impl, and an impl called
with no config of its own on that GPU runs it:

    the caller's config (a sweep's tile config, a preset, auto's pick from result rows) if it gives one,
    else the user's record    ($TILEBENCH_GPU_DEFAULTS, default ./tilebench-gpu-defaults.json),
    else the shipped record   (tuning/gpu_defaults.json),
    else the family preset    (in the kernel's code).

TILEBENCH_GPU_DEFAULTS=off reads neither record: the presets alone, as a tuning sweep that may record must time them.

`run_bench.py --record-defaults RESULTS` writes a record from a tuning sweep's results (bench/record.py), so a
user reruns the sweep on their own GPU and records theirs. Rows say which default ran (`config_source`)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

FILE_NAME = "gpu_defaults.json"
USER_ENV = "TILEBENCH_GPU_DEFAULTS"
USER_DEFAULT = "tilebench-gpu-defaults.json"
OFF = "off"   # TILEBENCH_GPU_DEFAULTS=off: no record is read
VERSION = 1

_HERE = os.path.dirname(os.path.abspath(__file__))
_cache: dict = {}


@dataclass(frozen=True)
class Record:
    config: dict
    source: str          # "<file>: <gpu>" for the row's config_source


def shipped_path() -> str:
    """tuning/gpu_defaults.json: bench/data/tuning/ in an installed copy (setup.py), else the checkout's."""
    installed = os.path.join(os.path.dirname(_HERE), "bench", "data", "tuning", FILE_NAME)
    return installed if os.path.isfile(installed) else os.path.join(os.path.dirname(_HERE), "tuning", FILE_NAME)


def user_path() -> str:
    v = os.environ.get(USER_ENV)
    return v if v and v != OFF else os.path.join(os.getcwd(), USER_DEFAULT)


def read(path: str) -> dict:
    """{"version": 1, "gpus": {gpu name: {"op/impl": {"config": {...}, "measured": {...}}}}}; a missing file is empty.
    A file that is not such a record raises ValueError naming it."""
    if not os.path.isfile(path):
        return {"version": VERSION, "gpus": {}}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a GPU-defaults record: {e}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("gpus"), dict):
        raise ValueError(f"{path}: not a GPU-defaults record (expected version {VERSION} and a 'gpus' mapping)")
    for gpu, entries in data["gpus"].items():
        if not isinstance(entries, dict):
            raise ValueError(f"{path}: {gpu!r}: expected a mapping of 'op/impl' entries, got {type(entries).__name__}")
        for key, e in entries.items():
            if "/" not in key or not isinstance(e, dict) or not isinstance(e.get("config"), dict):
                raise ValueError(f"{path}: {gpu!r}: entry {key!r} must be 'op/impl' with a 'config' mapping")
    return data


def lookup(gpu: str, op: str, impl: str) -> Record | None:
    """The recorded default of op/impl on this GPU (the user's record first), None if neither file has one."""
    if os.environ.get(USER_ENV) == OFF:
        return None
    for path in (user_path(), shipped_path()):
        key = (path, _mtime(path))
        if key not in _cache:
            _cache[key] = read(path)
        entry = _cache[key]["gpus"].get(gpu, {}).get(f"{op}/{impl}")
        if entry is not None:
            return Record(dict(entry["config"]), f"{os.path.basename(path)}: {gpu}")
    return None


def config(impl, op: str, name: str, overrides: dict | None, device: str) -> tuple[dict, str]:
    """(the full tile config impl runs, where its defaults came from). Overrides are the caller's and win
    whole; without them a CUDA device's record is taken, if any (a stale entry the impl rejects gives way to the
    preset, and the source says so)."""
    if overrides or not str(device).startswith("cuda") or not impl.params:
        return impl.config(overrides), ("caller" if overrides else "preset")
    from kernels.device import name as device_name
    rec = lookup(device_name(device), op, name)
    if rec is None:
        return impl.config(), "preset"
    try:
        return impl.config(rec.config), rec.source
    except ValueError as e:
        return impl.config(), f"preset ({rec.source}: entry rejected: {e})"


def _mtime(path: str):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
