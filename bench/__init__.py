"""The harness, by stage: sweeps.py (what to run), measure/ (the gate, the stress battery, timers, the runner,
whole steps), scale/ (many GPUs, Slurm), report/ (pages, charts, --compare), machine/ (--doctor, --static); cli.py
reads the command line and hands each mode to its stage."""
import os

# The folder bench/ sits in: the checkout, or site-packages for an installed copy. Child processes import the harness
# from here (PYTHONPATH); nothing is written here: results, reports and data go under the working directory.
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")   # what a build ships (setup.py)


def child_env() -> dict:
    """os.environ with SOURCE_ROOT first on PYTHONPATH: a child `python -m bench...` imports this very copy."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": SOURCE_ROOT + (os.pathsep + path if path else "")}


# The code that decides a stress verdict: the kernels and the gate (bench/measure/verdict_store.py fingerprints it).
VERDICT_SOURCES = ("kernels", os.path.join("bench", "measure"))


def verdict_source_files(root: str | None = None) -> list[str]:
    root = root or SOURCE_ROOT
    out = []
    for top in VERDICT_SOURCES:
        for d, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            out += [os.path.join(d, f) for f in sorted(files) if f.endswith(".py")]
    return out


def verdict_source_stamps(root: str | None = None) -> dict:
    """path -> (size, mtime, ctime, inode) of each file of VERDICT_SOURCES: ~90 stats, under a millisecond."""
    out = {}
    for p in verdict_source_files(root):
        try:
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)   # ctime: a restored mtime moves it
        except OSError:
            continue
    return out


# Taken before any kernel is imported (the CLI, the workers and the tests import bench first): a file that differs
# from this later may not be the code this process runs, so its verdicts are neither taken nor kept.
STAMPS_AT_IMPORT = verdict_source_stamps()
