"""Secret files are never sent anywhere: no suggestion in them, no context taken from them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from flashls.engine.base import CancelToken, GenerationRequest, GenerationResult
from flashls.engine.fake import FakeEngine
from flashls.engine.remote import RemoteEngine
from flashls.exclusions import Exclusions, split_patterns
from flashls.service import CompletionRequest, CompletionService, Rejected
from flashls.settings import Settings, merge
from tests.conftest import SERVE
from tests.test_server import (
    inline,
    insert,
    open_document,
    record_warm_ups,
    stop_server,
    warm_up_at,
)

FAKE = [*SERVE, "--engine", "fake"]
SECRET = "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"


@pytest.mark.parametrize(("path", "excluded"), [
    ("/w/.env", True), ("/w/config/.env.local", True), ("/w/keys/server.pem", True),
    ("/home/u/.ssh/id_rsa", True), ("/w/.git/config", True), ("/w/secrets.json", True),
    ("/w/app/credentials.py", True), ("/w/deploy.key", True), ("/w/db.kdbx", True),
    ("/w/.npmrc", True), ("/w/app/main.py", False), ("/w/environment.py", False),
    ("/w/keyboard.py", False), ("/w/src/git_tools.py", False),
])
def test_the_built_in_list_names_secret_files(path: str, excluded: bool) -> None:
    assert Exclusions().excludes_path(path) is excluded
    assert Exclusions().excludes_uri("file://" + path) is excluded


def test_the_setting_adds_patterns_relative_to_the_workspace_and_takes_files_back() -> None:
    extra = split_patterns(" generated/ , !secret_santa.py,")
    assert extra == ["generated/", "!secret_santa.py"]
    rules = Exclusions(extra, roots=["file:///w"])
    assert rules.excludes_uri("file:///w/generated/api.py")
    assert not rules.excludes_uri("file:///w/secret_santa.py")
    assert rules.excludes_uri("file:///w/secret_keys.py")
    anchored = Exclusions(["/vendor/"], roots=["file:///w"])
    assert anchored.excludes_uri("file:///w/vendor/lib.py")
    assert not anchored.excludes_uri("file:///w/src/vendor/lib.py")


class RecordingEngine(FakeEngine):
    """The fake engine, keeping every prompt it is given (generations and warm-ups)."""

    def __init__(self) -> None:
        super().__init__(token_ms=1)
        self.seen: list[str] = []

    def _record(self, request: GenerationRequest) -> None:
        repo = "" if request.repo is None else "".join(text for _, text in request.repo.files)
        self.seen.append(repo + request.prefix + request.suffix)

    def generate(self, request: GenerationRequest, cancel: CancelToken) -> GenerationResult:
        self._record(request)
        return super().generate(request, cancel)

    def prefill(self, request: GenerationRequest, cancel: CancelToken) -> int:
        self._record(request)
        return super().prefill(request, cancel)


async def _until(check: Callable[[], bool], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return check()


ENGINES = ("fake", "llama-server", "openai", "ollama")
# Each source, and what of a file that is not secret it puts into prompts: the proof that
# the source is at work in the test, so that nothing secret in them means something.
SOURCE_CONTROLS = {"definitions": ("definitions", "def helper"),
                   "usages": ("usages", "helper(21)"),
                   "recent": ("recent", "CONTROL_NOTE"),
                   "yanks": ("recent", "control_yank"),
                   "ring": ("ring", "CONTROL_NOTE")}


@contextlib.contextmanager
def recorded(kind: str, sources: str) -> Iterator[tuple[CompletionService, Callable[[], str]]]:
    """A pipeline on `kind` (the fake engine, or a remote engine in front of a stand-in
    server of that kind) and everything the engine was given or the server was sent."""
    from tests.test_remote_engines import MODEL, Behaviour, FakeServer

    if kind == "fake":
        engine = RecordingEngine()
        pipeline = CompletionService(Settings(context_sources=sources), engine)
        yield pipeline, lambda: "\n".join(engine.seen)
        pipeline.close()
        return
    server = FakeServer(kind, Behaviour(pieces=("1",)))
    config, problems = merge(Settings(), {"engine": kind, "endpoint": server.endpoint,
                                          "remoteModel": MODEL, "contextSources": sources})
    assert problems == []
    pipeline = CompletionService(config, RemoteEngine(config))
    try:
        yield pipeline, lambda: "\n".join(json.dumps(body) for _, _, body in server.posts)
    finally:
        pipeline.close()
        server.close()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("source", SOURCE_CONTROLS)
async def test_no_engine_is_sent_a_secret_file_through_any_source(
        tmp_path: Path, engine: str, source: str) -> None:
    """Secret files next to ordinary ones: a module whose definitions the document imports,
    one using an imported name, a `.env` opened, rested in and yanked from. The ordinary
    ones reach the engine through `source`; nothing of the secret ones does."""
    sources, control = SOURCE_CONTROLS[source]
    (tmp_path / "settings_secret.py").write_text(
        f'API_KEY = "{SECRET}"\n\ndef token():\n    return API_KEY\n')
    (tmp_path / "helpers.py").write_text("def helper(value):\n    return value * 2\n")
    (tmp_path / "secret_jobs.py").write_text(
        f'from helpers import helper\n\nrotated = helper("{SECRET}")\n')
    (tmp_path / "jobs.py").write_text("from helpers import helper\n\ndoubled = helper(21)\n")
    with recorded(engine, sources) as (pipeline, sent):
        pipeline.open_workspace([tmp_path.as_uri()])
        if sources in ("definitions", "usages"):  # the workspace index is read
            assert await _until(lambda: len(pipeline.crossfile.index.files()) >= 2)
        env = (tmp_path / ".env").as_uri()
        pipeline.document_changed(env, "dotenv", SECRET + "\n")
        pipeline.document_opened(env)
        pipeline.yanked(env, SECRET)
        with pytest.raises(Rejected, match="excluded"):
            await pipeline.complete(CompletionRequest(env, "dotenv", SECRET + "\n", 0, 10))
        assert pipeline.prefill(CompletionRequest(env, "dotenv", SECRET + "\n", 0, 10)) is None
        notes = (tmp_path / "notes.py").as_uri()
        pipeline.document_changed(notes, "python", "CONTROL_NOTE = 1\n")
        pipeline.document_opened(notes)
        pipeline.yanked(notes, "control_yank = 2")
        await pipeline.complete(CompletionRequest(notes, "python", "CONTROL_NOTE = 1\n", 0, 16))
        app = (tmp_path / "app.py").as_uri()
        text = ("from settings_secret import API_KEY, token\nfrom helpers import helper\n\n"
                "value = helper(token())\nprint(val\n")
        pipeline.document_changed(app, "python", text)
        pipeline.document_opened(app)
        answer = await pipeline.complete(CompletionRequest(app, "python", text, 4, 9))
        assert answer.text
        assert control in sent()
        assert "wJalrXUtnFEMI" not in sent()
        assert not any("secret" in key for key in pipeline.crossfile.index.files())


async def test_a_pattern_added_later_drops_what_was_taken(tmp_path: Path) -> None:
    engine = RecordingEngine()
    pipeline = CompletionService(Settings(context_sources="recent"), engine)
    notes = (tmp_path / "notes.txt").as_uri()
    pipeline.document_changed(notes, "plaintext", "password hunter2 for the staging box\n")
    pipeline.yanked(notes, "password hunter2 for the staging box")
    pipeline.update_settings(Settings(context_sources="recent", exclude_files="notes.txt"))
    pipeline.document_changed(notes, "plaintext", "password hunter2 for the staging box!\n")
    app = (tmp_path / "app.py").as_uri()
    pipeline.document_changed(app, "python", "print(val\n")
    await pipeline.complete(CompletionRequest(app, "python", "print(val\n", 0, 9))
    assert engine.seen and not any("hunter2" in prompt for prompt in engine.seen)
    pipeline.close()


def test_a_silenced_document_gets_no_suggestion_but_an_excluded_one_is_also_never_sent(
) -> None:
    rules = Exclusions(["private/"], roots=["file:///w"], disabled_files=["docs/", "*.lock"],
                       disabled_languages=["Markdown", "plaintext"])
    assert "disabled_languages" in rules.why_silent("file:///w/README.md", "markdown")
    assert "disabled_files" in rules.why_silent("file:///w/docs/conf.py", "python")
    assert "disabled_files" in rules.why_silent("file:///w/poetry.lock", "toml")
    assert "excluded" in rules.why_silent("file:///w/private/notes.py", "python")
    assert "excluded" in rules.why_silent("file:///w/.env", "dotenv")
    assert rules.why_silent("file:///w/app.py", "python") == ""
    assert rules.why_silent("file:///w/src/docs.py", "python") == ""
    # Silenced is not excluded: those files are still context for other files.
    assert not rules.excludes_uri("file:///w/docs/conf.py")
    assert not rules.excludes_uri("file:///w/README.md")
    assert rules.with_roots(["file:///w"]).why_silent("file:///w/docs/a.py", "python")


def test_a_folders_flashlsignore_excludes_and_is_read_again_when_it_changes(
        tmp_path: Path) -> None:
    ignore = tmp_path / ".flashlsignore"
    ignore.write_text("# the team's fixtures hold real customer data\nfixtures/\n!.env.example\n")
    rules = Exclusions(roots=[tmp_path.as_uri()])
    assert rules.excludes_path(str(tmp_path / "fixtures" / "customers.py"))
    assert not rules.excludes_path(str(tmp_path / ".env.example"))  # taken back
    assert rules.excludes_path(str(tmp_path / ".env"))  # the built-in list still applies
    assert not rules.excludes_path(str(tmp_path / "app.py"))
    assert not rules.excludes_path("/elsewhere/fixtures/customers.py")  # outside the folder
    assert rules.refresh() is False  # nothing changed: nothing read
    ignore.write_text("app.py\n")
    assert rules.refresh() is True
    assert rules.excludes_path(str(tmp_path / "app.py"))
    assert not rules.excludes_path(str(tmp_path / "fixtures" / "customers.py"))
    ignore.unlink()
    assert rules.refresh() is True and not rules.excludes_path(str(tmp_path / "app.py"))
    # The setting comes after the file: it can take back what the project excludes.
    ignore.write_text("generated/\n")
    mine = Exclusions(["!generated/"], roots=[tmp_path.as_uri()])
    assert not mine.excludes_path(str(tmp_path / "generated" / "api.py"))


def test_a_flashlsignore_that_is_no_regular_file_is_never_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".flashlsignore")
    started = time.monotonic()
    rules = Exclusions(roots=[tmp_path.as_uri()])
    assert time.monotonic() - started < 5
    assert rules.excludes_path(str(tmp_path / "id_rsa"))
    assert not rules.excludes_path(str(tmp_path / "app.py"))


async def test_a_disabled_language_is_silent_yet_still_context_and_comes_back_live(
        tmp_path: Path) -> None:
    engine = RecordingEngine()
    settings = Settings(context_sources="recent", disabled_languages="markdown,text")
    pipeline = CompletionService(settings, engine)
    pipeline.open_workspace([tmp_path.as_uri()])
    notes = (tmp_path / "NOTES.md").as_uri()
    text = "The retry budget is seven attempts.\n"
    pipeline.document_changed(notes, "markdown", text)
    with pytest.raises(Rejected, match="disabled_languages"):
        await pipeline.complete(CompletionRequest(notes, "markdown", text, 0, 10))
    assert pipeline.prefill(CompletionRequest(notes, "markdown", text, 0, 10)) is None
    assert engine.seen == []  # no generation, no warm-up
    app = (tmp_path / "app.py").as_uri()
    pipeline.document_changed(app, "python", "print(val\n")
    assert (await pipeline.complete(CompletionRequest(app, "python", "print(val\n", 0, 9))).text
    assert any("seven attempts" in prompt for prompt in engine.seen)  # still context
    pipeline.update_settings(dataclasses.replace(settings, disabled_languages="text"))
    answer = await pipeline.complete(CompletionRequest(notes, "markdown", text, 0, 10))
    assert answer.text
    pipeline.close()


async def test_disabled_files_are_silent_yet_still_context(tmp_path: Path) -> None:
    engine = RecordingEngine()
    settings = Settings(context_sources="recent", disabled_files="tests/fixtures/")
    pipeline = CompletionService(settings, engine)
    pipeline.open_workspace([tmp_path.as_uri()])
    fixture = (tmp_path / "tests" / "fixtures" / "orders.py").as_uri()
    text = "ORDERS = [{'id': 41, 'total': 'ninety-nine'}]\n"
    pipeline.document_changed(fixture, "python", text)
    with pytest.raises(Rejected, match="disabled_files"):
        await pipeline.complete(CompletionRequest(fixture, "python", text, 0, 6))
    app = (tmp_path / "app.py").as_uri()
    pipeline.document_changed(app, "python", "print(val\n")
    assert (await pipeline.complete(CompletionRequest(app, "python", "print(val\n", 0, 9))).text
    assert any("ninety-nine" in prompt for prompt in engine.seen)
    pipeline.update_settings(dataclasses.replace(settings, disabled_files=""))
    assert (await pipeline.complete(CompletionRequest(fixture, "python", text, 0, 6))).text
    pipeline.close()


@pytest.mark.parametrize("sources", ["recent", "definitions,recent"])
async def test_a_flashlsignore_keeps_files_out_of_suggestions_and_prompts(
        tmp_path: Path, sources: str) -> None:
    (tmp_path / ".flashlsignore").write_text("internal/\n")
    (tmp_path / "internal").mkdir()
    (tmp_path / "internal" / "pricing.py").write_text(
        "MARGIN = 'confidential-margin-0.42'\n\ndef price(cost):\n    return cost\n")
    (tmp_path / "helpers.py").write_text("def helper(value):\n    return value * 2\n")
    engine = RecordingEngine()
    pipeline = CompletionService(Settings(context_sources=sources), engine)
    pipeline.open_workspace([tmp_path.as_uri()])
    if "definitions" in sources:
        assert await _until(lambda: len(pipeline.crossfile.index.files()) >= 1)
    pricing = (tmp_path / "internal" / "pricing.py").as_uri()
    text = (tmp_path / "internal" / "pricing.py").read_text()
    pipeline.document_changed(pricing, "python", text)
    pipeline.document_opened(pricing)
    pipeline.yanked(pricing, "MARGIN = 'confidential-margin-0.42'")
    with pytest.raises(Rejected, match="excluded"):
        await pipeline.complete(CompletionRequest(pricing, "python", text, 3, 15))
    app = (tmp_path / "app.py").as_uri()
    source = "from internal.pricing import price\nfrom helpers import helper\n\nprint(val\n"
    pipeline.document_changed(app, "python", source)
    assert (await pipeline.complete(CompletionRequest(app, "python", source, 3, 9))).text
    assert engine.seen and not any("confidential" in prompt for prompt in engine.seen)
    assert not any("pricing" in key for key in pipeline.crossfile.index.files())
    pipeline.close()


async def test_a_line_added_to_flashlsignore_drops_what_was_taken(tmp_path: Path) -> None:
    engine = RecordingEngine()
    pipeline = CompletionService(Settings(context_sources="recent"), engine)
    pipeline.open_workspace([tmp_path.as_uri()])
    notes = (tmp_path / "notes.txt").as_uri()
    pipeline.document_changed(notes, "plaintext", "staging password hunter2\n")
    pipeline.yanked(notes, "staging password hunter2")
    app = (tmp_path / "app.py").as_uri()
    pipeline.document_changed(app, "python", "print(val\n")
    await pipeline.complete(CompletionRequest(app, "python", "print(val\n", 0, 9))
    assert any("hunter2" in prompt for prompt in engine.seen)  # taken before the line
    (tmp_path / ".flashlsignore").write_text("notes.txt\n")
    engine.seen.clear()
    pipeline.document_changed(app, "python", "print(valu\n")
    await pipeline.complete(CompletionRequest(app, "python", "print(valu\n", 0, 10))
    assert engine.seen and not any("hunter2" in prompt for prompt in engine.seen)
    with pytest.raises(Rejected, match="excluded"):
        await pipeline.complete(CompletionRequest(notes, "plaintext", "staging\n", 0, 3))
    (tmp_path / ".flashlsignore").write_text("")  # taken out again: suggestions come back
    answer = await pipeline.complete(CompletionRequest(notes, "plaintext", "staging\n", 0, 3))
    assert answer.text
    pipeline.close()


async def _inline_until(client: LanguageClient, uri: str, line: int, character: int,
                        wanted: Callable[[list[str]], bool]) -> list[str]:
    """The inline answer at a cursor once `wanted` holds (settings apply a moment after
    the notification that carries them), or the last answer after 5 s."""
    answer = await inline(client, uri, line, character)
    for _ in range(50):
        if wanted(answer):
            break
        await asyncio.sleep(0.1)
        answer = await inline(client, uri, line, character)
    return answer


async def test_languages_and_globs_are_silenced_and_given_back_live_over_lsp(
        tmp_path: Path) -> None:
    lsp = await ClientServerConfig(server_command=FAKE).start()
    try:
        await lsp.initialize_session(types.InitializeParams(  # type: ignore[attr-defined]
            capabilities=client_capabilities("neovim"),
            workspace_folders=[types.WorkspaceFolder(uri=tmp_path.as_uri(), name="w")],
            initialization_options={"flashls": {"disabledLanguages": ["markdown"]}}))
        notes = open_document(lsp, "See the guide\n", uri=f"{tmp_path.as_uri()}/NOTES.md",
                              language="markdown")
        app = open_document(lsp, "import os\nos.pa\n", uri=f"{tmp_path.as_uri()}/app.py")
        api = open_document(lsp, "import os\nos.pa\n",
                            uri=f"{tmp_path.as_uri()}/generated/api.py")
        assert await inline(lsp, notes, 0, 13) == []
        items = await lsp.text_document_completion_async(types.CompletionParams(  # type: ignore[attr-defined]
            text_document=types.TextDocumentIdentifier(uri=notes),
            position=types.Position(line=0, character=13)))
        assert not items.items  # the completion-item fallback is silent too
        assert await inline(lsp, app, 1, 5) == ["_done(1)"]
        assert await inline(lsp, api, 1, 5) == ["_done(1)"]

        lsp.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"flashls": {"disabledLanguages": [], "disabledFiles": "generated/"}}))
        assert await _inline_until(lsp, notes, 0, 13, bool) == ["_done(1)"]
        assert await inline(lsp, api, 1, 5) == []
        assert await inline(lsp, app, 1, 5) == ["_done(1)"]

        lsp.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"flashls": {"disabledFiles": ""}}))
        assert await _inline_until(lsp, api, 1, 5, bool) == ["_done(1)"]
        await lsp.shutdown_session()  # type: ignore[attr-defined]
    finally:
        await stop_server(lsp)


async def test_flashlsignore_keeps_a_file_out_of_completions_and_context_over_lsp(
        tmp_path: Path) -> None:
    (tmp_path / ".flashlsignore").write_text("private/\n")
    lsp = await ClientServerConfig(server_command=FAKE).start()
    warm = record_warm_ups(lsp)

    async def warmed_at(uri: str, edit: str, version: int) -> object:
        """The warm-up of the prompt before `value = ` after typing `edit` after it."""
        insert(lsp, uri, 0, 8, edit, version)
        return await warm_up_at(lsp, warm, uri, 0, 8)

    try:
        await lsp.initialize_session(types.InitializeParams(  # type: ignore[attr-defined]
            capabilities=client_capabilities("neovim"),
            workspace_folders=[types.WorkspaceFolder(uri=tmp_path.as_uri(), name="w")],
            initialization_options={"flashls": {"contextSources": "recent"}}))
        root = tmp_path.as_uri()
        app = open_document(lsp, "value = \n", uri=f"{root}/app.py")
        private = open_document(lsp, "api_key = load\n", uri=f"{root}/private/keys.py")
        assert await inline(lsp, private, 0, 14) == []
        lsp.protocol.notify("flashls/didYank", {"textDocument": {"uri": private},
                                                "text": "api_key = 'sk-live-0123456789'"})
        assert await warmed_at(app, "1", 2) == "evaluated 8 prompt tokens"  # no yank in it
        yank = "def helper(a, b):\n    return a + b"
        lsp.protocol.notify("flashls/didYank", {"textDocument": {"uri": f"{root}/lib.py"},
                                                "text": yank})
        assert await warmed_at(app, "2", 3) == f"evaluated {8 + len(yank)} prompt tokens"

        (tmp_path / ".flashlsignore").write_text("# nothing private any more\n")
        assert await inline(lsp, private, 0, 14) == ["_done(1)"]
        await lsp.shutdown_session()  # type: ignore[attr-defined]
    finally:
        await stop_server(lsp)
