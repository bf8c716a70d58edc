#!/usr/bin/env bash
# The install (README "Set up and run"; .ci/run calls it too): a venv in .venv with edgekit editable,
# every dependency at the versions in .ci/constraints.txt, and llama.cpp built for this machine
# without its AMX path (scripts/build_llama_cpp.sh says why). Rerunning it reuses what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
"$PY" -m pip install -q --upgrade pip
# llama.cpp compiles (minutes, every core) while pip fills the venv with everything but llama-cpp-python (the
# `gguf` extra): downloads and unpacking overlap the compile. Only then is the wheel installed, and the rest.
LLAMA_LOG=$(mktemp)
bash scripts/build_llama_cpp.sh "$PY" --build-only >"$LLAMA_LOG" 2>&1 &
llama_pid=$!
trap 'kill "$llama_pid" 2>/dev/null || true' EXIT  # a failed pip below stops the compile too
# torch 2.13.0 CPU lies on this machine's disk; asking for it first keeps pip from pulling a CUDA build.
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -c .ci/constraints.txt -e ".[torch,onnx,bench,serve]"
llama_rc=0
wait "$llama_pid" || llama_rc=$?
grep -v "^WARNING: Location" "$LLAMA_LOG" || true
rm -f "$LLAMA_LOG"
[ "$llama_rc" = 0 ] || { echo "scripts/build_llama_cpp.sh failed (exit $llama_rc)"; exit "$llama_rc"; }
trap - EXIT
bash scripts/build_llama_cpp.sh "$PY"  # installs the wheel just built (cached by its key)
"$PY" -m pip install -q -c .ci/constraints.txt -e ".[dev]"
# Refuse an install whose llama.cpp still carries AMX code or lacks this machine's SIMD (edgekit doctor).
.venv/bin/edgekit doctor --llama-only
