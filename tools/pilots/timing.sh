#!/usr/bin/env bash
# The measurement cost of the v2 study presets (curvature every 100 steps with trace and relative flatness,
# alignment every 50, evaluation every 100): one fully measured e-prop run per task, pilot seed 100; the
# share is summary.json's "timing".
#   python train.py experiment=study_<task> arm=eprop seed=100 logger=none
set -u
cd "$(dirname "$0")/../.."
PY=/work/main/.venv/bin/python
OUT=${OUT:-outputs/pilots/timing}
mkdir -p "$OUT"
for task in ${TASKS:-dms seqmnist}; do
  dir="$OUT/${task}_eprop_seed100"
  [ -f "$dir/summary.json" ] && continue
  $PY train.py experiment=study_$task arm=eprop seed=100 logger=none trainer.enable_progress_bar=false \
    hydra.run.dir="$dir" > "$dir.log" 2>&1
  echo "$task rc=$?" >> "$OUT/done.txt"
done
