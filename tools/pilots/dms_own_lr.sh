#!/usr/bin/env bash
# The per-rule-lr arms at the study protocol (issue 22): every *_own_lr arm, pilot seed 100, no callbacks.
#   python train.py experiment=study_dms arm=<rule>_own_lr seed=100 logger=none callbacks=none
set -u
cd "$(dirname "$0")/../.."
PY=/work/main/.venv/bin/python
OUT=${OUT:-outputs/pilots/dms_own_lr}
mkdir -p "$OUT"
for seed in ${SEEDS:-100}; do
  for rule in bptt eprop mdgl rflo; do
    dir="$OUT/${rule}_own_lr_seed${seed}"
    [ -f "$dir/summary.json" ] && continue
    $PY train.py experiment=study_dms arm=${rule}_own_lr seed=$seed logger=none callbacks=none \
      trainer.enable_progress_bar=false hydra.run.dir="$dir" > "$dir.log" 2>&1
    echo "$rule $seed rc=$?" >> "$OUT/done.txt"
  done
done
