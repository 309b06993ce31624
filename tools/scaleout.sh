#!/usr/bin/env bash
# Scale-out checks on one host with 2+ GPUs, one command (from the repo root; carry .devpack, data/shakespeare_char):
#
#   source .devpack/setup.sh && bash tools/scaleout.sh
#
#   1. the same sweep ($SWEEP) on GPU 0 alone, then spread over all GPUs: wall times side by side
#   2. the sweep again over all GPUs with the GPU-1 worker killed (SIGKILL) mid-sweep: what was lost
#   3. DDP: torchrun --nproc_per_node=1 and =2 (same global batch): loss curves and scaling efficiency
#   4. $GEN_SWEEPS over all GPUs (this GPU generation's numbers for the merged cross-generation report)
# Output: $OUT/scaleout.tgz (every log and result), $OUT/summary.txt, each sweep's results as $OUT/<name>.jsonl.
set -u
OUT=${OUT:-out/gpu}
SWEEP=${SWEEP:-model_ops}
IMPLS=${IMPLS:-"--impl eager --impl triton --impl cutile"}
GEN_SWEEPS=${GEN_SWEEPS:-"targets e2e"}
W=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
S="$W/summary.txt"
say() { echo "$*" | tee -a "$S"; }
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader | tee -a "$S"

# 1. one GPU vs all
for g in 0 all; do
  t0=$(date +%s.%N)
  timeout 200 python run_bench.py --sweep "$SWEEP" $IMPLS --budget 0.3 --gpus "$g" --out "$W/split_$g" --no-report \
    > "$W/split_$g.log" 2>&1
  rc=$?
  say "sweep $SWEEP --gpus $g: exit $rc, wall $(python -c "print(f'{$(date +%s.%N) - $t0:.1f}')") s, $(grep -c . "$W/split_$g/results.jsonl" 2>/dev/null) rows"
done

# the sweep's rows are what `--backend auto` ranks on this GPU (e2e's auto point below)
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '_' | tr -s _)
mkdir -p "results/$GPU" && cp "$W/split_all/results.jsonl" "results/$GPU/scaleout_$SWEEP.jsonl" 2>/dev/null

# 2. a worker killed mid-sweep
python run_bench.py --sweep "$SWEEP" $IMPLS --budget 0.3 --gpus all --out "$W/kill" --no-report > "$W/kill.log" 2>&1 &
main=$!
sleep "${KILL_AFTER:-25}"
victim=$(pgrep -f "bench.scale.worker --device .* --gpu 1" | head -1)
say "killing the GPU-1 worker (pid ${victim:-none}) at ${KILL_AFTER:-25} s"
[ -n "$victim" ] && kill -9 "$victim"
wait $main
say "killed run: exit $?"
python - "$W" >> "$S" <<'EOF'
import collections, json, sys
w = sys.argv[1]
rows = [json.loads(l) for l in open(f"{w}/kill/results.jsonl")]
ref = {json.loads(l)["point_id"] for l in open(f"{w}/split_0/results.jsonl")}
ids = collections.Counter(r["point_id"] for r in rows)
st = collections.Counter(r["status"] for r in rows)
print(f"killed run: {len(rows)} rows, {len(ids)} points ({len(ref)} in the sweep), statuses {dict(st)}, "
      f"duplicates {sum(1 for c in ids.values() if c > 1)}, missing {len(ref - set(ids))}")
for r in rows:
    if "died" in r.get("message", ""):
        print("  lost:", r["op"], r["impl"], r.get("shape_label"), r["pass"], "-", r["message"][:160])
EOF

# 3. DDP, 1 and 2 processes, same global batch
STAGES=ddp OUT="$W/ddp" timeout 150 bash model/gpu_runs.sh > "$W/ddp.log" 2>&1
python - "$W" >> "$S" <<'EOF'
import json, os, sys
w = sys.argv[1]
runs = {n: json.load(open(f"{w}/ddp/ddp{n}.json")) for n in (1, 2) if os.path.exists(f"{w}/ddp/ddp{n}.json")}
for n, r in runs.items():
    s = r["summary"]
    print(f"ddp nproc={n}: last loss {s['last_loss']:.4f}, val {s.get('last_val_loss')}, median {s['median_ms_per_step']:.2f} ms/step, "
          f"{s['median_tokens_per_s']:,.0f} tok/s")
if len(runs) == 2:
    a, b = (dict((i, v) for i, v in runs[n]["train"]) for n in (1, 2))
    d = [abs(a[i] - b[i]) for i in a.keys() & b.keys()]
    eff = runs[2]["summary"]["median_tokens_per_s"] / (2 * runs[1]["summary"]["median_tokens_per_s"])
    print(f"ddp: max |loss diff| per iteration {max(d):.3g} over {len(d)} iterations; scaling efficiency {eff:.3f}")
EOF

# 4. this generation's numbers, spread over every GPU
for sw in $GEN_SWEEPS; do
  if [ "$SECONDS" -gt "${DEADLINE:-420}" ]; then say "sweep $sw: skipped, past ${DEADLINE:-420} s"; continue; fi
  extra=$IMPLS
  case $sw in e2e*) extra="" ;; targets*) extra="--impl eager --impl triton --impl cutile --impl tilegym --impl liger --impl sdpa_flash --impl sdpa_cudnn --impl eager_chunked" ;; esac
  t0=$SECONDS
  timeout "${GEN_LIMIT:-240}" python run_bench.py --sweep "$sw" $extra --gpus all --out "$W/gen_$sw" --no-report > "$W/gen_$sw.log" 2>&1
  say "sweep $sw --gpus all: exit $? in $((SECONDS - t0)) s"
done

cat "$S"
tar -czf "$OUT/scaleout.tgz" -C "$W" .
cp "$S" "$OUT/"
for d in "$W"/gen_*; do [ -f "$d/results.jsonl" ] && cp "$d/results.jsonl" "$OUT/$(basename "$d").jsonl"; done
