#!/usr/bin/env bash
# The exact matched point on the study presets: BPTT and e-prop on each task, pilot seed 100, stopped at the
# first step whose training score reaches the task's target. Each record holds stop_overshoot, stop_exact,
# stop_checks and the stop check's seconds (timing.measure_s.stopattarget); tools/pilots/exact_stop.py tabulates
# them. ~15 min on an idle 2-core CPU.
#   OUT=outputs/pilots/exact_stop bash tools/pilots/exact_stop.sh && python tools/pilots/exact_stop.py outputs/pilots/exact_stop
set -u
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/pilots/exact_stop}
mkdir -p "$OUT"
for task in ${TASKS:-dms seqmnist pattern neurogym}; do
  for rule in bptt eprop; do
    dir="$OUT/${rule}_${task}_seed100"
    [ -f "$dir/summary.json" ] && continue
    OMP_NUM_THREADS=1 $PY train.py experiment=study_$task rule=$rule study_arm=$rule seed=100 logger=none \
      trainer.enable_progress_bar=false hydra.run.dir="$dir" > "$dir.log" 2>&1
    echo "$task $rule rc=$?" >> "$OUT/done.txt"
  done
done
