"""Every tile config of every point, fastest first within each (op, shape, dtype, pass, timer): what a tuning
sweep found, as the best row's time / each row's, or with --peer as that impl's time / each row's (e.g.
`--peer sdpa_cudnn` for the fmha_tune sweep: >= 1.0 is issue 14's target), and what an autotuned row picked.

    python tests/gpu/config_table.py RESULTS.jsonl [...] [--op fmha] [--peer sdpa_cudnn]
"""
import argparse
from collections import defaultdict

from model.ranking import read_results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--op")
    ap.add_argument("--peer", help="impl whose time the ratios divide (default: the group's fastest row)")
    a = ap.parse_args()
    groups = defaultdict(list)
    for r in read_results(a.paths):
        if r.get("op") == "e2e" or (a.op and r.get("op") != a.op):
            continue
        shape = ",".join(f"{k}={v}" for k, v in (r.get("shape") or {}).items())
        groups[(r.get("op"), shape, r.get("dtype"), r.get("pass"), r.get("timer"))].append(r)
    for (op, shape, dtype, pass_, timer), rows in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        ok = sorted((r for r in rows if r.get("status") == "ok"), key=lambda r: r["median_ms"])
        peer = [r for r in ok if r["impl"] == a.peer] if a.peer else ok[:1]
        base = peer[0]["median_ms"] if peer else None
        head = f"{a.peer} {base:.4f} ms" if a.peer and base else f"no {a.peer} row" if a.peer else ""
        print(f"\n{op} {shape} {dtype} {pass_} ({timer})  {head}")
        for r in ok:
            ratio = f"{base / r['median_ms']:5.3f}" if base else "    -"
            picked = r.get("picked_config") if (r.get("config") or {}).get("autotune") else None
            print(f"  {r['median_ms']:9.4f} ms  {ratio}  {r['impl']:<12} {r.get('config_label', '')}"
                  + (f"  picked {picked}" if picked else ""))
        for r in rows:
            if r.get("status") != "ok":
                print(f"  {r.get('status'):>12}  {r['impl']:<12} {r.get('config_label', '')}: {r.get('message', '')[:100]}")


if __name__ == "__main__":
    main()
