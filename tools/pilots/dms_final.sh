#!/usr/bin/env bash
# dms v2 pilot (issue 22): the study preset itself, every main rule x pilot seeds 100-104, without the
# measurement callbacks (they never steer training; one measured run per rule gives the timing share).
#   python train.py experiment=study_dms arm=<rule> seed=<s> logger=none callbacks=none
set -u
cd "$(dirname "$0")/../.."
PY=/work/main/.venv/bin/python
OUT=${OUT:-outputs/pilots/dms_final}
mkdir -p "$OUT"
for seed in ${SEEDS:-100 101 102 103 104}; do
  for rule in ${RULES:-bptt eprop mdgl rflo}; do
    dir="$OUT/${rule}_seed${seed}"
    [ -f "$dir/summary.json" ] && continue
    $PY train.py experiment=study_dms arm=$rule seed=$seed logger=none callbacks=none \
      trainer.enable_progress_bar=false hydra.run.dir="$dir" > "$dir.log" 2>&1
    echo "$rule $seed rc=$?" >> "$OUT/done.txt"
  done
done
