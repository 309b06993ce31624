"""Kernel modules: one folder per op, its implementations side by side (eager.py, triton.py, cutile.py, peers)."""
from kernels.registry import OPS, DTYPES, get, resolve, spec_of, impl_names, table  # noqa: F401
