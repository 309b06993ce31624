"""tools/ holds maintainers' GPU scripts, run by hand on a GPU machine (tools/README.md); the suite never imports
them. Here only: does each still parse?"""
import glob
import os
import py_compile
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = sorted(glob.glob(os.path.join(REPO, "tools", "*.py")))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, "tools", "*.sh")))


def test_tools_are_there():
    assert TOOLS and SCRIPTS


@pytest.mark.parametrize("path", TOOLS, ids=os.path.basename)
def test_each_python_tool_compiles(path, tmp_path):
    py_compile.compile(path, cfile=str(tmp_path / "x.pyc"), doraise=True)


@pytest.mark.skipif(not shutil.which("bash"), reason="no bash")
@pytest.mark.parametrize("path", SCRIPTS, ids=os.path.basename)
def test_each_shell_tool_parses(path):
    r = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
