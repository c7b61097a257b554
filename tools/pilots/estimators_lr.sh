#!/bin/bash
# The second edition's pilot of the unbiased noisy estimators (UORO, node perturbation) at the shared lr and
# below it, on the pilot seed 100 (never a study seed), unmeasured (callbacks=none): which lr each can run
# at without diverging. Numbers in docs/study/pilots-v2.md.
#   tools/pilots/estimators_lr.sh [out dir, default outputs/pilots/estimators_lr]
#   python tools/pilots/table.py outputs/pilots/estimators_lr
set -u
OUT=${1:-outputs/pilots/estimators_lr}
run() {  # task rule lr max_steps
  OMP_NUM_THREADS=1 python train.py experiment=study_$1 arm=$2 seed=100 logger=none callbacks=none \
    optimizer.lr=$3 trainer.max_steps=$4 hydra.run.dir=$OUT/$1_$2_lr$3_seed100 > /dev/null 2>&1
}
run dms node_perturbation 0.1 6000
run dms node_perturbation 0.02 3000
run dms node_perturbation 0.005 6000
run dms uoro 0.1 6000
run dms uoro 0.02 1500
run seqmnist uoro 0.03 2500
run seqmnist uoro 0.01 5000
run seqmnist uoro 0.003 5000
run seqmnist uoro 0.001 5000
run seqmnist node_perturbation 0.03 5000
run seqmnist node_perturbation 0.003 5000
run seqmnist node_perturbation 0.001 5000
