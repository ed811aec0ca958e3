"""Suggestions already shown, so typing (or backspacing) along one needs no model call.

An entry remembers the document around the cursor when the suggestion was made: a hash
of the text after the cursor, a hash of the text well before it, and the last few hundred
characters before it. A later request matches when the user has only typed into, or
deleted back along, that suggestion; any other edit changes a hash and misses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cachetools import LRUCache

# Characters before the cursor kept verbatim; typing further than this along a
# suggestion starts a new entry anyway.
TAIL_CHARS = 512
ENTRIES_PER_KEY = 4


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", errors="surrogatepass"), digest_size=16).digest()


@dataclass(frozen=True)
class _Shown:
    anchor: int
    head_digest: bytes
    tail: str
    suggestion: str
    continued: bool


@dataclass(frozen=True)
class Hit:
    """What to show from the cache, and whether a background continuation produced it."""

    text: str
    continued: bool


class SuggestionCache:
    """Bounded LRU of shown suggestions keyed by document and the text after the cursor."""

    def __init__(self, max_entries: int) -> None:
        self._entries: LRUCache[tuple[str, bytes], list[_Shown]] = LRUCache(
            maxsize=max(1, max_entries // ENTRIES_PER_KEY))

    def remember(self, uri: str, text: str, cursor: int, suggestion: str, *,
                 continued: bool = False) -> None:
        """Record that `suggestion` was made for `cursor` in `text` (newest wins)."""
        if not suggestion:
            return
        anchor = max(0, cursor - TAIL_CHARS)
        shown = _Shown(anchor, _digest(text[:anchor]), text[anchor:cursor], suggestion,
                       continued)
        key = (uri, _digest(text[cursor:]))
        kept = [entry for entry in self._entries.get(key, []) if entry != shown]
        self._entries[key] = [shown, *kept][:ENTRIES_PER_KEY]

    def lookup(self, uri: str, text: str, cursor: int) -> str | None:
        """The rest of a shown suggestion that the text before `cursor` is consistent with."""
        hit = self.find(uri, text, cursor)
        return None if hit is None else hit.text

    def find(self, uri: str, text: str, cursor: int) -> Hit | None:
        """Like `lookup`, telling also whether the entry came from a continuation."""
        entries = self._entries.get((uri, _digest(text[cursor:])))
        for entry in entries or ():
            if cursor < entry.anchor or _digest(text[:entry.anchor]) != entry.head_digest:
                continue
            typed = text[entry.anchor:cursor]
            if typed.startswith(entry.tail):
                extra = typed[len(entry.tail):]
                if entry.suggestion.startswith(extra) and len(extra) < len(entry.suggestion):
                    return Hit(entry.suggestion[len(extra):], entry.continued)
            elif entry.tail.startswith(typed):
                return Hit(entry.tail[len(typed):] + entry.suggestion, entry.continued)
        return None

    def resize(self, max_entries: int) -> None:
        """Bound the cache anew, keeping the most recently used entries that still fit."""
        resized: LRUCache[tuple[str, bytes], list[_Shown]] = LRUCache(
            maxsize=max(1, max_entries // ENTRIES_PER_KEY))
        while len(self._entries) > resized.maxsize:
            self._entries.popitem()  # the least recently used
        resized.update(self._entries)
        self._entries = resized

    def forget(self, uri: str) -> None:
        """Drop a closed document's entries."""
        for key in [key for key in self._entries if key[0] == uri]:
            del self._entries[key]

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._entries.values())
