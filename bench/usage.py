"""Usage errors: one line on stderr, exit 2. Every mode of run_bench.py (and the Slurm submitter) says them so."""
import sys

EXIT_USAGE = 2


def die(msg: str) -> int:
    print(f"run_bench.py: error: {msg}", file=sys.stderr)
    return EXIT_USAGE
