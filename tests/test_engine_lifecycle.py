"""The real engine's life cycle: its time budget during prompt evaluation (a cold prompt
answers when its deadline comes and its continuation finishes from there), and reloads
that free the old model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flashls.engine.base import CancelToken, GenerationRequest
from flashls.engine.llama import PROMPT_CHUNK, LlamaEngine
from flashls.settings import Settings

pytestmark = pytest.mark.model

BODY = "".join(f"def helper_{index}(value):\n    return value * {index} + {index % 7}\n\n\n"
               for index in range(30))


def first_line(text: str) -> int | None:
    newline = text.find("\n")
    return None if newline < 0 else newline


def test_deadline_during_the_prompt_then_resume(model_path: Path) -> None:
    engine = LlamaEngine(Settings(model=str(model_path), n_threads=2))
    engine.load()
    request = GenerationRequest(BODY + "def helper_60(value):\n    return value * ", "\n",
                                24, first_line)
    # About 750 prompt tokens take 4-9 s on 2 cores (and over 3 s at any speed these
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



def test_twenty_reloads_through_the_server_keep_rss_and_threads(model_path: Path) -> None:
    """Each model setting the editor changes reloads the engine on a new worker thread:
    after 20 reloads RSS stays within 10% of one load and no thread is left behind."""
    import json
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "bench" / "reload_rss.py"
    done = subprocess.run([sys.executable, str(script), "20"], capture_output=True, text=True,
                          timeout=600, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["rss_mb_after"] <= 1.10 * figures["rss_mb_one_load"], figures
    assert figures["threads_after"] <= figures["threads_before"], figures
