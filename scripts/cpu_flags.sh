# Shared by scripts/install.sh and scripts/build_llama_server.sh (sourced, not run): the
# CMake flags for this CPU, and the cache key that both builds are kept under.

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

build_key() {
  # The llama.cpp version and the CPU flags: a build made for other flags is not reused.
  printf '%s %s' "$LLAMA_VERSION" "$1" | sha256sum | cut -c1-16
}
