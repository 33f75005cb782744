#!/usr/bin/env bash
# Every GPU measurement in one go, on a GPU host with no network (run bench/gpu_prepare.sh first,
# where there is network, and bring .gpu/ along). Installs the carried wheels beside the host's
# CUDA PyTorch, puts the weights in place and runs bench/gpu_bench.py: bench/results/gpu.json.
# About 6-8 minutes on one H200: ~1 min of torch.compile, the rest measuring.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl
export PYTHONPATH="/tmp/site:$PWD"
export CUTOUT_HOME="${CUTOUT_HOME:-/tmp/cutout-home}"
mkdir -p "$CUTOUT_HOME/weights"
cp .gpu/weights/* "$CUTOUT_HOME/weights/"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
python3 -m bench.gpu_bench "$@"
if [ -n "${OUT:-}" ]; then cp bench/results/gpu*.json "$OUT/"; fi
