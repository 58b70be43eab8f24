#!/usr/bin/env bash
# Wheels for running scripts/gpu_check.py on a GPU machine that has Python 3.12, torch (CUDA 13),
# transformers, peft and accelerate but no package registry: everything else the service needs, at the
# versions installed in .venv here, for CPython 3.12 on x86-64 Linux, into DEST (default .whl/).
# bitsandbytes ships a library per CUDA release (129 MB unpacked); only the CUDA 13 ones and the CPU
# one are kept, so the whole set travels in under 50 MiB.
set -euo pipefail
PY=$(realpath -s "${PY:-.venv/bin/python}")
DEST=$(realpath -m "${1:-.whl}")
CUDA_KEEP=${CUDA_KEEP:-cuda13}
# transformers and huggingface_hub: the GPU image's are older than the ones the service runs on here.
PACKAGES="transformers huggingface_hub trl datasets dill multiprocess peft accelerate bitsandbytes fastapi
starlette uvicorn pydantic pydantic_core pydantic-settings python-dotenv annotated-types typing-inspection
httpx2 httpcore2 truststore idna anyio click hf-xet h11 opentelemetry-api"
LIGER=${LIGER:-liger-kernel==0.8.5}

pins=()
for name in $PACKAGES; do
  pins+=("$name==$("$PY" -c 'import sys, importlib.metadata as m; print(m.version(sys.argv[1]))' "$name")")
done
rm -rf "$DEST" && mkdir -p "$DEST"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$DEST" "${pins[@]}" "$LIGER"

wheel=$(ls "$DEST"/bitsandbytes-*.whl)
work=$(mktemp -d)
"$PY" -m zipfile -e "$wheel" "$work"
find "$work/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name "libbitsandbytes_${CUDA_KEEP}*" \
  ! -name 'libbitsandbytes_cpu.so' -delete
rm "$wheel"
(cd "$work" && "$PY" -m zipfile -c "$wheel" ./*)
rm -rf "$work"
du -sh "$DEST"
