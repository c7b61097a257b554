#!/usr/bin/env bash
# GPU check, at most about 10 minutes: what a GPU does for rulescape on the devices present.
#
#   bash tools/gpu_check.sh [out dir]        # default out dir: gpu_check_<date>_<time>
#
# 1. ms per training step of the default dms network (N = 128, batch 64) for bptt and eprop on CUDA against
#    the CPU (200 steps, measurements off, summary.json's timing.loop_s);
# 2. a default `trainer=gpu` run (rflo, 500 steps, every measurement on): status ok, its record;
# 3. `trainer=ddp trainer.devices=<GPUs>` against one device on the same seed in float64: the ranks'
#    averaged estimates must give one device's training loss (relative difference < 1e-6);
# 4. a sweep with one job per GPU (one `train.py -m` per GPU with CUDA_VISIBLE_DEVICES=k, all at once)
#    against the same job alone: wall times and statuses.
# The results go to <out dir>/gpu_check.md (a table to paste into docs/speed.md, with the device named).
# Without a CUDA GPU it says so and exits 0. GPU_CHECK_ON_CPU=1 runs every step on the CPU at toy sizes
# (the script's own test: each command composes and runs, the report is written), which measures nothing.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
fi
ON_CPU=${GPU_CHECK_ON_CPU:-0}

NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null)
if [ -z "$NGPU" ]; then
  echo "gpu_check: could not import torch with $PY" >&2
  exit 2
fi
if [ "$NGPU" = 0 ] && [ "$ON_CPU" != 1 ]; then
  echo "gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False): nothing to measure here."
  echo "gpu_check: nothing in docs/ was measured on a GPU; run this script on a machine with one."
  exit 0
fi

OUT=${1:-gpu_check_$(date +%Y%m%d_%H%M%S)}
mkdir -p "$OUT"
REPORT="$OUT/gpu_check.md"
COMMON=(logger=none trainer.enable_progress_bar=false)
if [ "$ON_CPU" = 1 ]; then
  NGPU=1
  DEVICE="CPU (GPU_CHECK_ON_CPU=1: toy sizes, nothing measured)"
  GPU=(trainer=gpu trainer.accelerator=cpu)
  DDP=(trainer=ddp trainer.accelerator=cpu trainer.strategy=ddp_spawn trainer.devices=2)
  SIZE=(model.hidden_size=16 task.train_size=64 task.test_size=64 task.batch_size=16)
  STEPS=6; RUN_STEPS=6; DDP_STEPS=4; LIMIT=300; NDDP=2; WHAT="toy network N = 16, batch 16"
else
  DEVICE="$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1) x $NGPU"
  GPU=(trainer=gpu)
  DDP=(trainer=ddp "trainer.devices=$NGPU")
  SIZE=()
  STEPS=200; RUN_STEPS=500; DDP_STEPS=20; LIMIT=240; NDDP=$NGPU; WHAT="dms, N = 128, batch 64"
fi
echo "gpu_check: $DEVICE; torch $("$PY" -c 'import torch; print(torch.__version__)'); out: $OUT"

failures=0
run() {  # run <name> <args...>: train.py into $OUT/<name>, one line of result
  local name=$1; shift
  if timeout "$LIMIT" "$PY" train.py "${COMMON[@]}" "${SIZE[@]}" "$@" "hydra.run.dir=$OUT/$name" \
      > "$OUT/$name.log" 2>&1; then
    echo "  $name: ok"
  else
    echo "  $name: FAILED (exit $?; $OUT/$name.log)"
    failures=$((failures + 1))
  fi
}
field() {  # field <run dir> <python expression on the summary s>
  "$PY" -c "import json,sys; s=json.load(open(sys.argv[1]+'/summary.json')); print($2)" "$1" 2>/dev/null || echo "n/a"
}

echo "1. ms per training step, bptt and eprop, CUDA against CPU ($STEPS steps, measurements off)"
for rule in bptt eprop; do
  run "step_${rule}_gpu" "rule=$rule" task=dms "${GPU[@]}" "trainer.max_steps=$STEPS" callbacks=none
  run "step_${rule}_cpu" "rule=$rule" task=dms "trainer.max_steps=$STEPS" callbacks=none
done

echo "2. a default trainer=gpu run (rflo, $RUN_STEPS steps, every measurement)"
run gpu_run rule=rflo task=dms "${GPU[@]}" "trainer.max_steps=$RUN_STEPS"

echo "3. trainer=ddp against one device, same seed, float64"
run ddp_one rule=eprop task=dms "${GPU[@]}" float64=true "trainer.max_steps=$DDP_STEPS" callbacks=none
run ddp_all rule=eprop task=dms "${DDP[@]}" float64=true "trainer.max_steps=$DDP_STEPS" callbacks=none

echo "4. a sweep with one job per GPU ($NGPU), against one job alone"
sweep() {  # sweep <name> <gpu index> <seed>
  local dir="$OUT/$1"
  CUDA_VISIBLE_DEVICES=$2 timeout "$LIMIT" "$PY" train.py -m "${COMMON[@]}" "${SIZE[@]}" rule=eprop task=dms \
    "${GPU[@]}" "trainer.max_steps=$RUN_STEPS" "seed=$3" "hydra.sweep.dir=$dir" > "$dir.log" 2>&1
}
t0=$(date +%s)
sweep sweep_alone 0 0 || failures=$((failures + 1))
t_alone=$(( $(date +%s) - t0 ))
t0=$(date +%s)
pids=()
for ((k = 0; k < NGPU; k++)); do sweep "sweep_gpu$k" "$k" "$k" & pids+=($!); done
for pid in "${pids[@]}"; do wait "$pid" || failures=$((failures + 1)); done
t_all=$(( $(date +%s) - t0 ))
n_ok=$(grep -l '"status": "ok"' "$OUT"/sweep_gpu*/*/summary.json 2>/dev/null | wc -l)
echo "  one job alone: ${t_alone} s; $NGPU jobs, one per GPU: ${t_all} s; $n_ok of $NGPU ok"

ms() { field "$1" "f\"{1000 * s['timing']['loop_s'] / s['steps']:.1f}\""; }
{
  echo "## GPU check: $DEVICE"
  echo
  echo "\`bash tools/gpu_check.sh\` on $(date -u +%Y-%m-%d), torch $("$PY" -c 'import torch; print(torch.__version__)'), rulescape $(git rev-parse --short HEAD 2>/dev/null)."
  echo
  echo "| what | CUDA | CPU |"
  echo "|---|---:|---:|"
  for rule in bptt eprop; do
    echo "| $rule, ms per step ($WHAT, $STEPS steps) | $(ms "$OUT/step_${rule}_gpu") | $(ms "$OUT/step_${rule}_cpu") |"
  done
  echo
  echo "- trainer=gpu, rflo, $RUN_STEPS steps, every measurement: status $(field "$OUT/gpu_run" "s['status']"), wall $(field "$OUT/gpu_run" "round(s['wall_time_s'], 1)") s, measurements $(field "$OUT/gpu_run" "round(100 * s['timing']['measure_share'])")% of the loop, λ1 $(field "$OUT/gpu_run" "s['lambda_max']")"
  echo "- trainer=ddp over $NDDP device(s) vs one, eprop, float64, $DDP_STEPS steps: train_loss $(field "$OUT/ddp_all" "s['train_loss']") vs $(field "$OUT/ddp_one" "s['train_loss']") (relative difference $("$PY" -c "
import json, sys
a, b = (json.load(open(f'$OUT/{n}/summary.json'))['train_loss'] for n in ('ddp_all', 'ddp_one'))
print(f'{abs(a - b) / abs(b):.1e}')" 2>/dev/null || echo n/a); must be < 1e-6)"
  echo "- a sweep with one eprop job per GPU ($RUN_STEPS steps each): $NGPU jobs in ${t_all} s, one alone in ${t_alone} s; $n_ok of $NGPU ok"
} > "$REPORT"
cat "$REPORT"
if [ "$failures" -gt 0 ]; then
  echo "gpu_check: $failures step(s) failed; their logs are in $OUT" >&2
  exit 1
fi
echo "gpu_check: done; paste $REPORT into docs/speed.md"
