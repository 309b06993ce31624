"""What a device is called in result rows (`device_name`) and in folder names: one definition for the harness
(bench/measure/devinfo.py writes it into every row) and the model's `auto` backend (which looks up rows by it)."""
from __future__ import annotations

import functools
import platform
import re

import torch


def name(device: str | torch.device) -> str:
    """The GPU's product name, or "CPU: <model>" on a CPU."""
    device = str(device)
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.device(device).index or 0).name
    return "CPU: " + (_cpu_model() or platform.processor() or platform.machine())


def slug(device: str | torch.device) -> str:
    """name() for a folder: "NVIDIA-H200", "cpu"."""
    n = name(device)
    n = "cpu" if n.startswith("CPU") else n
    return re.sub(r"[^A-Za-z0-9]+", "-", n).strip("-")


@functools.lru_cache(maxsize=None)
def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:   # not Linux: platform.processor() names it
        pass
    return None
