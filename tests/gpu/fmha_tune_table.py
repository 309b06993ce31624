"""The fmha_tune sweep as one table per (shape, dtype, pass): every impl and variant fastest first, as cuDNN's
time / ours (>= 1.0 is issue 14's target), with what an autotuned row picked.

    python tests/gpu/fmha_tune_table.py results/<gpu>/fmha_tune/results.jsonl [more.jsonl ...]
"""
import sys
from collections import defaultdict

from model.ranking import read_results

PEER = "sdpa_cudnn"


def main(paths):
    rows = [r for r in read_results(paths) if r.get("op") == "fmha" and isinstance(r.get("shape"), dict)]
    if not rows:
        print("no fmha rows in", " ".join(paths))
        return 1
    groups = defaultdict(list)
    for r in rows:
        s = r["shape"]
        groups[(tuple(sorted(s.items())), str(r.get("dtype")), str(r.get("pass")), str(r.get("timer")))].append(r)
    for (shape, dtype, pass_, timer), rs in sorted(groups.items()):
        peer = next((r for r in rs if r["impl"] == PEER and r.get("status") == "ok"), None)
        base = peer["median_ms"] if peer else None
        print(f"\n{dict(shape)} {dtype} {pass_} ({timer})" + (f"  cuDNN {base:.4f} ms" if base else "  (no cuDNN row)"))
        ok = sorted((r for r in rs if r.get("status") == "ok"), key=lambda r: r["median_ms"])
        for r in ok + [r for r in rs if r.get("status") != "ok"]:
            label = f"{r['impl']} {r.get('config_label', 'default')}"
            if r.get("status") != "ok":
                print(f"  {label:40s} {r.get('status')}: {(r.get('message') or '')[:120]}")
                continue
            vs = f"{base / r['median_ms']:.3f}x" if base else ""
            picked = r.get("picked_config") if r.get("config", {}).get("autotune") else None
            print(f"  {label:40s} {r['median_ms']:.4f} ms {vs:>7s}" + (f"  picked {picked}" if picked else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
