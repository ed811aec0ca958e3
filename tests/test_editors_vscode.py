"""VS Code end to end: the extension in code-server 4.139.1, driven in headless Chromium.

Runs `editors/vscode/e2e/run.sh` from a copy of the extension (its build writes
node_modules and the .vsix into the copy, not the checkout) with the real default model at
default settings: the ghost text must appear after typing, Tab must put exactly it into the
saved file, and the report must say how long after the last key it appeared. The editor
comes from `editors/vscode/e2e/install.sh` (run by `scripts/install.sh`); without it the
test skips, except under FLASHLS_REQUIRE_EDITORS=1 (CI), where it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from flashls import settings

pytestmark = [pytest.mark.editor, pytest.mark.model]

EXTENSION = Path(__file__).resolve().parents[1] / "editors" / "vscode"
INSTALL = EXTENSION / "e2e" / "install.sh"
FLASHLS = Path(sys.executable).parent / "flashls"
# Model load, the page, the first suggestion and the build each have their own timeouts
# inside run.sh; this one only keeps a wedged run from holding the suite.
RUN_TIMEOUT_S = 600
# The driver's wait for the server to be ready and for the ghost text (its default: 60 s).
SUGGESTION_TIMEOUT_MS = 120_000
# code-server's helpers (its file watcher) exit a few seconds after it does.
CLEANUP_GRACE_S = 30


def _missing_editor() -> str | None:
    """What the e2e check lacks (its install script's own words), or None."""
    if shutil.which("npm") is None:
        return "npm (Node 20+) is not on PATH"
    check = subprocess.run(["bash", str(INSTALL), "--check"], capture_output=True, text=True,
                           timeout=60, check=False)
    return None if check.returncode == 0 else check.stderr.strip()


@pytest.fixture
def vscode_editor() -> None:
    """Skips without code-server and Chromium, or fails where CI requires editors."""
    missing = _missing_editor()
    if missing is None:
        return
    if os.environ.get("FLASHLS_REQUIRE_EDITORS") == "1":
        pytest.fail(f"the VS Code e2e editor is required here: {missing}")
    pytest.skip(f"the VS Code e2e editor is not installed: {missing}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _processes_marked(marker: str) -> list[int]:
    """Live processes whose environment carries `marker` (Chromium starts its own group)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found


def _wait_until_gone(marker: str, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := _processes_marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def run_e2e(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], list[int]]:
    """run.sh on a copy of the extension; also the processes it left behind past the grace."""
    work = tmp_path / "vscode"
    shutil.copytree(EXTENSION, work,
                    ignore=shutil.ignore_patterns("node_modules", "*.vsix", "*.png"))
    marker = f"flashls-e2e-{uuid.uuid4().hex}"
    env = {**os.environ, "FLASHLS_SERVER": str(FLASHLS), "FLASHLS_SERVER_ARGS": "",
           "FLASHLS_E2E_PORT": str(_free_port()),
           "FLASHLS_E2E_SCREENSHOT": str(tmp_path / "screenshot.png"),
           "FLASHLS_E2E_MARKER": marker,
           # A busy machine slows the model's first answer; the test is not about timing.
           "E2E_SUGGESTION_TIMEOUT_MS": str(SUGGESTION_TIMEOUT_MS)}
    # Default settings: no FLASHLS_<SETTING> from the caller's environment reaches the server.
    for spec in settings.setting_fields():
        env.pop(settings.ENV_PREFIX + spec.name.upper(), None)
    env.pop("FLASHLS_E2E_KEEP", None)
    try:
        result = subprocess.run(["bash", str(work / "e2e" / "run.sh")], env=env,
                                capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                                check=False)
        return result, _wait_until_gone(marker, CLEANUP_GRACE_S)
    finally:
        _kill(_processes_marked(marker))


def _report(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The driver's JSON report: the last JSON object run.sh printed."""
    start = result.stdout.rfind("\n{")
    assert start >= 0 or result.stdout.startswith("{"), (
        f"no report (exit {result.returncode}):\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-5000:]}")
    report: dict[str, Any] = json.loads(result.stdout[max(start, 0):])
    return report


@pytest.mark.usefixtures("vscode_editor", "model_path")
def test_ghost_text_appears_and_tab_accepts_it_in_vscode(
        tmp_path: Path, record_property: Any) -> None:
    """Typing `fib` in demo.py shows a suggestion; Tab saves exactly it; nothing is left running."""
    result, left_behind = run_e2e(tmp_path)
    report = _report(result)
    for key in ("suggestion_ms", "after_last_key_ms"):
        record_property(key, report.get(key))
    print(json.dumps(report, indent=2))
    assert result.returncode == 0 and report["ok"], (
        f"{report.get('error')}\n{result.stderr[-5000:]}")
    shown, accepted = report["ghost_text"], report["accepted"]
    assert shown.strip(), "the ghost text was empty"
    assert accepted.strip() and accepted.startswith(shown.split("\n")[0])
    assert report["inserted"] == report["typed"] + accepted
    assert 0 <= report["after_last_key_ms"] <= report["suggestion_ms"]
    # The status bar shows the server's latency for that suggestion.
    assert re.fullmatch(r"flashls \d+ ms", report["status_bar"]), report["status_bar"]
    assert (tmp_path / "screenshot.png").stat().st_size > 10_000
    assert not left_behind, f"processes still running {CLEANUP_GRACE_S} s after run.sh"
