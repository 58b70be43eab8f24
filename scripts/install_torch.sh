#!/usr/bin/env bash
# Installs torch into the current Python environment, the CPU build when there is no NVIDIA GPU.
# An unpinned `pip install torch` pulls a multi-GB CUDA build even on CPU-only machines.
set -euo pipefail
PY=${PY:-python}
VERSION=${TORCH_VERSION:-2.13.0}
if "$PY" -c "import torch" 2>/dev/null; then exit 0; fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  "$PY" -m pip install "torch==$VERSION"
elif "$PY" -m pip download --quiet --no-deps --no-index "torch==$VERSION" -d "$(mktemp -d)" >/dev/null 2>&1; then
  # A local wheelhouse (pip's find-links) offers a build of this version: on CPU-only machines
  # that is the CPU wheel, and its local label (+cpu) makes pip prefer it over PyPI's.
  "$PY" -m pip install "torch==$VERSION"
else
  "$PY" -m pip install "torch==$VERSION" --index-url https://download.pytorch.org/whl/cpu
fi
