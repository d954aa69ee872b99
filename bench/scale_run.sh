#!/usr/bin/env bash
# Curation's scaling on one many-core machine without a package index (a lent GPU machine: 16 cores, numba,
# PyTorch, pyarrow, pandas; no Ray, no fastText): bench/pipeline_bench.py on a 200 MB corpus at 1, 2, 4, 8 and 16
# CPUs on one node and on two `ray start` nodes of half the cores, then the 1 GB corpus at 16 CPUs and at 1 CPU.
# What the machine lacks travels in the bundle bench/gpu_bundle.sh builds (Ray, the fastText wheel with lid.176,
# google-re2 and the other small wheels, and the shared web text the corpora are generated from, there, seeded:
# bench/dedup_corpus.py's distinct documents with planted copies, so that what dedup keeps grows with the corpus).
# Results: $OUT/pipeline-16core*.{md,json} (bench/scale_report.py joins them into bench/results/pipeline-16core.md).
#
#   bash bench/scale_run.sh [BUNDLE] [CPUS...]      # from the repository root; default .gpu-bundle 1 2 4 8 16
#
# SCALE_MB="200 1000": the two corpus sizes (a rehearsal takes smaller ones); SCALE_SETUP=0: the bundle is already
# unpacked (PYTHONPATH set: a later step of the same call, or a rehearsal in a venv that has the machine's packages
# and the bundle's); SCALE_1GB_AT_1=0: leave out the 1 GB run at 1 CPU (the longest: about
# 4 minutes); SCALE_1GB_AT_1=only: that run alone (to run it beside another job, as the device call does).
set -uo pipefail
BUNDLE=${1:-.gpu-bundle}; shift || true
CPUS=("$@"); [ ${#CPUS[@]} -gt 0 ] || CPUS=(1 2 4 8 16)
MAX=${CPUS[-1]}; HALF=$(( MAX / 2 > 0 ? MAX / 2 : 1 ))
read -r SMALL LARGE <<<"${SCALE_MB:-200 1000}"
OUT=${OUT:-/tmp/scale-out}; WORK=${SCALE_WORK:-/tmp/scale-work}; mkdir -p "$OUT" "$WORK"
START=$(date +%s); since() { echo "$(( $(date +%s) - START )) s"; }
if [ "${SCALE_SETUP:-1}" != 0 ]; then
  . "$BUNDLE/setup.sh" >"$OUT/scale-setup.log" 2>&1 || { cat "$OUT/scale-setup.log"; exit 1; }
  export PYTHONPATH=$PWD/src:$PWD:$PYTHONPATH
fi
export THRESHER_SHARED=${THRESHER_SHARED:-$PWD/$BUNDLE/shared} PYTHONUNBUFFERED=1
python3 -c "import ray, fasttext, re2, numba, thresher.curate.runner; print('ray', ray.__version__, 'numba', numba.__version__)" \
  || { echo "imports failed"; exit 1; }
bench() { python3 bench/pipeline_bench.py --work "$WORK" --results "$OUT" --distinct "$@"; }
if [ "${SCALE_1GB_AT_1:-1}" = only ]; then
  bench --mb "$LARGE" --cpus 1 --nodes --name pipeline-16core-1gb-1cpu >"$OUT/scale-1gb-1cpu.log" 2>&1
  echo "$LARGE MB at 1 CPU: exit $? at $(since)"; exit 0
fi
echo "$SMALL MB: ${CPUS[*]} CPUs, 2 nodes x $HALF ($(since))"
bench --mb "$SMALL" --cpus "${CPUS[@]}" --nodes "2x$HALF" --name pipeline-16core || exit 1
echo "$LARGE MB: $MAX CPUs ($(since))"
bench --mb "$LARGE" --cpus "$MAX" --nodes --name "pipeline-16core-1gb-${MAX}cpu" || exit 1
if [ "${SCALE_1GB_AT_1:-1}" = 1 ]; then
  echo "$LARGE MB: 1 CPU ($(since))"
  bench --mb "$LARGE" --cpus 1 --nodes --name pipeline-16core-1gb-1cpu || exit 1
fi
echo "done at $(since)"
