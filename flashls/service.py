"""The completion pipeline: document text and cursor in, a suggestion (or nothing) out.

context -> speculative cache -> engine (on the model worker) -> post-processing.
Nothing here speaks JSON-RPC; the server and the CLI both call `CompletionService`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flashls.cache import SuggestionCache
from flashls.context import CompletionContext, SyntaxTrees, build_context, position_to_offset
from flashls.engine.base import CancelToken, Engine, GenerationRequest, GenerationResult
from flashls.engine.worker import USER, ModelWorker, QueuedResult, finished_result
from flashls.postprocess import clean, stop_rule
from flashls.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompletionRequest:
    """A cursor in a document, as the editor sees it (UTF-16 columns)."""

    uri: str
    language_id: str
    text: str
    line: int
    character: int
    position_encoding: str = "utf-16"


@dataclass
class Completion:
    """What to insert at the cursor, where it came from, and where the time went."""

    text: str
    source: str  # "model" or "cache"
    finish: str = ""
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Progress:
    """The raw text a generation has produced so far (written by the model thread)."""

    text: str = ""

    def update(self, text: str) -> None:
        self.text = text


@dataclass
class _Running:
    """A generation on the model worker, for a request or continuing one cut by its deadline.

    A later keystroke that only typed along what it has generated so far waits for it
    (`CompletionService._join`) instead of cancelling it and asking the model again."""

    request: CompletionRequest
    context: CompletionContext
    cursor: int
    progress: _Progress
    token: CancelToken
    continuation: bool
    future: concurrent.futures.Future[QueuedResult] = field(
        default_factory=concurrent.futures.Future)
    waiting: int = 0  # requests awaiting it now; with none it only serves the cache

    def carries(self, request: CompletionRequest, cursor: int) -> bool:
        """True when `request` only typed along what has been generated so far."""
        before, start = self.request.text, self.cursor
        if request.uri != self.request.uri or cursor < start or (
                request.text[cursor:] != before[start:] or request.text[:start] != before[:start]):
            return False
        typed, generated = request.text[start:cursor], self.progress.text
        return generated.startswith(typed) or typed.startswith(generated)


def _result(future: concurrent.futures.Future[QueuedResult]) -> GenerationResult | None:
    """A finished generation's result; None if it failed, was dropped or had nothing to do."""
    if future.cancelled() or future.exception() is not None:
        return None
    value = future.result().value
    return value if isinstance(value, GenerationResult) else None


def _own_cancellation() -> bool:
    """Whether the running task itself is being cancelled (not just a future it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Rejected(Exception):
    """The request cannot be answered (past the end, binary, too large); a reason, no error."""


def _looks_binary(text: str) -> bool:
    return "\x00" in text[:65536]


class CompletionService:
    """Holds the syntax trees, the suggestion cache and the model worker."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.worker = ModelWorker(engine)
        self.trees = SyntaxTrees()
        self.cache = SuggestionCache(settings.cache_entries)
        self._in_flight: dict[str, CancelToken] = {}
        self._running: dict[str, _Running] = {}
        # Called with the request whose cut suggestion a continuation has just finished,
        # so the editor can ask again and show all of it (the answer is in the cache).
        self.on_finished: Callable[[CompletionRequest], None] | None = None

    def update_settings(self, settings: Settings) -> None:
        """Take settings that need no new engine; a new cache size applies at once."""
        if settings.cache_entries != self.settings.cache_entries:
            self.cache.resize(settings.cache_entries)
        self.settings = settings

    def replace_engine(self, engine: Engine, settings: Settings) -> None:
        """Swap in a new engine (a model setting changed): the old worker's job is
        cancelled, its thread ends and frees its model; what it produced is dropped.
        Parse trees stay: they do not depend on the model."""
        self.close()
        self.worker = ModelWorker(engine)
        self.cache = SuggestionCache(settings.cache_entries)
        self.settings = settings

    def close(self) -> None:
        """Cancel every job, stop the model worker and free its model."""
        for token in self._in_flight.values():
            token.cancel()
        self._in_flight.clear()
        self._running.clear()
        self.worker.stop()

    def document_changed(self, uri: str, language_id: str, text: str) -> None:
        """Reparse a document after an edit (incrementally; cheap)."""
        if len(text) > self.settings.max_file_bytes or _looks_binary(text):
            self.trees.close(uri)
            return
        self.trees.update(uri, language_id, text)

    def document_closed(self, uri: str) -> None:
        """Forget what was kept for a closed document."""
        self.trees.close(uri)
        self.cache.forget(uri)
        self._running.pop(uri, None)
        token = self._in_flight.pop(uri, None)
        if token is not None:
            token.cancel()

    def prepare(self, request: CompletionRequest) -> tuple[CompletionContext, int]:
        """The context for a request and the cursor's string offset; raises Rejected."""
        if len(request.text) > self.settings.max_file_bytes:
            raise Rejected(f"document is larger than max_file_bytes "
                           f"({self.settings.max_file_bytes})")
        if _looks_binary(request.text):
            raise Rejected("document looks binary")
        cursor = position_to_offset(request.text, request.line, request.character,
                                    request.position_encoding)
        if cursor is None:
            raise Rejected(f"position {request.line}:{request.character} is past the end")
        tree = self.trees.tree(request.uri)
        context = build_context(
            request.text, cursor, language_id=request.language_id, tree=tree,
            prefix_budget=self.settings.prefix_budget_tokens,
            suffix_budget=self.settings.suffix_budget_tokens, multiline=self.settings.multiline)
        return context, cursor

    def _from_cache(self, request: CompletionRequest, cursor: int) -> Completion | None:
        if not self.settings.speculative_cache:
            return None
        hit = self.cache.find(request.uri, request.text, cursor)
        if hit is None:
            return None
        return Completion(hit.text, "cache", "continued" if hit.continued else "cache")

    def _generation(self, context: CompletionContext,
                    progress: _Progress | None = None) -> GenerationRequest:
        return GenerationRequest(prefix=context.prefix, suffix=context.suffix,
                                 max_tokens=self.settings.max_tokens,
                                 stop=stop_rule(context, self.settings.max_lines),
                                 on_token=None if progress is None else progress.update)

    def _finish(self, context: CompletionContext, queued: QueuedResult, started: float,
                context_ms: float) -> Completion:
        result: GenerationResult = finished_result(queued)
        post_started = time.perf_counter()
        text = "" if result.finish == "cancelled" else clean(
            result.text, context, cut_short=result.finish == "deadline")
        timing = result.timings
        total = (time.perf_counter() - started) * 1000
        return Completion(text, "model", result.finish, {
            "context_ms": context_ms, "queue_ms": queued.queue_ms,
            "tokenize_ms": timing.tokenize_ms, "prompt_ms": timing.prompt_ms,
            "generate_ms": timing.generate_ms,
            "postprocess_ms": (time.perf_counter() - post_started) * 1000,
            "total_ms": total, "prompt_tokens": timing.prompt_tokens,
            "evaluated_tokens": timing.evaluated_tokens,
            "generated_tokens": timing.generated_tokens})

    def prefill(self, request: CompletionRequest
                ) -> concurrent.futures.Future[QueuedResult] | None:
        """Evaluate the prompt for a cursor in the background, unless a request is running."""
        if request.uri in self._in_flight:
            return None
        try:
            context, _ = self.prepare(request)
        except Rejected:
            return None
        self._yield_background(request.uri)  # the user looks here now, not there
        token = CancelToken()
        self._in_flight[request.uri] = token  # any real request for the document cancels it
        future = self.worker.prefill(self._generation(context), token)
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(
            self._release, request.uri, token))
        return future

    def _release(self, uri: str, token: CancelToken) -> None:
        """Forget a finished background job, unless a newer one replaced it."""
        if self._in_flight.get(uri) is token:
            del self._in_flight[uri]

    def _launch(self, request: CompletionRequest, context: CompletionContext, cursor: int,
                token: CancelToken, progress: _Progress, *, continuation: bool) -> _Running:
        """Queue a generation (or the continuation of a cut one) and track it."""
        running = _Running(request, context, cursor, progress, token, continuation)
        if continuation:
            running.future = self.worker.resume(token)
        else:
            running.future = self.worker.generate(
                self._generation(context, progress), token, USER)
        self._in_flight[request.uri] = token  # a request that does not join it cancels it
        self._running[request.uri] = running
        loop = asyncio.get_running_loop()
        running.future.add_done_callback(lambda _: loop.call_soon_threadsafe(
            self._ran, running))
        return running

    def _ran(self, running: _Running) -> None:
        """Cache what a generation produced, whoever still waits for it; when its deadline
        cut it, go on generating it in the background (progressive answers)."""
        uri = running.request.uri
        self._release(uri, running.token)
        if self._running.get(uri) is running:
            del self._running[uri]
        result = _result(running.future)
        if result is None or result.finish == "cancelled" or not self.settings.speculative_cache:
            return
        cut = result.finish == "deadline"
        if cut and not self.settings.progressive:
            return  # a cut suggestion is cached only as the head of its continuation
        self._remember(running, result.text, cut_short=cut)
        if cut and uri not in self._in_flight:
            self._launch(running.request, running.context, running.cursor, CancelToken(),
                         running.progress, continuation=True)
        elif running.continuation and not cut and self.on_finished is not None:
            self.on_finished(running.request)

    def _remember(self, running: _Running, text: str, *, cut_short: bool) -> None:
        request = running.request
        self.cache.remember(request.uri, request.text, running.cursor,
                            clean(text, running.context, cut_short=cut_short),
                            continued=running.continuation)

    def _joinable(self, request: CompletionRequest, cursor: int) -> _Running | None:
        running = self._running.get(request.uri)
        if running is None or running.future.done():
            return None
        return running if running.carries(request, cursor) else None

    async def _join(self, request: CompletionRequest, cursor: int,
                    started: float) -> Completion | None:
        """Wait, within this request's budget, for the generation it typed along (and for
        the continuation of that generation, if its deadline cuts it).

        None: nothing to join, or what was joined does not cover what was typed.
        Cancelling this request (the next keystroke) leaves the generation running."""
        deadline = time.monotonic() + self.settings.time_budget_ms / 1000
        joined: _Running | None = None
        while (running := self._joinable(request, cursor)) is not None:
            joined = running
            running.waiting += 1
            try:
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running.future)),
                                       max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                # The budget is spent: show as much as has been generated.
                self._remember(running, running.progress.text, cut_short=True)
                break
            except asyncio.CancelledError:
                if _own_cancellation():
                    raise
            except Exception:  # the model failed: this request asks it again
                return None
            finally:
                running.waiting -= 1
            await asyncio.sleep(0)  # let `_ran` cache the result (it may start a continuation)
        if joined is None:
            return None
        hit = self.cache.find(request.uri, request.text, cursor)
        in_time = time.monotonic() < deadline
        if hit is None and in_time:
            return None
        return Completion("" if hit is None else hit.text, "cache",
                          "joined" if in_time else "deadline",
                          {"total_ms": (time.perf_counter() - started) * 1000})

    def _yield_background(self, uri: str) -> None:
        """Stop other documents' work that nobody waits for (warm-ups, continuations,
        generations whose requests were cancelled): the model is one, and this is a user."""
        for other, token in list(self._in_flight.items()):
            running = self._running.get(other)
            if other != uri and (running is None or running.waiting == 0):
                token.cancel()
                del self._in_flight[other]
                self._running.pop(other, None)

    def _start(self, request: CompletionRequest, context: CompletionContext, cursor: int,
               started: float) -> tuple[Completion | None, CancelToken | None]:
        cached = self._from_cache(request, cursor)
        if cached is not None:
            cached.timings["total_ms"] = (time.perf_counter() - started) * 1000
            return cached, None
        previous = self._in_flight.pop(request.uri, None)
        if previous is not None:
            previous.cancel()  # a newer keystroke supersedes the older request
        self._running.pop(request.uri, None)
        self._yield_background(request.uri)
        deadline = time.monotonic() + self.settings.time_budget_ms / 1000
        return None, CancelToken(deadline)

    async def complete(self, request: CompletionRequest) -> Completion:
        """Answer one request; raises Rejected or EngineError, or CancelledError if cancelled."""
        started = time.perf_counter()
        context, cursor = self.prepare(request)
        joined = await self._join(request, cursor, started)
        if joined is not None:
            return joined
        cached, token = self._start(request, context, cursor, started)
        if cached is not None or token is None:
            assert cached is not None
            return cached
        context_ms = (time.perf_counter() - started) * 1000
        running = self._launch(request, context, cursor, token, _Progress(),
                               continuation=False)
        running.waiting += 1
        try:
            queued = await asyncio.shield(asyncio.wrap_future(running.future))
        except asyncio.CancelledError:
            if _own_cancellation():
                raise  # the generation goes on for the keystrokes that type along it
            return Completion("", "model", "cancelled")  # superseded while it queued
        finally:
            running.waiting -= 1
        return self._finish(context, queued, started, context_ms)

    def complete_blocking(self, request: CompletionRequest) -> Completion:
        """The same pipeline for callers without an event loop (the CLI); nothing is cached."""
        started = time.perf_counter()
        context, cursor = self.prepare(request)
        cached, token = self._start(request, context, cursor, started)
        if cached is not None or token is None:
            assert cached is not None
            return cached
        context_ms = (time.perf_counter() - started) * 1000
        queued = self.worker.generate(self._generation(context), token, USER).result()
        return self._finish(context, queued, started, context_ms)
