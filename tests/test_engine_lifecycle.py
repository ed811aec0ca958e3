"""The real engine's life cycle: its time budget during prompt evaluation (a cold prompt
answers when its deadline comes and its continuation finishes from there), and reloads
that free the old model."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from flashls.bench.client import LspClient
from flashls.bench.harness import initialize_params
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



RELOAD_TEXT = ("import os\n\n\ndef walk(root):\n    for directory, _, names in os.walk(root):\n"
               "        pa")
RELOAD_URI = "file:///reload/walk.py"


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("Threads:")))


async def _answered(client: LspClient) -> None:
    """Wait until a completion comes back from the (re)loaded model."""
    params = {"textDocument": {"uri": RELOAD_URI}, "position": {"line": 5, "character": 10},
              "context": {"triggerKind": 2}}
    for _ in range(600):
        response = await client.request("textDocument/inlineCompletion", params, 120)
        if response.error is None:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the reloaded model never answered")


async def _reload(model: Path, reloads: int) -> dict[str, float]:
    client = await LspClient.start([sys.executable, "-m", "flashls", "serve", "--model",
                                    str(model), "--n-threads", "2",
                                    "--time-budget-ms", "60000"])
    try:
        await client.request("initialize", initialize_params(), 120)
        await client.notify("initialized", {})
        await client.notify("textDocument/didOpen", {"textDocument": {
            "uri": RELOAD_URI, "languageId": "python", "version": 1, "text": RELOAD_TEXT}})
        await _answered(client)
        one_load, threads_before = client.rss_mb(), _threads(client.pid)
        for index in range(reloads):
            await client.notify("workspace/didChangeConfiguration",
                                {"settings": {"flashls": {"nThreads": 1 + index % 2}}})
            await _answered(client)
        figures = {"rss_mb_one_load": one_load, "rss_mb_after": client.rss_mb(),
                   "threads_before": threads_before, "threads_after": _threads(client.pid)}
        await client.request("shutdown", None, 30)
        await client.notify("exit", None)
        return figures
    finally:
        await client.close()


def test_twenty_reloads_through_the_server_keep_rss_and_threads(model_path: Path) -> None:
    """Each model setting the editor changes reloads the engine on a new worker thread:
    after 20 reloads RSS stays within 10% of one load and no thread is left behind."""
    figures = asyncio.run(_reload(model_path, 20))
    assert figures["rss_mb_after"] <= 1.10 * figures["rss_mb_one_load"], figures
    assert figures["threads_after"] <= figures["threads_before"], figures
