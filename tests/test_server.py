"""The server over real stdio JSON-RPC with the deterministic fake engine: protocol behaviour."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from tests.conftest import SERVE

FAKE = [*SERVE, "--engine", "fake"]
SLOW_ENV = {**os.environ, "FLASHLS_FAKE_TOKEN_MS": "150"}


def initialize_params(options: object = None, client: str = "neovim") -> types.InitializeParams:
    return types.InitializeParams(capabilities=client_capabilities(client),
                                  initialization_options=options)


@pytest_lsp.fixture(config=ClientServerConfig(server_command=FAKE))
async def client(lsp_client: LanguageClient):  # type: ignore[no-untyped-def]
    await lsp_client.initialize_session(initialize_params())
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=FAKE, server_env=SLOW_ENV))
async def slow_client(lsp_client: LanguageClient):  # type: ignore[no-untyped-def]
    await lsp_client.initialize_session(initialize_params(
        {"flashls": {"maxTokens": 200, "timeBudgetMs": 10000, "partialAnswerMs": 0}}))
    yield
    await lsp_client.shutdown_session()


def open_document(client: LanguageClient, text: str, uri: str = "file:///work/a.py",
                  language: str = "python") -> str:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=1,
                                             text=text)))
    return uri


def inline_params(uri: str, line: int, character: int) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Automatic))


async def inline(client: LanguageClient, uri: str, line: int, character: int) -> list[str]:
    result = await client.text_document_inline_completion_async(
        inline_params(uri, line, character))
    items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
    return [item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value
            for item in items]


async def stop_server(lsp: object) -> None:
    """Stop a client started by hand; kill its server if the test failed before `exit`
    (pygls's `stop` would wait for it forever)."""
    process = lsp._server  # type: ignore[attr-defined]
    if process is not None and process.returncode is None:
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
    await lsp.stop()  # type: ignore[attr-defined]


async def _initialized(capabilities: types.ClientCapabilities, options: object = None
                       ) -> tuple[LanguageClient, types.InitializeResult]:
    lsp = await ClientServerConfig(server_command=FAKE).start()
    result = await lsp.initialize_session(types.InitializeParams(  # type: ignore[attr-defined]
        capabilities=capabilities, initialization_options=options))
    return lsp, result  # type: ignore[return-value]


def _with_inline_completion() -> types.ClientCapabilities:
    capabilities = client_capabilities("neovim")
    assert capabilities.text_document is not None
    capabilities.text_document.inline_completion = types.InlineCompletionClientCapabilities()
    return capabilities


@pytest.mark.parametrize(("capabilities", "options", "offers_items"), [
    (lambda: client_capabilities("neovim"), None, True),  # 0.11: no ghost text
    (_with_inline_completion, None, False),  # would show each suggestion twice
    (_with_inline_completion, {"flashls": {"completionFallback": "always"}}, True),
])
async def test_capabilities_offer_completion_items_only_without_inline_completion(
        capabilities: object, options: object, offers_items: bool) -> None:
    lsp, result = await _initialized(capabilities(), options)  # type: ignore[operator]
    try:
        assert result.capabilities.inline_completion_provider is not None
        assert (result.capabilities.completion_provider is not None) == offers_items
        sync = result.capabilities.text_document_sync
        assert isinstance(sync, types.TextDocumentSyncOptions)
        assert sync.change == types.TextDocumentSyncKind.Incremental
        await lsp.shutdown_session()  # type: ignore[attr-defined]
    finally:
        await stop_server(lsp)


async def test_a_second_initialize_is_refused_and_keeps_the_documents(
        client: LanguageClient) -> None:
    from pygls.exceptions import JsonRpcInvalidRequest

    uri = open_document(client, "value = comp\n")
    with pytest.raises(JsonRpcInvalidRequest, match="already"):
        await client.initialize_async(initialize_params())
    assert await inline(client, uri, 0, 12) == ["_done(1)"]


async def test_incremental_edits_are_applied_before_completing(client: LanguageClient) -> None:
    uri = open_document(client, "import os\n")
    assert await inline(client, uri, 1, 3) == []  # line 1 has no 4th column yet
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=1, character=0),
                              end=types.Position(line=1, character=0)), text="val")]))
    assert await inline(client, uri, 1, 3) == ["_done(1)"]


async def test_positions_past_the_end_get_an_empty_list(client: LanguageClient) -> None:
    uri = open_document(client, "x = 1\n")
    assert await inline(client, uri, 0, 99) == []
    assert await inline(client, uri, 7, 0) == []


async def test_binary_and_huge_documents_get_an_empty_list(client: LanguageClient) -> None:
    binary = open_document(client, "abc\x00\x01\x02def\n", uri="file:///work/blob.bin",
                           language="plaintext")
    assert await inline(client, binary, 0, 3) == []
    huge_text = "value = 1\n" * 1_000_000  # 10 MB
    huge = open_document(client, huge_text, uri="file:///work/huge.py")
    assert await inline(client, huge, 500_000, 5) == []
    small = open_document(client, "name\n", uri="file:///work/small.py")
    assert await inline(client, small, 0, 4) == ["_done(1)"]  # still answering


async def test_completion_fallback_replaces_the_typed_word(client: LanguageClient) -> None:
    uri = open_document(client, "total = comp\n")
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=0, character=12)))
    assert isinstance(result, types.CompletionList) and len(result.items) == 1
    edit = result.items[0].text_edit
    assert isinstance(edit, types.TextEdit)
    assert edit.new_text == "comp_done(1)"
    assert (edit.range.start.character, edit.range.end.character) == (8, 12)


async def test_a_cancelled_generation_yields_to_another_document(
        slow_client: LanguageClient) -> None:
    uri = open_document(slow_client, "def f(x):\n    \n")
    # Multi-line, 150 ms a token: about 6 s if nobody stops it. Cancelling the request
    # leaves it running for a keystroke typed along it; a request elsewhere stops it.
    future = slow_client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION,
                                               inline_params(uri, 1, 4), msg_id="slow-1")
    await asyncio.sleep(0.5)
    slow_client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="slow-1"))
    with pytest.raises(Exception, match="cancel"):
        await asyncio.wrap_future(future)
    started = time.monotonic()
    assert await inline(slow_client, open_document(slow_client, "ab\n", "file:///w/b.py"),
                        0, 2) == ["_done(1)"]
    # The model was free again at once: one token (150 ms) plus this request's three.
    assert time.monotonic() - started < 2.0


async def test_newer_request_supersedes_older(slow_client: LanguageClient) -> None:
    uri = open_document(slow_client, "def f(x):\n    \n")
    older = asyncio.ensure_future(inline(slow_client, uri, 1, 4))
    await asyncio.sleep(0.4)
    newer = await inline(slow_client, uri, 0, 5)
    assert newer == ["_done(1)"]
    assert await older == []  # cut short, answered empty rather than stale


def insert(client: LanguageClient, uri: str, line: int, character: int, text: str,
           version: int) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=line, character=character),
                              end=types.Position(line=line, character=character)),
            text=text)]))


async def test_idle_edit_warms_the_prompt_and_a_request_cancels_it(
        client: LanguageClient) -> None:
    statuses: list[tuple[object, object]] = []

    @client.feature("flashls/status")
    def record(ls: LanguageClient, params: object) -> None:
        statuses.append((getattr(params, "state", None), getattr(params, "message", None)))

    uri = open_document(client, "import os\n")
    insert(client, uri, 1, 0, "print(", 2)
    _ = await inline(client, uri, 1, 6)  # a request right away: no warm-up for that edit
    insert(client, uri, 1, 6, "os.", 3)
    for _ in range(30):
        if any(state == "warm" for state, _ in statuses):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    warm = [message for state, message in statuses if state == "warm"]
    # The fake engine counts one token per prefix character: "import os\nprint(os."
    assert warm == ["evaluated 19 prompt tokens"]


@pytest_lsp.fixture(config=ClientServerConfig(server_command=FAKE, server_env=SLOW_ENV))
async def hurried_client(lsp_client: LanguageClient):  # type: ignore[no-untyped-def]
    await lsp_client.initialize_session(initialize_params({"flashls": {"timeBudgetMs": 200}}))
    yield
    await lsp_client.shutdown_session()


async def test_cut_suggestion_is_continued_in_the_background(
        hurried_client: LanguageClient) -> None:
    uri = open_document(hurried_client, "total = comp\n")
    # 150 ms a token, 200 ms budget: one or two tokens ("_do", "ne("), then the deadline.
    [first] = await inline(hurried_client, uri, 0, 12)
    assert first in ("_do", "_done(")
    await asyncio.sleep(1.0)  # the background continuation finishes the suggestion
    started = time.monotonic()
    assert await inline(hurried_client, uri, 0, 12) == ["_done(1)"]
    assert time.monotonic() - started < 0.3  # from the cache, not the model
    hurried_client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=0, character=12),
                              end=types.Position(line=0, character=12)), text="_do")]))
    assert await inline(hurried_client, uri, 0, 15) == ["ne(1)"]


@pytest_lsp.fixture(config=ClientServerConfig(server_command=FAKE))
async def configured_client(lsp_client: LanguageClient):  # type: ignore[no-untyped-def]
    lsp_client.set_configuration({"enable": False}, section="flashls")
    await lsp_client.initialize_session(initialize_params(
        {"flashls": {"max_tokens": -5, "multiline": "never"}}, client="visual-studio-code"))
    yield
    await lsp_client.shutdown_session()


async def test_settings_from_both_sources(configured_client: LanguageClient) -> None:
    uri = open_document(configured_client, "name\n")
    for _ in range(50):  # workspace/configuration is answered after `initialized`
        if not await inline(configured_client, uri, 0, 4):
            break
        await asyncio.sleep(0.1)
    assert await inline(configured_client, uri, 0, 4) == []
    warnings = [message.message for message in configured_client.messages]
    assert any("max_tokens" in message and "at least 1" in message for message in warnings)


async def test_removed_setting_falls_back_to_default(configured_client: LanguageClient) -> None:
    uri = open_document(configured_client, "name\n")
    for _ in range(50):
        if not await inline(configured_client, uri, 0, 4):
            break
        await asyncio.sleep(0.1)
    configured_client.set_configuration({}, section="flashls")
    configured_client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings=None))
    for _ in range(50):
        if await inline(configured_client, uri, 0, 4):
            break
        await asyncio.sleep(0.1)
    assert await inline(configured_client, uri, 0, 4) == ["_done(1)"]


def _server_with_model(path: Path) -> ClientServerConfig:
    return ClientServerConfig(server_command=[*SERVE, "--model", str(path)])


MISSING = Path("/nonexistent/flashls/missing-model.gguf")


@pytest_lsp.fixture(config=_server_with_model(MISSING))
async def missing_model_client(lsp_client: LanguageClient):  # type: ignore[no-untyped-def]
    await lsp_client.initialize_session(initialize_params())
    yield
    await lsp_client.shutdown_session()


async def test_missing_model_is_one_clear_message(missing_model_client: LanguageClient) -> None:
    uri = open_document(missing_model_client, "import os\nos.pa\n")
    assert await inline(missing_model_client, uri, 1, 5) == []
    assert await inline(missing_model_client, uri, 1, 4) == []
    errors = [message.message for message in missing_model_client.messages
              if message.type == types.MessageType.Error]
    assert len(errors) == 1, errors
    assert str(MISSING) in errors[0] and "flashls models install" in errors[0]
    # The documents are still kept: a position that exists is not rejected as past the end.
    result = await missing_model_client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=1, character=5)))
    assert isinstance(result, types.CompletionList) and list(result.items) == []


async def test_corrupt_model_is_reported_and_server_survives(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + os.urandom(4096))
    config = _server_with_model(corrupt)
    lsp = await config.start()
    try:
        await lsp.initialize_session(initialize_params())  # type: ignore[attr-defined]
        uri = open_document(lsp, "import os\nos.pa\n")  # type: ignore[arg-type]
        assert await inline(lsp, uri, 1, 5) == []  # type: ignore[arg-type]
        assert await inline(lsp, uri, 1, 4) == []  # type: ignore[arg-type]
        errors = [message.message for message in lsp.messages  # type: ignore[attr-defined]
                  if message.type == types.MessageType.Error]
        assert errors and str(corrupt) in errors[0]
        assert "flashls models install" in errors[0]
        await lsp.shutdown_session()  # type: ignore[attr-defined]
    finally:
        await stop_server(lsp)


def test_finished_notification_futures_are_dropped() -> None:
    """pygls keeps a Future per handled notification; the protocol drops the finished ones."""
    import concurrent.futures
    from types import SimpleNamespace

    from flashls.protocol import FlashProtocol

    finished: concurrent.futures.Future[None] = concurrent.futures.Future()
    finished.set_result(None)
    pending: concurrent.futures.Future[None] = concurrent.futures.Future()
    futures = {"notification-1": finished, "request-7": pending}
    protocol = SimpleNamespace(_request_futures=futures)
    FlashProtocol.forget_finished_notifications(protocol)  # type: ignore[arg-type]
    assert futures == {"request-7": pending}


async def test_unopened_documents_are_never_read_from_disk(client: LanguageClient,
                                                          tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)
    secret = tmp_path / "secret.py"
    secret.write_text("password = 'hunter2'\n")
    for uri in (secret.as_uri(), fifo.as_uri(), "file:///dev/zero", "file:///dev/stdin",
                "file:///etc/passwd", tmp_path.as_uri()):
        assert await asyncio.wait_for(inline(client, uri, 0, 8), 5) == []
        result = await asyncio.wait_for(client.text_document_completion_async(
            types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri),
                                   position=types.Position(line=0, character=8))), 5)
        assert isinstance(result, types.CompletionList) and list(result.items) == []


@pytest.mark.parametrize(("text", "line", "character"), [("", 0, 0), ("abc\n", 1, 0),
                                                          ("x\r\ny", 1, 1)])
async def test_completion_items_at_the_end_of_a_file(client: LanguageClient, text: str,
                                                     line: int, character: int) -> None:
    uri = open_document(client, text, uri="file:///work/end.py")
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=character)))
    assert isinstance(result, types.CompletionList)
    for item in result.items:  # an answer, or none, but never an internal error
        assert isinstance(item.text_edit, types.TextEdit)
        assert item.text_edit.range.end == types.Position(line=line, character=character)


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("Threads:")))


async def test_engine_reloads_leave_no_thread_behind() -> None:
    """Every change of an engine setting used to leave the old model in a thread that
    never ended (3 -> 44 threads after 40 changes)."""
    lsp = await ClientServerConfig(server_command=FAKE).start()
    try:
        await lsp.initialize_session(initialize_params())  # type: ignore[attr-defined]
        uri = open_document(lsp, "value = comp\n")  # type: ignore[arg-type]
        assert await inline(lsp, uri, 0, 12) == ["_done(1)"]  # type: ignore[arg-type]
        pid = lsp._server.pid  # type: ignore[attr-defined]
        before = _threads(pid)
        for threads in range(1, 41):
            lsp.workspace_did_change_configuration(  # type: ignore[attr-defined]
                types.DidChangeConfigurationParams(settings={"flashls": {"nThreads": threads}}))
            assert await inline(lsp, uri, 0, 12) == ["_done(1)"]  # type: ignore[arg-type]
        await asyncio.sleep(0.5)
        assert _threads(pid) <= before
        await lsp.shutdown_session()  # type: ignore[attr-defined]
    finally:
        await stop_server(lsp)


async def test_focus_warms_the_place_the_user_looks_at(client: LanguageClient) -> None:
    statuses: list[tuple[object, object]] = []

    @client.feature("flashls/status")
    def record(ls: LanguageClient, params: object) -> None:
        if getattr(params, "state", None) == "warm":
            statuses.append((getattr(params, "uri", None), getattr(params, "message", None)))

    first = open_document(client, "import os\nos.pa\n", uri="file:///work/one.py")
    second = open_document(client, "import sys\nsys.ar\n", uri="file:///work/two.py")
    client.protocol.notify("textDocument/didFocus", {
        "textDocument": {"uri": second}, "position": {"line": 1, "character": 6}})
    for bad in ({"textDocument": {"uri": first}}, {"position": {"line": 0, "character": 0}},
                {"textDocument": {"uri": first}, "position": {"line": "1", "character": 0}}):
        client.protocol.notify("textDocument/didFocus", bad)  # ignored, no error
    for _ in range(30):
        if statuses:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    # The fake engine counts one token per prefix character: "import sys\nsys.ar"
    assert statuses == [(second, "evaluated 17 prompt tokens")]
    assert await inline(client, second, 1, 6) == ["_done(1)"]


async def test_a_focus_at_the_document_s_start_warms_its_first_window(
        client: LanguageClient) -> None:
    """Editors open a file with the cursor at 0:0, whose prompt has no prefix that a later
    cursor could share: the warm-up evaluates the document down to the start of the line
    where the prefix budget runs out (here all of it) instead."""
    warm = record_warm_ups(client)

    ended = open_document(client, "import os\nos.pa\n", uri="file:///work/ended.py")
    assert await warm_up_at(client, warm, ended, 0, 0) == "evaluated 16 prompt tokens"
    unended = open_document(client, "import os\nos.pa", uri="file:///work/unended.py")
    assert await warm_up_at(client, warm, unended, 0, 0) == "evaluated 10 prompt tokens"
    long = "x = 1\n" * 2000  # 12,000 characters: more than the 1,536-token prefix budget
    opened = open_document(client, long, uri="file:///work/long.py")
    message = await warm_up_at(client, warm, opened, 0, 0)
    evaluated = int(str(message).split()[1])  # the fake engine: a token a prefix character
    assert 4000 < evaluated <= 1536 * 3.2 and evaluated % 6 == 0  # whole lines


async def test_a_focus_warms_at_once_an_edit_after_warm_up_ms() -> None:
    """didFocus comes after the cursor rested (the client waits), so its warm-up starts at
    once; `warm_up_ms` is the idle time after an edit."""
    lsp = await ClientServerConfig(server_command=FAKE).start()
    warm = record_warm_ups(lsp)

    try:
        await lsp.initialize_session(initialize_params(  # type: ignore[attr-defined]
            {"flashls": {"warmUpMs": 5000}}))
        uri = open_document(lsp, "value = \n", uri="file:///work/user.py")
        started = time.monotonic()
        assert await warm_up_at(lsp, warm, uri, 0, 8) == "evaluated 8 prompt tokens"
        assert time.monotonic() - started < 4.0
        insert(lsp, uri, 0, 8, "1", 2)
        await asyncio.sleep(2.0)
        assert len(warm) == 1  # the edit's warm-up waits its 5 s
        await lsp.shutdown_session()  # type: ignore[attr-defined]
    finally:
        await stop_server(lsp)


async def test_an_edit_s_warm_up_is_dropped_once_the_user_works_elsewhere() -> None:
    """An edit plans a warm-up there after `warm_up_ms`; if the user moves to another
    document first (a focus, a request), that warm-up would only take the model from the
    document the user is in, so it never runs."""
    lsp = await ClientServerConfig(server_command=FAKE).start()
    warm = record_warm_ups(lsp, "uri")

    try:
        await lsp.initialize_session(initialize_params(  # type: ignore[attr-defined]
            {"flashls": {"warmUpMs": 800}}))
        left = open_document(lsp, "value = \n", uri="file:///work/left.py")
        here = open_document(lsp, "total = \n", uri="file:///work/here.py")
        for leave in ("focus", "request"):
            insert(lsp, left, 0, 8, "1", 2 if leave == "focus" else 3)
            if leave == "focus":
                assert await warm_up_at(lsp, warm, here, 0, 8) == here
            else:
                assert await inline(lsp, here, 0, 8)
            await asyncio.sleep(1.5)
            assert left not in warm
        await lsp.shutdown_session()  # type: ignore[attr-defined]
    finally:
        await stop_server(lsp)


async def test_a_finished_cut_suggestion_is_announced_while_the_text_stays(
        hurried_client: LanguageClient) -> None:
    finished: list[object] = []

    @hurried_client.feature("flashls/suggestionFinished")
    def record(ls: LanguageClient, params: object) -> None:
        finished.append(params)

    uri = open_document(hurried_client, "total = comp\nother = comp\n")
    [first] = await inline(hurried_client, uri, 0, 12)
    assert first != "_done(1)"  # cut by the 200 ms budget
    for _ in range(50):
        if finished:
            break
        await asyncio.sleep(0.1)
    [announced] = finished
    position = announced.position  # type: ignore[attr-defined]
    assert (announced.textDocument.uri, position.line, position.character) == (  # type: ignore[attr-defined]
        uri, 0, 12)
    # VS Code asks again with its trigger command, an explicit request: it gets the
    # finished suggestion alone, not alternatives computed first.
    assert await _invoked(hurried_client, uri, 0, 12) == ["_done(1)"]
    # The user's own explicit request there is one again.
    assert len(await _invoked(hurried_client, uri, 0, 12)) > 1

    # Typed something else before the continuation finished: nothing is announced.
    [cut] = await inline(hurried_client, uri, 1, 12)
    assert cut != "_done(1)"
    insert(hurried_client, uri, 1, 12, "x", 2)
    await asyncio.sleep(2.0)
    assert len(finished) == 1


async def test_the_server_asks_to_watch_source_files_and_takes_workspace_changes(
        tmp_path: Path) -> None:
    """With the `definitions` source on and a client that can watch files, the server
    registers for source files changed on disk; folder and file changes are taken (the
    index following them is tested in test_service and test_crossfile)."""
    capabilities = client_capabilities("neovim")
    assert capabilities.workspace is not None
    capabilities.workspace.did_change_watched_files = \
        types.DidChangeWatchedFilesClientCapabilities(dynamic_registration=True)
    lsp = await ClientServerConfig(server_command=FAKE).start()
    registrations: list[types.Registration] = []

    @lsp.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(ls: LanguageClient, params: types.RegistrationParams) -> None:
        registrations.extend(params.registrations)

    try:
        await lsp.initialize_session(types.InitializeParams(  # type: ignore[attr-defined]
            capabilities=capabilities, workspace_folders=[types.WorkspaceFolder(
                uri=tmp_path.as_uri(), name=tmp_path.name)],
            initialization_options={"flashls": {"contextSources": "definitions"}}))
        for _ in range(50):
            if registrations:
                break
            await asyncio.sleep(0.1)
        assert [r.method for r in registrations] == ["workspace/didChangeWatchedFiles"]
        options = registrations[0].register_options
        globs = [w["globPattern"] for w in options["watchers"]] if isinstance(options, dict) \
            else [w.glob_pattern for w in options.watchers]  # type: ignore[union-attr]
        assert globs[0].startswith("**/*.{") and ",py," in globs[0]
        other = tmp_path / "other"
        other.mkdir()
        (other / "lib.py").write_text("def helper(): pass\n")
        lsp.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
            event=types.WorkspaceFoldersChangeEvent(
                added=[types.WorkspaceFolder(uri=other.as_uri(), name="other")], removed=[])))
        lsp.workspace_did_change_watched_files(types.DidChangeWatchedFilesParams(changes=[
            types.FileEvent(uri=(other / "lib.py").as_uri(), type=types.FileChangeType.Changed),
            types.FileEvent(uri="file:///nowhere/gone.py", type=types.FileChangeType.Deleted),
            types.FileEvent(uri="untitled:Untitled-1", type=types.FileChangeType.Created)]))
        uri = open_document(lsp, "from lib import helper\nhel", uri=tmp_path.as_uri() + "/a.py")
        assert await inline(lsp, uri, 1, 3) == ["_done(1)"]
        await lsp.shutdown_session()  # type: ignore[attr-defined]
    finally:
        await stop_server(lsp)


async def test_a_workspace_folder_as_wide_as_the_disk_or_home_is_refused_out_loud() -> None:
    """The index will not read `/` or the home folder; the user is told once a folder, in
    a warning they see, whether the folder came with `initialize` or was added later."""
    lsp = await ClientServerConfig(server_command=FAKE).start()
    home = types.WorkspaceFolder(uri=Path.home().as_uri(), name="home")
    try:
        await lsp.initialize_session(types.InitializeParams(  # type: ignore[attr-defined]
            capabilities=client_capabilities("neovim"),
            workspace_folders=[types.WorkspaceFolder(uri="file:///", name="disk")],
            initialization_options={"flashls": {"contextSources": "definitions"}}))
        for _ in range(2):  # added twice: told once
            lsp.workspace_did_change_workspace_folders(types.DidChangeWorkspaceFoldersParams(
                event=types.WorkspaceFoldersChangeEvent(added=[home], removed=[])))
        uri = open_document(lsp, "total = comp\n")  # type: ignore[arg-type]
        assert await inline(lsp, uri, 0, 12) == ["_done(1)"]  # type: ignore[arg-type]
        for _ in range(50):
            if len(lsp.messages) >= 2:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.1)
        told = [(m.type, m.message) for m in lsp.messages]  # type: ignore[attr-defined]
        assert [kind for kind, _ in told] == [types.MessageType.Warning] * 2
        assert "does not read / " in told[0][1] and f"does not read {Path.home()} " in told[1][1]
        await lsp.shutdown_session()  # type: ignore[attr-defined]
    finally:
        await stop_server(lsp)


@pytest_lsp.fixture(config=ClientServerConfig(server_command=FAKE))
async def one_candidate_client(lsp_client: LanguageClient):  # type: ignore[no-untyped-def]
    await lsp_client.initialize_session(initialize_params({"flashls": {"candidates": 1}}))
    yield
    await lsp_client.shutdown_session()


async def _invoked(client: LanguageClient, uri: str, line: int, character: int) -> list[str]:
    invoked = inline_params(uri, line, character)
    invoked.context.trigger_kind = types.InlineCompletionTriggerKind.Invoked
    result = await client.text_document_inline_completion_async(invoked)
    items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
    return [item.insert_text for item in items]  # type: ignore[misc]


async def test_an_explicit_request_gets_the_alternatives_an_automatic_one_does_not(
        client: LanguageClient) -> None:
    uri = open_document(client, "import os\nos.pa\n")
    assert await inline(client, uri, 1, 5) == ["_done(1)"]
    assert await _invoked(client, uri, 1, 5) == [
        "_done(1)", "fake_alternative(1)", "fake_alternative(2)"]


async def test_one_candidate_when_set_so_even_when_asked_explicitly(
        one_candidate_client: LanguageClient) -> None:
    uri = open_document(one_candidate_client, "import os\nos.pa\n")
    assert await _invoked(one_candidate_client, uri, 1, 5) == ["_done(1)"]


def record_warm_ups(lsp: LanguageClient, field: str = "message") -> list[object]:
    """The `field` of every warm-up's `flashls/status` message to `lsp`, as they come."""
    warm: list[object] = []

    @lsp.feature("flashls/status")
    def record(ls: LanguageClient, params: object) -> None:
        if getattr(params, "state", None) == "warm":
            warm.append(getattr(params, field, None))

    return warm


async def warm_up_at(lsp: LanguageClient, warm: list[object], uri: str, line: int,
                     character: int) -> object:
    """Focus `uri` at a place and wait up to 5 s for the warm-up's `flashls/status`
    message, which the caller's handler appends to `warm`; None if none came."""
    count = len(warm)
    lsp.protocol.notify("textDocument/didFocus", {
        "textDocument": {"uri": uri}, "position": {"line": line, "character": character}})
    for _ in range(50):
        if len(warm) > count:
            break
        await asyncio.sleep(0.1)
    return warm[-1] if len(warm) > count else None


async def test_yanked_text_reaches_the_prompt_with_the_recent_source() -> None:
    lsp = await ClientServerConfig(server_command=FAKE).start()
    warm = record_warm_ups(lsp)

    async def focus(uri: str) -> object:
        return await warm_up_at(lsp, warm, uri, 0, 8)

    try:
        await lsp.initialize_session(types.InitializeParams(  # type: ignore[attr-defined]
            capabilities=client_capabilities("neovim"),
            initialization_options={"flashls": {"contextSources": "recent"}}))
        uri = open_document(lsp, "value = \n", uri="file:///work/user.py")
        assert await focus(uri) == "evaluated 8 prompt tokens"  # the fake: a token a char
        yank = "def helper(a, b):\n    return a + b"
        for bad in ({"textDocument": {"uri": uri}}, {"text": yank},
                    {"textDocument": {"uri": uri}, "text": 3}):
            lsp.protocol.notify("flashls/didYank", bad)  # ignored, no error
        lsp.protocol.notify("flashls/didYank", {"textDocument": {"uri": "file:///work/lib.py"},
                                                "text": yank + "\n"})
        insert(lsp, uri, 0, 8, "1", 2)  # a new prompt to warm
        assert await focus(uri) == f"evaluated {8 + len(yank)} prompt tokens"
        await lsp.shutdown_session()  # type: ignore[attr-defined]
    finally:
        await stop_server(lsp)


SLOW_LOAD_ENV = {**SLOW_ENV, "FLASHLS_FAKE_LOAD_MS": "4000"}


@pytest_lsp.fixture(config=ClientServerConfig(server_command=FAKE, server_env=SLOW_LOAD_ENV))
async def loading_client(lsp_client: LanguageClient):  # type: ignore[no-untyped-def]
    await lsp_client.initialize_session(initialize_params())  # default settings
    yield
    await lsp_client.shutdown_session()


async def test_typing_while_the_model_loads_ends_in_an_announced_suggestion(
        loading_client: LanguageClient) -> None:
    """VS Code's first keystrokes after start: each request is cancelled by the next
    keystroke, the generation of the first waits behind the model's load and is cut by
    its budget; the continuation that finishes it must be announced at the cursor of the
    last request, which typed along it, so the editor asks again and shows it."""
    finished: list[tuple[int, int]] = []

    @loading_client.feature("flashls/suggestionFinished")
    def record(ls: LanguageClient, params: object) -> None:
        position = params.position  # type: ignore[attr-defined]
        finished.append((position.line, position.character))

    uri = open_document(loading_client, "total = com\n")
    for version, (character, key) in enumerate([(11, "p"), (12, "_")], start=2):
        insert(loading_client, uri, 0, character, key, version)
        loading_client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION,
                                             inline_params(uri, 0, character + 1),
                                             msg_id=f"key-{version}")
        await asyncio.sleep(0.15)
        # VS Code cancels the request in flight at each keystroke.
        loading_client.protocol.notify(types.CANCEL_REQUEST,
                                       types.CancelParams(id=f"key-{version}"))
    insert(loading_client, uri, 0, 13, "d", 4)
    # Its budget (1.5 s) ran out while the model loaded: nothing to show yet.
    assert await inline(loading_client, uri, 0, 14) == []
    for _ in range(100):
        if finished:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.5)  # the continuation's last tokens (150 ms each)
    # Told when words came, and again at the end; always at the last request's cursor.
    assert finished and set(finished) == {(0, 14)}
    assert await inline(loading_client, uri, 0, 14) == ["one(1)"]  # from the cache


async def test_a_focus_past_any_position_is_ignored_quietly(client: LanguageClient) -> None:
    uri = open_document(client, "total = comp\n")
    for line in (2**31, 2**63, -1):
        client.protocol.notify("textDocument/didFocus", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": 0}})
    assert await inline(client, uri, 0, 12) == ["_done(1)"]
    assert client.messages == []  # no window/showMessage


async def test_the_user_is_told_once_when_the_server_fails_and_once_when_it_is_back() -> None:
    from tests.test_remote_engines import Behaviour, FakeServer

    remote = FakeServer("llama-server", Behaviour(status=500, error_body={"error": {
        "message": "out of memory"}}))
    lsp = await ClientServerConfig(server_command=[
        *SERVE, "--engine", "llama-server", "--endpoint", remote.endpoint]).start()
    try:
        await lsp.initialize_session(initialize_params())  # type: ignore[attr-defined]
        uri = open_document(lsp, "total = comp\n")  # type: ignore[arg-type]
        for _ in range(3):  # keystrokes while the server fails
            assert await inline(lsp, uri, 0, 12) == []  # type: ignore[arg-type]
        remote.behaviour.status = 200
        assert await inline(lsp, uri, 0, 12)  # type: ignore[arg-type]
        assert await inline(lsp, uri, 0, 12)  # type: ignore[arg-type]
        errors = [m.message for m in lsp.messages]  # type: ignore[attr-defined]
        assert len(errors) == 1 and "500" in errors[0] and "out of memory" in errors[0]
        back = [m.message for m in lsp.log_messages  # type: ignore[attr-defined]
                if "answers again" in m.message]
        assert len(back) == 1
        await lsp.shutdown_session()  # type: ignore[attr-defined]
    finally:
        await stop_server(lsp)
        remote.close()
