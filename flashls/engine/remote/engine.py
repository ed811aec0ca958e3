"""The remote engine: the `Engine` protocol over an inference server's HTTP API.

Every kind streams, so every kind behaves like the local engine: text reaches
`on_token` as it comes, a stop rule or a cancel closes the reply (which stops the
server), and a reply cut by its deadline stays open for `resume` to read on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from flashls.engine.base import (
    CancelToken,
    EngineError,
    GenerationRequest,
    GenerationResult,
    Timings,
)
from flashls.engine.remote.connection import Connection, ServerBusy, read_api_key
from flashls.engine.remote.stream import End, ReplyStream
from flashls.engine.remote.window import ServerPrompts, prompt_text
from flashls.engine.remote.wire import (
    Chunk,
    LlamaServerWire,
    OllamaWire,
    OpenAIWire,
    WireFormat,
)
from flashls.fim import UnknownFormat, format_named
from flashls.settings import Settings

log = logging.getLogger(__name__)

# How often the engine looks at its cancel token while the server is silent.
POLL_S = 0.02
# The prompt format sent to servers that take the prompt as text, when `fim_format` is
# `auto` (there is no GGUF here to read it from): the default model's family.
DEFAULT_REMOTE_FORMAT = "qwen"


def wire_format(settings: Settings) -> WireFormat:
    """The wire format of the `engine` setting's kind; raises EngineError."""
    if settings.engine == "llama-server":
        return LlamaServerWire(settings)
    name = DEFAULT_REMOTE_FORMAT if settings.fim_format == "auto" else settings.fim_format
    try:
        fim = format_named(name)
    except UnknownFormat as error:
        raise EngineError(str(error)) from error
    if settings.engine == "openai":
        return OpenAIWire(settings, fim)
    if settings.engine == "ollama":
        return OllamaWire(settings, fim)
    raise EngineError(f"engine {settings.engine!r} is not a remote engine")


@dataclass
class _Reading:
    """A reply being read: enough to go on with it later (see `resume`)."""

    request: GenerationRequest
    stream: ReplyStream
    text: str = ""
    tokens: int = 0  # events with text, until the server says how many it generated
    first_text_at: float | None = None  # perf_counter when the first text came
    finish: str | None = None  # why generation ended, once the server said
    prompt_tokens: int = 0
    evaluated_tokens: int = 0

    def take(self, chunk: Chunk) -> None:
        """Add an event's text and take the server's counts where it gives them."""
        if chunk.text:
            self.text += chunk.text
            self.tokens += 1
            if self.first_text_at is None:
                self.first_text_at = time.perf_counter()
        if chunk.generated_tokens is not None:
            self.tokens = chunk.generated_tokens
        if chunk.prompt_tokens is not None:
            self.prompt_tokens = chunk.prompt_tokens
        if chunk.evaluated_tokens is not None:
            self.evaluated_tokens = chunk.evaluated_tokens
        if chunk.finish is not None:
            self.finish = chunk.finish


class RemoteEngine:
    """A model served by llama-server, an OpenAI-compatible server or Ollama.

    At a cold place (`request.short`, and a full prompt the server likely cannot evaluate
    before the deadline: `window.ServerPrompts`) the short window is sent and the result
    says so; the service then has the server evaluate the full window (`prefill`)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._wire = wire_format(settings)
        self.label = f"{self._wire.kind} at {settings.endpoint}"
        self._connection: Connection | None = None
        self._suspended: _Reading | None = None
        self._prompts = ServerPrompts()
        # The last 429/503 and until when (monotonic) nothing is sent: it is raised again.
        self._busy: ServerBusy | None = None
        self._busy_until = 0.0
        # Seconds calls have waited since the server last answered anything: replies cut
        # by their deadline or cancelled before a byte came. At `remote_timeout_ms` the
        # server counts as not answering, though no single reply waited that long.
        self._silent_s = 0.0

    def describe(self) -> str:
        """Kind, endpoint, and the model and prompt format where flashls picks them."""
        details = [self._settings.remote_model] if self._settings.remote_model else []
        if isinstance(self._wire, LlamaServerWire):
            if self._wire.fim is not None:
                details.append(f"{self._wire.fim.name} prompt")
        else:
            fim = self._settings.fim_format
            details.append(f"{DEFAULT_REMOTE_FORMAT if fim == 'auto' else fim} prompt")
        return self.label + (f" ({', '.join(details)})" if details else "")

    def count_tokens(self, text: str) -> int | None:
        """The server's tokenizer is a round trip away: windows are counted at the default
        estimate."""
        return None

    def load(self) -> None:
        """Open the connection and check the server once (reachable, key accepted, model
        known); raises EngineError with a message for the user."""
        if self._connection is not None:
            return
        timeout_s = self._settings.remote_timeout_ms / 1000
        connection = Connection(self.label, self._settings.endpoint,
                                read_api_key(self._settings), timeout_s, self._wire.explain)
        try:
            problem = self._wire.check_probe(connection.get_json(self._wire.probe()))
            if problem is not None:
                raise EngineError(f"{self.label} {problem}")
        except EngineError:
            connection.close()
            raise
        self._connection = connection
        log.info("using %s", self.describe())

    def _wait_if_busy(self) -> None:
        """Raise the server's last 429/503 again while its Retry-After lasts."""
        if self._busy is not None and time.monotonic() < self._busy_until:
            raise self._busy

    def _note_busy(self, busy: ServerBusy) -> None:
        self._busy, self._busy_until = busy, time.monotonic() + busy.retry_after_s

    def generate(self, request: GenerationRequest, cancel: CancelToken) -> GenerationResult:
        """Stream the middle for `request`; the reply is left open if the deadline cuts it."""
        self.load()
        self._wait_if_busy()
        self._abandon()
        window, (path, body) = self._window(request, cancel)
        result = self._read(self._send(path, body, window), cancel, may_suspend=True)
        if result.finish != "cancelled":
            self._prompts.evaluated(prompt_text(body), result.timings)
        result.timings.short_window = window is not request
        return result

    def _window(self, request: GenerationRequest, cancel: CancelToken
                ) -> tuple[GenerationRequest, tuple[str, dict[str, Any]]]:
        """The request to send, the full one or its short window, and its call."""
        call = self._wire.generate(request)
        if request.short is None or cancel.deadline is None:
            return request, call
        short = request.shortened()
        short_call = self._wire.generate(short)
        seconds = cancel.deadline - time.monotonic()
        if self._prompts.cold(prompt_text(call[1]), prompt_text(short_call[1]), seconds):
            return short, short_call
        return request, call

    def prefill(self, request: GenerationRequest, cancel: CancelToken) -> int:
        """Have the server evaluate into its cache the prompt the next request here would
        be sent (llama-server): the short window while the full one is too slow for the
        time budget, since a slot caches one prompt and a full one begun would displace
        the short one; tokens it evaluated. 0 for kinds without a prompt-only request,
        which cache by themselves."""
        self.load()
        self._wait_if_busy()
        self._abandon()
        budget = CancelToken(time.monotonic() + self._settings.time_budget_ms / 1000)
        call = self._wire.prefill(self._window(request, budget)[0])
        if call is None:
            return 0
        result = self._read(self._send(*call, request), cancel, may_suspend=False)
        if result.finish != "cancelled":
            self._prompts.evaluated(prompt_text(call[1]), result.timings)
        return result.timings.evaluated_tokens

    def alternatives(self, request: GenerationRequest, count: int,
                     cancel: CancelToken) -> list[GenerationResult]:
        """Sampled completions from llama-server (`n_cmpl`: one more than `count`, as one
        may repeat the greedy suggestion), read together until each ends or a stop rule
        cuts it, the deadline passes or `cancel` is set; none from the other kinds or from
        a server with one slot."""
        self.load()
        call = self._wire.alternatives(request, count + 1)
        if call is None:
            return []
        self._abandon()
        reading = self._send(*call, request)
        texts: dict[int, str] = {}
        finished: dict[int, str] = {}
        try:
            while len(finished) < call[1]["n_cmpl"] and not cancel.cancelled:
                if cancel.expired():
                    break
                chunk = self._poll(reading, cancel, until_deadline=True)
                if isinstance(chunk, End):
                    break
                if chunk is not None:
                    self._take_alternative(chunk, request, texts, finished)
        finally:
            reading.stream.close()
        unfinished = "cancelled" if cancel.cancelled else "deadline"
        return [GenerationResult(text, finished.get(index, unfinished), Timings())
                for index, text in sorted(texts.items())]

    @staticmethod
    def _take_alternative(chunk: Chunk, request: GenerationRequest, texts: dict[int, str],
                          finished: dict[int, str]) -> None:
        """Add one event to its completion's text, unless that completion has ended."""
        if chunk.index in finished:
            return
        text = texts.get(chunk.index, "") + chunk.text
        cut = request.stop(text) if chunk.text else None
        if cut is not None:
            text, finished[chunk.index] = text[:cut], "stop"
        elif chunk.final:
            finished[chunk.index] = chunk.finish or "eos"
        texts[chunk.index] = text

    def resume(self, cancel: CancelToken) -> GenerationResult | None:
        """Read on in the reply the last deadline cut, if nothing ran since; the text is
        the whole suggestion so far."""
        reading, self._suspended = self._suspended, None
        if reading is None:
            return None
        return self._read(reading, cancel, may_suspend=True)

    def close(self) -> None:
        """Abandon any open reply and close the connections."""
        self._abandon()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _abandon(self) -> None:
        """Close the reply a deadline left open: what runs next replaces it."""
        reading, self._suspended = self._suspended, None
        if reading is not None:
            reading.stream.close()

    def _send(self, path: str, body: dict[str, object], request: GenerationRequest
              ) -> _Reading:
        connection = self._connection
        assert connection is not None
        stream = ReplyStream(
            lambda abandoned, trace: connection.open(path, body, abandoned, trace),
            self._wire.events, connection.transport_error)
        return _Reading(request, stream)

    def _read(self, reading: _Reading, cancel: CancelToken, *,
              may_suspend: bool) -> GenerationResult:
        """This call's result: the reply read until it ends, a stop rule cuts it, `cancel`
        is set or (when `may_suspend`) its deadline passes. Its prompt time is the wait
        for the reply's first text (network and queue included), as the user waits."""
        started = time.perf_counter()
        had_text, tokens_before = bool(reading.text), reading.tokens
        try:
            text, finish = self._follow(reading, cancel, may_suspend)
        except ServerBusy as busy:
            reading.stream.close()
            self._note_busy(busy)
            raise
        except EngineError:
            reading.stream.close()
            raise
        finally:
            self._note_silence(reading, time.perf_counter() - started)
        if finish == "deadline" and self._silent_s * 1000 >= self._settings.remote_timeout_ms:
            self._abandon()
            assert self._connection is not None
            raise self._connection.silent()
        ended = time.perf_counter()
        prompt_done = started if had_text else (reading.first_text_at or ended)
        return GenerationResult(text, finish, Timings(
            prompt_ms=(prompt_done - started) * 1000, generate_ms=(ended - prompt_done) * 1000,
            prompt_tokens=reading.prompt_tokens, evaluated_tokens=reading.evaluated_tokens,
            generated_tokens=reading.tokens - tokens_before))

    def _note_silence(self, reading: _Reading, seconds: float) -> None:
        """Count a call's wait as silence unless the server answered it."""
        self._silent_s = 0.0 if reading.stream.heard else self._silent_s + seconds

    def _poll(self, reading: _Reading, cancel: CancelToken,
              until_deadline: bool) -> Chunk | End | None:
        """The reply's next event, End when it ended, None when nothing came within one
        poll (cut at the deadline when `until_deadline`); raises EngineError when the
        reply failed."""
        wait = POLL_S if cancel.deadline is None or not until_deadline else min(
            POLL_S, max(0.0, cancel.deadline - time.monotonic()))
        item = reading.stream.next(wait)
        if item is None or isinstance(item, End):
            return item
        if isinstance(item, EngineError):
            raise item
        return self._wire.read(item)

    def _follow(self, reading: _Reading, cancel: CancelToken,
                may_suspend: bool) -> tuple[str, str]:
        """The text and finish reason once reading stops (see `_read`); raises EngineError
        when the reply failed."""
        request = reading.request
        while True:
            if cancel.cancelled:
                reading.stream.close()
                return reading.text, "cancelled"
            if may_suspend and cancel.expired():
                self._suspended = reading
                return reading.text, "deadline"
            chunk = self._poll(reading, cancel, until_deadline=may_suspend)
            if chunk is None:
                continue
            if isinstance(chunk, End):
                if reading.finish is None:  # every kind's last event says why it ended
                    raise EngineError(f"{self.label} ended a reply before its last event "
                                      f"(an empty or cut-off reply)")
                return reading.text, reading.finish
            reading.take(chunk)
            if chunk.text:
                if request.on_token is not None:
                    request.on_token(reading.text)
                cut = request.stop(reading.text)
                if cut is not None:
                    reading.stream.close()
                    return reading.text[:cut], "stop"
                if reading.tokens > request.max_tokens:
                    # A server streaming on past what was asked (one that keeps to it ends
                    # with a final event, which carries its counts): cut at the asked length.
                    reading.stream.close()
                    return reading.text[:len(reading.text) - len(chunk.text)], "length"
            if chunk.final:
                return reading.text, reading.finish or "eos"
