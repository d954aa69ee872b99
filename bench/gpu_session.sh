#!/usr/bin/env bash
# One session on a lent GPU machine that has PyTorch, transformers, peft and accelerate but no Ray and no package
# index: unpack the carried bundle (made here by bench/gpu_bundle.sh), check the imports, run the GPU suite
# (tests/gpu), then bench/train_gpu.py with what is left of DEADLINE_S seconds (BENCH_S of them kept for the
# benchmark; BENCH_S=0: none). PYTEST_TARGETS: the tests (default tests/gpu; none: no tests, the benchmark only, as
# a second call on the same warm machine); PYTEST_ARGS: more pytest arguments;
# GPU_TEST_PROCESSES: pytest-xdist processes (default 4); BENCH_ARGS: more bench/train_gpu.py arguments (--only
# model:method:seq ...). Logs and results go to $OUT (default /tmp/gpu-out);
# each training run of the suite appends its metrics to $OUT/gpu-runs.jsonl.
#
#   bash bench/gpu_session.sh [BUNDLE] [DEADLINE_S]        # from the repository root; default .gpu-bundle 480
set -uo pipefail
BUNDLE=${1:-.gpu-bundle}; DEADLINE=${2:-480}; OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
START=$(date +%s); left() { echo $((DEADLINE - ($(date +%s) - START))); }
. "$BUNDLE/setup.sh" >"$OUT/setup.log" 2>&1 || { cat "$OUT/setup.log"; exit 1; }
export PYTHONPATH=$PWD/src:$PWD:$PYTHONPATH DS_ACCELERATOR=cuda THRESHER_MODEL_CONFIGS=$PWD/$BUNDLE/models \
  THRESHER_GPU_MODELS=/tmp/gpu-models THRESHER_GPU_RECORD=$OUT/gpu-runs.jsonl
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; python3 -c "
import torch, ray, transformers, peft, deepspeed, bitsandbytes, thresher.train.run, thresher.curate.runner
from thresher.curate.config import load_stages; load_stages()  # every stage module, as a curation config loads them
print('torch', torch.__version__, 'cuda', torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device: tests/gpu skip')
print('ray', ray.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__,
      'deepspeed', deepspeed.__version__, 'bitsandbytes', bitsandbytes.__version__)
# not in the bundle: numba (curation writes with it: without it the two curation runs skip; the embed and paraphrase
# stage tests still run on the GPU), the suite's pytest and its plugins; liger_kernel is (listed if it failed to install)
from importlib.util import find_spec
print('absent:', [m for m in ('numba', 'pytest', 'xdist', 'pytest_timeout', 'liger_kernel') if not find_spec(m)])
"; } 2>&1 | tee "$OUT/env.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "imports failed: stopping; setup.log:"; cat "$OUT/setup.log"; exit 1; }
echo "setup done at $(( $(date +%s) - START )) s"

[ "${PYTEST_TARGETS:-}" = none ] || timeout -k 10 $(( $(left) - ${BENCH_S:-200} )) python3 -m pytest ${PYTEST_TARGETS:-tests/gpu} -n ${GPU_TEST_PROCESSES:-4} -v -rA --tb=short -p no:cacheprovider \
  --timeout 240 --junitxml "$OUT/gpu-junit.xml" ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/gpu-tests.log" \
  | grep -E "PASSED|FAILED|ERROR|SKIPPED|passed|failed|^E |Error|error" | cut -c1-400
echo "tests done at $(( $(date +%s) - START )) s"

[ "${BENCH_S:-200}" -gt 0 ] || exit 0
BUDGET=$(( $(left) - 15 ))
[ "$BUDGET" -gt 20 ] || { echo "no time left for the benchmark"; exit 0; }
timeout -k 10 $(( $(left) - 5 )) python3 bench/train_gpu.py --data "$BUNDLE/gsm8k/data/train" --models /tmp/gpu-models \
  --budget-s "$BUDGET" --out "$OUT/train_gpu.md" ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1
RC=$?; echo "bench exit $RC at $(( $(date +%s) - START )) s"; tail -n 60 "$OUT/bench.log" | grep -v "^\s*$" | tail -n 45
exit $RC
