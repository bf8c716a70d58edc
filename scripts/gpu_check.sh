#!/usr/bin/env bash
# Every GPU check of edgekit in one run (scripts/gpu_check.py says what each step does), for a machine with an
# NVIDIA GPU, CUDA torch and nvcc and nothing to download: under 8 minutes on an H100.
#
#   bash scripts/gpu_check.sh [--out DIR] [--steps env,kernels,...] [--dry-run]
#
# Python: $PYTHON, else the repo's .venv when its torch sees CUDA, else python3 (the GPU image's, which holds CUDA
# torch). Wheels in .whl/ (e.g. gguf, carried where the image lacks it) are installed to a private folder first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    PY=.venv/bin/python
  else
    PY=python3
  fi
fi
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/edgekit-site .whl/*.whl
  export PYTHONPATH="/tmp/edgekit-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$PY" scripts/gpu_check.py "$@"
