"""Characters a model token holds in each document, so that the window's token budgets
count the model's own tokens.

The window (`window.py`) is cut by counting characters; a document's density, measured
once with the model's tokenizer on the text around the cursor, turns a budget in tokens
into characters. Without a tokenizer (remote engines, a model not loaded yet) the budgets
are counted at `CHARS_PER_TOKEN`, which overcounts Qwen2.5-Coder's tokens by a quarter to
a half.
"""

from __future__ import annotations

from collections.abc import Callable

from flashls.context.window import CHARS_PER_TOKEN

# Characters measured around the cursor: about 3,000 tokens, 10-30 ms of tokenizing.
SAMPLE_CHARS = 12_000
# A document is measured again once its length differs by more than this share from
# when it was measured (a paste, a rewrite), not at every keystroke: a density that moves
# would move the window's start and lose the model's cache of the prompt.
REMEASURE_CHANGE = 0.25
# Bounds on a measured density (text of one repeated character is a few tokens a
# kilobyte; the window must still stay within what `n_ctx` holds for real text).
MIN_DENSITY, MAX_DENSITY = 1.5, 8.0

TokenCounter = Callable[[str], "int | None"]


class TokenDensity:
    """Characters per model token of each document.

    Invariant: an entry is (the document's length when measured, its density rounded to a
    tenth); it was measured on at most SAMPLE_CHARS of the document around a cursor, and
    it is kept until the length differs by more than REMEASURE_CHANGE, `forget` drops it or
    `reset` drops them all (another model, another tokenizer). A count that is not
    available leaves no entry.
    """

    def __init__(self, count: TokenCounter) -> None:
        self._count = count
        self._measured: dict[str, tuple[int, float]] = {}

    def of(self, uri: str, text: str, cursor: int) -> float:
        """The density for the window around `cursor` in `uri`'s `text`."""
        kept = self._measured.get(uri)
        if kept is not None and abs(len(text) - kept[0]) <= REMEASURE_CHANGE * kept[0]:
            return kept[1]
        start = max(0, min(cursor - SAMPLE_CHARS * 3 // 4, len(text) - SAMPLE_CHARS))
        sample = text[start:start + SAMPLE_CHARS]
        tokens = self._count(sample) if sample.strip() else None
        if not tokens:
            return kept[1] if kept is not None else CHARS_PER_TOKEN
        density = min(max(round(len(sample) / tokens, 1), MIN_DENSITY), MAX_DENSITY)
        self._measured[uri] = (len(text), density)
        return density

    def forget(self, uri: str) -> None:
        """Drop a closed document's density."""
        self._measured.pop(uri, None)

    def reset(self) -> None:
        """Drop every density: the model, and so its tokenizer, changed."""
        self._measured.clear()
