"""The real engine's time budget during prompt evaluation: a cold prompt answers when its
deadline comes, not after the whole prompt, and its continuation finishes from there."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flashls.engine.base import CancelToken, GenerationRequest
from flashls.engine.llama import PROMPT_CHUNK, LlamaEngine
from flashls.settings import Settings

pytestmark = pytest.mark.model

BODY = "".join(f"def helper_{index}(value):\n    return value * {index} + {index % 7}\n\n\n"
               for index in range(60))


def first_line(text: str) -> int | None:
    newline = text.find("\n")
    return None if newline < 0 else newline


def test_deadline_during_the_prompt_then_resume(model_path: Path) -> None:
    engine = LlamaEngine(Settings(model=str(model_path), n_threads=2))
    engine.load()
    request = GenerationRequest(BODY + "def helper_60(value):\n    return value * ", "\n",
                                24, first_line)
    # About 1,500 prompt tokens take 7-20 s on 2 cores (and over 2 s at any speed these
    # machines have): the deadline passes while the prompt is being evaluated.
    cut = engine.generate(request, CancelToken(deadline=time.monotonic() + 1.0))
    assert cut.finish == "deadline" and cut.text == ""
    assert PROMPT_CHUNK <= cut.timings.evaluated_tokens < cut.timings.prompt_tokens - PROMPT_CHUNK
    resumed = engine.resume(CancelToken())
    assert resumed is not None and resumed.finish in ("stop", "eos", "length")
    assert resumed.text.strip()
    # The continuation evaluated only the rest of the prompt, not all of it again.
    # (+1: a tail cut midway has its first token, the suffix marker, evaluated again.)
    total = resumed.timings.evaluated_tokens + cut.timings.evaluated_tokens
    assert cut.timings.prompt_tokens <= total <= cut.timings.prompt_tokens + 1
    engine.close()


def test_twenty_reloads_free_their_models(model_path: Path) -> None:
    """RSS after 20 load/close cycles stays within 10% of one loaded model."""
    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    engine = LlamaEngine(Settings(model=str(model_path), n_threads=2))
    engine.load()
    one_load = rss_mb()
    for _ in range(20):
        engine.close()
        engine = LlamaEngine(Settings(model=str(model_path), n_threads=2))
        engine.load()
    assert rss_mb() <= one_load * 1.10, (one_load, rss_mb())
    engine.close()
