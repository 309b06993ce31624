#!/usr/bin/env bash
# The model's GPU runs in one command (training, convergence, throughput); every result lands under $OUT (default out/gpu).
#
#   source .devpack/setup.sh && STAGES="converge" BACKENDS="eager triton cutile auto" bash model/gpu_runs.sh
#
# Stages (STAGES, in order given):
#   converge  500 iterations of shakespeare_6x768 (B=64, T=256) per backend: $OUT/converge_<backend>.json
#             (loss curve, eval losses, ms/step, tokens/s, MFU, fallbacks) and .log; a sample from eager's checkpoint
#   resume    eager, 40 iterations straight vs 20 + resume to 40: $OUT/resume.txt (max |loss diff| after resume)
#   ddp       torchrun --nproc_per_node=1, and =2 when two GPUs are visible: $OUT/ddp<n>.json
#   e2e       bench/measure/e2e.py over models x backends, each point in its own process: $OUT/e2e.jsonl
# Needs data/shakespeare_char (prepare it where the text is: python -m model.data shakespeare_char, then carry it).
# A failing step is recorded in $OUT/status.txt and the script goes on.
set -u
OUT=${OUT:-out/gpu}
DATA=${DATA:-data/shakespeare_char}
BACKENDS=${BACKENDS:-"eager triton cutile auto"}
ITERS=${ITERS:-500}
STAGES=${STAGES:-"converge resume ddp e2e"}
E2E_MODELS=${E2E_MODELS:-"shakespeare_6x768,gpt2_124m"}
E2E_BACKENDS=${E2E_BACKENDS:-"eager,torch_compile,triton,cutile,auto"}
CKPT=${CKPT:-/tmp/tilebench_ckpt}      # checkpoints stay off $OUT (hundreds of MB each)
EXTRA=${EXTRA:-}                       # more model.train flags for every run, e.g. "--eval-iters 20"
mkdir -p "$OUT" "$CKPT"

note() { echo "$(date -u +%FT%TZ) $*" | tee -a "$OUT/status.txt"; }
run() {  # run NAME CMD...: log to $OUT/NAME.log, record the exit status
  local name=$1; shift
  local t0=$SECONDS
  "$@" 2>&1 | tee "$OUT/$name.log"
  note "$name: exit ${PIPESTATUS[0]} in $((SECONDS - t0)) s"
}

if [ ! -f "$DATA/train.bin" ]; then
  python -m model.data shakespeare_char --out "$DATA" || { note "no dataset at $DATA"; exit 2; }
fi
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
NGPU=$(nvidia-smi -L | wc -l)

for stage in $STAGES; do
  case $stage in
  converge)
    for b in $BACKENDS; do
      run "converge_$b" python -m model.train --config shakespeare_char --backend "$b" --data-dir "$DATA" \
        --max-iters "$ITERS" --out-dir "$CKPT/$b" --log-json "$OUT/converge_$b.json" $EXTRA
    done
    if [ -f "$CKPT/eager/ckpt.pt" ]; then
      python -m model.sample --out-dir "$CKPT/eager" --num-samples 2 --max-new-tokens 300 > "$OUT/sample_eager.txt" 2>&1
    fi
    ;;
  resume)
    common=(--config shakespeare_char --data-dir "$DATA" --lr-decay-iters 40 --warmup-iters 10 --eval-interval 20
            --eval-iters 5 --log-interval 1 --dropout 0.1 $EXTRA)
    run resume_full python -m model.train "${common[@]}" --max-iters 40 --out-dir "$CKPT/rs_full" --log-json "$OUT/resume_full.json"
    run resume_part python -m model.train "${common[@]}" --max-iters 20 --out-dir "$CKPT/rs_part"
    run resume_rest python -m model.train --out-dir "$CKPT/rs_part" --resume --max-iters 40 --log-json "$OUT/resume_part.json"
    python - "$OUT" <<'EOF' | tee "$OUT/resume.txt"
import json, sys
a = dict(map(tuple, json.load(open(f"{sys.argv[1]}/resume_full.json"))["train"]))
b = dict(map(tuple, json.load(open(f"{sys.argv[1]}/resume_part.json"))["train"]))
d = [abs(a[i] - b[i]) for i in range(20, 40)]
print(f"resume after iter 20: max |loss diff| over iters 20-39 = {max(d):.3g} (first {d[0]:.3g})")
EOF
    ;;
  ddp)
    for n in 1 2; do
      [ "$n" -le "$NGPU" ] || { note "ddp$n: skipped, $NGPU GPU(s) visible"; continue; }
      run "ddp$n" torchrun --standalone --nproc_per_node="$n" -m model.train --config shakespeare_char \
        --data-dir "$DATA" --max-iters 100 --eval-interval 50 --eval-iters 10 --grad-accum "$n" \
        --out-dir "$CKPT/ddp$n" --log-json "$OUT/ddp$n.json" $EXTRA
    done
    ;;
  e2e)
    run e2e python -m bench.measure.e2e --models "$E2E_MODELS" --backends "$E2E_BACKENDS" --measure-peak --out "$OUT/e2e.jsonl"
    ;;
  *) note "unknown stage $stage" ;;
  esac
done
note "done"
