#!/usr/bin/env bash
# dms v2 design grid (issue 22): e-prop x designs x 2 pilot seeds at the study protocol
# (Dale network, stop at train acc 0.8 checked every 10 steps, cap 6000). One process at a time, 1 thread.
set -u
cd "$(dirname "$0")/../.."
PY=/work/main/.venv/bin/python
OUT=${OUT:-outputs/pilots/dms_grid}
mkdir -p "$OUT"
run() {  # name rule seed overrides...
  local name=$1 rule=$2 seed=$3; shift 3
  local dir="$OUT/${name}_${rule}_seed${seed}"
  [ -f "$dir/summary.json" ] && return
  $PY train.py task=dms rule=$rule seed=$seed model.dale=true logger=none callbacks=none \
    trainer.max_steps=6000 stop_at_train_acc=0.8 stop_check_every=10 eval_every=1000 \
    trainer.enable_progress_bar=false hydra.run.dir="$dir" "$@" > "$dir.log" 2>&1
  echo "$name $rule $seed rc=$?" >> "$OUT/done.txt"
}
for seed in 100 101; do
  run A_a10_d500_n256   eprop $seed model.alpha=0.1
  run B_a10_d500_n2048  eprop $seed model.alpha=0.1 task.train_size=2048
  run C_a20_d300_n2048  eprop $seed task.delay=300 task.train_size=2048
  run D_a10_d300_n1024_z05 eprop $seed model.alpha=0.1 task.delay=300 task.train_size=1024 task.noise=0.5
  run E_a05_d500_n1024  eprop $seed model.alpha=0.05 task.train_size=1024
done
