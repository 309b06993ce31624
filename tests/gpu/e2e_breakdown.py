"""Print the per-op breakdown (kernel ms per step from the profiler pass) of e2e rows, side by side.

    python tests/gpu/e2e_breakdown.py RESULTS.jsonl [...]
"""
import json
import sys


def main(paths):
    rows = [json.loads(line) for p in paths for line in open(p) if line.strip()]
    rows = [r for r in rows if r.get("op") == "e2e" and r.get("breakdown_detail")]
    if not rows:
        print("no e2e rows with a breakdown")
        return
    names = [f"{r['model']}/{r['backend']}{'+graph' if r.get('cuda_graph') else ''}" for r in rows]
    keys = sorted({k for r in rows for k in r["breakdown_detail"]},
                  key=lambda k: -max(r["breakdown_detail"].get(k, 0) for r in rows))
    print(f"{'ms per step':<28}" + "".join(f"{n[-26:]:>28}" for n in names))
    print(f"{'step (timer median)':<28}" + "".join(f"{r['ms_per_step']:>28.2f}" for r in rows))
    print(f"{'host-inclusive median':<28}" + "".join(f"{r.get('host_median_ms') or 0:>28.2f}" for r in rows))
    for k in keys:
        print(f"{k:<28}" + "".join(f"{r['breakdown_detail'].get(k, 0):>28.3f}" for r in rows))
    for extra in ("unattributed", "idle"):
        print(f"{extra:<28}" + "".join(f"{(r.get('breakdown') or {}).get(extra, 0):>28.3f}" for r in rows))
    for n, r in zip(names, rows):
        print(f"\n{n}: top kernels (ms/step)")
        for k, v in r.get("top_kernels") or []:
            print(f"  {v:8.3f}  {k[:110]}")


if __name__ == "__main__":
    main(sys.argv[1:])
