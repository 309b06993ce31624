"""Where the peer libraries come from (TileGym from pip or a source folder) and why they may not load."""
from __future__ import annotations

import functools
import importlib
import os
import sys

TILEGYM_PATH_ENV = "TILEBENCH_TILEGYM_PATH"


@functools.lru_cache(maxsize=None)
def tilegym_import_error() -> str | None:
    src = os.environ.get(TILEGYM_PATH_ENV)
    if src and src not in sys.path:
        sys.path.insert(0, src)
    try:
        importlib.import_module("tilegym")
        return None
    except Exception as e:   # any failure while importing is the recorded reason (impl unavailable)
        name = getattr(e, "name", None)
        where = f" (module {name!r})" if name else ""
        return f"tilegym not importable{where}: {type(e).__name__}: {e}"


def tilegym_why_not(device: str) -> str | None:
    from kernels import cutile_env
    return tilegym_import_error() or cutile_env.why_not_runnable(device)
