#!/usr/bin/env bash
# GPU check for issue 5 (performance). Run from anywhere on a machine with one CUDA GPU, in the repo's venv:
#     bash benchmarks/gpu_check.sh            # ~5-7 minutes on an H100/H200; writes benchmarks/results/<date>-cuda*
# It records the raw output of:
#   1. the `noctcm bench` table on CUDA at the default (digits 16x16) config, fp32;
#   2. the CIFAR-10 preset at 32x32x3 (configs/cifar10_training.yaml): diffusion / sCT / sCD / ECT steps
#      (ms, images/s, ratios) and peak memory (torch.cuda.max_memory_allocated), bf16 autocast, eager;
#   3. the same with torch.compile of the backbone (as training.compile=true does);
#   4. the spectral-conv comparison with neuraloperator at the full batch sizes.
# Each part has its own time limit and failure does not stop the others (look for FAILED in the log).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
D=$(date -u +%F)
LOG="$OUT/$D-cuda-gpu_check.log"
BATCH=${BATCH:-128}          # CIFAR-10 step batch (the preset trains at 512; 128 keeps the check short)
run() {  # run <seconds> <name> <args...>
  local secs=$1 name=$2; shift 2
  echo "=== $name: noctcm bench $*" | tee -a "$LOG"
  local t0=$SECONDS
  if ! timeout "$secs" python -m noctcm.bench "$@" >>"$LOG" 2>&1; then echo "FAILED: $name" | tee -a "$LOG"; fi
  echo "--- $name took $((SECONDS - t0)) s" | tee -a "$LOG"
}
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; pip list 2>/dev/null | grep -i -E "^(torch|neuraloperator) "; } >>"$LOG" 2>&1
python -c "import neuralop" 2>/dev/null || echo "note: neuraloperator not installed (pip install -e '.[bench]'); the spectral rows will be skipped" | tee -a "$LOG"

run 90  "digits fp32 table"          --device cuda --repeats 10 --out "$OUT/$D-cuda.md"
run 120 "cifar10 bf16 eager"         --device cuda --config configs/cifar10_training.yaml --precision bf16 \
        --batch "$BATCH" --only steps,memory --repeats 5 --out "$OUT/$D-cuda-cifar10-bf16.md"
run 200 "cifar10 bf16 compile"       --device cuda --config configs/cifar10_training.yaml --precision bf16 \
        --batch "$BATCH" --compile --warmup 2 --only steps,memory --repeats 5 --out "$OUT/$D-cuda-cifar10-bf16-compile.md"
run 60  "spectral conv vs neuraloperator (full sizes)" --device cuda --only spectral,block --repeats 20 \
        --out "$OUT/$D-cuda-spectral.md"
echo "done; results in $OUT/$D-cuda*.md and $LOG"
