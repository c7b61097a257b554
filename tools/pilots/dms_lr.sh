#!/usr/bin/env bash
# Per-rule learning rates on dms (issue 22): each rule x lr in task.lr x {1, 2, 4, 8} x pilot seeds 100-101,
# a fixed budget of 300 steps (no stop), the study's network (the task's defaults: Dale, alpha 0.1).
# The chosen lr (conf/task/dms.yaml rule_lr): the one with the lowest mean final training loss among those
# where no seed diverged (tools/pilots/pick_lr.py).
set -u
cd "$(dirname "$0")/../.."

PY=/work/main/.venv/bin/python
OUT=${OUT:-outputs/pilots/dms_lr}
mkdir -p "$OUT"
for seed in 100 101; do
  for rule in bptt eprop mdgl rflo; do
    for lr in 0.1 0.2 0.4 0.8; do
      dir="$OUT/lr${lr}_${rule}_seed${seed}"
      [ -f "$dir/summary.json" ] && continue
      $PY train.py task=dms rule=$rule seed=$seed logger=none callbacks=none optimizer.lr=$lr \
        trainer.max_steps=300 eval_every=300 trainer.enable_progress_bar=false hydra.run.dir="$dir" > "$dir.log" 2>&1
      echo "$rule $lr $seed rc=$?" >> "$OUT/done.txt"
    done
  done
done
