"""The completion pipeline: document text and cursor in, a suggestion (or nothing) out.

context -> speculative cache -> engine (on the model worker) -> post-processing.
Nothing here speaks JSON-RPC; the server and the CLI both call `CompletionService`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from flashls.cache import SuggestionCache
from flashls.context import CompletionContext, SyntaxTrees, WindowHeads, position_to_offset
from flashls.context.crossfile import INDEXED_SOURCES, CrossFileContext
from flashls.context.density import TokenDensity
from flashls.context.workspace import WorkspaceIndexer
from flashls.engine.base import (
    CancelToken,
    Engine,
    EngineError,
    GenerationRequest,
    GenerationResult,
    RepoContext,
)
from flashls.engine.worker import USER, ModelWorker, QueuedResult, finished_result
from flashls.exclusions import Exclusions, split_patterns
from flashls.postprocess import clean, stop_rule
from flashls.settings import Settings

log = logging.getLogger(__name__)

INDEX_MAX_BYTES = 256 * 1024 * 1024  # workspace text read for definitions, at most
# How long past its deadline a request waits for the engine to return what it has.
ANSWER_GRACE_S = 0.25


def context_sources(settings: Settings) -> frozenset[str]:
    """The cross-file sources the settings turn on."""
    if settings.context_sources == "none":
        return frozenset()
    return frozenset(part.strip() for part in settings.context_sources.split(","))


def exclusions_of(settings: Settings, roots: list[str]) -> Exclusions:
    """The settings' exclusions and silenced documents, relative to these folder URIs."""
    return Exclusions(split_patterns(settings.exclude_files), roots,
                      disabled_files=split_patterns(settings.disabled_files),
                      disabled_languages=split_patterns(settings.disabled_languages))


def indexes_workspace(settings: Settings) -> bool:
    """Whether a source on reads the workspace's files (through the index)."""
    return bool(context_sources(settings) & INDEXED_SOURCES)


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
    """The raw text a generation has produced so far (written by the model thread), and
    who to call, from that thread, after each token (set and cleared on the event loop)."""

    text: str = ""
    listener: Callable[[], None] | None = None

    def update(self, text: str) -> None:
        self.text = text
        listener = self.listener
        if listener is not None:
            listener()


WARM, GENERATE, CONTINUE = "warm", "generate", "continue"


@dataclass
class _Job:
    """The one piece of model work kept for a document.

    `kind` is WARM (evaluate a prompt before anyone asks), GENERATE (a request's
    generation; later keystrokes that only type along it wait for it instead of asking
    the model again, see `carries`) or CONTINUE (a generation cut by its deadline, going
    on in the background: progressive answers)."""

    kind: str
    request: CompletionRequest
    context: CompletionContext
    cursor: int
    token: CancelToken
    # The smaller windows the engine may answer from at a cold place (`cold_windows`).
    windows: tuple[CompletionContext, ...] = ()
    progress: _Progress = field(default_factory=_Progress)
    future: concurrent.futures.Future[QueuedResult] = field(
        default_factory=concurrent.futures.Future)
    waiting: int = 0  # requests awaiting it now; with none it only serves the cache
    settled: bool = False  # `CompletionService._settle` has taken its result
    # The newest request answered with less than this job will produce, and its cursor:
    # when the job finishes, that request is the one the editor is told to ask again.
    answered: tuple[CompletionRequest, int] | None = None
    blank: bool = False  # that request was shown nothing: tell the editor once words come
    text: str = ""  # the post-processed suggestion, once settled
    # When its generation began (monotonic; a continuation keeps its generation's).
    started: float = field(default_factory=time.monotonic)

    def carries(self, request: CompletionRequest, cursor: int) -> bool:
        """True when `request` only typed along what has been generated so far. A
        continuation that has generated nothing carries nothing: it may be a reply that
        never comes (a wedged connection), and a new generation costs the same."""
        if self.kind == WARM or self.future.done() or (
                self.kind == CONTINUE and not self.progress.text):
            return False
        before, start = self.request.text, self.cursor
        if request.uri != self.request.uri or cursor < start or (
                request.text[cursor:] != before[start:] or request.text[:start] != before[:start]):
            return False
        typed, generated = request.text[start:cursor], self.progress.text
        return generated.startswith(typed) or typed.startswith(generated)


def _leads_to(job: _Job, context: CompletionContext) -> bool:
    """Whether `job` is a warm-up evaluating a prompt that `context`'s starts as, up to
    the line its cursor was on (keystrokes there since): the chunk it is evaluating is
    then worth finishing. Not while a short window goes first: that serves its own place."""
    if job.kind != WARM or job.windows or job.context.extra != context.extra:
        return False
    warmed = job.context.prefix
    return context.prefix.startswith(warmed[:warmed.rfind("\n") + 1])


def _result(future: concurrent.futures.Future[QueuedResult]) -> GenerationResult | None:
    """A finished generation's result; None if it failed, was dropped or had nothing to do."""
    if future.cancelled() or future.exception() is not None:
        return None
    value = future.result().value
    return value if isinstance(value, GenerationResult) else None


def _on_the_loop(future: concurrent.futures.Future[QueuedResult]
                 ) -> asyncio.Future[QueuedResult]:
    """`future` as an awaitable for `asyncio.wait`. Its outcome is read from `future`
    itself (by `_settle`), so the copy's exception is marked read here: asyncio would
    otherwise log "Future exception was never retrieved" for each failed job."""
    copy = asyncio.wrap_future(future)
    copy.add_done_callback(lambda done: done.cancelled() or done.exception())
    return copy


def _own_cancellation() -> bool:
    """Whether the running task itself is being cancelled (not just a future it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _path(uri: str) -> Path:
    return Path(url2pathname(urlparse(uri).path))


class Rejected(Exception):
    """The request cannot be answered (past the end, binary, too large); a reason, no error."""


def _looks_binary(text: str) -> bool:
    return "\x00" in text[:65536]


class CompletionService:
    """Holds the syntax trees, the suggestion cache and the model worker.

    Invariants of `_jobs` (document URI -> its job):
    - at most one job per document is kept: a new job replaces the entry only after the
      old job's token was cancelled (`_take_over`), so an unkept job never runs long;
    - an entry is removed when its job is settled, cancelled or yields to another document;
    - every job is settled exactly once (`_settle`), by whoever sees its future done first
      (the done callback on the event loop, or a request that awaited it), so nothing
      depends on the order in which callbacks run.
    """

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.worker = ModelWorker(engine)
        self.trees = SyntaxTrees()
        self.windows = WindowHeads()
        self.density = TokenDensity(lambda text: self.worker.engine.count_tokens(text))
        self.exclusions = exclusions_of(settings, [])
        self.cache = SuggestionCache(settings.cache_entries)
        self._jobs: dict[str, _Job] = {}
        self.crossfile = CrossFileContext(context_sources(settings),
                                          settings.context_budget_tokens)
        self._indexer: WorkspaceIndexer | None = None
        # Called with the request whose cut suggestion a continuation has just finished,
        # so the editor can ask again and show all of it (the answer is in the cache).
        self.on_finished: Callable[[CompletionRequest], None] | None = None
        # Called when any job (a request's or background work) fails with an EngineError,
        # and when a generation comes back from the engine with something: the server
        # tells the user once that the engine stopped answering and once that it is back.
        self.on_engine_failed: Callable[[EngineError], None] | None = None
        self.on_engine_answered: Callable[[], None] | None = None
        # Called with a warning the user should see (a workspace folder not read).
        self.on_notice: Callable[[str], None] | None = None

    def update_settings(self, settings: Settings) -> None:
        """Take settings that need no new engine; a new cache size, new exclusions and
        silenced documents apply at once (the workspace index is read again)."""
        if settings.cache_entries != self.settings.cache_entries:
            self.cache.resize(settings.cache_entries)
        self.crossfile.sources = context_sources(settings)
        self.crossfile.budget_tokens = settings.context_budget_tokens
        self.exclusions = exclusions_of(settings, self.crossfile.roots)
        if settings.exclude_files != self.settings.exclude_files:
            self._drop_excluded()
        self.settings = settings
        self._start_indexer()

    def _drop_excluded(self) -> None:
        """The exclusions changed: forget what files excluded now gave other files'
        prompts, and read the workspace again without them (`_start_indexer`)."""
        if self._indexer is not None:
            self._indexer.stop()
            self._indexer = None
            self.crossfile.reset_index()
        self._forget_excluded()

    def _forget_excluded(self) -> None:
        """Drop what excluded documents gave: their trees and every context source's text."""
        for uri in self.crossfile.documents():
            if self.exclusions.excludes_uri(uri):
                self.trees.close(uri)
                self.crossfile.forget(uri)

    def replace_engine(self, engine: Engine, settings: Settings) -> None:
        """Swap in a new engine (a model setting changed): the old worker's job is
        cancelled, its thread ends and frees its model; what it produced is dropped.
        Parse trees stay: they do not depend on the model."""
        self.close()
        self.worker = ModelWorker(engine)
        self.cache = SuggestionCache(settings.cache_entries)
        self.density.reset()
        self.settings = settings

    def open_workspace(self, roots: list[str]) -> None:
        """The editor's workspace folders (URIs): other files' definitions come from them,
        read in the background when the `definitions` source is on."""
        self.crossfile.roots = [root for root in roots if root.startswith("file:")]
        self.exclusions = self.exclusions.with_roots(self.crossfile.roots)
        self._start_indexer()

    def change_workspace(self, added: list[str], removed: list[str]) -> None:
        """Workspace folders (URIs) added and removed by the editor: the new ones are read
        in the background, what was read from the removed ones is forgotten."""
        removed = [root for root in removed if root in self.crossfile.roots]
        self.crossfile.roots = [root for root in self.crossfile.roots if root not in removed]
        added = [root for root in added if root.startswith("file:")
                 and root not in self.crossfile.roots]
        self.crossfile.roots += added
        self.exclusions = self.exclusions.with_roots(self.crossfile.roots)
        self._forget_excluded()  # an added folder's `.flashlsignore` may name open files
        if self._indexer is not None:
            self._indexer.remove_roots([_path(root) for root in removed])
            self._refused(self._indexer.add_roots([_path(root) for root in added]))
        else:
            self._start_indexer()

    def file_changed(self, uri: str, deleted: bool) -> None:
        """A workspace file created, changed or deleted on disk (not through the editor):
        its definitions are read again, or forgotten, in the background."""
        if self._indexer is not None and uri.startswith("file:"):
            self._indexer.file_changed(_path(uri), deleted)

    def _start_indexer(self) -> None:
        usages = "usages" in self.crossfile.sources
        if self._indexer is not None and usages and not self._indexer.keeps_usages:
            self._indexer.stop()  # read again, keeping usage lines this time
            self._indexer = None
            self.crossfile.reset_index()
        if (self._indexer is not None or not self.crossfile.sources & INDEXED_SOURCES
                or not self.crossfile.roots or not self.settings.index_max_files):
            return
        self._indexer = WorkspaceIndexer(self.crossfile.index, self.settings.index_max_files,
                                         INDEX_MAX_BYTES, is_open=self.crossfile.is_open,
                                         usages=usages, excluded=self._excluded_path)
        self._refused(self._indexer.start([_path(root) for root in self.crossfile.roots]))

    def _refused(self, roots: list[Path]) -> None:
        """Tell the user about workspace folders the index will not read."""
        for root in roots:
            message = (f"flashls does not read {root} for context from other files: a "
                       f"workspace folder this wide would read the whole disk or home; open "
                       f"a project folder instead")
            if self.on_notice is None:
                log.warning(message)
            else:
                self.on_notice(message)

    def close(self) -> None:
        """Cancel every job, stop the model worker and free its model."""
        if self._indexer is not None:
            self._indexer.stop()
        for job in self._jobs.values():
            job.token.cancel()
        self._jobs.clear()
        self.worker.stop()

    def _excluded_path(self, path: Path) -> bool:
        return self.exclusions.excludes_path(path.as_posix())

    def document_changed(self, uri: str, language_id: str, text: str) -> None:
        """Reparse a document after an edit (incrementally; cheap); an excluded one is
        neither parsed nor kept for other files' prompts."""
        if self.exclusions.excludes_uri(uri):
            self.trees.close(uri)
            self.crossfile.forget(uri)
            return
        if len(text) > self.settings.max_file_bytes or _looks_binary(text):
            self.trees.close(uri)
            return
        self.trees.update(uri, language_id, text)
        self.crossfile.document_changed(uri, language_id, text)

    def yanked(self, uri: str, text: str) -> None:
        """The user yanked or selected `text` in `uri` (for the `recent` source)."""
        if not self.exclusions.excludes_uri(uri):
            self.crossfile.yanked(uri, text)

    def document_opened(self, uri: str) -> None:
        """The editor opened a document (its text came with `document_changed`): the user
        entered it, at its top."""
        if not self.exclusions.excludes_uri(uri):
            self.crossfile.entered(uri, 0)

    def document_closed(self, uri: str) -> None:
        """Forget what was kept for a closed document."""
        self.trees.close(uri)
        self.windows.forget(uri)
        self.density.forget(uri)
        self.crossfile.document_closed(uri)
        self.cache.forget(uri)
        job = self._jobs.pop(uri, None)
        if job is not None:
            job.token.cancel()

    def prepare(self, request: CompletionRequest) -> tuple[CompletionContext, int]:
        """The context for a request and the cursor's string offset; raises Rejected."""
        if self.exclusions.refresh():  # a `.flashlsignore` changed
            self._drop_excluded()
            self._start_indexer()
        silent = self.exclusions.why_silent(request.uri, request.language_id)
        if silent:
            if self.crossfile.enabled and not self.exclusions.excludes_uri(request.uri):
                self.crossfile.visited(request.uri, request.line)  # context for other files
            raise Rejected(silent)
        if len(request.text) > self.settings.max_file_bytes:
            raise Rejected(f"document is larger than max_file_bytes "
                           f"({self.settings.max_file_bytes})")
        if _looks_binary(request.text):
            raise Rejected("document looks binary")
        cursor = position_to_offset(request.text, request.line, request.character,
                                    request.position_encoding)
        if cursor is None:
            raise Rejected(f"position {request.line}:{request.character} is past the end")
        context = self._context(request, cursor, self.settings.prefix_budget_tokens,
                                self.settings.suffix_budget_tokens)
        crossfile = self.crossfile
        if crossfile.enabled:
            crossfile.visited(request.uri, request.line)
            tree = self.trees.tree(request.uri)
            sections = crossfile.sections(request.uri, request.language_id, tree,
                                          request.text, cursor)
            names = crossfile.member_constraint(
                request.uri, request.language_id, tree, request.text,
                cursor) if self.settings.constrain_names else None
            context = dataclasses.replace(
                context, extra=tuple((s.path, s.text) for s in sections),
                path=crossfile.path_of(request.uri), repo_name=crossfile.repo_name(),
                names=names)
        return context, cursor

    def _context(self, request: CompletionRequest, cursor: int, prefix_budget: int,
                 suffix_budget: int) -> CompletionContext:
        return self.windows.context(
            request.uri, request.text, cursor, language_id=request.language_id,
            tree=self.trees.tree(request.uri), prefix_budget=prefix_budget,
            suffix_budget=suffix_budget, multiline=self.settings.multiline,
            density=self.density.of(request.uri, request.text, cursor))

    def cold_windows(self, request: CompletionRequest, cursor: int,
                     context: CompletionContext) -> tuple[CompletionContext, ...]:
        """The smaller windows the engine answers from while the full one is not evaluated,
        smallest first: the short one (`cold_window_tokens` before the cursor, and the rest
        of its line), then the medium one (`medium_window_tokens`, likewise) where its
        prefix is longer than the short one's and shorter than the full one's. Empty when
        `cold_window_tokens` is 0 or the full window is no larger than the short one.

        No lines after the cursor's: an edit there (the user rewrites the line) leaves a
        suffix whose every token must be evaluated again before the first word (about 12 ms
        a token on 2 cores, 330 ms for 27), while the prefix stays cached."""
        short, medium = self.settings.cold_window_tokens, self.settings.medium_window_tokens
        windows: list[CompletionContext] = []
        for tokens in (short, medium) if medium > short else (short,):
            if not tokens:
                break
            window = self._context(request, cursor, tokens, 0)
            if len(window.prefix) >= len(context.prefix) and len(window.suffix) >= len(
                    context.suffix):
                break  # the full window is no larger
            if windows and not len(windows[-1].prefix) < len(window.prefix) < len(
                    context.prefix):
                break  # the document starts within the short one, or the full one's limit
            windows.append(window)
        return tuple(windows)

    def _from_cache(self, request: CompletionRequest, cursor: int) -> Completion | None:
        if not self.settings.speculative_cache:
            return None
        hit = self.cache.find(request.uri, request.text, cursor)
        if hit is None:
            return None
        return Completion(hit.text, "cache", "continued" if hit.continued else "cache")

    def _generation(self, job: _Job) -> GenerationRequest:
        return self._generation_for(job.context, job.windows, job.progress.update)

    def _generation_for(self, context: CompletionContext,
                        windows: tuple[CompletionContext, ...] = (),
                        on_token: Callable[[str], None] | None = None) -> GenerationRequest:
        repo = RepoContext(context.repo_name, context.extra, context.path) \
            if context.extra else None
        pairs = [(window.prefix, window.suffix) for window in windows]
        short = pairs[0] if pairs else None
        medium = pairs[1] if len(pairs) > 1 else None
        return GenerationRequest(prefix=context.prefix, suffix=context.suffix,
                                 max_tokens=self.settings.max_tokens,
                                 stop=stop_rule(context, self.settings.max_lines),
                                 on_token=on_token, short=short, medium=medium,
                                 repo=repo, names=context.names)

    @staticmethod
    def _completion(text: str, queued: QueuedResult, started: float,
                    context_ms: float, post_ms: float) -> Completion:
        result: GenerationResult = finished_result(queued)
        timing = result.timings
        total = (time.perf_counter() - started) * 1000
        return Completion(text, "model", result.finish, {
            "context_ms": context_ms, "queue_ms": queued.queue_ms,
            "tokenize_ms": timing.tokenize_ms, "prompt_ms": timing.prompt_ms,
            "generate_ms": timing.generate_ms, "postprocess_ms": post_ms,
            "total_ms": total, "prompt_tokens": timing.prompt_tokens,
            "evaluated_tokens": timing.evaluated_tokens,
            "generated_tokens": timing.generated_tokens,
            "short_window": float(timing.short_window)})

    def _submit(self, job: _Job) -> _Job:
        """Queue `job` on the model worker and keep it as its document's job."""
        if job.kind == WARM:
            job.future = self.worker.prefill(self._generation(job), job.token)
        elif job.kind == CONTINUE:
            job.future = self.worker.resume(job.token)
        else:
            job.future = self.worker.generate(self._generation(job), job.token, USER)
        self._jobs[job.request.uri] = job
        log.debug("%s job for %s:%d:%d", job.kind, job.request.uri.rsplit("/", 1)[-1],
                  job.request.line, job.request.character)
        loop = asyncio.get_running_loop()
        job.future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._settle, job))
        return job

    def prefill(self, request: CompletionRequest
                ) -> concurrent.futures.Future[QueuedResult] | None:
        """Evaluate the prompt for a cursor in the background, unless the document has a
        job already; any request for the document cancels it."""
        if request.uri in self._jobs:
            return None
        opening = self._opening_place(request)
        try:
            context, cursor = self.prepare(opening)
        except Rejected:
            return None
        self._yield_background(request.uri)  # the user looks here now, not there
        # The short window first where the next keystroke is likely; an opening place
        # is warmed for the cursors it shares a prefix with, not for itself.
        windows = self.cold_windows(request, cursor, context) if opening is request else ()
        job = _Job(WARM, opening, context, cursor, CancelToken(), windows)
        return self._submit(job).future

    def _opening_place(self, request: CompletionRequest) -> CompletionRequest:
        """The place to warm for a cursor at the document's very start, where editors open
        a file. Its prompt has no prefix, so no later cursor would share any of it; the
        start of the line where the first window's prefix budget runs out (the document's
        last line when it all fits) shares its prefix with every cursor above it."""
        if (request.line, request.character) != (0, 0) or not request.text:
            return request
        text = request.text
        density = self.density.of(request.uri, text, 0)
        end = min(len(text), int(self.settings.prefix_budget_tokens * density))
        line = text.count("\n", 0, text.rfind("\n", 0, end) + 1)  # the line holding `end`
        return dataclasses.replace(request, line=line, character=0)

    def _settle(self, job: _Job) -> None:
        """Take a finished job's result, once: cache what a generation produced, whoever
        still waits for it; when its deadline cut it, go on generating it in the background
        (progressive answers); after an answer from a smaller window, evaluate the larger
        ones."""
        if job.settled or not job.future.done():
            return
        job.settled = True
        uri = job.request.uri
        if self._jobs.get(uri) is job:
            del self._jobs[uri]
        result = _result(job.future)
        self._report(job.future, result)
        if job.kind == WARM or result is None or result.finish == "cancelled":
            return
        cut = result.finish == "deadline"
        job.text = clean(result.text, job.context, cut_short=cut)
        if not self.settings.speculative_cache or (cut and not self.settings.progressive):
            return  # a cut suggestion is cached only as the head of its continuation
        self.cache.remember(uri, job.request.text, job.cursor, job.text,
                            continued=job.kind == CONTINUE)
        taken = uri in self._jobs  # a newer request or warm-up has the document now
        if cut:
            if not taken:
                answered = job.answered or (job.request, job.cursor)
                blank = job.blank if job.answered else not job.text
                self._watch(self._submit(_Job(CONTINUE, job.request, job.context, job.cursor,
                                              CancelToken(), job.windows, job.progress,
                                              answered=answered, blank=blank,
                                              started=job.started)))
            return
        if job.answered is not None:
            self._announce(*job.answered)
        if result.timings.short_window and not taken:
            self._submit(_Job(WARM, job.request, job.context, job.cursor, CancelToken(),
                              job.windows))

    def _report(self, future: concurrent.futures.Future[QueuedResult],
                result: GenerationResult | None) -> None:
        """Tell the listeners whether the engine failed or answered; a generation cut by
        its deadline before it produced anything is neither (a silent server is the
        engine's to judge: it fails once silent for too long)."""
        error = None if future.cancelled() else future.exception()
        if isinstance(error, EngineError):
            if self.on_engine_failed is not None:
                self.on_engine_failed(error)
        elif (result is not None and result.finish != "cancelled"
              and (result.text or result.finish != "deadline")
              and self.on_engine_answered is not None):
            self.on_engine_answered()

    def _watch(self, job: _Job) -> None:
        """When `job` answered a request with nothing, tell the editor to ask again as
        soon as its whole words reach beyond what that request typed, not only at its end
        (a cut generation's continuation takes seconds at a cold place)."""
        job.progress.listener = None
        if not job.blank or self.on_finished is None:
            return
        loop = asyncio.get_running_loop()

        def on_token() -> None:  # on the model thread
            loop.call_soon_threadsafe(self._words_came, job)

        job.progress.listener = on_token

    def _words_came(self, job: _Job) -> None:
        if (not job.blank or job.answered is None or job.future.done()
                or not self._shows_more(job, *job.answered)):
            return
        job.blank = False
        job.progress.listener = None
        if self.on_finished is not None:
            self.on_finished(job.answered[0])

    def _announce(self, request: CompletionRequest, cursor: int) -> None:
        """Tell the editor to ask again at `request`'s cursor, if what is now cached
        shows something there (it agrees with what the user typed since the job began)."""
        hit = self.cache.find(request.uri, request.text, cursor)
        if hit is not None and hit.text and self.on_finished is not None:
            self.on_finished(request)

    def _joinable(self, request: CompletionRequest, cursor: int) -> _Job | None:
        job = self._jobs.get(request.uri)
        return job if job is not None and job.carries(request, cursor) else None

    async def _join(self, request: CompletionRequest, cursor: int,
                    started: float) -> Completion | None:
        """Wait, within this request's budget, for the generation it typed along (and for
        the continuation of that generation, if its deadline cuts it).

        None: nothing to join, or what was joined does not cover what was typed.
        Cancelling this request (the next keystroke) leaves the generation running."""
        deadline = time.monotonic() + self.settings.time_budget_ms / 1000
        joined: _Job | None = None
        partial = False  # answered with a generation's words so far, before the deadline
        while (job := self._joinable(request, cursor)) is not None:
            joined = job
            job.waiting += 1
            try:
                if not await self._wait(job, request, cursor, deadline):
                    # The budget is spent, or this keystroke is shown what there is so far.
                    partial = time.monotonic() < deadline
                    job.answered = (request, cursor)
                    job.blank = not self._shows_more(job, request, cursor)
                    self._watch(job)
                    self.cache.remember(request.uri, job.request.text, job.cursor,
                                        clean(job.progress.text, job.context, cut_short=True),
                                        continued=job.kind == CONTINUE)
                    break
            except asyncio.CancelledError:
                if _own_cancellation():
                    raise
            except Exception:  # the model failed: this request asks it again
                return None
            finally:
                job.waiting -= 1
            self._settle(job)  # caches the result; a cut one's continuation is joined next
        if joined is None:
            return None
        hit = self.cache.find(request.uri, request.text, cursor)
        in_time = time.monotonic() < deadline
        if hit is None and in_time:
            return None
        finish = "partial" if partial else "joined" if in_time else "deadline"
        return Completion("" if hit is None else hit.text, "cache", finish,
                          {"total_ms": (time.perf_counter() - started) * 1000})

    async def _wait(self, job: _Job, request: CompletionRequest, cursor: int,
                    deadline: float) -> bool:
        """Wait for `job` to finish (True) or until the request should be answered with
        what it has generated so far (False): at `deadline`, or after `partial_answer_ms`
        once that is a whole word beyond what `request` typed since the job began."""
        finished = _on_the_loop(job.future)
        partial = self.settings.partial_answer_ms / 1000
        # The generation's age counts, not this request's: a keystroke that joins one
        # already showing words beyond what it typed is answered at once.
        show_at = job.started + partial if partial else deadline
        while not job.future.done():
            now = time.monotonic()
            if now >= deadline or (now >= show_at and self._shows_more(job, request, cursor)):
                return False
            until = min(deadline, show_at if now < show_at else now + 0.02)
            await asyncio.wait({finished}, timeout=None if until == float("inf") else until - now)
        if job.future.cancelled():  # dropped by the worker before it ran (superseded)
            raise asyncio.CancelledError
        return True

    @staticmethod
    def _shows_more(job: _Job, request: CompletionRequest, cursor: int) -> bool:
        """Whether `job`'s whole words so far reach beyond what `request` typed."""
        typed = request.text[job.cursor:cursor]
        words = clean(job.progress.text, job.context, cut_short=True)
        return len(words) > len(typed) and words.startswith(typed)

    def _yield_background(self, uri: str) -> None:
        """Stop other documents' work that nobody waits for (warm-ups, continuations,
        generations whose requests were cancelled): the model is one, and this is a user."""
        for other, job in list(self._jobs.items()):
            if other != uri and job.waiting == 0:
                job.token.cancel()
                del self._jobs[other]

    def _take_over(self, request: CompletionRequest, cursor: int, context: CompletionContext,
                   started: float) -> tuple[Completion | None, CancelToken | None]:
        """A cached answer, or the cancel token of a new generation for `request`, whose
        document's older job is cancelled (a newer keystroke supersedes it)."""
        cached = self._from_cache(request, cursor)
        if cached is not None:
            cached.timings["total_ms"] = (time.perf_counter() - started) * 1000
            return cached, None
        previous = self._jobs.pop(request.uri, None)
        if previous is not None:
            previous.token.cancel(finish_chunk=_leads_to(previous, context))
        self._yield_background(request.uri)
        # The budget counts from the request's arrival, also after a joined job failed.
        deadline = (time.monotonic() + self.settings.time_budget_ms / 1000
                    - (time.perf_counter() - started))
        return None, CancelToken(deadline)

    async def complete(self, request: CompletionRequest) -> Completion:
        """Answer one request; raises Rejected or EngineError, or CancelledError if cancelled."""
        started = time.perf_counter()
        context, cursor = self.prepare(request)
        joined = await self._join(request, cursor, started)
        if joined is not None:
            return joined
        cached, token = self._take_over(request, cursor, context, started)
        if cached is not None or token is None:
            assert cached is not None
            return cached
        job = _Job(GENERATE, request, context, cursor, token,
                   self.cold_windows(request, cursor, context))
        context_ms = (time.perf_counter() - started) * 1000
        self._submit(job)
        job.waiting += 1
        try:
            # The engine answers at the deadline itself; past it (plus a grace), something
            # holds the model's thread (a load, a connect) and the request is answered.
            if not await self._wait(job, request, cursor,
                                    (token.deadline or float("inf")) + ANSWER_GRACE_S):
                text = clean(job.progress.text, context, cut_short=True)
                job.answered, job.blank = (request, cursor), not text
                self._watch(job)
                return Completion(text, "model", "partial" if text else "deadline",
                                  {"total_ms": (time.perf_counter() - started) * 1000})
            queued = job.future.result()
        except asyncio.CancelledError:
            if _own_cancellation():
                raise  # the generation goes on for the keystrokes that type along it
            return Completion("", "model", "cancelled")  # superseded while it queued
        finally:
            job.waiting -= 1
        post_started = time.perf_counter()
        self._settle(job)
        return self._completion(job.text, queued, started, context_ms,
                                (time.perf_counter() - post_started) * 1000)

    async def alternatives(self, request: CompletionRequest, first: str) -> list[str]:
        """Other suggestions than `first` (the usual answer) for an explicit request, up to
        `candidates - 1`, distinct and non-empty, within the time budget; raises Rejected
        or EngineError, or CancelledError if cancelled (the next keystroke)."""
        count = self.settings.candidates - 1
        if count < 1:
            return []
        context, _ = self.prepare(request)
        token = CancelToken(time.monotonic() + self.settings.time_budget_ms / 1000)
        future = self.worker.alternatives(self._generation_for(context), count, token)
        try:
            queued = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            token.cancel()
            raise
        results: list[GenerationResult] = queued.value
        texts: list[str] = []
        for result in results:
            if result.finish == "cancelled":
                continue
            text = clean(result.text, context, cut_short=result.finish == "deadline")
            if text.strip() and text != first and text not in texts:
                texts.append(text)
        return texts[:count]  # a remote engine samples one more than asked

    def complete_blocking(self, request: CompletionRequest) -> Completion:
        """The same pipeline for callers without an event loop (the CLI); nothing is cached."""
        started = time.perf_counter()
        context, cursor = self.prepare(request)
        cached, token = self._take_over(request, cursor, context, started)
        if cached is not None or token is None:
            assert cached is not None
            return cached
        job = _Job(GENERATE, request, context, cursor, token)
        context_ms = (time.perf_counter() - started) * 1000
        queued = self.worker.generate(self._generation(job), token, USER).result()
        post_started = time.perf_counter()
        result = finished_result(queued)
        text = "" if result.finish == "cancelled" else clean(
            result.text, context, cut_short=result.finish == "deadline")
        return self._completion(text, queued, started, context_ms,
                                (time.perf_counter() - post_started) * 1000)
