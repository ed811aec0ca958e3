"""The one thread that owns the model: jobs run one at a time, user requests first.

Async callers get a concurrent Future; cancelling a job that has not started drops it,
cancelling one that runs sets its CancelToken, which the engine checks between tokens.
"""

from __future__ import annotations

import concurrent.futures
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


@dataclass(order=True)
class _Job:
    priority: int
    sequence: int
    run: Callable[[], Any] = field(compare=False)
    future: concurrent.futures.Future[Any] = field(compare=False)
    cancel: CancelToken = field(compare=False)
    submitted: float = field(compare=False, default_factory=time.perf_counter)


@dataclass
class QueuedResult:
    """A job's result and how long it waited for the model."""

    value: Any
    queue_ms: float


class ModelWorker:
    """Runs engine calls on a single daemon thread, in priority then arrival order."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._jobs: queue.PriorityQueue[_Job] = queue.PriorityQueue()
        self._sequence = itertools.count()
        self._thread = threading.Thread(target=self._loop, name="flashls-model", daemon=True)
        self._stopped = False
        self._thread.start()

    def _submit(self, run: Callable[[], Any], cancel: CancelToken,
                priority: int) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put(_Job(priority, next(self._sequence), run, future, cancel))
        return future

    def generate(self, request: GenerationRequest, cancel: CancelToken,
                 priority: int = USER) -> concurrent.futures.Future[QueuedResult]:
        """Queue a generation; the future holds a QueuedResult of a GenerationResult."""
        return self._submit(lambda: self.engine.generate(request, cancel), cancel, priority)

    def prefill(self, request: GenerationRequest,
                cancel: CancelToken) -> concurrent.futures.Future[QueuedResult]:
        """Queue, behind any user request, evaluating a prompt ahead of time (warm-up)."""
        return self._submit(lambda: self.engine.prefill(request, cancel), cancel, BACKGROUND)

    def resume(self, cancel: CancelToken) -> concurrent.futures.Future[QueuedResult]:
        """Queue, behind any user request, the continuation of a generation cut short."""
        return self._submit(lambda: self.engine.resume(cancel), cancel, BACKGROUND)

    def load(self) -> concurrent.futures.Future[QueuedResult]:
        """Queue loading the model (start-up preload)."""
        return self._submit(self.engine.load, CancelToken(), USER)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if self._stopped:
                job.future.cancel()
                continue
            if job.cancel.cancelled:
                job.future.cancel()  # superseded before it ran: its waiter must not hang
                continue
            if not job.future.set_running_or_notify_cancel():
                continue
            waited = (time.perf_counter() - job.submitted) * 1000
            try:
                job.future.set_result(QueuedResult(job.run(), waited))
            except BaseException as error:  # handed to the caller, never kills the thread
                log.debug("model job failed: %s", error)
                job.future.set_exception(error)

    def stop(self) -> None:
        """Drop queued jobs; the thread idles until the process exits."""
        self._stopped = True
        self._jobs.put(_Job(BACKGROUND, next(self._sequence), lambda: None,
                            concurrent.futures.Future(), CancelToken()))


def finished_result(result: QueuedResult) -> GenerationResult:
    """The GenerationResult inside a QueuedResult (typed accessor)."""
    value = result.value
    assert isinstance(value, GenerationResult)
    return value
