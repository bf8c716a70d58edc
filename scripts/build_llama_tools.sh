#!/usr/bin/env bash
# llama.cpp's own programs (llama-bench, llama-imatrix, llama-quantize, llama-perplexity, llama-server), built from the
# llama-cpp-python source distribution pinned in .ci/constraints.txt with the same flags as the installed library
# (scripts/llama_cpp_flags.sh: -march=native minus AMX), so a benchmark compares edgekit with llama.cpp's own
# tools on the same code. Static programs; nothing is installed. About 6 minutes on 2 cores, then cached in
# .cache/llama-tools/<key>/ (key: version, flags, CPU, compiler).
# Usage: bash scripts/build_llama_tools.sh          prints the directory holding the programs (last line)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
. scripts/llama_cpp_flags.sh  # VERSION, args, cflags, cxxflags, key
TOOLS=(llama-bench llama-imatrix llama-quantize llama-perplexity llama-server)
dir=$PWD/.cache/llama-tools/$key
missing=0
for t in "${TOOLS[@]}"; do [ -x "$dir/bin/$t" ] || missing=1; done
if [ "$missing" = 1 ]; then
  command -v cmake >/dev/null || { echo "cmake not found (Debian: apt-get install cmake)" >&2; exit 2; }
  rm -rf "$dir.partial" && mkdir -p "$dir.partial/src"
  echo "building ${TOOLS[*]} from llama-cpp-python $VERSION's source distribution (about 6 minutes on 2 cores)" >&2
  "$PY" -m pip download -q --no-cache-dir --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$dir.partial/src" >&2
  tar -xzf "$dir.partial"/src/llama_cpp_python-"$VERSION".tar.gz -C "$dir.partial/src"
  # shellcheck disable=SC2086  # a user's CMAKE_ARGS are words
  CFLAGS="$cflags" CXXFLAGS="$cxxflags" cmake -S "$dir.partial/src/llama_cpp_python-$VERSION/vendor/llama.cpp" \
    -B "$dir.partial/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON $args > "$dir.partial/configure.log" 2>&1 \
    || { cat "$dir.partial/configure.log" >&2; exit 1; }
  cmake --build "$dir.partial/build" --target "${TOOLS[@]}" -j "$(nproc)" > "$dir.partial/build.log" 2>&1 \
    || { tail -40 "$dir.partial/build.log" >&2; exit 1; }
  mkdir -p "$dir.partial/bin"
  for t in "${TOOLS[@]}"; do cp "$dir.partial/build/bin/$t" "$dir.partial/bin/"; done
  rm -rf "$dir.partial/src" "$dir.partial/build" "$dir"
  mv "$dir.partial" "$dir"
fi
echo "$dir/bin"
