"""Which window a remote engine sends: the full one, or at a cold place the short one.

A server's prompt cache cannot be seen from here. What stands for it is what this client
had the server evaluate last (the newest few prompts, as sent) and the rate at which the
server evaluated them (network and queue included, as the user waits for them).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from flashls.engine.base import SHORT_WINDOW_RATIO, Timings

REMEMBERED_PROMPTS = 4  # a few places, as a slot or two of the server holds them
CHARS_PER_TOKEN = 3.5  # source code in the FIM models' tokenizers, roughly
# Until a prompt long enough to say something was timed, a 2-core CPU server's rate: a
# GPU server is measured on its first prompt (the full window evaluated after the short
# one answered), so at worst one place is answered from the short window needlessly.
INITIAL_RATE = 100.0  # tokens a second
MEASURED_FROM_TOKENS = 64  # shorter evaluations are mostly per-request overhead
GENERATION_RESERVE_S = 0.3  # left within the deadline for generating the first words


def prompt_text(body: Mapping[str, Any]) -> str:
    """The text a request body has the server evaluate, in the order the server lays it
    out: the other files, then the prompt (or the prefix and the suffix)."""
    extra = body.get("input_extra") or []
    parts = [str(item.get("text", "")) for item in extra if isinstance(item, dict)]
    parts += [str(body[key]) for key in ("prompt", "input_prefix", "input_suffix", "suffix")
              if body.get(key)]
    return "\x00".join(parts)


def _shared_start(text: str, other: str) -> int:
    """How many characters `text` and `other` share at their start."""
    return next((index for index, (a, b) in enumerate(zip(text, other, strict=False))
                 if a != b), min(len(text), len(other)))


class ServerPrompts:
    """The prompts this client last had the server evaluate, and its measured rate.

    Invariant: `_texts` holds at most REMEMBERED_PROMPTS texts, the newest last; a
    text is remembered once the server was sent it and did not stop on a cancel."""

    def __init__(self) -> None:
        self.rate = INITIAL_RATE
        self._texts: deque[str] = deque(maxlen=REMEMBERED_PROMPTS)

    def cost_s(self, text: str) -> float:
        """Seconds the server likely needs for the part of `text` it does not hold."""
        held = max((_shared_start(text, known) for known in self._texts), default=0)
        return (len(text) - held) / CHARS_PER_TOKEN / self.rate

    def evaluated(self, text: str, timings: Timings) -> None:
        """The server was sent `text` and went through its prompt in `timings`."""
        if text in self._texts:
            self._texts.remove(text)
        self._texts.append(text)
        if timings.evaluated_tokens >= MEASURED_FROM_TOKENS and timings.prompt_ms > 0:
            rate = timings.evaluated_tokens / (timings.prompt_ms / 1000)
            self.rate = 0.7 * self.rate + 0.3 * rate

    def cold(self, full: str, short: str, seconds: float) -> bool:
        """Whether to answer from the short window: the full prompt does not fit in
        `seconds` (less a reserve to generate) and the short one costs at most a
        SHORT_WINDOW_RATIO-th of it."""
        full_cost = self.cost_s(full)
        if full_cost <= seconds - GENERATION_RESERVE_S:
            return False
        return SHORT_WINDOW_RATIO * self.cost_s(short) <= full_cost
