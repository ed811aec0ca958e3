"""Writes the settings block and activation events of the VS Code extension's package.json.

The settings come from `flashls.settings.vscode_configuration()`, the one schema; this
script only adds the settings that the extension itself reads (how to start the server).
Run from the repository root: `python editors/vscode/scripts/sync_package_json.py [--check]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[3]
PACKAGE_JSON = REPOSITORY / "editors" / "vscode" / "package.json"
sys.path.insert(0, str(REPOSITORY))  # the checkout's flashls, installed or not

from flashls import settings  # noqa: E402

# VS Code language ids the extension starts for; the server completes any text, and
# these have tree-sitter context or are common enough to be worth a default.
LANGUAGES = (
    "c", "cpp", "csharp", "css", "go", "html", "java", "javascript", "javascriptreact",
    "kotlin", "lua", "php", "python", "ruby", "rust", "scala", "shellscript", "swift",
    "typescript", "typescriptreact", "zig",
)

# Read by extension.js to start the server; never sent to it.
CLIENT_SETTINGS: dict[str, Any] = {
    "flashls.serverPath": {
        "type": "string",
        "default": "flashls",
        "description": "The flashls executable: a name on PATH or an absolute path "
                       "(for example a virtualenv's `bin/flashls`).",
        "scope": "machine-overridable",
    },
    "flashls.serverArgs": {
        "type": "array",
        "items": {"type": "string"},
        "default": [],
        "description": "Extra arguments after `flashls serve`, for example "
                       "[\"--log-file\", \"/tmp/flashls.log\"].",
        "scope": "machine-overridable",
    },
    "flashls.trace.server": {
        "type": "string",
        "enum": ["off", "messages", "verbose"],
        "default": "off",
        "description": "Log the JSON-RPC traffic with the server in the flashls output.",
    },
}


def configuration() -> dict[str, Any]:
    """`contributes.configuration`: the schema's settings, then the extension's own."""
    block = settings.vscode_configuration()
    block["properties"] = {**block["properties"], **CLIENT_SETTINGS}
    return block


def synced(package: dict[str, Any]) -> dict[str, Any]:
    """`package` with its generated parts replaced."""
    package = dict(package)
    package["activationEvents"] = [f"onLanguage:{language}" for language in LANGUAGES]
    package["contributes"] = {**package["contributes"], "configuration": configuration()}
    return package


def render(package: dict[str, Any]) -> str:
    """package.json text as npm writes it: two-space indent, final newline."""
    return json.dumps(package, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Rewrite package.json, or with --check report whether it is out of date."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if package.json differs from what would be written")
    arguments = parser.parse_args(argv)
    current = PACKAGE_JSON.read_text(encoding="utf-8")
    wanted = render(synced(json.loads(current)))
    if arguments.check:
        if current != wanted:
            print(f"{PACKAGE_JSON} is out of date; run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    PACKAGE_JSON.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
