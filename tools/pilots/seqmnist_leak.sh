#!/usr/bin/env bash
# The seqMNIST leak axis's learning rate (third edition, before plan v3): at task.alpha 0.5 and 0.2, does the
# shared lr 0.03 (the alpha = 1 study's) bring bptt, eprop, rflo and mdgl to the 0.6 target within the cap,
# and does lr 0.1 diverge or only speed them up? Pilot seeds 101-102 only (the study uses 0-9), one process
# at a time, without the measurement callbacks. Table: python tools/pilots/table.py outputs/pilots/seqmnist_leak
#   python train.py experiment=study_seqmnist arm=<rule> seed=<s> task.alpha=<a> task.lr=<lr> logger=none callbacks=none
set -u
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/pilots/seqmnist_leak}
mkdir -p "$OUT"
run() {  # rule seed alpha lr
  local rule=$1 seed=$2 alpha=$3 lr=$4
  local dir="$OUT/${rule}_a${alpha}_lr${lr}_seed${seed}"
  [ -f "$dir/summary.json" ] && return
  OMP_NUM_THREADS=1 $PY train.py experiment=study_seqmnist arm=$rule seed=$seed logger=none callbacks=none \
    task.alpha=$alpha task.lr=$lr trainer.enable_progress_bar=false hydra.run.dir="$dir" > "$dir.log" 2>&1
  echo "$rule a$alpha lr$lr seed$seed rc=$?" >> "$OUT/done.txt"
}
for alpha in 0.5 0.2; do
  for rule in bptt eprop rflo mdgl; do run $rule 101 $alpha 0.03; done
  for rule in bptt eprop rflo; do run $rule 101 $alpha 0.1; done
done
for alpha in 0.5 0.2; do for rule in bptt eprop rflo mdgl; do run $rule 102 $alpha 0.03; done; done
