"""What ran where: device, software and clock state for every result row, and the device's measured peaks."""
from __future__ import annotations

import datetime
import functools
import json
import importlib.metadata
import os
import platform
import socket
import subprocess
import time

import torch

from bench import SHIPPED, SOURCE_ROOT
from kernels import device as devices

# Clock-event reasons that mean the GPU slowed itself down (idle and app-clock settings are not throttling).
_THROTTLE_BITS = {
    0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake",
}


def package_version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=None)
def git_commit() -> str | None:
    """The commit measured: TILEBENCH_GIT_COMMIT where the tree travelled without .git, the one an installed copy was
    built from (bench/data/build.json, written by setup.py), else the checkout's."""
    if os.environ.get("TILEBENCH_GIT_COMMIT"):
        return os.environ["TILEBENCH_GIT_COMMIT"]
    built = os.path.join(SHIPPED, "build.json")
    if os.path.isfile(built):
        try:
            with open(built) as f:
                return json.load(f).get("git_commit")
        except (OSError, ValueError):
            return None
    try:
        here = SOURCE_ROOT
        out = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):   # no git, or it hung: the row says null
        return None


@functools.lru_cache(maxsize=None)
def nvml():
    """(pynvml, initialised; None) or (None, why NVML cannot be read). Clocks, power, throttling and the driver
    version come from it; the doctor reports the reason."""
    try:
        import pynvml
    except ImportError as e:
        return None, f"pynvml not importable ({e})"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return None, f"NVML init failed: {type(e).__name__}: {e}"
    return pynvml, None


def _nvml_handle(device: str):
    nv, _ = nvml()
    if nv is None or not device.startswith("cuda"):
        return None, None
    idx = torch.device(device).index or 0
    # CUDA and NVML may number GPUs differently: match by PCI bus id
    bus = getattr(torch.cuda.get_device_properties(idx), "pci_bus_id", None)
    try:
        if bus:
            return nv, nv.nvmlDeviceGetHandleByPciBusId(bus.encode() if isinstance(bus, str) else bus)
    except nv.NVMLError:
        pass   # the index below is right on most hosts
    try:
        return nv, nv.nvmlDeviceGetHandleByIndex(idx)
    except nv.NVMLError:
        return None, None


@functools.lru_cache(maxsize=None)
def static_info(device: str) -> dict:
    """Columns that stay the same for a whole run."""
    from kernels import cutile_env
    info = {
        "device": device,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "cuda_tile": package_version("cuda-tile"),
        "tileiras": cutile_env.tileiras_version() if cutile_env.import_error() is None else None,
        "git_commit": git_commit(),
        "cuda_runtime": torch.version.cuda,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        p = torch.cuda.get_device_properties(idx)
        info.update({
            "device_name": devices.name(device),
            "compute_capability": f"{p.major}.{p.minor}",
            "arch": f"sm_{p.major}{p.minor}",
            "sm_count": p.multi_processor_count,
            "mem_total_gb": round(p.total_memory / 2**30, 1),
            "pci_bus_id": getattr(p, "pci_bus_id", None),
        })
        nv, h = _nvml_handle(device)
        info["driver"] = None
        if h is None:
            info["nvml_error"] = nvml()[1] or "NVML has no handle for this GPU"
        else:
            try:
                driver = nv.nvmlSystemGetDriverVersion()
                info["driver"] = driver.decode() if isinstance(driver, bytes) else driver
                info["sm_clock_max_mhz"] = nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM)
                info["mem_clock_max_mhz"] = nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM)
                info["power_limit_w"] = nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000
            except nv.NVMLError as e:   # the columns read so far stay; the row says what failed
                info["nvml_error"] = f"{type(e).__name__}: {e}"
    else:
        info.update({
            "device_name": devices.name(device),
            "compute_capability": None, "arch": platform.machine(), "sm_count": os.cpu_count(),
            "mem_total_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
            if hasattr(os, "sysconf") else None,
            "driver": None,
        })
    return info


def sample(device: str) -> dict:
    """Clocks, temperature, power and throttle reasons right now (empty on CPU or without NVML); a read that
    failed is missing, and `nvml_error` names it."""
    nv, h = _nvml_handle(device)
    if h is None:
        return {}
    out, failed = {}, []
    for key, fn in (
        ("sm_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
        ("mem_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM)),
        ("temp_c", lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
        ("power_w", lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000),
        ("throttle_reasons", lambda: nv.nvmlDeviceGetCurrentClocksEventReasons(h)
         if hasattr(nv, "nvmlDeviceGetCurrentClocksEventReasons") else nv.nvmlDeviceGetCurrentClocksThrottleReasons(h)),
    ):
        try:
            out[key] = fn()
        except nv.NVMLError as e:
            failed.append(f"{key}: {type(e).__name__}")
    if failed:
        out["nvml_error"] = "; ".join(failed)
    return out


def throttle_names(reasons: int | None) -> list[str]:
    if not reasons:
        return []
    return [name for bit, name in _THROTTLE_BITS.items() if reasons & bit]


def point_state(before: dict, after: dict) -> dict:
    """Per-point columns: state before/after and whether the point ran throttled: True or False where NVML
    read the throttle reasons before and after, None (unknown) where it could not (CPU, no NVML, a failed read)
    and neither read that did succeed shows throttling."""
    row = {f"{k}_before": v for k, v in before.items() if k != "throttle_reasons"}
    row.update({f"{k}_after": v for k, v in after.items() if k != "throttle_reasons"})
    names = sorted(set(throttle_names(before.get("throttle_reasons")) + throttle_names(after.get("throttle_reasons"))))
    known = "throttle_reasons" in before and "throttle_reasons" in after
    row["throttle"] = ",".join(names) if names or known else None
    row["throttled"] = True if names else (False if known else None)
    return row


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=None)
def measured_peaks(device: str) -> dict:
    """The two ceilings measured on this device at the start of a run: dense matmul TFLOP/s (bf16 on GPU,
    fp32 on CPU) and copy bandwidth (bytes read + written). Roofline fractions divide by these."""
    from bench.measure.timing import measure
    if device.startswith("cuda"):
        n, dt, copy_bytes = 8192, torch.bfloat16, 1 << 30
    else:
        n, dt, copy_bytes = 1024, torch.float32, 1 << 27
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dt, generator=g)
    b = torch.randn(n, n, device=device, dtype=dt, generator=g)
    t0 = time.perf_counter()
    mm = measure(lambda: a @ b, device, budget_s=1.0, flush_l2=False)
    src = torch.empty(copy_bytes // 4, device=device, dtype=torch.float32).normal_(generator=g)
    dst = torch.empty_like(src)
    cp = measure(lambda: dst.copy_(src), device, budget_s=1.0, flush_l2=False)
    del a, b, src, dst
    return {
        "peak_tflops": 2 * n**3 / (mm.median_ms * 1e-3) / 1e12,
        "peak_gbps": 2 * copy_bytes / (cp.median_ms * 1e-3) / 1e9,
        "peak_dtype": "bf16" if device.startswith("cuda") else "fp32",
        "peak_measure_s": round(time.perf_counter() - t0, 2),
    }
