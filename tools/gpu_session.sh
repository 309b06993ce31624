#!/usr/bin/env bash
# One batched GPU session (the device time is short), run from the repo root on the GPU machine:
#
#   source .devpack/setup.sh && bash tools/gpu_session.sh STEP [STEP ...]
#
# Steps, in the order given (each under its own time limit; a failing step is recorded and the next runs):
#   doctor     run_bench.py --doctor
#   targets    the `targets` sweep (the issues' target shapes, every impl but torch.compile)
#   model_ops  the `model_ops` sweep into results/<gpu>/ so that `--backend auto` can rank impls on this GPU
#   model_ops_graph  the same timed as graph replays (what `auto` ranks for --cuda-graph steps), ours and cuDNN
#   summary    run_bench.py --table e2e-summary over this session's e2e results (speed-ups over torch.compile)
#   converge   500 iterations of shakespeare_6x768 per backend (BACKENDS, default "eager triton cutile auto")
#   e2e        the `e2e` sweep (whole training steps, eager and torch.compile as baselines)
#   e2e_graph  the `e2e_graph` sweep (the same steps captured whole in a CUDA graph)
#   ddp        torchrun --nproc_per_node=1 (and 2 where two GPUs are visible)
#   graph      tools/cuda_graph_check.sh (loss curves with and without --cuda-graph)
#   sweep:NAME any sweep of sweeps.yaml (every impl but torch.compile), e.g. sweep:targets_layer_norm
#   graphsweep:NAME  the same, timed as CUDA-graph replays (--cuda-graph: no host launch overhead)
#   probes     tools/timer_probes.py (host-inclusive timer vs a wall clock; graph timing with fresh grads)
#   zoo        the wrong-kernel zoo on the GPU (tests/zoo): every member must be reported `wrong`
#   first      the README's first command, `run_bench.py --sweep fmha`, wall time in first.log
#   xcheck     tools/harness_vs_do_bench.py over first's results: do_bench, do_bench_cudagraph, nvbench
#              (nvbench where the cuda-bench wheel was installed: CUDA_BENCH_WHEELS=.whl; XCHECK_RESULTS=FILE)
#   nanogpt    tools/nanogpt_compile_check.py: our e2e torch_compile step vs nanoGPT's own model.py (carry .nanogpt)
#   gemm       tools/gemm_check.py, the `gemm` sweep graph-timed, run_bench.py --table gemm (ours / cuBLAS)
# Everything lands in $OUT as a few files (the device returns at most 8): <steps>.tgz with every log and
# result, each sweep's results.jsonl as <sweep>.jsonl, status.txt. ARGS_<step> adds flags to a step.
set -u
OUT=${OUT:-out/gpu}
W=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -c 'A-Za-z0-9\n' '_' | tr -s _)
NOCOMPILE="--impl eager --impl triton --impl cutile --impl tilegym --impl liger --impl sdpa_flash --impl sdpa_cudnn --impl sdpa_efficient --impl eager_chunked"
step() {  # step NAME TIMEOUT CMD...: output to $W/NAME.log, status to $W/status.txt
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$W/$name.log" 2>&1
  echo "$name: exit $? in $((SECONDS - t0)) s" | tee -a "$W/status.txt"
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv > "$W/gpu.txt"
for s in "$@"; do
  case $s in
  doctor)    step doctor 120 python run_bench.py --doctor ;;
  targets)   step targets 420 python run_bench.py --sweep targets --out "$W/targets" --no-report $NOCOMPILE ${ARGS_targets:-} ;;
  model_ops) step model_ops 300 python run_bench.py --sweep ${SWEEP_model_ops:-model_ops} --out "results/$GPU" --no-report \
               $NOCOMPILE ${ARGS_model_ops:-}
             mkdir -p "$W/model_ops" && cp results/"$GPU"/results.jsonl "$W/model_ops/" ;;
  model_ops_graph) step model_ops_graph ${LIMIT_model_ops_graph:-300} python run_bench.py --sweep model_ops --cuda-graph \
               --budget ${BUDGET:-0.3} --out "results/$GPU/graph" --no-report --impl eager --impl triton --impl cutile \
               --impl sdpa_cudnn ${ARGS_model_ops_graph:-}
             mkdir -p "$W/model_ops_graph" && cp results/"$GPU"/graph/results.jsonl "$W/model_ops_graph/" ;;
  summary)   python run_bench.py --table e2e-summary "$W"/*/results.jsonl > "$W/summary.log" 2>&1 ;;
  sweep:*)   n=${s#sweep:}; step "$n" ${LIMIT_sweep:-300} python run_bench.py --sweep "$n" --out "$W/$n" --no-report $NOCOMPILE ${ARGS_sweep:-} ;;
  graphsweep:*) n=${s#graphsweep:}; step "graph_$n" 300 python run_bench.py --sweep "$n" --out "$W/graph_$n" --no-report \
               --cuda-graph $NOCOMPILE ${ARGS_sweep:-} ;;
  converge)  STAGES="converge" BACKENDS="${BACKENDS:-eager triton cutile auto}" OUT="$W/model" ITERS=${ITERS:-500} \
               step converge ${LIMIT_converge:-400} bash model/gpu_runs.sh ;;
  e2e)       step e2e ${LIMIT_e2e:-400} python run_bench.py --sweep e2e --out "$W/e2e" --no-report ${ARGS_e2e:-} ;;
  e2e_graph) step e2e_graph ${LIMIT_e2e_graph:-300} python run_bench.py --sweep e2e_graph --out "$W/e2e_graph" --no-report ${ARGS_e2e_graph:-} ;;
  ddp)       STAGES="ddp" OUT="$W/model" step ddp 240 bash model/gpu_runs.sh ;;
  graph)     OUT="$W/graph" step graph 300 bash tools/cuda_graph_check.sh ;;
  probes)    step probes 90 python tools/timer_probes.py ;;
  zoo)       step zoo ${LIMIT_zoo:-150} python -m tests.zoo.run --device cuda --out "$W/zoo" ;;
  first)     step first ${LIMIT_first:-300} bash -c "time python run_bench.py --sweep fmha --out $W/first ${ARGS_first:-}" ;;
  xcheck)    if [ -n "${CUDA_BENCH_WHEELS:-}" ]; then
               python -m pip install -q --no-index --no-deps --target /tmp/cudabench "$CUDA_BENCH_WHEELS"/*.whl \
                 && export PYTHONPATH=$PYTHONPATH:/tmp/cudabench; fi
             step xcheck ${LIMIT_xcheck:-150} python tools/harness_vs_do_bench.py --nvbench \
               --nvbench-json "$W/nvbench.json" --results "${XCHECK_RESULTS:-$W/${XCHECK_RUN:-first}/results.jsonl}" ;;
  nanogpt)   step nanogpt ${LIMIT_nanogpt:-300} python tools/nanogpt_compile_check.py --nanogpt .nanogpt/model.py ;;
  gemm)      step gemm_check 60 python tools/gemm_check.py
             step gemm ${LIMIT_gemm:-300} python run_bench.py --sweep ${SWEEP_gemm:-gemm} --cuda-graph --budget ${BUDGET:-0.3} \
               --out "$W/gemm" --no-report ${ARGS_gemm:-}
             python run_bench.py --table gemm "$W/gemm" > "$W/gemm_table.log" 2>&1; cat "$W/gemm_table.log" ;;
  *)         echo "$s: unknown step" | tee -a "$W/status.txt" ;;
  esac
done
cat "$W/status.txt"
name=$(IFS=_; echo "$*" | tr -c 'A-Za-z0-9_\n' '_' | cut -c1-60)
tar -czf "$OUT/$name.tgz" -C "$W" .
for f in "$W"/*/results.jsonl; do [ -f "$f" ] && cp "$f" "$OUT/$(basename "$(dirname "$f")").jsonl"; done
cp "$W/status.txt" "$OUT/"
for s in "$@"; do n=${s#*:}; [ "$n" = "$s" ] || n=$([ "${s%%:*}" = graphsweep ] && echo "graph_$n" || echo "$n"); tail -30 "$W/$n.log" 2>/dev/null; done
