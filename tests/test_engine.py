"""The llama.cpp engine on the real default model: FIM output, cancellation, KV reuse, healing."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashls.engine.base import CancelToken, GenerationRequest
from flashls.engine.llama import LlamaEngine
from flashls.settings import Settings

pytestmark = pytest.mark.model

PREFIX = '''import os


def list_python_files(root):
    """Return the paths of the .py files under root."""
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            if name.endswith(".py"):
                found.append(os.path.'''
SUFFIX = '''
    return found


def count_lines(path):
    with open(path) as handle:
        return sum(1 for _ in handle)
'''


def never_stop(text: str) -> int | None:
    return None


def first_line(text: str) -> int | None:
    newline = text.find("\n")
    return None if newline < 0 else newline


@pytest.fixture(scope="module")
def engine(model_path: Path) -> LlamaEngine:
    engine = LlamaEngine(Settings(model=str(model_path), n_threads=2))
    engine.load()
    return engine


def test_fills_the_middle_from_prefix_and_suffix(engine: LlamaEngine) -> None:
    result = engine.generate(GenerationRequest(PREFIX, SUFFIX, 24, first_line), CancelToken())
    assert "qwen" in engine.describe()
    assert result.text.startswith("join(directory, name))"), result.text


def test_cancel_stops_within_one_token(engine: LlamaEngine) -> None:
    cancel = CancelToken()
    seen: list[str] = []

    def cancel_after_three(text: str) -> None:
        seen.append(text)
        if len(seen) == 3:
            cancel.cancel()

    result = engine.generate(GenerationRequest(PREFIX, SUFFIX, 64, never_stop,
                                               on_token=cancel_after_three), cancel)
    assert result.finish == "cancelled"
    assert result.timings.generated_tokens <= 4
    assert len(seen) <= 4


def test_reuse_evaluates_only_the_edit_and_changes_nothing(engine: LlamaEngine,
                                                           model_path: Path) -> None:
    engine.generate(GenerationRequest(PREFIX, SUFFIX, 4, first_line), CancelToken())
    typed = GenerationRequest(PREFIX + "jo", SUFFIX, 16, first_line)
    reused = engine.generate(typed, CancelToken())
    fresh_engine = LlamaEngine(Settings(model=str(model_path), n_threads=2,
                                        reuse_kv_prefix=False))
    fresh = fresh_engine.generate(typed, CancelToken())
    assert reused.text == fresh.text
    # The re-tokenized end of the prefix, the suffix marker and the middle marker: the
    # suffix's cells are shifted into place, not evaluated again.
    assert reused.timings.evaluated_tokens <= 6
    assert fresh.timings.evaluated_tokens == fresh.timings.prompt_tokens


def test_token_healing_completes_a_half_typed_word(engine: LlamaEngine) -> None:
    prefix = PREFIX[:-len("os.path.")] + "os.path.jo"
    result = engine.generate(GenerationRequest(prefix, SUFFIX, 16, first_line), CancelToken())
    assert result.text.startswith("in(directory, name)"), result.text


def test_deadline_returns_what_was_generated(engine: LlamaEngine) -> None:
    cancel = CancelToken(deadline=0.0)  # already past: one token, then stop
    result = engine.generate(GenerationRequest(PREFIX, SUFFIX, 64, never_stop), cancel)
    assert result.finish == "deadline"
    assert result.timings.generated_tokens == 1 and result.text


def test_prefill_leaves_only_the_markers_to_evaluate(engine: LlamaEngine) -> None:
    request = GenerationRequest(PREFIX + "  # warm", SUFFIX, 8, first_line)
    assert engine.prefill(request, CancelToken()) > 0
    result = engine.generate(request, CancelToken())
    assert result.timings.evaluated_tokens <= 2  # the suffix and middle markers
