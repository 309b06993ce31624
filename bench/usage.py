"""Usage errors: one line on stderr, exit 2. Every mode of run_bench.py (and the Slurm submitter) says them so."""
import difflib
import sys

EXIT_USAGE = 2


def die(msg: str) -> int:
    print(f"run_bench.py: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def did_you_mean(name: str, known) -> str:
    """'; did you mean 'fmha'?' for the closest known name, or nothing."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
