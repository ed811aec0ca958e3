"""The `plain-fim` baseline of `flashls bench repo`: one plain fill-in-the-middle request a
site to a llama-server the bench starts, a wide window, greedy, no post-processing. Sites are
`repo_sites.py`'s; starting llama-server is `llama_server.py`'s; scoring is `repo.py`'s.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from flashls.bench.client import as_int
from flashls.bench.llama_server import llama_server_command, started_on_free_port
from flashls.bench.repo_sites import Site, line_before_cursor, masked_lines
from flashls.bench.trace import split_lines
from flashls.fim import format_named

PLAIN_FIM = "plain-fim"
# The window: about the last 1,300 tokens before the cursor and the first 400 after it, cut
# at line boundaries, counted by the server's own tokenizer (`/tokenize`).
PREFIX_BUDGET_TOKENS = 1300
SUFFIX_BUDGET_TOKENS = 400
N_PREDICT = 48
CTX_TOKENS = 4096
# The default model's fill-in-the-middle format (Qwen2.5-Coder's), as flashls renders it.
QWEN = format_named("qwen")
SAMPLING: dict[str, Any] = {"n_predict": N_PREDICT, "temperature": 0, "top_k": 1,
                            "cache_prompt": True, "stream": False}
WARMUP_PROMPT = QWEN.render("def add(left, right):\n    return ", "\n")

TokenCounter = Callable[[str], Awaitable[int]]


@dataclass(frozen=True)
class FimServer:
    """The llama-server the baseline starts: its binary, the GGUF it loads, its threads."""

    binary: str
    model: str
    threads: int


@dataclass
class FimReply:
    """One /completion answer (or why there is none), with llama-server's own counts."""

    outcome: str  # answered | error | timeout
    content: str = ""
    latency_ms: float | None = None  # the /completion call alone, not the /tokenize calls
    finish: str | None = None
    prompt_tokens: int | None = None
    evaluated_tokens: int | None = None  # fewer than prompt_tokens where the cache held some
    generated_tokens: int | None = None
    timings: dict[str, float] = field(default_factory=dict)


# The prompt


def split_at_cursor(site: Site) -> tuple[str, str]:
    """The masked file's text before the cursor, and after it (an auto-closed `)` first)."""
    lines = masked_lines(site)
    before_cursor = line_before_cursor(site)
    return ("".join(lines[:site.line]) + before_cursor,
            lines[site.line][len(before_cursor):] + "".join(lines[site.line + 1:]))


async def last_lines(text: str, budget_tokens: int, count: TokenCounter) -> str:
    """The longest tail of `text` that starts a line and holds at most `budget_tokens`
    tokens; at least the last line, whatever it holds."""
    lines = split_lines(text)
    if await count(text) <= budget_tokens:
        return text
    low, high = 0, max(len(lines) - 1, 0)  # the first kept line's index
    while low < high:
        middle = (low + high) // 2
        if await count("".join(lines[middle:])) <= budget_tokens:
            high = middle
        else:
            low = middle + 1
    return "".join(lines[low:])


async def first_lines(text: str, budget_tokens: int, count: TokenCounter) -> str:
    """The longest head of `text` made of whole lines holding at most `budget_tokens`
    tokens; at least the first line, whatever it holds."""
    lines = split_lines(text)
    if await count(text) <= budget_tokens:
        return text
    low, high = min(1, len(lines)), len(lines)  # how many lines are kept
    while low < high:
        middle = (low + high + 1) // 2
        if await count("".join(lines[:middle])) <= budget_tokens:
            low = middle
        else:
            high = middle - 1
    return "".join(lines[:low])


async def site_prompt(site: Site, count: TokenCounter) -> str:
    """The site's prompt: the window cut to the budgets around the cursor."""
    before, after = split_at_cursor(site)
    return QWEN.render(await last_lines(before, PREFIX_BUDGET_TOKENS, count),
                       await first_lines(after, SUFFIX_BUDGET_TOKENS, count))


# The server


def fim_server_command(server: FimServer, port: int) -> list[str]:
    """llama-server on a loopback port: one slot of CTX_TOKENS, `server.threads` threads."""
    return llama_server_command(server.binary, server.model, port, 1, CTX_TOKENS,
                                server.threads)


@contextlib.asynccontextmanager
async def started(server: FimServer, startup_timeout_s: float,
                  ) -> AsyncIterator[tuple[list[str], str]]:
    """llama-server running until the block ends; its command and base URL."""
    async with started_on_free_port("llama-server", lambda port: fim_server_command(
            server, port), "/health", startup_timeout_s) as (command, endpoint):
        yield command, endpoint


class FimClient:
    """Plain fill-in-the-middle requests to one llama-server."""

    def __init__(self, http: httpx.AsyncClient, timeout_s: float) -> None:
        self.http, self.timeout_s = http, timeout_s

    async def count_tokens(self, text: str) -> int:
        """How many tokens the server's tokenizer makes of `text`."""
        response = await self.http.post("/tokenize", json={"content": text},
                                        timeout=self.timeout_s)
        response.raise_for_status()
        return len(response.json()["tokens"])

    async def warm_up(self) -> None:
        """One short completion, so the first site does not pay for the first call."""
        response = await self.http.post("/completion", timeout=self.timeout_s,
                                        json={**SAMPLING, "prompt": WARMUP_PROMPT,
                                              "n_predict": 4})
        response.raise_for_status()

    async def complete(self, site: Site) -> FimReply:
        """One greedy completion at the site, timed from sending it to reading it."""
        try:
            prompt = await site_prompt(site, self.count_tokens)
            sent = time.perf_counter()
            response = await self.http.post("/completion", json={**SAMPLING, "prompt": prompt},
                                            timeout=self.timeout_s)
            latency_ms = (time.perf_counter() - sent) * 1000
            response.raise_for_status()
            body = response.json()
        except httpx.TimeoutException:
            return FimReply("timeout")
        except (httpx.HTTPError, ValueError, KeyError):
            return FimReply("error")
        return reply_from(body if isinstance(body, dict) else {}, latency_ms)


def reply_from(body: dict[str, Any], latency_ms: float) -> FimReply:
    """A FimReply from llama-server's /completion JSON."""
    raw = body.get("timings")
    timings = raw if isinstance(raw, dict) else {}
    kept = {name: float(timings[key]) for name, key in (
        ("prompt_ms", "prompt_ms"), ("generate_ms", "predicted_ms"),
        ("evaluated_tokens", "prompt_n"), ("generated_tokens", "predicted_n"))
        if isinstance(timings.get(key), int | float)}
    content = body.get("content")
    return FimReply("answered", content if isinstance(content, str) else "", latency_ms,
                    body.get("stop_type"), as_int(body.get("tokens_evaluated")),
                    as_int(kept.get("evaluated_tokens")), as_int(kept.get("generated_tokens")),
                    kept)
