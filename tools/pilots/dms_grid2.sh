#!/usr/bin/env bash
# dms v2 grid, part 2: design A (alpha 0.1, i.e. tau = 200 ms; everything else as v1) at the 0.8 and 0.9
# training targets, every main rule, pilot seeds 100-101. Waits for part 1 (one process at a time).
set -u
cd "$(dirname "$0")/../.."
while pgrep -f "tools/pilots/dms_grid.sh" > /dev/null; do sleep 5; done
PY=/work/main/.venv/bin/python
OUT=${OUT:-outputs/pilots/dms_grid2}
mkdir -p "$OUT"
run() {  # name rule seed target overrides...
  local name=$1 rule=$2 seed=$3 target=$4; shift 4
  local dir="$OUT/${name}_t${target}_${rule}_seed${seed}"
  [ -f "$dir/summary.json" ] && return
  $PY train.py task=dms rule=$rule seed=$seed model.dale=true logger=none callbacks=none \
    trainer.max_steps=6000 stop_at_train_acc=$target stop_check_every=10 eval_every=1000 \
    trainer.enable_progress_bar=false hydra.run.dir="$dir" "$@" > "$dir.log" 2>&1
  echo "$name $rule $seed $target rc=$?" >> "$OUT/done.txt"
}
for seed in 100 101; do
  for rule in eprop mdgl bptt rflo; do
    run A $rule $seed 0.9 model.alpha=0.1
  done
done
for seed in 100 101; do
  for rule in mdgl bptt rflo; do
    run A $rule $seed 0.8 model.alpha=0.1
  done
done
