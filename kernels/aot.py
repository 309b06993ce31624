"""What the Triton and cuTile impls share: GPU generations and their presets, config filling, the
autotuner's bookkeeping, and the rows ahead-of-time compilation (no GPU needed) reports.

Each toolchain adds a small adapter on top: kernels/triton_aot.py (triton.compile, do_bench) and
kernels/cutile_aot.py (export_kernel, exhaustive_search, ct.launch). Kernel modules import the adapter
of their toolchain, which re-exports the names here."""
from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

ARCHS = ("sm_80", "sm_89", "sm_90", "sm_100", "sm_120")

# Which preset a generation uses. sm_86, sm_89 and sm_12x have ~100 KB of shared memory per SM, so they
# share the "consumer" configs; sm_80 has 164 KB, sm_90 and sm_10x 227 KB.
FAMILY = {"sm_80": "ampere", "sm_86": "consumer", "sm_89": "consumer", "sm_90": "hopper",
          "sm_100": "blackwell", "sm_103": "blackwell", "sm_110": "blackwell", "sm_120": "consumer",
          "sm_121": "consumer"}
SMEM_LIMIT = {"ampere": 166912, "consumer": 101376, "hopper": 232448, "blackwell": 232448}   # bytes per block


def family(arch: str) -> str:
    if arch in FAMILY:
        return FAMILY[arch]
    major = int(arch[3:]) // 10
    return "blackwell" if major >= 10 else "hopper" if major == 9 else "ampere"


def fill(cfg: dict, preset: dict) -> dict:
    """The config with every None (choose per arch) taken from the preset; the autotune flag dropped."""
    out = {k: (preset[k] if v is None and k in preset else v) for k, v in cfg.items() if k != "autotune"}
    for k, v in preset.items():
        out.setdefault(k, v)
    return out


def cdiv(a: int, b: int) -> int:
    # not triton.cdiv: from Python that is a JIT-function call costing microseconds per launch
    return -(-a // b)


def pow2(n: int) -> int:
    """Next power of two; triton.next_power_of_2 is a constexpr_function, microseconds per host call."""
    return 1 << max(0, int(n) - 1).bit_length()


next_pow2 = pow2   # the name the cuTile kernels use


def unique(cfgs: list[dict]) -> list[dict]:
    seen, out = set(), []
    for c in cfgs:
        key = tuple(sorted(c.items()))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


# --- the device a tensor's kernels run on ----------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _device_arch(index: int) -> str:
    major, minor = torch.cuda.get_device_capability(index)
    return f"sm_{major}{minor}"


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def device_arch(t: torch.Tensor, off_gpu: str) -> str:
    """The arch of t's GPU; `off_gpu` where its kernels do not run on one (CPU tensors, interpreter)."""
    return _device_arch(t.device.index or 0) if t.device.type == "cuda" else off_gpu


def device_sm_count(t: torch.Tensor, off_gpu: int) -> int:
    return _sm_count(t.device.index or 0) if t.device.type == "cuda" else off_gpu


# --- autotuning ------------------------------------------------------------------------------------

class Tuner:
    """Autotune mode: search the candidate configs once per shape key, keep the best, remember the pick
    (picked() is the config the last call used). A toolchain's subclass implements _search; candidates
    it could not run are kept in `rejected[key]` with a status and said once on stderr, never dropped
    silently."""

    def __init__(self):
        self.best: dict = {}
        self.last: dict = {}
        self.rejected: dict = {}

    def choose(self, key, candidates: list[dict], *how) -> dict:
        if key not in self.best:
            self.best[key] = candidates[0] if len(candidates) == 1 else self._search(key, candidates, *how)
        self.last = dict(self.best[key])
        return self.best[key]

    def _search(self, key, candidates: list[dict], *how) -> dict:
        raise NotImplementedError

    def reject(self, key, cfg: dict, error: str, message: str) -> None:
        status = "oom" if "OutOfResources" in error or "OutOfMemory" in error else \
                 "compile_error" if "Compil" in error else "error"
        first = (message.strip().splitlines() or [""])[0][:300]
        self.rejected.setdefault(key, []).append({"config": dict(cfg), "status": status,
                                                   "message": f"{error}: {first}"})
        print(f"autotune: candidate {cfg} dropped: {status}: {error}: {first}", file=sys.stderr, flush=True)

    def note(self, cfg: dict):
        self.last = dict(cfg)

    def picked(self) -> dict:
        return dict(self.last)


# --- ahead-of-time compilation: one row per kernel ---------------------------------------------------

ROW_KEYS = ("kernel", "arch", "status", "message", "compile_s", "cubin_bytes", "registers", "smem_bytes", "spills")


def row(name: str, arch: str, **extra) -> dict:
    """An ok row with nothing measured yet (None: unreadable)."""
    return {**dict.fromkeys(ROW_KEYS), "kernel": name, "arch": arch, "status": "ok", "message": "", **extra}


def unsupported(name: str, arch: str, why: str) -> dict:
    return row(name, arch, status="unsupported", message=why)


def error_row(r: dict, e: BaseException, message: str | None = None) -> dict:
    """The row as a compile_error with the exception's first line (or `message`)."""
    lines = [ln for ln in str(getattr(e, "message", None) or e).strip().splitlines() if ln.strip()]
    r["status"] = "compile_error"
    r["message"] = message or f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
    return r


def timed(r: dict, compile_fn):
    """compile_fn()'s result, its wall time in r["compile_s"]."""
    t0 = time.perf_counter()
    out = compile_fn()
    r["compile_s"] = round(time.perf_counter() - t0, 3)
    return out


def check_smem(r: dict) -> dict:
    """A kernel needing more shared memory than its arch has per block cannot launch: a compile_error."""
    limit = SMEM_LIMIT.get(family(r["arch"]))
    if r["smem_bytes"] is not None and limit and r["smem_bytes"] > limit and r["status"] == "ok":
        r["status"] = "compile_error"
        r["message"] = f"shared memory {r['smem_bytes']} B > {limit} B available on {r['arch']}"
    return r


def cuobjdump_path() -> str | None:
    """A cuobjdump to read registers/shared memory/spills from a cubin: Triton's, pip nvcc's, PATH, CUDA_HOME."""
    cands = []
    try:
        import triton
        cands.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
    except ImportError:
        pass
    try:
        import nvidia.cu13 as cu13
        cands += [os.path.join(p, "bin", "cuobjdump") for p in cu13.__path__]
    except ImportError:
        pass
    cands += [shutil.which("cuobjdump") or ""]
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        cands.append(os.path.join(home, "bin", "cuobjdump"))
    cands += sorted(glob.glob("/usr/local/cuda*/bin/cuobjdump"), reverse=True)
    for c in cands:
        if c and os.path.exists(c) and os.access(c, os.X_OK):
            return c
    return None


def resource_usage(cubin: bytes) -> dict:
    """registers, smem_bytes (static shared memory) and spills (local + stack bytes per thread: register
    spills land in the stack frame, LOCAL alone read 0 for a cuTile kernel spilling 1.8 KB) as cuobjdump
    reads them from a cubin, the largest over its functions; {} without cuobjdump, a message if it fails."""
    tool = cuobjdump_path()
    if tool is None:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True,
                                 timeout=60).stdout
        except (OSError, subprocess.SubprocessError) as e:
            return {"message": f"cuobjdump failed: {type(e).__name__}: {e}"[:300]}
    return parse_resource_usage(out)


def parse_resource_usage(text: str) -> dict:
    """cuobjdump --dump-resource-usage's lines (one per function) as resource_usage's dict."""
    got = {}
    for line in text.splitlines():
        vals = {k: int(v) for k, v in (t.split(":", 1) for t in line.split() if t.count(":") == 1)
                if v.isdigit()}
        if "REG" not in vals:
            continue
        for name, value in (("registers", vals["REG"]), ("smem_bytes", vals.get("SHARED", 0)),
                            ("spills", vals.get("LOCAL", 0) + vals.get("STACK", 0))):
            got[name] = max(got.get(name, 0), value)
    return got
