"""What every engine takes and returns: a generation request, a cancel token, a result."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

# Given the text generated so far, where to cut it if generation should stop now.
StopRule = Callable[[str], "int | None"]

# A request is answered from its short window only where what its full window still needs
# costs at least this many times what the short one needs. Nearer than that, the full
# window is a few seconds away, and its answer is the one to finish: a cut answer's
# continuation keeps the window it began with, and the short one lacks the lines below
# the cursor (a function's body to fill a line into).
SHORT_WINDOW_RATIO = 4


class EngineError(Exception):
    """A model could not be loaded or run; the message is meant for the user."""


class EngineBusy(EngineError):
    """The engine asks to be left alone for a while (a server's 429 or 503): it passes by
    itself, so the user is told in the log and the status bar, not in a dialog."""


class CancelToken:
    """Set by whoever no longer wants the answer; engines check it between steps."""

    def __init__(self, deadline: float | None = None) -> None:
        self._event = threading.Event()
        self._abort = threading.Event()
        self.deadline = deadline

    def cancel(self, finish_chunk: bool = False) -> None:
        """Ask the engine to stop at its next check. A decode under way is aborted at
        once, unless `finish_chunk`: then the prompt chunk being evaluated is finished
        (whoever cancels wants those tokens too, e.g. a request whose prompt starts as the
        warm-up's does)."""
        if not finish_chunk:
            self._abort.set()
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once `cancel` was called."""
        return self._event.is_set()

    @property
    def aborting(self) -> bool:
        """True once `cancel` was called without `finish_chunk`: stop even mid-decode."""
        return self._abort.is_set()

    def expired(self, ahead_s: float = 0.0) -> bool:
        """True once the wall-clock deadline, if any, has passed (or will within `ahead_s`)."""
        return self.deadline is not None and time.monotonic() + ahead_s >= self.deadline


@dataclass(frozen=True)
class RepoContext:
    """Other files' text, put before the fill-in-the-middle part in the model's repository
    layout (Qwen2.5-Coder: `<|repo_name|>`, then `<|file_sep|>path` and text per file)."""

    name: str  # the repository (workspace folder)
    files: tuple[tuple[str, str], ...]  # (path, text), in prompt order
    path: str  # the current file's path


@dataclass(frozen=True)
class NameConstraint:
    """The suggestion must start by finishing the identifier at the cursor as one of
    `names` (sorted; each starts with `typed`, the identifier's part before the cursor):
    after `module.`, the names the module has (`context/members.py`)."""

    typed: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class GenerationRequest:
    """One fill-in-the-middle generation."""

    prefix: str
    suffix: str
    max_tokens: int
    stop: StopRule
    # Called with the text so far after every generated token (progress, tests).
    on_token: Callable[[str], None] | None = None
    # A smaller (prefix, suffix) window around the same cursor: the engine answers from
    # it when the full prompt cannot be evaluated before the deadline (a cold place).
    short: tuple[str, str] | None = None
    # A window between the short one and the full one (local engine): a warm-up
    # evaluates it after the short one, and once it is evaluated it answers instead.
    medium: tuple[str, str] | None = None
    # Context from other files; left out where the model has no repository layout or the
    # context window cannot hold it. The short window never carries it.
    repo: RepoContext | None = None
    # What the identifier at the cursor may become; engines that cannot follow it ignore it.
    names: NameConstraint | None = None

    def shortened(self) -> GenerationRequest:
        """The same request over its short window (which has no other files' context)."""
        assert self.short is not None
        return self._over(self.short)

    def at_medium(self) -> GenerationRequest:
        """The same request over its medium window (no other files' context either)."""
        assert self.medium is not None
        return self._over(self.medium)

    def _over(self, window: tuple[str, str]) -> GenerationRequest:
        prefix, suffix = window
        return replace(self, prefix=prefix, suffix=suffix, short=None, medium=None, repo=None)


@dataclass
class Timings:
    """Where the time of one generation went, in milliseconds, and how much was evaluated."""

    tokenize_ms: float = 0.0
    prompt_ms: float = 0.0
    generate_ms: float = 0.0
    prompt_tokens: int = 0
    evaluated_tokens: int = 0
    generated_tokens: int = 0
    short_window: bool = False  # answered from the request's short window


@dataclass
class GenerationResult:
    """The generated middle and why generation ended."""

    text: str
    # "stop" (a stop rule cut it), "eos", "length", "deadline" or "cancelled".
    finish: str
    timings: Timings = field(default_factory=Timings)


class Engine(Protocol):
    """A model that fills in the middle; one call at a time, from one thread."""

    def load(self) -> None:
        """Load the model now; raises EngineError with a message for the user."""

    def describe(self) -> str:
        """A short description for logs and status (model file, format)."""

    def generate(self, request: GenerationRequest, cancel: CancelToken) -> GenerationResult:
        """Generate the middle for `request`, checking `cancel` between steps."""

    def prefill(self, request: GenerationRequest, cancel: CancelToken) -> int:
        """Evaluate the prompt only (warm-up); returns how many tokens were evaluated."""

    def resume(self, cancel: CancelToken) -> GenerationResult | None:
        """Continue the last generation that its deadline cut short (in its prompt or its
        tokens), if nothing ran since; the result's text is the whole suggestion so far."""

    def alternatives(self, request: GenerationRequest, count: int,
                     cancel: CancelToken) -> list[GenerationResult]:
        """Up to `count` other suggestions for `request`'s full window (the local
        engine: greedy continuations of the next likeliest first tokens after the one
        `generate` takes; llama-server: sampled completions; none where the engine cannot
        give them)."""

    def count_tokens(self, text: str) -> int | None:
        """How many tokens the model's tokenizer makes of `text`, from any thread; None
        where the engine has no tokenizer at hand (a remote server, a model not loaded)."""

    def close(self) -> None:
        """Free the model; the engine is not used again."""
