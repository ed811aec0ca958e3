"""The one thread that owns the model: jobs run one at a time, user requests first.

Async callers get a concurrent Future; cancelling a job that has not started drops it,
cancelling one that runs sets its CancelToken, which the engine checks between tokens.
`stop` ends the thread and frees the model (an engine reload must not leave the old
model loaded in a thread that never ends).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flashls.engine.base import CancelToken, Engine, GenerationRequest, GenerationResult

log = logging.getLogger(__name__)

USER = 0
BACKGROUND = 1


def _return_freed_memory() -> None:
    """Hand the freed model's heap back to the OS. glibc gives each model thread its own
    malloc arena and keeps what was freed there: without this, RSS grew from 697 to about
    920 MB over 30 reloads although every model was freed."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim, nothing kept
        pass


def _STOP() -> None:
    """The job `stop` queues last; the thread ends when it reaches it."""


@dataclass(order=True)
class _Job:
    priority: int
    sequence: int
    run: Callable[[], Any] = field(compare=False)
    future: concurrent.futures.Future[Any] = field(compare=False)
    cancel: CancelToken = field(compare=False)
    kind: str = field(compare=False, default="")  # for the debug log
    submitted: float = field(compare=False, default_factory=time.perf_counter)


@dataclass
class QueuedResult:
    """A job's result and how long it waited for the model."""

    value: Any
    queue_ms: float


class ModelWorker:
    """Runs engine calls on a single daemon thread, in priority then arrival order.

    Invariants: every submitted future is resolved (result, exception or cancelled), also
    across `stop`; once stopped, no job runs and the engine is closed by the thread itself
    after the job it was running, so the model is never freed under a running call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._jobs: queue.PriorityQueue[_Job] = queue.PriorityQueue()
        self._sequence = itertools.count()
        self._lock = threading.Lock()  # orders `_submit` against `stop`
        self._stopped = False
        self._current: _Job | None = None
        self._thread = threading.Thread(target=self._loop, name="flashls-model", daemon=True)
        self._thread.start()

    def _submit(self, run: Callable[[], Any], cancel: CancelToken, priority: int,
                kind: str) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            if self._stopped:
                future.cancel()
            else:
                self._jobs.put(_Job(priority, next(self._sequence), run, future, cancel, kind))
        return future

    def generate(self, request: GenerationRequest, cancel: CancelToken,
                 priority: int = USER) -> concurrent.futures.Future[QueuedResult]:
        """Queue a generation; the future holds a QueuedResult of a GenerationResult."""
        return self._submit(lambda: self.engine.generate(request, cancel), cancel, priority,
                            "generate")

    def prefill(self, request: GenerationRequest,
                cancel: CancelToken) -> concurrent.futures.Future[QueuedResult]:
        """Queue, behind any user request, evaluating a prompt ahead of time (warm-up)."""
        return self._submit(lambda: self.engine.prefill(request, cancel), cancel, BACKGROUND,
                            "prefill")

    def alternatives(self, request: GenerationRequest, count: int,
                     cancel: CancelToken) -> concurrent.futures.Future[QueuedResult]:
        """Queue other suggestions for a request the user asked for explicitly; the future
        holds a QueuedResult of a list of GenerationResults."""
        return self._submit(lambda: self.engine.alternatives(request, count, cancel), cancel,
                            USER, "alternatives")

    def resume(self, cancel: CancelToken) -> concurrent.futures.Future[QueuedResult]:
        """Queue, behind any user request, the continuation of a generation cut short."""
        return self._submit(lambda: self.engine.resume(cancel), cancel, BACKGROUND, "resume")

    def load(self) -> concurrent.futures.Future[QueuedResult]:
        """Queue loading the model (start-up preload)."""
        return self._submit(self.engine.load, CancelToken(), USER, "load")

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if self._stopped:
                job.future.cancel()
                if job.run is _STOP:  # queued last, under the lock: nothing follows it
                    break
                continue
            if job.cancel.cancelled:
                job.future.cancel()  # superseded before it ran: its waiter must not hang
                continue
            if not job.future.set_running_or_notify_cancel():
                continue
            waited = (time.perf_counter() - job.submitted) * 1000
            self._current = job
            try:
                started = time.perf_counter()
                value = job.run()
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("%s job: waited %.0f ms, ran %.0f ms: %s", job.kind, waited,
                              (time.perf_counter() - started) * 1000, _describe(value))
                job.future.set_result(QueuedResult(value, waited))
            except BaseException as error:  # handed to the caller, never kills the thread
                log.debug("model job failed: %s", error)
                job.future.set_exception(error)
            finally:
                self._current = None
        try:
            self.engine.close()
        except Exception:  # a failing free must not hide that the thread ended
            log.exception("closing the engine failed")
        _return_freed_memory()

    def stop(self) -> None:
        """Cancel the running job, drop queued ones, end the thread and free the engine."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._jobs.put(_Job(BACKGROUND, next(self._sequence), _STOP,
                                concurrent.futures.Future(), CancelToken(), "stop"))
        running = self._current
        if running is not None:
            running.cancel.cancel()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a stopped worker's thread to end; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def _describe(value: Any) -> str:
    if isinstance(value, GenerationResult):
        timings = value.timings
        return (f"{value.finish}, {timings.evaluated_tokens}/{timings.prompt_tokens} prompt "
                f"tokens evaluated{' (short window)' if timings.short_window else ''}, "
                f"{timings.generated_tokens} generated")
    if isinstance(value, list):
        return f"{len(value)} alternatives"
    if isinstance(value, int):
        return f"{value} prompt tokens evaluated"
    return "nothing to do" if value is None else type(value).__name__


def finished_result(result: QueuedResult) -> GenerationResult:
    """The GenerationResult inside a QueuedResult (typed accessor)."""
    value = result.value
    assert isinstance(value, GenerationResult)
    return value
