"""Secret files are never sent anywhere: no suggestion in them, no context taken from them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flashls.engine.base import CancelToken, GenerationRequest, GenerationResult
from flashls.engine.fake import FakeEngine
from flashls.exclusions import Exclusions, split_patterns
from flashls.service import CompletionRequest, CompletionService, Rejected
from flashls.settings import Settings

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


@pytest.mark.parametrize("sources", ["recent", "ring", "definitions,recent", "usages"])
async def test_no_prompt_carries_a_secret_file(tmp_path: Path, sources: str) -> None:
    (tmp_path / "settings_secret.py").write_text(
        f'SECRET_TOKEN = "{SECRET}"\n\ndef token():\n    return SECRET_TOKEN\n')
    (tmp_path / "helpers.py").write_text("def helper(value):\n    return value * 2\n")
    engine = RecordingEngine()
    pipeline = CompletionService(Settings(context_sources=sources), engine)
    pipeline.open_workspace([tmp_path.as_uri()])
    if sources in ("definitions,recent", "usages"):  # the workspace index is read
        assert await _until(lambda: len(pipeline.crossfile.index.files()) >= 1)
    env = (tmp_path / ".env").as_uri()
    pipeline.document_changed(env, "dotenv", SECRET + "\n")
    pipeline.document_opened(env)
    pipeline.yanked(env, SECRET)
    with pytest.raises(Rejected, match="excluded"):
        await pipeline.complete(CompletionRequest(env, "dotenv", SECRET + "\n", 0, 10))
    assert pipeline.prefill(CompletionRequest(env, "dotenv", SECRET + "\n", 0, 10)) is None
    app = (tmp_path / "app.py").as_uri()
    text = ("from settings_secret import token\nfrom helpers import helper\n\n"
            "value = helper(token())\nprint(val\n")
    pipeline.document_changed(app, "python", text)
    pipeline.document_opened(app)
    answer = await pipeline.complete(CompletionRequest(app, "python", text, 4, 9))
    assert answer.text
    assert engine.seen and not any("wJalrXUtnFEMI" in prompt for prompt in engine.seen)
    assert not any(key.endswith("settings_secret.py")
                   for key in pipeline.crossfile.index.files())
    pipeline.close()


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
