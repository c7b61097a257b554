#!/bin/bash
# Pilot of the fourth task (experiment=study_neurogym) on seeds 100-101 (never study seeds), unmeasured:
# does every main rule reach the matched point, learn (test accuracy above chance 0.5 + 0.15), not diverge?
#   tools/pilots/neurogym.sh [out dir, default outputs/pilots/neurogym];  python tools/pilots/table.py <out dir>
set -u
OUT=${1:-outputs/pilots/neurogym}
for rule in bptt eprop rflo mdgl uoro node_perturbation; do
  for seed in 100 101; do
    OMP_NUM_THREADS=1 python train.py experiment=study_neurogym arm=$rule seed=$seed logger=none callbacks=none \
      hydra.run.dir=$OUT/${rule}_seed$seed > /dev/null 2>&1
  done
done
