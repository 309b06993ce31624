"""bench/measure/devinfo.py: per-point GPU state. A throttle state NVML could not read is unknown (None), never False;
the doctor reads the GPU through the same probe as the result rows."""
import torch

from bench.measure import devinfo

from bench.machine import doctor


class FakeNVML:
    """pynvml's surface that devinfo reads; `broken` names the calls that raise NVMLError."""

    class NVMLError(Exception):
        pass

    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 0, 1, 0

    def __init__(self, reasons=0, broken=()):
        self.reasons, self.broken = reasons, set(broken)

    def _call(self, name, value):
        if name in self.broken:
            raise self.NVMLError(f"{name} not supported")
        return value

    def nvmlDeviceGetClockInfo(self, h, which):
        return self._call("clock", 1980)

    def nvmlDeviceGetTemperature(self, h, which):
        return self._call("temp", 40)

    def nvmlDeviceGetPowerUsage(self, h):
        return self._call("power", 300_000)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return self._call("reasons", self.reasons)


def _sampled(monkeypatch, nv):
    monkeypatch.setattr(devinfo, "_nvml_handle", lambda device: (nv, object()))
    return devinfo.sample("cuda:0")


def test_throttled_is_known_only_when_read(monkeypatch):
    ok, hot = _sampled(monkeypatch, FakeNVML()), _sampled(monkeypatch, FakeNVML(reasons=0x40))
    assert devinfo.point_state(ok, ok)["throttled"] is False
    row = devinfo.point_state(ok, hot)
    assert row["throttled"] is True and row["throttle"] == "hw_thermal"
    failed = _sampled(monkeypatch, FakeNVML(broken={"reasons"}))
    assert failed["nvml_error"] == "throttle_reasons: NVMLError" and "temp_c" in failed
    row = devinfo.point_state(ok, failed)
    assert row["throttled"] is None and row["throttle"] is None and row["nvml_error_after"]
    assert devinfo.point_state({}, {})["throttled"] is None        # CPU, or no NVML at all


def test_doctor_reads_the_gpu_through_devinfo(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devinfo, "static_info", lambda device: {
        "device_name": "NVIDIA H200", "arch": "sm_90", "driver": None, "nvml_error": "pynvml not importable (x)"})
    rows, arch = doctor._gpu_rows("cuda")
    assert arch == "sm_90" and rows[0]["detail"].startswith("NVIDIA H200 (sm_90)")
    assert rows[1]["status"] == "warn" and "pynvml not importable" in rows[1]["detail"]
    assert "nvidia-ml-py" in rows[1]["fix"]
