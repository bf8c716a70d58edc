#!/usr/bin/env bash
# Build the C++ host (hosts/cpp: libedgekit_host.so, edgekit-host, c_api_test) against the llama.cpp that
# llama-cpp-python installed in the venv.  Usage: scripts/build_cpp_host.sh [BUILD_DIR] [extra cmake args...]
# e.g. scripts/build_cpp_host.sh build/host-asan -DEDGEKIT_ASAN=ON
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build/host}"
shift || true
if [ -x .venv/bin/python ]; then PY="$PWD/.venv/bin/python"; else PY="$(command -v python3)"; fi
mkdir -p "$(dirname "$BUILD")"
command -v cmake >/dev/null || { echo "cmake not found: apt-get install cmake (Debian) or pip install cmake" >&2; exit 2; }
cmake -S hosts/cpp -B "$BUILD" -DPython3_EXECUTABLE="$PY" -DCMAKE_BUILD_TYPE=Release "$@" > "$BUILD.configure.log" 2>&1 \
  || { cat "$BUILD.configure.log" >&2; exit 1; }
cmake --build "$BUILD" -j "$(nproc)"
echo "built: $BUILD/edgekit-host, $BUILD/libedgekit_host.so, $BUILD/c_api_test"
