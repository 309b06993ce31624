"""What an exception raised while running a point means for its status: the runner, the stress battery and whole
training steps (bench/measure/e2e.py) all classify failures this one way."""
from __future__ import annotations

import torch

from kernels import registry


def classify(exc: BaseException) -> tuple[str, str]:
    """(status, one-line message) for an exception raised while running a point."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    msg = f"{name}: {text}"[:500]
    if isinstance(exc, registry.Unsupported):
        return "unsupported", text[:500]
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return "oom", msg
    mod = type(exc).__module__ or ""
    if "Compil" in name or "compiler" in mod or name in ("TileCompilerTimeoutError", "TileCompilerExecutionError",
                                                          "TileSyntaxError", "TileTypeError", "TileError"):
        return "compile_error", msg
    return "error", msg
