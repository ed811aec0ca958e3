#!/usr/bin/env bash
# Set up flashls from a fresh checkout: a virtual environment in .venv, llama-cpp-python
# built for this CPU, flashls with its dev tools, and the default model.
#
# llama-cpp-python has no wheel here, so it is compiled (~5 min). The build is kept in a
# wheelhouse keyed by its CMake flags, so later set-ups (and CI) reuse it. The flags are
# chosen from what this CPU reports, never "native": some VMs advertise AMX but trap on it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
LLAMA_VERSION=0.3.36
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/flashls

cpu_cmake_args() {
  # CUDA or Metal users set CMAKE_ARGS themselves (e.g. -DGGML_CUDA=on).
  if [ -n "${CMAKE_ARGS:-}" ]; then echo "$CMAKE_ARGS"; return; fi
  local flags args="-DGGML_NATIVE=OFF"
  flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
  for pair in avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx512f:AVX512 avx512_vnni:AVX512_VNNI \
              avx512vbmi:AVX512_VBMI avx512_bf16:AVX512_BF16; do
    if [[ " $flags " == *" ${pair%%:*} "* ]]; then args="$args -DGGML_${pair#*:}=ON"; fi
  done
  echo "$args"
}

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip wheel

export CMAKE_ARGS
CMAKE_ARGS=$(cpu_cmake_args)
key=$(printf '%s %s' "$LLAMA_VERSION" "$CMAKE_ARGS" | sha256sum | cut -c1-16)
wheelhouse="$CACHE_ROOT/wheels/llama-cpp-python-$key"
if ! ls "$wheelhouse"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $LLAMA_VERSION with: $CMAKE_ARGS (about 5 minutes)"
  mkdir -p "$wheelhouse"
  "$VENV/bin/python" -m pip wheel --no-deps --no-cache-dir -w "$wheelhouse" \
    "llama-cpp-python==$LLAMA_VERSION"
fi
"$VENV/bin/python" -m pip install --quiet "$wheelhouse"/llama_cpp_python-*.whl
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
"$VENV/bin/flashls" models install
echo "flashls is installed in $VENV; the default model is at $("$VENV/bin/flashls" models path)"
