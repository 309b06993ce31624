"""The harness: sweeps, the correctness gate, timing, the runner, results and reports."""
