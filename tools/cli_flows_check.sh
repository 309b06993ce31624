#!/usr/bin/env bash
# What a user meets on a GPU, one step per call (each well under 10 minutes): the first look quiet and capped,
# --profile of the peers, --compare of two runs.
#   bash tools/cli_flows_check.sh first    # the README's first command, timed; the console kept
#   bash tools/cli_flows_check.sh profile  # --profile of torch.compile, cuDNN SDPA, TileGym (fmha --quick)
#   bash tools/cli_flows_check.sh compare  # two short runs compared, --fail-above 5%
# Results, reports and console logs go under $OUT (default out/cli_flows).
set -u
OUT=${OUT:-out/cli_flows}
mkdir -p "$OUT"
case "${1:-}" in
  first)
    start=$(date +%s)
    python run_bench.py --sweep fmha --out "$OUT/first" --report-dir "$OUT/first_report" >"$OUT/first.stdout" 2>"$OUT/first.stderr"
    rc=$?
    echo "first look: exit $rc, wall $(( $(date +%s) - start )) s"
    grep -c -E "Phase [0-9]/2|Best config|succeeded, .* failed" "$OUT/first.stderr" "$OUT/first.stdout" | sed 's/^/tuner lines on the console (want 0): /'
    python - "$OUT/first/results.jsonl" <<'PY'
import collections, json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("points:", len(rows), dict(collections.Counter(r["status"] for r in rows)))
by = collections.defaultdict(float)
for r in rows:
    by[r["impl"]] += r.get("duration_s", 0)
print("seconds per impl:", {k: round(v, 1) for k, v in sorted(by.items(), key=lambda kv: -kv[1])})
for r in rows:
    if r.get("autotune"):
        print("autotune", r["impl"], r["pass"], r.get("shape_label"), "capped" if r["autotune_capped"] else "full",
              [(a["tried"], a["candidates"], a["tune_s"]) for a in r["autotune"]])
print("rows with a log:", sum(1 for r in rows if r.get("log")))
PY
    head -3 "$OUT/first.stderr" ;;
  profile)
    python run_bench.py --sweep fmha --quick --impl torch_compile --impl sdpa_cudnn --impl tilegym --impl eager \
      --profile --out "$OUT/profile" --report-dir "$OUT/profile_report" >"$OUT/profile.log" 2>&1
    echo "profile: exit $?"
    python - "$OUT/profile/results.jsonl" <<'PY'
import json, sys
for r in map(json.loads, open(sys.argv[1])):
    top = r.get("profile") or []
    print(r["impl"], r["pass"], r["status"], r.get("profile_error", ""),
          [(t["kernel"][:50], t["source"], t["share"]) for t in top[:3]])
PY
    ls -la "$OUT/profile/profiles" | head -5 ;;
  compare)
    for run in a b; do
      python run_bench.py --sweep fmha --quick --impl eager --impl triton --out "$OUT/cmp_$run" --no-report >"$OUT/cmp_$run.log" 2>&1
    done
    python run_bench.py --compare "$OUT/cmp_a" "$OUT/cmp_b" --fail-above 5% --report-dir "$OUT/compare_page"
    echo "compare: exit $? (the same code twice: 0 unless a point drifted between the runs)" ;;
  *) echo "usage: $0 first|profile|compare" >&2; exit 2 ;;
esac
