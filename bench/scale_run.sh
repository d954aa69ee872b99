#!/usr/bin/env bash
# Curation's scaling on one many-core machine without a package index (a lent GPU machine: 16 cores, numba,
# PyTorch, pyarrow, pandas; no Ray, no fastText): bench/pipeline_bench.py on a 200 MB corpus at 1, 2, 4, 8 and 16
# CPUs on one node and on two `ray start` nodes of half the cores, then the 1 GB corpus at 16 CPUs and at 1 CPU.
# What the machine lacks travels in the bundle bench/gpu_bundle.sh builds (Ray, the fastText wheel with lid.176,
# google-re2 and the other small wheels, and the shared web text the corpora are generated from, there, seeded:
# bench/dedup_corpus.py's distinct documents with planted copies, so that what dedup keeps grows with the corpus).
# Results: $OUT/pipeline-16core*.{md,json} (bench/scale_report.py joins them into bench/results/pipeline-16core.md)
# and $OUT/worker_start-16core.{md,json} (bench/worker_start.py on this machine: copied to bench/results as they are).
#
#   bash bench/scale_run.sh [BUNDLE] [CPUS...]      # from the repository root; default .gpu-bundle 1 2 4 8 16
#
# The small corpus's 17 files are read in ranges of SCALE_BLOCK (default 4 MiB: 49 read tasks, as thresher's warning
# asks for 16 CPUs; the default 16 MiB leaves these 12.5 MB files one task each); the large one at the default.
# SCALE_MB="200 1000": the two corpus sizes (a rehearsal takes smaller ones); SCALE_SETUP=0: the bundle is already
# unpacked (PYTHONPATH set: a later step of the same call, or a rehearsal in a venv that has the machine's packages
# and the bundle's); SCALE_1GB_AT_1=0: leave out the 1 GB run at 1 CPU (the longest: about
# 4 minutes); SCALE_1GB_AT_1=only: that run alone (to run it beside another job, as the device call does);
# SCALE_1GB_AT_1=beside: both corpora made first, then that run started in its own work folder beside all the others
# (one core of 16 more; when time is short: its CPU seconds against its wall time say what it lost).
set -uo pipefail
BUNDLE=$(realpath "${1:-.gpu-bundle}"); shift || true
CPUS=("$@"); [ ${#CPUS[@]} -gt 0 ] || CPUS=(1 2 4 8 16)
MAX=${CPUS[-1]}; HALF=$(( MAX / 2 > 0 ? MAX / 2 : 1 ))
read -r SMALL LARGE <<<"${SCALE_MB:-200 1000}"
OUT=${OUT:-/tmp/scale-out}; WORK=${SCALE_WORK:-/tmp/scale-work}; mkdir -p "$OUT" "$WORK"
START=$(date +%s); since() { echo "$(( $(date +%s) - START )) s"; }
if [ "${SCALE_SETUP:-1}" != 0 ]; then
  . "$BUNDLE/setup.sh" >"$OUT/scale-setup.log" 2>&1 || { cat "$OUT/scale-setup.log"; exit 1; }
  export PYTHONPATH=$PWD/src:$PWD:$PYTHONPATH
fi
export THRESHER_SHARED=${THRESHER_SHARED:-$BUNDLE/shared} PYTHONUNBUFFERED=1
python3 -c "import ray, fasttext, re2, numba, pyarrow, thresher.curate.runner; print('ray', ray.__version__, 'numba', numba.__version__, 'pyarrow', pyarrow.__version__)" \
  || { echo "imports failed"; exit 1; }
bench() { python3 bench/pipeline_bench.py --work "$WORK" --results "$OUT" --distinct "$@"; }
# what one worker process pays before its records flow, on this machine's cores (a few seconds, one core)
python3 bench/worker_start.py --rounds 3 --work "$WORK/worker-start" --results "$OUT" --name worker_start-16core \
  >"$OUT/worker-start.log" 2>&1 || echo "worker_start failed: $OUT/worker-start.log"
if [ "${SCALE_1GB_AT_1:-1}" = only ]; then
  bench --mb "$LARGE" --cpus 1 --nodes --name pipeline-16core-1gb-1cpu >"$OUT/scale-1gb-1cpu.log" 2>&1
  echo "$LARGE MB at 1 CPU: exit $? at $(since)"; exit 0
fi
if [ "${SCALE_1GB_AT_1:-1}" = beside ]; then
  (cd bench && python3 -c "import sys; from pathlib import Path; from pipeline_bench import corpus
for mb in sys.argv[2:]: corpus(Path(sys.argv[1]), int(mb), 16, True)" "$WORK" "$SMALL" "$LARGE") || exit 1
  mkdir -p "$WORK-1cpu" && ln -sfn "$WORK/distinct$LARGE" "$WORK-1cpu/distinct$LARGE"
  echo "corpora made; $LARGE MB at 1 CPU started beside the rest ($(since))"
  python3 bench/pipeline_bench.py --work "$WORK-1cpu" --results "$OUT" --distinct --mb "$LARGE" --cpus 1 --nodes \
    --name pipeline-16core-1gb-1cpu >"$OUT/scale-1gb-1cpu.log" 2>&1 &
  BESIDE=$!
fi
echo "$SMALL MB: ${CPUS[*]} CPUs, 2 nodes x $HALF ($(since))"
bench --mb "$SMALL" --cpus "${CPUS[@]}" --nodes "2x$HALF" --set "input.block_bytes=${SCALE_BLOCK:-4194304}" \
  --name pipeline-16core || exit 1
echo "$LARGE MB: $MAX CPUs ($(since))"
bench --mb "$LARGE" --cpus "$MAX" --nodes --name "pipeline-16core-1gb-${MAX}cpu" || exit 1
if [ "${SCALE_1GB_AT_1:-1}" = 1 ]; then
  echo "$LARGE MB: 1 CPU ($(since))"
  bench --mb "$LARGE" --cpus 1 --nodes --name pipeline-16core-1gb-1cpu || exit 1
fi
if [ -n "${BESIDE:-}" ]; then wait "$BESIDE"; echo "$LARGE MB at 1 CPU (beside): exit $? at $(since)"; fi
echo "done at $(since)"
