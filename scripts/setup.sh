#!/usr/bin/env bash
# Create .venv in the repository root and install tlpo into it with its test tools.
# Where no NVIDIA GPU is visible, install the CPU build of PyTorch first, so that the
# package's own `torch>=2.4` requirement is already met and pip fetches no CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip

if ! python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        python -m pip install --quiet "torch>=2.4"
    else
        python -m pip install --quiet torch==2.13.0
    fi
fi
python -m pip install --quiet -e ".[dev]"
