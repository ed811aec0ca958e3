#!/usr/bin/env bash
# The one entry point for checks: lint, types, then the tests (model tests included).
# CI runs this through the README's test command; a laptop runs the same.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/ruff" check flashls tests
"$VENV/bin/mypy"
"$VENV/bin/python" -m pytest "$@"
