#!/usr/bin/env bash
# One call on a lent GPU machine (16 cores, no package index): curation's scaling run (bench/scale_run.sh: 200 MB
# at 1-16 CPUs and on two nodes, 1 GB at 16 CPUs, each alone on the machine), then the training benchmark
# (bench/train_gpu.py: thresher beside the plain PyTorch loop) with the 1 GB run at 1 CPU beside it (one core of
# 16, the longest curation run; the training rows use the GPU and 2-3 cores). Everything comes back in two files:
# $OUT/results.tgz (the benchmarks' .md and .json) and $OUT/logs.tgz.
#
#   bash bench/device_run.sh [BUNDLE] [TRAIN_BUDGET_S]    # from the repository root; default .gpu-bundle 250
#
# TOTAL_S (default 590): the call's own deadline; the second part (training beside the 1 GB run at 1 CPU) gets what
# the scaling runs left of it, and the training benchmark that less 35 s when that is under TRAIN_BUDGET_S.
# TRAIN_ONLY=none: no training; the 1 GB run at 1 CPU starts beside the scaling runs (SCALE_1GB_AT_1=beside) and
# SCALE_S bounds the whole. TRAIN_ONLY: model:method:seq rows (default: the 135M LoRA, the 1B full fine-tune and LoRA, as the budget allows); SCALE_S: seconds for the
# scaling runs (default 280); SCALE_CPUS, SCALE_MB, SCALE_SETUP=0: as bench/scale_run.sh (a rehearsal here).
set -uo pipefail
B=$(realpath "${1:-.gpu-bundle}"); TRAIN_S=${2:-250}; FINAL=${OUT:-/tmp/device-out}; R=/tmp/device-results; mkdir -p "$R" "$FINAL"
START=$(date +%s); since() { echo "$(( $(date +%s) - START )) s"; }
pack() { tar czf "$FINAL/results.tgz" -C "$R" . ; find /tmp/scale-work -maxdepth 2 -name '*.log' 2>/dev/null \
  | tar czf "$FINAL/logs.tgz" -T - 2>/dev/null; echo "packed at $(since)"; }
trap pack EXIT
if [ "${SCALE_SETUP:-1}" != 0 ]; then  # 0: a rehearsal in a venv that has the machine's packages and the bundle's
  . "$B/setup.sh" >"$R/setup.log" 2>&1 || { cat "$R/setup.log"; exit 1; }
  export PYTHONPATH=$PWD/src:$PWD:$PYTHONPATH
fi
export OUT=$R SCALE_SETUP=0 DS_ACCELERATOR=cuda \
  THRESHER_MODEL_CONFIGS=$B/models
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; lscpu | grep -E "Model name|^CPU\(s\)"; free -g | sed -n 2p; } | tee "$R/machine.txt"
echo "setup done at $(since)"

if [ "${TRAIN_ONLY:-}" = none ]; then
  # shellcheck disable=SC2086
  SCALE_1GB_AT_1=beside timeout -k 5 "${SCALE_S:-280}" bash bench/scale_run.sh "$B" ${SCALE_CPUS:-1 2 4 8 16} 2>&1 | tee "$R/scale.log"
  exit
fi
# shellcheck disable=SC2086
SCALE_1GB_AT_1=0 timeout -k 5 "${SCALE_S:-280}" bash bench/scale_run.sh "$B" ${SCALE_CPUS:-1 2 4 8 16} 2>&1 | tee "$R/scale.log"
echo "scaling done at $(since)"

LEFT=$(( START + ${TOTAL_S:-590} - $(date +%s) )); TRAIN_S=$(( LEFT - 40 < TRAIN_S ? LEFT - 40 : TRAIN_S ))
echo "second part: $LEFT s left, training budget $TRAIN_S s"
SCALE_1GB_AT_1=only timeout -k 5 "$LEFT" bash bench/scale_run.sh "$B" >"$R/scale-1cpu.out" 2>&1 &
ONE=$!
# shellcheck disable=SC2086
timeout -k 5 "$LEFT" python3 bench/train_gpu.py --data "$B/gsm8k/data/train" --models /tmp/gpu-models \
  --parts --budget-s "$TRAIN_S" --out "$R/train_gpu.md" \
  --only ${TRAIN_ONLY:-smollm2-135m:lora:1024 llama-1b:full:2048 llama-1b:lora:2048} >"$R/train.log" 2>&1
echo "training bench exit $? at $(since)"; grep -E "^\| |error" "$R/train_gpu.md" | head -20
wait $ONE; cat "$R/scale-1cpu.out"
