"""Deliberately broken gelu impls, registered by the harness tests to prove each status is reachable."""
import torch
import torch.nn.functional as F

from kernels import poison
from kernels.registry import KernelImpl, TileParam, Unsupported


def _right(x, bias=None):
    return F.gelu(x + bias, approximate="tanh")


def _off_by_a_bit(x, bias=None):
    return _right(x, bias) * 1.05


def _half_written(x, bias=None):
    out = poison.empty_like(x)
    n = x.shape[0] // 2
    out[:n] = _right(x[:n], bias)       # rows n.. are never written
    return out


def _nan(x, bias=None):
    y = _right(x, bias).clone()
    y.view(-1)[3] = float("nan")
    return y


def _raises(x, bias=None):
    raise RuntimeError("kernel exploded")


def _oom(x, bias=None):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")


class CompilationError(Exception):
    pass


def _compile_fail(x, bias=None):
    raise CompilationError("at 3:4: bad tile shape")


def _unsupported_at_runtime(x, bias=None):
    raise Unsupported("C must be a multiple of 8")


def _tiled(x, bias=None, BLOCK=64):
    return _right(x, bias)


def _flat_only(x, bias=None):
    if x.dim() != 2:
        raise RuntimeError(f"expected a 2-D input, got {x.dim()}-D")
    return _right(x, bias)


def _nan_past_50(x, bias=None):
    y = _right(x, bias)
    return y.masked_fill(x.abs() > 50, float("nan"))


CALLS = []


def _counting(x, bias=None):
    CALLS.append(tuple(x.shape))
    return _right(x, bias)


RIGHT = KernelImpl(fn=_right, backend="eager")
WRONG = KernelImpl(fn=_off_by_a_bit, backend="eager")
HALF = KernelImpl(fn=_half_written, backend="eager")
NAN = KernelImpl(fn=_nan, backend="eager")
RAISES = KernelImpl(fn=_raises, backend="eager")
OOM = KernelImpl(fn=_oom, backend="eager")
COMPILE = KernelImpl(fn=_compile_fail, backend="eager")
UNSUP = KernelImpl(fn=_unsupported_at_runtime, backend="eager")
NO_FP32 = KernelImpl(fn=_right, backend="eager", dtypes=("bf16",))
TILED = KernelImpl(fn=_tiled, backend="eager", params=(TileParam("BLOCK", int, 64, choices=(32, 64, 128)),),
                   presets={"small": {"BLOCK": 32}})
GONE = "tests.fake_impls_does_not_exist:IMPL"
FLAT_ONLY = KernelImpl(fn=_flat_only, backend="eager")
NAN_PAST_50 = KernelImpl(fn=_nan_past_50, backend="eager")
NO_SINGLE_ROW = KernelImpl(fn=_right, backend="eager",
                           supports=lambda shape, dtype, device: "needs 2 rows or more" if shape["M"] < 2 else None)
COUNTING = KernelImpl(fn=_counting, backend="eager")

ALL = {"f_right": RIGHT, "f_wrong": WRONG, "f_half": HALF, "f_nan": NAN, "f_raises": RAISES, "f_oom": OOM,
       "f_compile": COMPILE, "f_unsup": UNSUP, "f_nofp32": NO_FP32, "f_tiled": TILED, "f_flat_only": FLAT_ONLY,
       "f_nan_past_50": NAN_PAST_50, "f_no_single_row": NO_SINGLE_ROW, "f_counting": COUNTING}


def _die(x, bias=None):
    import os
    import signal
    os.kill(os.getpid(), signal.SIGKILL)     # what a kernel fault or the OOM killer looks like from outside


DIE = KernelImpl(fn=_die, backend="eager")


def _gated(x, bias=None):
    """Waits until $TILEBENCH_GATE/open exists, after leaving entered-<pid> there: a test can kill the
    process mid-point at a moment it knows, then let the rerun through."""
    import os
    import time
    from pathlib import Path
    gate = Path(os.environ["TILEBENCH_GATE"])
    (gate / f"entered-{os.getpid()}").touch()
    while not (gate / "open").exists():
        time.sleep(0.05)
    return _right(x, bias)


GATED = KernelImpl(fn=_gated, backend="eager")
