"""Shared plumbing for the Triton impls: per-generation tile configs, a small autotuner, and
ahead-of-time compilation for a GPU we do not have (triton.compile with a GPUTarget)."""
from __future__ import annotations

import functools
import os
import subprocess
import tempfile
import time

import torch

ARCHS = ("sm_80", "sm_89", "sm_90", "sm_100", "sm_120")

# Which preset a generation uses. sm_89 and sm_120 have ~100 KB of shared memory per SM, so they share
# the "consumer" configs; sm_80 has 164 KB, sm_90 and sm_100 227 KB.
FAMILY = {"sm_80": "ampere", "sm_86": "consumer", "sm_89": "consumer", "sm_90": "hopper",
          "sm_100": "blackwell", "sm_103": "blackwell", "sm_120": "consumer"}
SMEM_LIMIT = {"ampere": 166912, "consumer": 101376, "hopper": 232448, "blackwell": 232448}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _device_arch(index: int) -> str:
    major, minor = torch.cuda.get_device_capability(index)
    return f"sm_{major}{minor}"


def arch_of(t: torch.Tensor) -> str:
    """The arch a tensor's kernels will run on; the interpreter (CPU) counts as sm_80."""
    if t.device.type != "cuda" or interpreting():
        return "sm_80"
    return _device_arch(t.device.index or 0)


def family(arch: str) -> str:
    if arch in FAMILY:
        return FAMILY[arch]
    major = int(arch[3:]) // 10
    return "blackwell" if major >= 10 else "hopper" if major == 9 else "ampere"


def fill(cfg: dict, preset: dict) -> dict:
    """The config with every None (choose per arch) taken from the preset; tuning flags dropped."""
    out = {k: (preset[k] if v is None and k in preset else v) for k, v in cfg.items() if k != "autotune"}
    for k, v in preset.items():
        out.setdefault(k, v)
    return out


def sm_count(t: torch.Tensor) -> int:
    if t.device.type != "cuda" or interpreting():
        return 4
    return _sm_count(t.device.index or 0)


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def cdiv(a: int, b: int) -> int:
    # not triton.cdiv: from Python that is a JIT-function call costing microseconds per launch
    return -(-a // b)


def pow2(n: int) -> int:
    """Next power of two; triton.next_power_of_2 is a constexpr_function, microseconds per host call."""
    return 1 << max(0, n - 1).bit_length()


def needs_grad(*ts) -> bool:
    """Whether autograd will want a backward: if not, the impls skip the autograd.Function (and its
    saved tensors) and launch the forward kernel directly, since launch overhead is the cost at small shapes."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


class Configs:
    """Resolved tile configs, cached on (arch, shape class, requested overrides): resolving per call
    is pure Python overhead on every launch."""

    def __init__(self, params, preset_for):
        self.names = tuple(p.name for p in params)
        self.preset_for = preset_for      # (arch, key) -> preset dict
        self.cache = {}

    def get(self, arch, key, cfg: dict) -> dict:
        k = (arch, key, tuple(sorted(cfg.items())))
        hit = self.cache.get(k)
        if hit is None:
            hit = self.cache[k] = fill({**{n: None for n in self.names}, **cfg}, self.preset_for(arch, key))
        return hit


class Tuner:
    """Autotune mode: time each candidate config once per shape key, keep the fastest, remember the pick.

    Candidates that fail to launch (shared memory, registers) are skipped. Under the interpreter the
    first candidate is taken: timings there mean nothing."""

    def __init__(self):
        self.best: dict = {}
        self.last: dict = {}

    def choose(self, key, candidates: list[dict], run) -> dict:
        if key not in self.best:
            self.best[key] = self._search(candidates, run)
        self.last = dict(self.best[key])
        return self.best[key]

    def _search(self, candidates, run):
        if interpreting() or len(candidates) == 1:
            return candidates[0]
        import triton.testing
        timed = []
        for cfg in candidates:
            try:
                timed.append((triton.testing.do_bench(lambda: run(cfg), warmup=5, rep=25, return_mode="median"), cfg))
            except Exception:   # out of resources for this arch: not a candidate
                continue
        if not timed:
            return candidates[0]
        return min(timed, key=lambda x: x[0])[1]

    def note(self, cfg: dict):
        self.last = dict(cfg)

    def picked(self) -> dict:
        return dict(self.last)


def unique(cfgs: list[dict]) -> list[dict]:
    seen, out = set(), []
    for c in cfgs:
        key = tuple(sorted(c.items()))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


# --- ahead-of-time compilation ---------------------------------------------------------------------

def _cuobjdump():
    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return path if os.path.exists(path) else None


def _resource_usage(cubin: bytes) -> tuple[int | None, int | None]:
    """(registers, local-memory bytes per thread) as cuobjdump reads them from the cubin."""
    tool = _cuobjdump()
    if tool is None:
        return None, None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True,
                                 timeout=60).stdout
        except Exception:
            return None, None
    regs = local = None
    for tok in out.split():
        if tok.startswith("REG:"):
            regs = int(tok[4:])
        elif tok.startswith("LOCAL:"):
            local = int(tok[6:])
    return regs, local


def compile_kernel(kernel, name: str, signature: dict, constexprs: dict, arch: str,
                   num_warps: int = 4, num_stages: int = 3, not_divisible: tuple = ()) -> dict:
    """Compile one @triton.jit kernel for `arch` with no GPU; a failure is a status, never an exception.

    signature maps each runtime argument to its Triton type ("*bf16", "i32", "fp32"); constexprs gives
    the compile-time values. Pointers and integers are marked divisible by 16, as the JIT specialises
    them at GPT-2 shapes (without it there are no async copies, so no software pipelining), except the
    names in not_divisible. spills is the local memory per thread ptxas left (Triton kernels keep no
    local arrays, so that is spill space)."""
    row = {"kernel": name, "arch": arch, "status": "ok", "message": "", "compile_s": None,
           "cubin_bytes": None, "registers": None, "smem_bytes": None, "spills": None,
           "num_warps": num_warps, "num_stages": num_stages}
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        sig, attrs = {}, {}
        for i, a in enumerate(kernel.arg_names):
            sig[a] = "constexpr" if a in constexprs else signature[a]
            if a not in constexprs and a not in not_divisible and sig[a][0] in "*i":
                attrs[(i,)] = [["tt.divisibility", 16]]
        src = triton.compiler.ASTSource(fn=kernel, signature=sig, constexprs=dict(constexprs), attrs=attrs)
        t0 = time.perf_counter()
        cc = int(arch.split("_")[1])
        compiled = triton.compile(src, target=GPUTarget("cuda", cc, 32),
                                  options={"num_warps": num_warps, "num_stages": num_stages,
                                           "enable_fp_fusion": True})
        row["compile_s"] = round(time.perf_counter() - t0, 3)
        cubin = compiled.asm.get("cubin")
        row["cubin_bytes"] = len(cubin) if cubin else None
        row["smem_bytes"] = getattr(compiled.metadata, "shared", None)
        if cubin:
            row["registers"], row["spills"] = _resource_usage(cubin)
        limit = SMEM_LIMIT.get(family(arch))
        if row["smem_bytes"] is not None and limit and row["smem_bytes"] > limit:
            row["status"] = "compile_error"
            row["message"] = f"shared memory {row['smem_bytes']} B > {limit} B available on {arch}"
    except Exception as e:
        msg = str(e).strip().splitlines()
        row["status"] = "compile_error"
        row["message"] = f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]
    return row


def unsupported(name: str, arch: str, why: str) -> dict:
    return {"kernel": name, "arch": arch, "status": "unsupported", "message": why, "compile_s": None,
            "cubin_bytes": None, "registers": None, "smem_bytes": None, "spills": None}


TL_DTYPE = {"bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}
