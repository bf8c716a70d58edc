# Sourced by build_llama_cpp.sh (the Python package's libraries) and build_llama_tools.sh (llama.cpp's own programs),
# so both compile the same code: the pinned version, this machine's -march=native minus AMX, and a key over
# everything that changes the binary. Expects PY (the venv's python); sets VERSION, args, cflags, cxxflags, key.
VERSION=$(sed -n 's/^llama_cpp_python==//p' .ci/constraints.txt)
[ -n "$VERSION" ] || { echo "error: no llama_cpp_python pin in .ci/constraints.txt" >&2; exit 2; }

nox=""
case "$(uname -m)" in
  # -march=native stays (ggml's default); only the three AMX extensions gcc 12+ knows are removed.
  # CMake seeds CMAKE_C_FLAGS / CMAKE_CXX_FLAGS from CFLAGS / CXXFLAGS on its first configure.
  x86_64|amd64) nox="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" ;;
esac
# A user's own CMAKE_ARGS (e.g. -DGGML_CUDA=on), CFLAGS and CXXFLAGS are kept; ours come after them.
args="${CMAKE_ARGS:-}"
cflags="${CFLAGS:-} $nox"
cxxflags="${CXXFLAGS:-} $nox"

cpu_flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m)
key=$(printf '%s\n' "$VERSION" "$args" "$cflags" "$cxxflags" "$cpu_flags" "$(cc --version 2>/dev/null | head -1)" "$("$PY" -c 'import sys; print(sys.version)')" \
      | sha256sum | cut -c1-16)
