"""The server's log (`flashls/logs.py`, `flashls/engine/llama_log.py`): at the default
level a normal editing session logs nothing per keystroke; what is expected (a cancel for
a request already answered, llama.cpp's cache housekeeping and aborts) is debug."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flashls.bench.client import LspClient, PendingRequest
from flashls.engine.llama_log import LlamaLog
from flashls.logs import PYGLS_JSON_RPC, configure_logging
from tests.conftest import real_server_command

# Files an editor has open, and how many places in each are typed at.
OPEN_MODULES = ("json/decoder.py", "textwrap.py", "argparse.py")
PLACES_PER_FILE = 3
TYPED_CHARS = 8
KEY_INTERVAL_S = 0.06


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """Put back the root logger's handlers and the levels `configure_logging` sets."""
    root, pygls = logging.getLogger(), logging.getLogger("pygls")
    handlers, levels = root.handlers[:], (root.level, pygls.level)
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    pygls.setLevel(levels[1])


def test_cancel_of_an_answered_request_is_debug(tmp_path: Path,
                                                restored_logging: None) -> None:
    log_file = tmp_path / "server.log"
    pygls = logging.getLogger(PYGLS_JSON_RPC)
    configure_logging("info", str(log_file))
    pygls.warning('Cancel notification for unknown message id "%s"', 7)
    pygls.warning('Received response to unknown message id "%s"', 8)  # a real fault
    configure_logging("debug", str(log_file))
    pygls.warning('Cancel notification for unknown message id "%s"', 9)
    lines = log_file.read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        'WARNING pygls.protocol.json_rpc: Received response to unknown message id "8"',
        'DEBUG pygls.protocol.json_rpc: Cancel notification for unknown message id "9"']


def test_llama_cpp_lines_are_debug_and_its_errors_errors(
        caplog: pytest.LogCaptureFixture) -> None:
    route = LlamaLog()
    aborting = False
    caplog.set_level(logging.DEBUG, logger="flashls.engine.llama_log")
    with route.failures_expected_while(lambda: aborting):
        # ggml levels: 2 info, 3 warn, 4 error, 5 continues the line (load progress dots).
        route.callback(2, b"load_tensors: loading model tensors", None)
        route.callback(5, b".", None)
        route.callback(5, b"..\n", None)
        route.callback(3, b"load: control-looking token: 128247\n", None)
        route.callback(4, b"llama_decode: failed to decode, ret = -3\n", None)
        aborting = True
        route.callback(4, b"llama_decode: failed to decode, ret = 2\n", None)
    route.callback(4, b"llama_decode: failed to decode, ret = 2\n", None)  # none expected
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("DEBUG", "load_tensors: loading model tensors..."),
        ("DEBUG", "load: control-looking token: 128247"),
        ("ERROR", "llama_decode: failed to decode, ret = -3"),
        ("DEBUG", "llama_decode: failed to decode, ret = 2"),
        ("ERROR", "llama_decode: failed to decode, ret = 2")]


# --- a session through `flashls serve` on the real default model ---------------------

INITIALIZE = {"processId": None, "rootUri": None, "workspaceFolders": None,
              "clientInfo": {"name": "Visual Studio Code"},
              "capabilities": {"general": {"positionEncodings": ["utf-16"]},
                               "workspace": {"configuration": True},
                               "textDocument": {"inlineCompletion": {}}}}


class Editor:
    """Types as VS Code does: each keystroke cancels the previous request, answered or
    not (so the server meets cancels it can no longer act on, and decodes it aborts)."""

    def __init__(self, client: LspClient) -> None:
        self.client = client
        self.versions: dict[str, int] = {}
        self.previous: PendingRequest | None = None
        self.keystrokes = self.answered_then_cancelled = 0

    async def open(self, path: Path) -> str:
        uri = path.as_uri()
        self.versions[uri] = 1
        await self.client.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": path.read_text()}})
        return uri

    async def change(self, uri: str, line: int, start: int, end: int, text: str) -> None:
        self.versions[uri] += 1
        await self.client.notify("textDocument/didChange", {
            "textDocument": {"uri": uri, "version": self.versions[uri]},
            "contentChanges": [{"range": {"start": {"line": line, "character": start},
                                          "end": {"line": line, "character": end}},
                                "text": text}]})

    async def ask(self, uri: str, line: int, character: int) -> None:
        if self.previous is not None:
            self.answered_then_cancelled += self.previous.future.done()
            await self.client.cancel(self.previous.request_id)
        self.previous = await self.client.send_request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": character},
            "context": {"triggerKind": 2}})

    async def retype(self, uri: str, line: int, text: str) -> None:
        """Land on `line`, delete its tail and type it again, one key at a time."""
        start = len(text) - TYPED_CHARS
        await self.client.notify("textDocument/didFocus", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": len(text)}})
        await self.change(uri, line, start, len(text), "")
        for index, char in enumerate(text[start:]):
            await self.change(uri, line, start + index, start + index, char)
            await self.ask(uri, line, start + index + 1)
            self.keystrokes += 1
            await asyncio.sleep(KEY_INTERVAL_S)
        await self.client.notify("textDocument/didSave", {"textDocument": {"uri": uri}})


def typing_places(text: str) -> list[tuple[int, str]]:
    """Lines to re-type: statements long enough, spread over the file."""
    lines = text.splitlines()
    usable = [(number, line) for number, line in enumerate(lines)
              if len(line.strip()) > 2 * TYPED_CHARS and line.isascii()
              and not line.strip().startswith(("#", '"', "'"))]
    step = max(1, len(usable) // PLACES_PER_FILE)
    return usable[step // 2::step][:PLACES_PER_FILE]


def log_lines(client: LspClient) -> list[str]:
    return client.stderr_tail(limit=10_000_000).splitlines()


async def loaded(client: LspClient) -> None:
    """Wait until the server's log says the model is loaded."""
    for _ in range(1200):
        if any(" loaded " in line for line in log_lines(client)):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the model was not loaded within 120 s")


async def play_session(client: LspClient, editor: Editor) -> None:
    """Open the files, then re-type lines at several places in each."""
    stdlib = Path(textwrap.__file__).parent
    opened = [(await editor.open(stdlib / module), stdlib / module)
              for module in OPEN_MODULES]
    for uri, path in opened:
        for line, text in typing_places(path.read_text()):
            await editor.retype(uri, line, text)
    assert editor.previous is not None
    await client.wait(editor.previous, 60)
    await asyncio.sleep(0.5)  # let a late line reach stderr
    await editor.ask(opened[0][0], 0, 0)  # one last cancel, of an answered request
    await client.wait(editor.previous, 60)


@pytest.mark.model
async def test_a_session_at_the_default_level_logs_nothing_per_keystroke(
        model_path: Path) -> None:
    client = await LspClient.start(real_server_command())
    try:
        await client.request("initialize", INITIALIZE, 60)
        await client.notify("initialized", {})
        editor = Editor(client)
        # Loading the model logs a line, once: everything after it is the session.
        await editor.ask(await editor.open(Path(json.__file__)), 0, 0)
        assert editor.previous is not None
        assert (await client.wait(editor.previous, 120)) is not None
        await loaded(client)  # that answer may come (empty) before the model is loaded
        before = log_lines(client)
        await play_session(client, editor)
        after = log_lines(client)
    finally:
        await client.close()
    assert editor.keystrokes >= 50 and editor.answered_then_cancelled >= 1
    assert after == before, "\n".join(after[len(before):][:20])
    assert not [line for line in after if "Cancel notification" in line or "decode:" in line]
    shown: list[dict[str, Any]] = [message for message in client.notifications
                                   if message["method"].startswith("window/")]
    assert shown == []


@pytest.mark.model
async def test_llama_cpp_aborts_are_debug_lines(model_path: Path) -> None:
    client = await LspClient.start([*real_server_command(), "--log-level", "debug"])
    try:
        await client.request("initialize", INITIALIZE, 60)
        await client.notify("initialized", {})
        editor = Editor(client)
        uri = await editor.open(Path(json.__file__))
        await editor.ask(uri, 0, 0)
        assert editor.previous is not None
        await client.wait(editor.previous, 120)
        await loaded(client)
        # Land at cold places far apart: the warm-up starts evaluating a long prompt
        # there, and a request elsewhere aborts it (a loaded machine may need more tries).
        for _ in range(5):
            for line in (300, 150, 340, 200):
                await client.notify("textDocument/didFocus", {
                    "textDocument": {"uri": uri}, "position": {"line": line, "character": 0}})
                await asyncio.sleep(0.45)
                await editor.ask(uri, line - 50, 0)
            await client.wait(editor.previous, 60)
            lines = log_lines(client)
            if any("decode: removing memory" in line for line in lines):
                break
    finally:
        await client.close()
    native = [line for line in lines if " flashls.engine.llama_log: " in line]
    aborts = [line for line in native
              if "DEBUG flashls.engine.llama_log: decode: removing memory" in line]
    assert aborts, "\n".join(lines[-30:])
    assert not [line for line in lines if " ERROR " in line or " WARNING " in line]
