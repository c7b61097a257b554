#!/usr/bin/env bash
# The study's third edition (docs/study/README.md), one piece per sweep, in the order the budget cuts from
# the end (the issue's: main arms and controls on the four tasks -> the seqMNIST leak axis -> lambda_1 of every
# parameter -> dose-response -> dms-high -> the literature's rules). Each piece is one `train.py -m` sweep
# into docs/study/<folder>/runs; a piece whose folder already holds a finished sweep is run again all the
# same, and the launcher skips its finished jobs and resumes interrupted ones (so this script resumes).
#   bash tools/study_v3.sh              every piece
#   bash tools/study_v3.sh dms neurogym only these pieces (names below)
# On a 2-core CPU: OMP_NUM_THREADS=1, 2 jobs at a time (the launcher's default), no logger.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
STUDY=docs/study
SEEDS='seed=range(0,10)'
MAIN=bptt,eprop,rflo,mdgl,uoro,node_perturbation,bptt_matched,bptt_matched_mean,bptt_matched_len,bptt_matched_mean_len,bptt_noise,eprop_lr_rho
STEP=bptt,eprop,bptt_matched,bptt_matched_mean,bptt_matched_len,bptt_matched_mean_len   # e-prop and its step-length controls
LEAK=bptt,eprop,rflo,mdgl,bptt_matched,bptt_matched_mean,bptt_matched_len,bptt_matched_mean_len
LIT=bptt,kolen_pollack,kernl,dni,modprop   # kf_rtrl: ~2.4 s a dms step on this CPU, too slow for 10 seeds

sweep() {  # folder, then train.py overrides
  local folder=$1; shift
  echo "$(date -u +%FT%TZ) start $folder" >> "$STUDY/v3-pieces.log"
  $PY train.py -m "$@" logger=none hydra.sweep.dir="$STUDY/$folder/runs" > "/tmp/study_v3_$folder.log" 2>&1
  echo "$(date -u +%FT%TZ) end $folder rc=$?" >> "$STUDY/v3-pieces.log"
}

piece() {
  case $1 in
    dms)           sweep dms experiment=study_dms arm=$MAIN,bptt_early "$SEEDS" ;;
    neurogym)      sweep neurogym experiment=study_neurogym arm=$MAIN,bptt_early "$SEEDS" ;;
    pattern)       sweep pattern experiment=study_pattern arm=$MAIN,bptt_early_loss "$SEEDS" ;;
    seqmnist)      sweep seqmnist experiment=study_seqmnist arm=$MAIN,bptt_early "$SEEDS" ;;
    seqmnist-a0.5) sweep seqmnist-a0.5 experiment=study_seqmnist task.alpha=0.5 arm=$LEAK "$SEEDS" ;;
    seqmnist-a0.2) sweep seqmnist-a0.2 experiment=study_seqmnist task.alpha=0.2 arm=$LEAK "$SEEDS" ;;
    dms-full)      sweep dms-full experiment=study_dms curvature.params=all arm=$STEP "$SEEDS" ;;
    seqmnist-full) sweep seqmnist-full experiment=study_seqmnist curvature.params=all arm=$STEP "$SEEDS" ;;
    neurogym-full) sweep neurogym-full experiment=study_neurogym curvature.params=all arm=$STEP "$SEEDS" ;;
    dose-response) sweep dose-response experiment=dose_response 'seed=range(0,5)' ;;
    dms-high)      sweep dms-high experiment=study_dms task.study.train_acc=0.95 arm=$LEAK "$SEEDS" ;;
    lit-dms)       sweep lit-dms experiment=study_dms arm=$LIT "$SEEDS" ;;
    lit-seqmnist)  sweep lit-seqmnist experiment=study_seqmnist arm=$LIT "$SEEDS" ;;
    lit-pattern)   sweep lit-pattern experiment=study_pattern arm=$LIT "$SEEDS" ;;
    *) echo "unknown piece '$1'; choose from: dms neurogym pattern seqmnist seqmnist-a0.5 seqmnist-a0.2 dms-full" \
            "seqmnist-full neurogym-full dose-response dms-high lit-dms lit-seqmnist lit-pattern" >&2; exit 2 ;;
  esac
}

ALL="dms neurogym pattern seqmnist seqmnist-a0.5 seqmnist-a0.2 dms-full seqmnist-full neurogym-full dose-response dms-high lit-dms lit-seqmnist lit-pattern"
for p in ${@:-$ALL}; do piece "$p"; done
