"""Every tile config of every point, fastest first within each (op, shape, dtype, pass): what a tuning sweep
found, and how far each config is from the best of that group.

    python tests/gpu/config_table.py RESULTS.jsonl [...] [--op gelu]
"""
import argparse
from collections import defaultdict

from model.ranking import read_results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--op")
    a = ap.parse_args()
    groups = defaultdict(list)
    for r in read_results(a.paths):
        if r.get("op") == "e2e" or (a.op and r.get("op") != a.op):
            continue
        shape = ",".join(f"{k}={v}" for k, v in (r.get("shape") or {}).items())
        groups[(r.get("op"), shape, r.get("dtype"), r.get("pass"))].append(r)
    for (op, shape, dtype, pass_), rows in sorted(groups.items()):
        ok = sorted((r for r in rows if r.get("status") == "ok"), key=lambda r: r["median_ms"])
        best = ok[0]["median_ms"] if ok else None
        print(f"\n{op} {shape} {dtype} {pass_}  ({ok[0].get('timer') if ok else '-'})")
        for r in ok:
            print(f"  {r['median_ms']:9.4f} ms  {best / r['median_ms']:5.3f}  {r['impl']:<12} {r.get('config_label', '')}")
        for r in rows:
            if r.get("status") != "ok":
                print(f"  {r.get('status'):>12}  {r['impl']:<12} {r.get('config_label', '')}: {r.get('message', '')[:100]}")


if __name__ == "__main__":
    main()
