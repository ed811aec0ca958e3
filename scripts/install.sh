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
source scripts/cpu_flags.sh  # LLAMA_VERSION, CACHE_ROOT, cpu_cmake_args, build_key

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip wheel

export CMAKE_ARGS
CMAKE_ARGS=$(cpu_cmake_args)
key=$(build_key "$CMAKE_ARGS")
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
# llama.cpp's own server, for the llama-server tests (and for a team server). A failure
# here does not stop the set-up; those tests then fail and say how to build it.
if ! PYTHON="$VENV/bin/python" bash scripts/build_llama_server.sh >/dev/null; then
  echo "WARNING: building llama-server failed; tests/test_llama_server_real.py will fail." >&2
  echo "WARNING: run scripts/build_llama_server.sh to see why and to retry." >&2
fi
# The VS Code end-to-end test's editor (tests/test_editors_vscode.py): Node 24, code-server
# and headless Chromium under $CACHE_ROOT/e2e, about 300 MB and 3-6 minutes the first time.
# A failure does not stop the set-up; that test then skips, or fails in CI.
if ! FLASHLS_E2E_DIR="$CACHE_ROOT/e2e" bash editors/vscode/e2e/install.sh >/dev/null; then
  echo "WARNING: installing code-server/Chromium failed; the VS Code e2e test cannot run." >&2
  echo "WARNING: run editors/vscode/e2e/install.sh to see why and to retry." >&2
fi
# The Emacs tests' editor (tests/test_editors_emacs.py): Debian's emacs-nox with eglot 1.9
# and lsp-mode 8.0, and tmux, installed where missing and apt-get may be used (as root, or
# with sudo needing no password). A failure does not stop the set-up; those tests then
# skip, or fail in CI.
emacs_missing=()
for package in emacs-nox elpa-eglot elpa-lsp-mode tmux; do
  dpkg -s "$package" >/dev/null 2>&1 || emacs_missing+=("$package")
done
if (( ${#emacs_missing[@]} )); then
  if [[ $(id -u) == 0 ]]; then as_root=(env); else as_root=(sudo -n env); fi
  if ! { command -v apt-get >/dev/null && "${as_root[@]}" apt-get update -qq &&
         "${as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
           --no-install-recommends "${emacs_missing[@]}"; } >/dev/null 2>&1; then
    echo "WARNING: could not install ${emacs_missing[*]} with apt-get (root or sudo needed);" \
         "the Emacs tests cannot run." >&2
  fi
fi
