"""A deterministic stand-in engine for protocol and timing tests; it loads no model.

It "generates" a fixed text derived from the prefix, one token every `token_ms`, so
cancellation, supersession and time budgets behave as with a real model.
"""

from __future__ import annotations

import os
import re
import time

from flashls.engine.base import (
    CancelToken,
    GenerationRequest,
    GenerationResult,
    Timings,
)

TOKEN_CHARS = 3
_IDENTIFIER_TAIL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


def fake_middle(prefix: str) -> str:
    """What the fake engine answers: the half-typed word finished as `<word>_done(1)`."""
    match = _IDENTIFIER_TAIL.search(prefix)
    if match:
        return "_done(1)"
    return "fake_completion(1)\n    return 2\n"


class FakeEngine:
    """Answers `fake_middle(prefix)` at `token_ms` milliseconds a token, after a load
    of `load_ms`."""

    def __init__(self, token_ms: float | None = None, load_ms: float | None = None) -> None:
        self.token_ms = token_ms if token_ms is not None else float(
            os.environ.get("FLASHLS_FAKE_TOKEN_MS", "2"))
        # How long `load` takes, as a model's load would (FLASHLS_FAKE_LOAD_MS).
        self.load_ms = load_ms if load_ms is not None else float(
            os.environ.get("FLASHLS_FAKE_LOAD_MS", "0"))
        self.calls = 0
        self._loaded = False
        self._suspended: tuple[GenerationRequest, str, int] | None = None

    def load(self) -> None:
        """Nothing to load; the first call takes `load_ms` all the same (and the first
        generation makes it, as the real engine loads on first use)."""
        if not self._loaded:
            time.sleep(self.load_ms / 1000)
            self._loaded = True

    def close(self) -> None:
        """Nothing to free."""

    def describe(self) -> str:
        """Names itself."""
        return "fake engine"

    def count_tokens(self, text: str) -> int | None:
        """No tokenizer: windows are counted at the default estimate."""
        return None

    def generate(self, request: GenerationRequest, cancel: CancelToken) -> GenerationResult:
        """Emit the fixed middle token by token, honouring cancel, deadline and stop rules."""
        self.load()
        self.calls += 1
        self._suspended = None
        return self._emit(request, fake_middle(request.prefix), 0, cancel)

    def alternatives(self, request: GenerationRequest, count: int,
                     cancel: CancelToken) -> list[GenerationResult]:
        """`fake_alternative(i)` for i = 1..count, token by token like `generate`."""
        return [self._emit(request, f"fake_alternative({index})", 0, cancel)
                for index in range(1, count + 1) if not cancel.cancelled]

    def prefill(self, request: GenerationRequest, cancel: CancelToken) -> int:
        """Pretend to evaluate the prompt: one "token" per character of the prefix and of
        the other files' text."""
        self.load()
        self._suspended = None
        repo = request.repo
        return len(request.prefix) + (0 if repo is None else
                                      sum(len(text) for _, text in repo.files))

    def resume(self, cancel: CancelToken) -> GenerationResult | None:
        """Go on after a deadline, like the real engine."""
        suspended, self._suspended = self._suspended, None
        if suspended is None:
            return None
        request, answer, position = suspended
        return self._emit(request, answer, position, cancel)

    def _emit(self, request: GenerationRequest, answer: str, position: int,
              cancel: CancelToken) -> GenerationResult:
        started = time.perf_counter()
        text = answer[:position]
        generated = 0
        finish = "eos"
        for start in range(position, len(answer), TOKEN_CHARS):
            if start // TOKEN_CHARS >= request.max_tokens:
                finish = "length"
                break
            time.sleep(self.token_ms / 1000)
            text = answer[:start + TOKEN_CHARS]
            generated += 1
            if request.on_token is not None:
                request.on_token(text)
            cut = request.stop(text)
            if cut is not None:
                text, finish = text[:cut], "stop"
                break
            if cancel.cancelled:
                finish = "cancelled"
                break
            if cancel.expired():
                self._suspended = (request, answer, start + TOKEN_CHARS)
                finish = "deadline"
                break
        elapsed = (time.perf_counter() - started) * 1000
        return GenerationResult(text, finish, Timings(generate_ms=elapsed,
                                                      generated_tokens=generated))
