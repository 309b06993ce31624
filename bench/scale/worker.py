"""A benchmark worker pinned to one GPU: reads points as JSON lines on stdin, runs each, and writes its
row as a JSON line on stdout. bench.scale.multigpu starts one per GPU and restarts any that dies."""
from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", required=True)
    ap.add_argument("--gpu", required=True, help="the host's index of this GPU (for the results)")
    ap.add_argument("--opts", default="{}", help="runner.Options as JSON")
    args = ap.parse_args(argv)
    from bench.measure import devinfo, runner, stress, verdict_store
    opts = runner.Options(**json.loads(args.opts))
    meta = {**devinfo.static_info(args.device), "gpu_index": int(args.gpu)}
    peaks = {}
    if opts.measure_peaks:
        try:
            peaks = devinfo.measured_peaks(args.device)
        except Exception as e:
            print(f"worker {args.gpu}: could not measure peaks: {e}", file=sys.stderr)
            opts.measure_peaks = False
    out = sys.stdout
    sys.stdout = sys.stderr      # nothing but rows on the pipe
    if opts.stress:
        stress.use_store(verdict_store.open_store(opts.verdicts, args.device, opts.seed, opts.fresh_verdicts))
    print("READY", file=out, flush=True)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            point = json.loads(line)
            row = runner.run_one(point, args.device, opts)
            row.update(meta)
            row.update(peaks)
            print("ROW " + json.dumps(row, default=str), file=out, flush=True)
    finally:
        stress.use_store(None)   # the verdicts judged here are written
    return 0


if __name__ == "__main__":
    sys.exit(main())
