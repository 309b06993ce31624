"""The harness, by stage: sweeps.py (what to run), measure/ (the gate, the stress battery, timers, the runner,
whole steps), scale/ (many GPUs, Slurm), report/ (pages, charts, --compare), machine/ (--doctor, --static); cli.py
reads the command line and hands each mode to its stage."""
import os
import time

IMPORTED_AT = time.time()   # no source file written after this is the code this process runs (verdict_store)

# The folder bench/ sits in: the checkout, or site-packages for an installed copy. Child processes import the harness
# from here (PYTHONPATH); nothing is written here: results, reports and data go under the working directory.
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")   # what a build ships (setup.py)


def child_env() -> dict:
    """os.environ with SOURCE_ROOT first on PYTHONPATH: a child `python -m bench...` imports this very copy."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": SOURCE_ROOT + (os.pathsep + path if path else "")}
