"""A new op is one folder: kernels/<op>/ with __init__.py, spec.py and eager.py, nothing else edited, shows
in --list, sweeps from a sweeps file and leaves the fast tests green. Tried on a copy of the tree."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OP = "row_scale"

FILES = {
    "__init__.py": f'''
        """y = x * w: each column scaled (a toy op: what a contributor's first folder looks like)."""
        SPEC = "kernels.{OP}.spec:SPEC"
        IMPLS = {{"eager": "kernels.{OP}.eager:IMPL"}}
        ''',
    "spec.py": '''
        from kernels.spec import Inputs, OpSpec, elt_size, randn


        class RowScaleSpec(OpSpec):
            name = "row_scale"
            shape_keys = ("M", "C")

            def make_inputs(self, shape, dtype, device, gen):
                s = self.full_shape(shape)
                return Inputs((randn((s["M"], s["C"]), dtype, device, gen), randn((s["C"],), dtype, device, gen)),
                              {}, grad_args=(0, 1))

            def math(self, x, w):
                return x * w

            def flops(self, shape, pass_):
                return shape["M"] * shape["C"] * (3 if pass_ == "fwd+bwd" else 1)

            def bytes(self, shape, dtype, pass_):
                return shape["M"] * shape["C"] * elt_size(dtype) * (5 if pass_ == "fwd+bwd" else 2)


        SPEC = RowScaleSpec()
        ''',
    "eager.py": '''
        from kernels.registry import KernelImpl


        def row_scale(x, w):
            return x * w


        IMPL = KernelImpl(fn=row_scale, backend="eager", kind="baseline")
        ''',
}

SWEEPS = f"""
sweeps:
  mine:
    op: {OP}
    dtypes: [fp32, bf16]
    shapes: [{{M: 33, C: 65}}]
"""

# the fast tests the new op's cases are derived into, and the ones that must not notice it (model, sweeps)
FAST_TESTS = ["tests/test_check.py", "tests/test_sweeps.py", "tests/test_model_ops.py", "tests/test_spec.py",
              "tests/test_e2e.py"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree") / "repo"
    shutil.copytree(ROOT, root, ignore=shutil.ignore_patterns(".git", "results", "reports", "__pycache__",
                                                               ".pytest_cache", "*.egg-info", ".benchmarks"))
    os.makedirs(root / "kernels" / OP)
    for name, text in FILES.items():
        (root / "kernels" / OP / name).write_text(textwrap.dedent(text).lstrip())
    return root


def _run(tree, *args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONPATH")}
    return subprocess.run([sys.executable, *args], cwd=tree, env={**env, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True, timeout=timeout)


def test_listed(tree):
    r = _run(tree, "run_bench.py", "--list", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    assert any(OP in line and "eager" in line for line in r.stdout.splitlines()), r.stdout[-3000:]


def test_sweeps_from_a_sweeps_file(tree, tmp_path):
    (tmp_path / "sweeps.yaml").write_text(SWEEPS)
    r = _run(tree, "run_bench.py", "--sweeps-file", str(tmp_path / "sweeps.yaml"), "--sweep", "mine",
             "--device", "cpu", "--out", str(tmp_path / "res"), "--report-dir", str(tmp_path / "rep"),
             "--budget", "0.05")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "res" / "results.jsonl").read_text().splitlines() if x.strip()]
    ours = [x for x in rows if x.get("op") == OP]
    assert len(ours) == 4 and all(x["status"] == "ok" and x["median_ms"] > 0 for x in ours), ours


@pytest.mark.slow
def test_fast_tests_stay_green(tree):
    r = _run(tree, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *FAST_TESTS, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:]
    assert f"-{OP}]" in _run(tree, "-m", "pytest", "--collect-only", "-q", "tests/test_check.py").stdout
