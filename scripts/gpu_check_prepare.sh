#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored through .git/info/exclude) for scripts/gpu_check.sh on a
# machine with an NVIDIA GPU and no network: the vendored llama.cpp trimmed to the CPU and
# CUDA backends, Python 3.12 wheels of flashls's dependencies that such a machine lacks,
# llama-cpp-python's Python package (its libraries are built there), and a shape twin of
# the default model (scripts/shape_twin.py: its header and tokenizer, its tensors' shapes
# and types, data tiled from real samples; 15 MB instead of 491 MB, so it travels).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cpu_flags.sh
VENV=${VENV:-.venv}
out=.gpu
mkdir -p .git/info "$out/whl"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$VENV/bin/python" -m pip download --quiet --no-deps --no-binary llama-cpp-python -d "$work" \
  "llama-cpp-python==$LLAMA_VERSION"
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src=$(echo "$work"/llama_cpp_python-*/vendor/llama.cpp)
gguf_py="$work/gguf-py"
cp -r "$src/gguf-py" "$gguf_py"
(cd "$src" && rm -rf docs models tests benches examples conversion gguf-py media)
for backend in "$src"/ggml/src/ggml-*/; do
  case $(basename "$backend") in ggml-cpu|ggml-cuda) ;; *) rm -rf "$backend" ;; esac
done
tar -czf "$out/llama-src.tar.gz" -C "$(dirname "$src")" llama.cpp
# flashls's dependencies missing from a CUDA image that has numpy, httpx, matplotlib, ...
"$VENV/bin/python" -m pip freeze | grep -i -E '^(pygls|lsprotocol|cattrs|tree[-_]sitter[-_a-z]*|platformdirs|cachetools|httpx[-_]sse|diskcache)==' \
  > "$work/wanted.txt"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$out/whl" -r "$work/wanted.txt"
site=$("$VENV/bin/python" -c 'import llama_cpp, os; print(os.path.dirname(llama_cpp.__file__))')
rm -rf "$out/llama_cpp" && cp -r "$site" "$out/llama_cpp"
rm -rf "$out/llama_cpp/lib" && find "$out/llama_cpp" -name __pycache__ -exec rm -rf {} +
PYTHONPATH="$gguf_py" "$VENV/bin/python" scripts/shape_twin.py pack \
  "$("$VENV/bin/flashls" models path)" "$out/twin.pack"
du -sh "$out"
