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
# Build tools, OpenSSL's libcrypto headers (the artifact hashes), libpng and libjpeg (the host decodes images itself,
# never through an external program): installed from Debian when missing and root.
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v c++ >/dev/null || missing+=(g++)
[ -f /usr/include/openssl/evp.h ] || missing+=(libssl-dev)
[ -f /usr/include/png.h ] || missing+=(libpng-dev)
[ -f /usr/include/jpeglib.h ] || missing+=(libjpeg-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing: ${missing[*]} (Debian: sudo apt-get install ${missing[*]})" >&2; exit 2
  fi
fi
cmake -S hosts/cpp -B "$BUILD" -DPython3_EXECUTABLE="$PY" -DCMAKE_BUILD_TYPE=Release "$@" > "$BUILD.configure.log" 2>&1 \
  || { cat "$BUILD.configure.log" >&2; exit 1; }
cmake --build "$BUILD" -j "$(nproc)"
echo "built: $BUILD/edgekit-host, $BUILD/libedgekit_host.so, $BUILD/c_api_test"
