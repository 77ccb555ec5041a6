#!/usr/bin/env bash
# Second device call of the issue 9 session (2026-12-04): the GRF length-scale / smoothness sweep on the device's CPU
# cores (no GPU work), shorter protocol than benchmarks/device_run.sh, with its own white/GRF baselines.
set -uo pipefail
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NOCTCM_OFFLINE=1
OUT=${OUT:-benchmarks/results/device-sweep}; mkdir -p "$OUT"; LOG="$OUT/sweep.log"; t0=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >>"$LOG" 2>&1
export PYTHONPATH=/tmp/site:$PWD
python3 -m noctcm.cli data fetch digits >>"$LOG" 2>&1
python3 -m noctcm.cli data prepare --config params.yaml --out prepared >>"$LOG" 2>&1
python3 -m noctcm.cli stage classifier --config params.yaml --out models/classifier/classifier.pt --metrics results/classifier.json >>"$LOG" 2>&1 &
python3 - >>"$LOG" 2>&1 <<'PY' &
from noctcm.config import load_config
from noctcm.pipeline.resolution import real_images
from noctcm.utils import metrics as M
cfg = load_config("params.yaml")
(tr, lab), (te, tl) = real_images(cfg, "train", 32), real_images(cfg, "test", 32)
clf, acc = M.train_domain_classifier(tr, lab, steps=600, seed=0, test_images=te, test_labels=tl)
M.save_classifier(clf, "runs/_classifiers/classifier_32px.pt", dataset="digits", resolution=32, test_accuracy=float(acc))
PY
wait
echo "[setup $((SECONDS - t0)) s]" >>"$LOG"
PROTO="teacher.steps=800 distillation.steps=500 training.checkpoint_every=125 evaluation.resolution_scales=[1,2]"
JOBS=(
  "operator-white-multi|"
  "operator-grf-multi|"
  "operator-grf-multi|model.noise_length=0.03125 --tag=-l32"
  "operator-grf-multi|model.noise_length=0.04167 --tag=-l24"
  "operator-grf-multi|model.noise_nu=0.5 --tag=-nu05"
  "operator-grf-multi|model.noise_length=0.03125 model.noise_nu=0.5 --tag=-l32nu05"
  "physconv-grf-multi|"
  "physconv-grf-multi|model.noise_length=0.03125 --tag=-l32"
  "physconv-grf-multi|model.noise_length=0.04167 --tag=-l24"
  "physconv-grf-multi|model.noise_length=0.03125 model.noise_nu=0.5 --tag=-l32nu05"
  "fno-white-single|"
  "conv-white-single|"
)
core=2; pids=()
for job in "${JOBS[@]}"; do
  name=${job%%|*}; extra=${job#*|}
  ( timeout $((${DEADLINE:-370} - (SECONDS - t0))) taskset -c $core python3 benchmarks/ablation.py $name $PROTO $extra \
      >>"$OUT/job-$core.txt" 2>&1; echo "[$name $extra: rc $? at $((SECONDS - t0)) s]" >>"$LOG" ) &
  pids+=($!); core=$((core + 1))
done
wait "${pids[@]}"
python3 benchmarks/ablation.py --table runs > "$OUT/sweep_table.md" 2>>"$LOG"
tar czf "$OUT/sweep_runs.tgz" --ignore-failed-read runs/*/summary.json runs/*/log.txt "$OUT"/job-*.txt 2>>"$LOG"
rm -f "$OUT"/job-*.txt
echo "[done $((SECONDS - t0)) s]" >>"$LOG"; cat "$OUT/sweep_table.md"; tail -15 "$LOG"
