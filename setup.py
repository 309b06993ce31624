"""What an installed tilebench carries beside its code: the sweeps (sweeps.yaml, tuning/*.yaml), the per-GPU
defaults (tuning/gpu_defaults.json) and the commit it was built from, all in bench/data/, so a non-editable install runs from any directory and its rows name their commit.
Everything else about the package is in pyproject.toml."""
import glob
import json
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))


def _commit():
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else None


class BuildWithSweeps(build_py):
    def run(self):
        super().run()
        if not os.path.isfile(os.path.join(ROOT, "sweeps.yaml")):
            raise SystemExit(f"setup.py: no sweeps.yaml in {ROOT}: build from a checkout or an sdist made from one")
        data = os.path.join(self.build_lib, "bench", "data")
        os.makedirs(os.path.join(data, "tuning"), exist_ok=True)
        shutil.copy(os.path.join(ROOT, "sweeps.yaml"), data)
        for path in glob.glob(os.path.join(ROOT, "tuning", "*.yaml")) + glob.glob(os.path.join(ROOT, "tuning", "*.json")):
            shutil.copy(path, os.path.join(data, "tuning"))
        with open(os.path.join(data, "build.json"), "w") as f:
            json.dump({"git_commit": _commit()}, f)


setup(cmdclass={"build_py": BuildWithSweeps})
