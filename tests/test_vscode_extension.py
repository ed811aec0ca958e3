"""The VS Code extension in editors/vscode: settings match the schema; it parses; it packages."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flashls import settings

EXTENSION = Path(__file__).resolve().parents[1] / "editors" / "vscode"
SYNC_SCRIPT = EXTENSION / "scripts" / "sync_package_json.py"


def _load_sync_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_package_json", SYNC_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync = _load_sync_script()


@pytest.fixture(scope="module")
def package() -> dict[str, Any]:
    return json.loads((EXTENSION / "package.json").read_text(encoding="utf-8"))


def test_every_server_setting_is_declared_as_the_schema_says(package: dict[str, Any]) -> None:
    """Type, default, enum, bounds and description of each setting match settings.py."""
    declared = package["contributes"]["configuration"]["properties"]
    schema = settings.vscode_configuration()["properties"]
    assert len(schema) == len(settings.setting_fields())
    for key, entry in schema.items():
        assert key in declared, f"{key} missing from package.json; run {SYNC_SCRIPT.name}"
        assert declared[key] == entry, f"{key} differs from settings.py"


def test_only_the_extensions_own_settings_are_added(package: dict[str, Any]) -> None:
    """Keys beyond the schema are the client's, and extension.js keeps them from the server."""
    declared = set(package["contributes"]["configuration"]["properties"])
    extra = declared - set(settings.vscode_configuration()["properties"])
    assert extra == set(sync.CLIENT_SETTINGS)
    source = (EXTENSION / "extension.js").read_text(encoding="utf-8")
    match = re.search(r"const CLIENT_ONLY = new Set\(\[([^\]]*)\]\)", source)
    assert match, "extension.js no longer declares CLIENT_ONLY"
    client_only = set(re.findall(r"'([^']+)'", match.group(1)))
    assert client_only == {key.split(".")[1] for key in sync.CLIENT_SETTINGS}
    assert package["contributes"]["configuration"]["title"] == settings.SECTION


def test_package_json_is_what_the_generator_writes() -> None:
    """Nobody hand-edited the generated parts (settings, activation events)."""
    check = subprocess.run([sys.executable, str(SYNC_SCRIPT), "--check"], capture_output=True,
                           text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stderr


def test_package_json_declares_commands_and_entry_point(package: dict[str, Any]) -> None:
    commands = {command["command"] for command in package["contributes"]["commands"]}
    assert {"flashls.toggle", "flashls.restart"} <= commands
    assert package["main"] == "./extension.js"
    assert "vscode-languageclient" in package["dependencies"]
    assert "onLanguage:python" in package["activationEvents"]
    assert (EXTENSION / "package-lock.json").exists()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_extension_js_parses() -> None:
    check = subprocess.run(["node", "--check", str(EXTENSION / "extension.js")],
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stderr


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_build_script_packages_a_vsix_with_its_runtime(tmp_path: Path,
                                                       package: dict[str, Any]) -> None:
    """`build.sh` (npm ci + vsce package) yields a .vsix holding the language client."""
    work = tmp_path / "vscode"
    shutil.copytree(EXTENSION, work,
                    ignore=shutil.ignore_patterns("node_modules", "*.vsix", "*.png", "e2e"))
    build = subprocess.run([str(work / "build.sh")], capture_output=True, text=True,
                           timeout=600, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    vsix = work / f"flashls-{package['version']}.vsix"
    with zipfile.ZipFile(vsix) as archive:
        names = set(archive.namelist())
        packaged = json.loads(archive.read("extension/package.json"))
    assert {"extension/extension.js", "extension/package.json",
            "extension/node_modules/vscode-languageclient/package.json",
            "extension/node_modules/vscode-languageclient/lib/node/main.js"} <= names
    assert not any(name.startswith("extension/node_modules/@vscode/vsce/") for name in names)
    assert not any(name.startswith("extension/scripts/") for name in names)
    assert packaged["contributes"] == package["contributes"]


def test_accept_line_is_bound_only_while_a_suggestion_shows(package: dict[str, Any]) -> None:
    """VS Code binds accept-word (Ctrl/Cmd+Right) but not accept-line: the extension binds
    Shift+Tab to it while a suggestion shows, so Shift+Tab outdents otherwise; the README
    names both keys."""
    bindings = {binding["command"]: binding for binding in package["contributes"]["keybindings"]}
    line = bindings["editor.action.inlineSuggest.acceptNextLine"]
    assert line["key"] == "shift+tab"
    conditions = {part.strip() for part in line["when"].split("&&")}
    assert {"inlineSuggestionVisible", "!suggestWidgetVisible", "!inSnippetMode"} <= conditions
    readme = (EXTENSION / "README.md").read_text(encoding="utf-8")
    assert "| `Shift+Tab` | `editor.action.inlineSuggest.acceptNextLine`" in readme
    assert "`editor.action.inlineSuggest.acceptNextWord` (VS Code's)" in readme
