"""pytest wiring: plain `pytest` runs the unit tests and skips benchmarks; `pytest --benchmark-only`
runs one benchmark per (op, impl, representative shape). Select with markers: -m "fmha and triton"."""
import os

import pytest

from kernels import registry

# tests judge every stress case themselves, in this process and in the CLI runs they start; the store's own tests
# name a folder of their own
os.environ["TILEBENCH_VERDICTS"] = "off"


def pytest_configure(config):
    for op in registry.OPS:
        config.addinivalue_line("markers", f"{op}: tests and benchmarks of op {op}")
    for name in registry.all_impl_names():
        config.addinivalue_line("markers", f"{name}: tests and benchmarks of impl {name}")


def _benchmark_only(config) -> bool:
    try:
        return bool(config.getoption("benchmark_only"))
    except ValueError:   # pytest-benchmark not installed
        return False


def pytest_collection_modifyitems(config, items):
    if _benchmark_only(config):
        return
    skip = pytest.mark.skip(reason="benchmark: run with pytest --benchmark-only")
    for item in items:
        if "benchmark" in item.keywords and item.get_closest_marker("benchmark") is not None:
            item.add_marker(skip)
