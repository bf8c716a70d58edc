#!/usr/bin/env bash
# The install (README "Set up and run"; .ci/run calls it too): a venv in .venv with edgekit editable,
# every dependency at the versions in .ci/constraints.txt, and llama.cpp built for this machine
# without its AMX path (scripts/build_llama_cpp.sh says why). Rerunning it reuses what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
"$PY" -m pip install -q --upgrade pip
# torch 2.13.0 CPU lies on this machine's disk; asking for it first keeps pip from pulling a CUDA build.
"$PY" -m pip install -q torch==2.13.0
bash scripts/build_llama_cpp.sh "$PY"
"$PY" -m pip install -q -c .ci/constraints.txt -e ".[dev]"
# Refuse an install whose llama.cpp still carries AMX code or lacks this machine's SIMD (edgekit doctor).
.venv/bin/edgekit doctor --llama-only
