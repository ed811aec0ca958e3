#!/usr/bin/env bash
# Builds editors/vscode/flashls-<version>.vsix from the committed package-lock.json.
# Needs Node 20+ and npm; the registry is used only to fetch the locked packages.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --loglevel=error
version="$(node -p "require('./package.json').version")"
npx --no-install vsce package --allow-missing-repository --out "flashls-${version}.vsix"
echo "$PWD/flashls-${version}.vsix"
