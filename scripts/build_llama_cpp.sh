#!/usr/bin/env bash
# Build llama-cpp-python from source for THIS machine, with llama.cpp's AMX path left out, and install it
# into the active Python (README: "Troubleshooting"). Why:
#   - pip's default source build uses -march=native; on Intel CPUs with AMX under a Linux kernel with XFD,
#     ggml's AMX matmul dies with SIGILL on OpenMP worker threads (llama.cpp PR #26954, still open);
#   - gcc honours -mno-amx-* whatever their position relative to -march=native, so the build keeps every
#     other instruction set the machine has (AVX2, AVX-512, VNNI, BF16) and the REPACK kernels;
#   - pip caches the wheel it builds keyed by the sdist, not by CMAKE_ARGS, so a cached default build
#     would come back silently: this script builds with --no-cache-dir into a repo-local cache keyed by
#     everything that changes the binary (version, flags, CPU flags, compiler).
# Usage: bash scripts/build_llama_cpp.sh [PYTHON] [--build-only]     (default: .venv/bin/python, else python3)
#   --build-only: build the wheel into the cache (if it is not there) and stop, installing nothing: the install runs
#   it beside pip filling the venv, which must not be written by two pips at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-}
BUILD_ONLY=${2:-}
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
. scripts/llama_cpp_flags.sh  # VERSION, the flags, key
dir=.cache/llama-cpp-wheels/$key
wheel=$(ls "$dir"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
  echo "building llama-cpp-python $VERSION from source (about 6 minutes on 2 cores): CMAKE_ARGS='$args' CFLAGS='$cflags'"
  rm -rf "$dir.partial" && mkdir -p "$dir.partial"
  CMAKE_ARGS="$args" CFLAGS="$cflags" CXXFLAGS="$cxxflags" "$PY" -m pip wheel -q --no-cache-dir --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -w "$dir.partial"
  rm -rf "$dir" && mv "$dir.partial" "$dir"
  wheel=$(ls "$dir"/llama_cpp_python-"$VERSION"-*.whl | head -1)
else
  echo "llama-cpp-python $VERSION: reusing $wheel (same version, flags, CPU and compiler)"
fi
[ "$BUILD_ONLY" = "--build-only" ] && exit 0
"$PY" -m pip install -q --no-deps --force-reinstall "$wheel"
# Its runtime dependencies, at the pinned versions.
"$PY" -m pip install -q -c .ci/constraints.txt numpy typing-extensions diskcache jinja2
