"""The openai engine against a real OpenAI-compatible server: llama-cpp-python's own
`python -m llama_cpp.server` (the `server` extra, a dev dependency) on the default model,
started by the test on a free loopback port. The prompt is built here (flashls/fim.py),
as vLLM needs; the suggestion must fill the hole, as the local engine's does."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashls.engine.base import CancelToken, GenerationRequest
from flashls.engine.remote import RemoteEngine
from flashls.settings import Settings
from tests.http_servers import running_server
from tests.test_engine import (
    PREFIX,
    SHAPES_NAMES,
    SHAPES_PREFIX,
    SHAPES_SUFFIX,
    SUFFIX,
    assert_parses_in_place,
    first_line,
)

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def openai_server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("llama_cpp_server") / "server.log"
    with running_server("llama_cpp.server", lambda port: [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host",
            "127.0.0.1", "--port", str(port), "--n_threads", "2", "--n_ctx", "2048",
            "--model_alias", "flashls-test"], "/v1/models", log_path) as endpoint:
        yield endpoint


def assert_streams_a_middle_that_fits(engine: RemoteEngine) -> None:
    """A one-line middle that parses in place, its text reaching `on_token` as it streams."""
    engine.load()
    seen: list[str] = []
    request = GenerationRequest(PREFIX, SUFFIX, 24, first_line, on_token=seen.append)
    result = engine.generate(request, CancelToken())
    assert result.finish in ("stop", "eos", "length"), result
    assert_parses_in_place(PREFIX, result.text)
    assert seen and all(result.text.startswith(text[:len(result.text)]) for text in seen)
    engine.close()


def test_the_openai_engine_fills_the_middle_through_a_real_server(openai_server: str) -> None:
    assert_streams_a_middle_that_fits(RemoteEngine(Settings(
        engine="openai", endpoint=openai_server, remote_model="flashls-test",
        fim_format="qwen")))


def test_a_cancelled_real_request_returns_at_once(openai_server: str) -> None:
    engine = RemoteEngine(Settings(engine="openai", endpoint=openai_server,
                                   remote_model="flashls-test", fim_format="qwen"))
    cancel = CancelToken()
    request = GenerationRequest(PREFIX, SUFFIX, 200, lambda text: None,
                                on_token=lambda text: cancel.cancel())
    started = time.monotonic()
    result = engine.generate(request, cancel)
    assert result.finish == "cancelled"
    assert time.monotonic() - started < 30  # a hang guard, not a target
    # The server is free again: the next request is answered.
    again = engine.generate(GenerationRequest(PREFIX, SUFFIX, 8, first_line), CancelToken())
    assert again.text.strip()
    engine.close()


def test_llama_cpp_server_follows_the_name_constraint_as_a_grammar(openai_server: str) -> None:
    # Its `/v1/models` says "owned_by": "me", so the engine sends the names as a grammar,
    # and what comes back starts with one of them (names the model would not guess).
    engine = RemoteEngine(Settings(engine="openai", endpoint=openai_server,
                                   remote_model="flashls-test", fim_format="qwen"))
    result = engine.generate(GenerationRequest(SHAPES_PREFIX, SHAPES_SUFFIX, 12, first_line,
                                               names=SHAPES_NAMES), CancelToken())
    assert result.text.startswith(SHAPES_NAMES.names), result
    engine.close()
