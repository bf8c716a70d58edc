#!/usr/bin/env bash
# NVIDIA TensorRT Edge-LLM's exporter in its own virtual environment (.venv-edgellm/ in the repo):
# it pins its own transformers and onnx, so it never shares edgekit's. edgekit finds it there
# (edgekit/bundle/edgellm.py) and runs `tensorrt-edgellm-export` as a subprocess; it runs on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-edgellm
if [ ! -x "$VENV/bin/tensorrt-edgellm-export" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # The local CPU torch first, so the exporter's torch requirement does not pull a CUDA build.
  "$VENV/bin/python" -m pip install -q torch==2.13.0
  "$VENV/bin/python" -m pip install -q "tensorrt-edgellm[export]==0.11.0"
fi
"$VENV/bin/tensorrt-edgellm-export" --help >/dev/null
echo "tensorrt-edgellm-export ready: $VENV/bin/tensorrt-edgellm-export"
