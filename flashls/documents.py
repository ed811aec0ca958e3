"""Open documents as the editor holds them: exact text, LSP line rules, position encodings.

Plain Python with no protocol types: the server turns notifications into `Change`s here.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

# LSP's only line terminators; \f, \v, \x1c-\x1e, \x85, \u2028 and \u2029 are not among them.
LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


class DocumentError(Exception):
    """A change or position the document cannot accept; the message is one line."""


@dataclass(frozen=True)
class Position:
    """A zero-based line and a column counted in code units of the position encoding."""

    line: int
    character: int


@dataclass(frozen=True)
class Range:
    """From `start` up to, not including, `end`."""

    start: Position
    end: Position


@dataclass(frozen=True)
class Change:
    """One content change: `range` None replaces the whole document with `text`."""

    range: Range | None
    text: str


def column_units(text: str, encoding: str = "utf-16") -> int:
    """How many code units of the position encoding `text` spans."""
    if encoding == "utf-16":
        return len(text.encode("utf-16-le", "surrogatepass")) // 2
    if encoding == "utf-8":
        return len(text.encode("utf-8", "surrogatepass"))
    if encoding == "utf-32":
        return len(text)
    raise ValueError(f"unknown position encoding {encoding!r}")


def _utf16_index(line: str, units: int) -> int | None:
    extra = 0  # each astral character before the match adds a second UTF-16 unit
    for match in _ASTRAL.finditer(line):
        units_before = match.start() + extra
        if units <= units_before:
            return units - extra
        if units == units_before + 1:
            return None
        extra += 1
    return min(units - extra, len(line))


def _utf8_index(line: str, units: int) -> int | None:
    if line.isascii():
        return min(units, len(line))
    encoded = line.encode("utf-8", "surrogatepass")
    if units >= len(encoded):
        return len(line)
    if 0x80 <= encoded[units] < 0xC0:  # a continuation byte: inside a character
        return None
    return len(encoded[:units].decode("utf-8", "surrogatepass"))


def _index_of_units(line: str, units: int, encoding: str) -> int | None:
    """The index in `line` after `units` code units, clamped; None inside a character."""
    if encoding == "utf-16":
        return _utf16_index(line, units)
    if encoding == "utf-8":
        return _utf8_index(line, units)
    if encoding == "utf-32":
        return min(units, len(line))
    raise ValueError(f"unknown position encoding {encoding!r}")


def scan_line_starts(text: str) -> list[int]:
    """The offset where each LSP line of `text` starts (the first is always 0)."""
    return [0, *(match.end() for match in LINE_BREAK.finditer(text))]


def _updated_line_starts(starts: list[int], new_text: str, start: int, end: int,
                         inserted: int) -> list[int]:
    """Line starts once old `[start, end)` became `new_text[start:start + inserted]`.

    Whether offset p starts a line depends only on the characters at p - 1 and p, so
    starts outside the edit are kept (shifted) and only `[start, start + inserted]` is
    rescanned, one character either side so a CRLF split or joined there is seen.
    """
    stop = start + inserted
    head = starts[:bisect_left(starts, start)] or [0]
    window = LINE_BREAK.finditer(new_text, max(start - 1, 0), min(stop + 1, len(new_text)))
    middle = [match.end() for match in window if start <= match.end() <= stop]
    shift = inserted - (end - start)
    tail = [offset + shift for offset in starts[bisect_right(starts, end):]]
    return head + middle + tail


@dataclass(frozen=True, eq=False)
class Document:
    """One open document, an immutable snapshot; the store swaps in a new one per change.

    Invariants:
    - `text` is the editor's text exactly, line terminators untouched, as of `version`.
    - `line_starts[0] == 0`; the others, strictly increasing, are the offsets just after
      each `\\r\\n`, lone `\\r` or `\\n` of `text`; `len(line_starts)` is the line count.
    - `in_sync` is False once a change was rejected: `text` then lags the editor's, and
      stays suspect until a full-text change or a re-open.
    """

    uri: str
    language_id: str
    version: int
    text: str
    in_sync: bool = True
    line_starts: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.line_starts:
            object.__setattr__(self, "line_starts", scan_line_starts(self.text))

    @property
    def line_count(self) -> int:
        """How many lines LSP sees (a trailing line break opens an empty last line)."""
        return len(self.line_starts)

    def _line_bounds(self, line: int) -> tuple[int, int]:
        """(start, end) of `line`'s content, without its terminator."""
        start = self.line_starts[line]
        if line + 1 == len(self.line_starts):
            return start, len(self.text)
        following = self.line_starts[line + 1]
        return start, following - (2 if self.text[following - 2:following] == "\r\n" else 1)

    def offset_of(self, position: Position, encoding: str = "utf-16") -> int:
        """The offset in `text` of `position`; a character past the line's end means the end.

        Raises DocumentError for a negative value, a line past the last one, a position
        inside a character of `encoding`, and a character one past the end of a line
        ending in CRLF: that points between `\\r` and `\\n` for a client that splits only
        on `\\n`, which means its text differs from ours.
        """
        line, character = position.line, position.character
        if line < 0 or character < 0:
            raise DocumentError(f"negative position {line}:{character}")
        if line >= len(self.line_starts):
            raise DocumentError(f"line {line} is past the last line {len(self.line_starts) - 1}")
        start, end = self._line_bounds(line)
        content = self.text[start:end]
        index = _index_of_units(content, character, encoding)
        if index is None:
            raise DocumentError(f"{line}:{character} is inside a character ({encoding})")
        if (index == len(content) and self.text.startswith("\r\n", end)
                and character == column_units(content, encoding) + 1):
            raise DocumentError(f"{line}:{character} is inside a CRLF line break")
        return start + index

    def position_of(self, offset: int, encoding: str = "utf-16") -> Position:
        """The position of `offset`; DocumentError outside the text or inside a CRLF."""
        if not 0 <= offset <= len(self.text):
            raise DocumentError(f"offset {offset} is outside 0..{len(self.text)}")
        line = bisect_right(self.line_starts, offset) - 1
        start, end = self._line_bounds(line)
        if offset > end:
            raise DocumentError(f"offset {offset} is inside a CRLF line break")
        return Position(line, column_units(self.text[start:offset], encoding))

    @cached_property
    def _lf_text(self) -> str:
        return self.text.replace("\r\n", "\n").replace("\r", "\n")

    @cached_property
    def _crlf_offsets(self) -> list[int]:
        return [match.start() for match in re.finditer("\r\n", self.text)]

    def lf_view(self) -> str:
        """`text` with every `\\r\\n` and lone `\\r` turned into `\\n` (computed once)."""
        return self._lf_text

    def lf_offset(self, offset: int) -> int:
        """The offset in `lf_view()` of `offset` in `text`."""
        if not 0 <= offset <= len(self.text):
            raise DocumentError(f"offset {offset} is outside 0..{len(self.text)}")
        return offset - bisect_left(self._crlf_offsets, offset)

    def _replaced(self, start: int, end: int, inserted: str) -> Document:
        text = self.text[:start] + inserted + self.text[end:]
        starts = _updated_line_starts(self.line_starts, text, start, end, len(inserted))
        return replace(self, text=text, line_starts=starts)

    def _cursor_after(self, offset: int, encoding: str) -> Position:
        # A change that ended with the `\r` of a CRLF leaves the cursor after the pair.
        if offset > 0 and self.text[offset - 1:offset + 1] == "\r\n":
            offset += 1
        return self.position_of(offset, encoding)

    def applied(self, version: int, changes: Sequence[Change],
                encoding: str = "utf-16") -> tuple[Document, Position | None]:
        """The document after `changes` in order, and the position just after the last
        change's text (None when there is none, or it replaced the whole document)."""
        if version <= self.version:
            raise DocumentError(f"version {version} is not newer than {self.version}")
        document = replace(self, version=version)
        cursor: int | None = None
        for change in changes:
            if change.range is None:
                document = Document(self.uri, self.language_id, version, change.text)
                cursor = None
                continue
            start, end = change.range.start, change.range.end
            if (end.line, end.character) < (start.line, start.character):
                raise DocumentError(f"range ends at {end.line}:{end.character} "
                                    f"before its start {start.line}:{start.character}")
            start_offset = document.offset_of(start, encoding)
            end_offset = document.offset_of(end, encoding)
            document = document._replaced(start_offset, end_offset, change.text)
            cursor = start_offset + len(change.text)
        position = None if cursor is None else document._cursor_after(cursor, encoding)
        return document, position


class DocumentStore:
    """The open documents by URI; a URI never opened is unknown, never read from disk."""

    def __init__(self) -> None:
        self._documents: dict[str, Document] = {}

    def open(self, uri: str, language_id: str, version: int, text: str) -> Document:
        """Start tracking `uri` (a re-open replaces what was there)."""
        document = Document(uri, language_id, version, text)
        self._documents[uri] = document
        return document

    def change(self, uri: str, version: int, changes: Sequence[Change],
               encoding: str = "utf-16") -> Position | None:
        """Apply all of `changes` or none; returns where the cursor most likely is.

        A rejected notification raises DocumentError and leaves the text as it was,
        marked out of sync until a notification with a full-text change.
        """
        document = self._documents.get(uri)
        if document is None:
            raise DocumentError(f"{uri} is not open")
        try:
            updated, cursor = document.applied(version, changes, encoding)
        except DocumentError:
            self._documents[uri] = replace(document, in_sync=False)
            raise
        self._documents[uri] = updated
        return cursor

    def close(self, uri: str) -> None:
        """Stop tracking `uri` (closing an unknown URI does nothing)."""
        self._documents.pop(uri, None)

    def get(self, uri: str) -> Document | None:
        """The current snapshot of `uri`, or None when it is not open."""
        return self._documents.get(uri)

    def uris(self) -> list[str]:
        """The open URIs, in the order they were opened."""
        return list(self._documents)

    def __len__(self) -> int:
        return len(self._documents)
