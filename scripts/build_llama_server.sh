#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the llama.cpp that llama-cpp-python vendors (the
# same version and CPU flags as scripts/install.sh), for the real-server tests and teams.
#
# The binary is kept under $XDG_CACHE_HOME/flashls/llama-server-<key>/ (key: version and
# flags), so a second run prints its path at once. `--print-path` prints where it is or
# would be, building nothing. The last line of output is always the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cpu_flags.sh

PYTHON=${PYTHON:-python3}
flags=$(cpu_cmake_args)
home="$CACHE_ROOT/llama-server-$(build_key "$flags")"
binary="$home/llama-server"
if [ "${1:-}" = "--print-path" ] || [ -x "$binary" ]; then echo "$binary"; exit 0; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "building llama-server from llama-cpp-python $LLAMA_VERSION with: $flags (several minutes)" >&2
"$PYTHON" -m pip download --quiet --no-deps --no-binary llama-cpp-python -d "$work" \
  "llama-cpp-python==$LLAMA_VERSION" >&2
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
source_dir=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
# Static libraries: the one binary runs from the cache without libllama.so beside it.
# shellcheck disable=SC2086  # the flags are a list of words
cmake -S "$source_dir" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF $flags >&2
cmake --build "$work/build" --target llama-server -j "${JOBS:-2}" >&2
mkdir -p "$home"
cp "$work/build/bin/llama-server" "$binary.partial"
mv "$binary.partial" "$binary"  # a cut-short build never looks finished
echo "$binary"
