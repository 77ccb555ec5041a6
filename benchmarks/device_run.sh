#!/usr/bin/env bash
# The one prepared call for a lent GPU machine (issue 9 session, 2026-12-04): in parallel,
#   1. benchmarks/gpu_check.sh on the GPU, pinned to CPU cores 0-1;
#   2. the ablation of benchmarks/ablation.py (every configuration, the short protocol below) on CPU cores 4-15,
#      one single-threaded process per configuration (training.device=cpu, as on the project's CPU machines).
# Run from the repository root with the wheels of omegaconf, antlr4 and torch-fidelity in .whl/ (the machine has
# torch, numpy, scipy, scikit-learn, matplotlib, pillow, tqdm): OUT=/somewhere bash benchmarks/device_run.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NOCTCM_OFFLINE=1
OUT=${OUT:-benchmarks/results/device}
mkdir -p "$OUT/gpu"
LOG="$OUT/device_run.log"
t0=$SECONDS
say() { echo "[$((SECONDS - t0)) s] $*" | tee -a "$LOG"; }
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 || say "wheel install FAILED"
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; python3 -c "import torch; print('torch', torch.__version__)"; } >>"$LOG" 2>&1

# 1. the GPU check (its own log and tables under $OUT/gpu)
( OUT="$OUT/gpu" taskset -c 0,1 bash benchmarks/gpu_check.sh >>"$LOG" 2>&1; echo "[gpu_check done at $((SECONDS - t0)) s]" >>"$LOG" ) &
gpu_pid=$!

# 2. data, prepared splits, the pipeline's classifier and the 32 px classifier of judge (b), then the ablation
PROTO="teacher.steps=1200 distillation.steps=800 training.checkpoint_every=200 evaluation.resolution_scales=[1,2]"
DEADLINE=${DEADLINE:-520}   # seconds after the start by which every ablation process is stopped (results so far are kept)
taskset -c 2,3 python3 -m noctcm.cli data fetch digits >>"$LOG" 2>&1 || say "fetch FAILED"
taskset -c 2,3 python3 -m noctcm.cli data prepare --config params.yaml --out prepared >>"$LOG" 2>&1 || say "prepare FAILED"
taskset -c 2,3 python3 -m noctcm.cli stage classifier --config params.yaml --out models/classifier/classifier.pt \
  --metrics results/classifier.json >>"$LOG" 2>&1 || say "classifier FAILED"
( taskset -c 2,3 python3 - >>"$LOG" 2>&1 <<'EOF'
from noctcm.config import load_config
from noctcm.pipeline.resolution import real_images
from noctcm.utils import metrics as M
cfg = load_config("params.yaml")
(tr, lab), (te, tl) = real_images(cfg, "train", 32), real_images(cfg, "test", 32)
clf, acc = M.train_domain_classifier(tr, lab, steps=int(cfg.evaluation.classifier_steps), seed=int(cfg.training.seed),
                                     test_images=te, test_labels=tl)
M.save_classifier(clf, "runs/_classifiers/classifier_32px.pt", dataset="digits", resolution=32, test_accuracy=float(acc))
print("32 px classifier accuracy", acc)
EOF
) &
say "setup done"
core=4
pids=()
for name in $(python3 benchmarks/ablation.py --names); do
  ( timeout $((DEADLINE - (SECONDS - t0))) taskset -c $core python3 benchmarks/ablation.py "$name" $PROTO >>"$OUT/ablation-$name.txt" 2>&1 \
      && echo "[$name done at $((SECONDS - t0)) s]" >>"$LOG" || echo "[$name FAILED at $((SECONDS - t0)) s]" >>"$LOG" ) &
  pids+=($!)
  core=$(( core < 15 ? core + 1 : 4 ))
done
wait "${pids[@]}"
say "ablation done"
python3 benchmarks/ablation.py --table runs > "$OUT/ablation_table.md" 2>>"$LOG"
tar czf "$OUT/ablation_runs.tgz" --ignore-failed-read runs/*/summary.json runs/*/resolution.json runs/*/metrics.json runs/*/selection.json \
  runs/*/resolution/*.png runs/*/resolution/*.csv runs/*/log.txt "$OUT"/ablation-*.txt 2>>"$LOG"
rm -f "$OUT"/ablation-*.txt
wait $gpu_pid
cp benchmarks/results/*cuda* "$OUT/gpu/" 2>/dev/null
say "all done"
cat "$OUT/ablation_table.md"
