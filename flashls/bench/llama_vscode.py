"""The `llama-vscode` baseline: the typing traces sent straight to llama-server's `/infill`
with the fields llama.vscode sends (its src/llama-server.ts and src/completion.ts), and
none of its client cache. Scoring is replay.py's; nothing here starts a server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from flashls.bench.client import as_int
from flashls.bench.replay import RequestRecord, SitePass, make_record
from flashls.bench.trace import Keystroke, Trace, split_lines

VARIANT = "llama-vscode"
# llama.vscode's defaults (its package.json settings): lines around the cursor and limits.
N_PREFIX_LINES = 256
N_SUFFIX_LINES = 64
N_PREDICT = 128
T_MAX_PROMPT_MS = 500
T_MAX_PREDICT_MS = 1000
SAMPLING: dict[str, Any] = {"top_k": 40, "top_p": 0.99, "stream": False,
                            "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True}
WARMUP_BODY: dict[str, Any] = {"input_prefix": "def add(left, right):\n", "input_suffix": "\n",
                               "input_extra": [], "prompt": "    return ",
                               "n_predict": 8, **SAMPLING}


class LlamaServerError(RuntimeError):
    """llama-server cannot be reached or refuses the warm-up request."""


@dataclass
class BaselineRun:
    """The baseline's warm-up time and its records, one per keystroke."""

    startup_ms: float  # the first /health answer
    warmup_ms: float
    records: list[RequestRecord]


@dataclass(frozen=True)
class Reply:
    """One /infill answer: its JSON, the ms it took and when it was read."""

    body: dict[str, Any]
    response_ms: float
    arrived_at: float  # time.perf_counter()


def infill_body(trace: Trace, typed: int) -> dict[str, Any]:
    """The /infill request llama.vscode sends with `typed` characters of the site's line."""
    lines = [line.rstrip("\r\n") for line in split_lines(trace.open_text)]
    row = trace.site.line
    line_text = trace.site.indent + trace.site.body[:typed]  # the cursor ends the line
    n_indent = len(line_text) - len(line_text.lstrip())
    prefix_lines = lines[max(0, row - N_PREFIX_LINES):row]
    suffix_lines = lines[row + 1:row + 1 + N_SUFFIX_LINES]
    body: dict[str, Any] = {
        "input_prefix": "\n".join(prefix_lines) + "\n",
        "input_suffix": "\n" + "\n".join(suffix_lines) + "\n",  # the line's suffix is ""
        "input_extra": [], "prompt": line_text, "n_predict": N_PREDICT, **SAMPLING,
        "t_max_prompt_ms": T_MAX_PROMPT_MS, "t_max_predict_ms": T_MAX_PREDICT_MS}
    if n_indent:  # llama.vscode leaves the field out when the line is not indented
        body["n_indent"] = n_indent
    return body


def shown_first_line(content: Any) -> str:
    """The first line llama.vscode would show: nothing for a blank reply."""
    if not isinstance(content, str) or not content.strip():
        return ""
    return content.split("\n", 1)[0].rstrip("\r")


def server_fields(reply: dict[str, Any], response_ms: float) -> dict[str, Any]:
    """Record fields from llama-server's reply: its timings and token counts."""
    raw = reply.get("timings")
    timings: dict[str, Any] = raw if isinstance(raw, dict) else {}
    stages = {"prompt_ms": timings.get("prompt_ms"), "generate_ms": timings.get("predicted_ms"),
              "evaluated_tokens": timings.get("prompt_n"),
              "generated_tokens": timings.get("predicted_n")}
    kept = {name: float(value) for name, value in stages.items()
            if isinstance(value, int | float)}
    return {"response_ms": response_ms, "source": "model", "finish": reply.get("stop_type"),
            "timings": kept,
            "evaluated_tokens": as_int(kept.get("evaluated_tokens")),
            "generated_tokens": as_int(kept.get("generated_tokens"))}


async def post_infill(client: httpx.AsyncClient, body: dict[str, Any],
                      timeout_s: float) -> Reply:
    """One /infill call, timed from sending it to reading its last byte."""
    sent = time.perf_counter()
    response = await client.post("/infill", json=body, timeout=timeout_s)
    arrived_at = time.perf_counter()
    response.raise_for_status()
    reply = response.json()
    return Reply(reply if isinstance(reply, dict) else {}, (arrived_at - sent) * 1000, arrived_at)


def _answered(site_pass: SitePass, keystroke: Keystroke, reply: Reply,
              latency_ms: float) -> RequestRecord:
    return make_record(site_pass, keystroke, "answered", latency_ms,
                       shown_first_line(reply.body.get("content")),
                       **server_fields(reply.body, reply.response_ms))


async def prime_site(client: httpx.AsyncClient, trace: Trace, timeout_s: float) -> None:
    """One untimed /infill at the site's cursor before its first keystroke (`--prime`)."""
    with contextlib.suppress(httpx.HTTPError):  # a failed priming only leaves it colder
        await post_infill(client, infill_body(trace, 0), timeout_s)


async def replay_sync(client: httpx.AsyncClient, site_pass: SitePass,
                      timeout_s: float) -> list[RequestRecord]:
    """One /infill per keystroke, each waited for before the next keystroke."""
    records = []
    for keystroke in site_pass.trace.keystrokes:
        body = infill_body(site_pass.trace, keystroke.typed)
        try:
            reply = await post_infill(client, body, timeout_s)
        except httpx.TimeoutException:
            records.append(make_record(site_pass, keystroke, "timeout", None, None))
            continue
        except httpx.HTTPError:
            records.append(make_record(site_pass, keystroke, "error", None, None))
            continue
        records.append(_answered(site_pass, keystroke, reply, reply.response_ms))
    return records


async def replay_human(client: httpx.AsyncClient, site_pass: SitePass, interval_s: float,
                       timeout_s: float) -> list[RequestRecord]:
    """A keystroke every `interval_s`; the next keystroke closes a request still running."""
    keystrokes = site_pass.trace.keystrokes
    tasks: list[asyncio.Task[Reply]] = []
    typed_at: list[float] = []
    start = time.perf_counter()
    for index, keystroke in enumerate(keystrokes):
        await asyncio.sleep(max(0.0, start + index * interval_s - time.perf_counter()))
        if tasks and not tasks[-1].done():
            tasks[-1].cancel()  # closes the connection; llama-server drops the task
        typed_at.append(time.perf_counter())
        body = infill_body(site_pass.trace, keystroke.typed)
        tasks.append(asyncio.create_task(post_infill(client, body, timeout_s)))
    await asyncio.wait(tasks)
    return [_human_record(site_pass, keystroke, task, typed)
            for keystroke, task, typed in zip(keystrokes, tasks, typed_at, strict=True)]


def _human_record(site_pass: SitePass, keystroke: Keystroke,
                  task: asyncio.Task[Reply],
                  typed_at: float) -> RequestRecord:
    if task.cancelled():
        return make_record(site_pass, keystroke, "cancelled", None, None)
    error = task.exception()
    if error is not None:
        outcome = "timeout" if isinstance(error, httpx.TimeoutException) else "error"
        return make_record(site_pass, keystroke, outcome, None, None)
    # A request still running at the next keystroke was cancelled: what is left came in time.
    reply = task.result()
    return _answered(site_pass, keystroke, reply, (reply.arrived_at - typed_at) * 1000)


async def wait_until_ready(client: httpx.AsyncClient, timeout_s: float) -> tuple[float, float]:
    """Poll /health, then one warm-up /infill; their durations in ms."""
    started = time.perf_counter()
    deadline = started + timeout_s
    while True:
        try:
            if (await client.get("/health", timeout=5)).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.perf_counter() > deadline:
            raise LlamaServerError(f"no healthy llama-server at {client.base_url}")
        await asyncio.sleep(0.3)
    ready = time.perf_counter()
    try:
        await post_infill(client, WARMUP_BODY, timeout_s)
    except httpx.HTTPError as error:
        raise LlamaServerError(f"warm-up /infill at {client.base_url} failed: {error}") from error
    return (ready - started) * 1000, (time.perf_counter() - ready) * 1000


async def run_baseline(url: str, traces: Sequence[Trace], mode: str, interval_s: float,
                       repeat: int, timeout_s: float, startup_timeout_s: float,
                       prime: bool = False) -> BaselineRun:
    """Every trace, `repeat` times, against the llama-server at `url`."""
    async with httpx.AsyncClient(base_url=url.rstrip("/")) as client:
        startup_ms, warmup_ms = await wait_until_ready(client, startup_timeout_s)
        records: list[RequestRecord] = []
        for repetition in range(repeat):
            for index, one in enumerate(traces):
                site_pass = SitePass(VARIANT, index, one, repetition)
                if prime and one.keystrokes:
                    await prime_site(client, one, timeout_s)
                if mode == "human":
                    records += await replay_human(client, site_pass, interval_s, timeout_s)
                else:
                    records += await replay_sync(client, site_pass, timeout_s)
    return BaselineRun(startup_ms, warmup_ms, records)
