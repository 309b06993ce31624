#!/usr/bin/env bash
# Whole-step CUDA graphs on a GPU, one command (from the repo root; data/shakespeare_char carried along):
#
#   bash tools/cuda_graph_check.sh                 # BACKENDS="eager triton" ITERS=50 by default
#
# Trains shakespeare_6x768 (B=64, T=256, bf16) for $ITERS iterations per backend, without and with
# --cuda-graph, from the same seed and batches; prints each run's last loss, median ms/step and tokens/s,
# the capture time, and the largest per-iteration loss difference between the two curves. JSON logs and
# stdout go to $OUT. Exit status 1 if a run failed or the curves differ by more than $TOL.
set -u
OUT=${OUT:-out/gpu/cuda_graph}
BACKENDS=${BACKENDS:-"eager triton"}
ITERS=${ITERS:-50}
TOL=${TOL:-0.02}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ -f data/shakespeare_char/train.bin ] || python -m model.data shakespeare_char || { echo "no dataset"; exit 2; }
fail=0
for b in $BACKENDS; do
  for g in no-cuda-graph cuda-graph; do
    python -m model.train --config shakespeare_char --backend "$b" --max-iters "$ITERS" --eval-iters 0 \
      --no-save-checkpoints --out-dir "$OUT/ckpt_$b" --log-json "$OUT/${b}_$g.json" --$g \
      > "$OUT/${b}_$g.log" 2>&1 || { echo "$b --$g: exit $? (see $OUT/${b}_$g.log)"; tail -3 "$OUT/${b}_$g.log"; fail=1; }
  done
done
python - "$OUT" "$TOL" $BACKENDS <<'PY' || fail=1
import json, os, sys
out, tol, backends = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
bad = False
print(f"{'backend':<10} {'graph':<6} {'last loss':>10} {'ms/step':>9} {'tok/s':>11} {'capture s':>10}")
for b in backends:
    runs = {}
    for g in ("no-cuda-graph", "cuda-graph"):
        p = os.path.join(out, f"{b}_{g}.json")
        if not os.path.exists(p):
            print(f"{b:<10} {g:<6} missing {p}"); bad = True; continue
        r = runs[g] = json.load(open(p))
        s = r["summary"]
        fmt = lambda v, f: "n/a" if v is None else format(v, f)
        print(f"{b:<10} {'yes' if g == 'cuda-graph' else 'no':<6} {fmt(s['last_loss'], '.4f'):>10} "
              f"{fmt(s['median_ms_per_step'], '.2f'):>9} {fmt(s['median_tokens_per_s'], ',.0f'):>11} "
              f"{fmt(r.get('cuda_graph_capture_s'), '.2f'):>10}  {r['status']} {r['message'][:80]}")
        bad |= r["status"] != "ok"
    if len(runs) == 2:
        a, c = (dict((it, v) for it, v in runs[g]["train"]) for g in ("no-cuda-graph", "cuda-graph"))
        diff = max((abs(a[i] - c[i]) for i in a.keys() & c.keys()), default=float("nan"))
        e, gr = (runs[g]["summary"]["median_ms_per_step"] for g in ("no-cuda-graph", "cuda-graph"))
        speed = f", graph speed-up {e / gr:.2f}x" if e and gr else ""
        print(f"{b:<10} max |loss diff| per iteration {diff:.2e} (tolerance {tol}){speed}")
        bad |= not diff <= tol
sys.exit(1 if bad else 0)
PY
exit $fail
