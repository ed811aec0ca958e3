"""The plan of an editing session for `flashls bench session`: which files are open, which
places are visited in which order, where each line is cut and how much of it is re-typed.

Plain seeded data and the edits it implies; nothing here talks to a server or keeps time.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashls.bench import trace

MIN_CUT = 2  # characters of code left before the cursor
MIN_TYPED = 8  # characters the deletion removes at least
DEFAULT_FILE_LINES = (150, 1500)
# `--visit-chars short`: most visits type a few characters, some type a longer stretch.
SHORT_VISITS = "short"
SHORT_CHARS = (3, 12)
SHORT_SHARE = 0.7  # of visits whose length is drawn from SHORT_CHARS, the rest above it


class PlanError(ValueError):
    """The files cannot give the session asked for; the message says why."""


@dataclass(frozen=True)
class OpenFile:
    """One document opened at the start of the session."""

    path: str
    uri: str
    language_id: str
    text: str


@dataclass(frozen=True)
class Visit:
    """One stay at one place: the line's tail after `cut` is deleted, its first
    `typed_chars` characters are typed again, and the rest is pasted back on leaving.

    Lines never change length for good (every visit restores its line's code), so line
    numbers hold for the whole session; `line_end` is the line's length in UTF-16 units
    when the visit starts (trailing whitespace is not put back).
    """

    index: int
    file: int  # index into SessionPlan.files
    line: int
    indent: str
    body: str  # the line's code after its indentation, trailing whitespace removed
    cut: int  # index into body where the cursor lands
    line_end: int
    return_of: int | None  # the visit this one goes back to, or None for a new place
    typed_chars: int  # characters of `removed` typed, one keystroke each

    @property
    def removed(self) -> str:
        """The text deleted: what an ideal suggestion would show at the cut."""
        return self.body[self.cut:]

    @property
    def typed(self) -> str:
        """The characters typed again, in order."""
        return self.removed[: self.typed_chars]

    @property
    def is_return(self) -> bool:
        """Whether the place was visited before."""
        return self.return_of is not None

    def column(self, typed: int) -> int:
        """The cursor's UTF-16 column after `typed` re-typed characters."""
        return trace.utf16_length(self.indent + self.body[: self.cut + typed])

    def text_before_cursor(self, typed: int) -> str:
        """The line's text before the cursor after `typed` re-typed characters."""
        return self.indent + self.body[: self.cut + typed]


@dataclass(frozen=True)
class SessionPlan:
    """The open files and the visits, in order."""

    files: tuple[OpenFile, ...]
    visits: tuple[Visit, ...]

    def uri(self, visit: Visit) -> str:
        """The URI of the document a visit edits."""
        return self.files[visit.file].uri


def default_files(count: int, seed: int,
                  lines: tuple[int, int] = DEFAULT_FILE_LINES) -> list[str]:
    """A seeded choice of `count` standard-library `.py` files with `lines` lines."""
    corpus = trace.default_corpus()
    random.Random(seed).shuffle(corpus)
    chosen = []
    for path in corpus:
        text = trace.read_source(path)
        if text is None or not lines[0] <= len(trace.split_lines(text)) <= lines[1]:
            continue
        if len(place_lines(path, text)) >= 8:
            chosen.append(path)
        if len(chosen) == count:
            break
    return chosen


def place_lines(path: str, text: str) -> list[int]:
    """Lines a visit can cut: code with enough characters, no decorator-only lines."""
    lines = trace.split_lines(text)
    return [number for number in trace.candidate_lines(path, text)
            if not _body(lines[number]).startswith("@")
            and len(_body(lines[number])) >= MIN_CUT + MIN_TYPED]


def _body(line: str) -> str:
    return line.rstrip("\r\n").lstrip(" \t").rstrip()


def load_files(paths: Sequence[str]) -> tuple[OpenFile, ...]:
    """The files' texts, as an editor opens them."""
    files = []
    for path in paths:
        text = trace.read_source(path)
        if text is None:
            raise PlanError(f"{path} is not UTF-8 text")
        files.append(OpenFile(path, Path(path).as_uri(), trace.language_id(path), text))
    return tuple(files)


def build_plan(files: Sequence[OpenFile], places: int, returns: int, seed: int,
               max_chars: int, visit_chars: int | None = None,
               cut: str = "tail") -> SessionPlan:
    """Visits taking the files in turn; `returns` of them go back to an earlier place.

    New places take the files round-robin, skipping the file just visited; a return goes
    to an earlier place in another file than the one just visited and types the same
    characters there again. Either way every visit switches documents, and a return has
    other files between it and its first visit. `visit_chars` fixes how many characters
    a new place types (None: drawn by `draw_typed_chars`). `cut`: "tail" deletes at most
    `max_chars` at the line's end, "start" the whole line after its indentation (the
    user writes the line from its first character).
    """
    _check_counts(len(files), places, returns)
    rng = random.Random(seed)
    return_at = set(rng.sample(range(2, places), returns))
    free_lines = [_shuffled(place_lines(f.path, f.text), rng) for f in files]
    line_text: dict[tuple[int, int], str] = {}
    visits: list[Visit] = []
    next_file = 0
    for index in range(places):
        previous = visits[-1].file if visits else None
        if index in return_at:
            earlier = _return_target(visits, previous, rng)
            file, line = earlier.file, earlier.line
        else:
            next_file = _next_file(next_file, previous, free_lines)
            file, earlier = next_file, None
            line = free_lines[file].pop()
            next_file += 1
        content = line_text.get((file, line)) or _content(files[file].text, line)
        wanted = visit_chars or draw_typed_chars(rng, max_chars)
        visits.append(_visit(index, file, line, content, earlier,
                             len(content) if cut == "start" else max_chars, wanted, rng,
                             cut == "start"))
        line_text[(file, line)] = visits[-1].indent + visits[-1].body
    return SessionPlan(tuple(files), tuple(visits))


def draw_typed_chars(rng: random.Random, max_chars: int) -> int:
    """How many characters a visit types, `--visit-chars short`: SHORT_SHARE of visits
    uniform in SHORT_CHARS, the others uniform from just above it to `max_chars`."""
    low, high = SHORT_CHARS
    if rng.random() < SHORT_SHARE or max_chars <= high:
        return rng.randint(low, min(high, max_chars))
    return rng.randint(high + 1, max_chars)


def _check_counts(file_count: int, places: int, returns: int) -> None:
    if file_count < 2:
        raise PlanError("a session needs at least 2 files: every visit switches documents")
    if places < 1 or returns < 0:
        raise PlanError("--places must be at least 1 and --returns at least 0")
    if returns > max(0, places - 2):
        raise PlanError(f"--returns {returns} is too many for --places {places}: the first "
                        "two visits are new places, so at most places - 2 can be returns")


def _shuffled(lines: list[int], rng: random.Random) -> list[int]:
    rng.shuffle(lines)
    return lines


def _next_file(start: int, previous: int | None, free_lines: list[list[int]]) -> int:
    """The first file from `start` on (round-robin) with a free line, other than `previous`."""
    count = len(free_lines)
    for step in range(count):
        file = (start + step) % count
        if file != previous and free_lines[file]:
            return file
    raise PlanError("the files have too few lines with code to cut for so many places")


def _return_target(visits: list[Visit], previous: int | None, rng: random.Random) -> Visit:
    """An earlier new place in another file than the last visit's, not yet returned to
    if there is one."""
    new_places = [v for v in visits if not v.is_return and v.file != previous]
    returned = {v.return_of for v in visits if v.is_return}
    fresh = [v for v in new_places if v.index not in returned]
    return rng.choice(fresh or new_places)


def _content(text: str, line: int) -> str:
    return trace.split_lines(text)[line].rstrip("\r\n")


def _visit(index: int, file: int, line: int, content: str, earlier: Visit | None,
           max_chars: int, wanted: int, rng: random.Random, at_start: bool = False) -> Visit:
    """A new place cuts where at most `max_chars` and, where the line allows, at least
    `wanted` characters follow; a return cuts and types as its first visit did."""
    body = content.lstrip(" \t").rstrip()
    indent = content[: len(content) - len(content.lstrip(" \t"))]
    if earlier is None:
        cut = 0 if at_start else _cut(body, max_chars, wanted, rng)
        typed_chars = min(wanted, len(body) - cut)
    else:
        cut, typed_chars = earlier.cut, earlier.typed_chars
    return Visit(index=index, file=file, line=line, indent=indent, body=body, cut=cut,
                 line_end=trace.utf16_length(content),
                 return_of=None if earlier is None else earlier.index,
                 typed_chars=typed_chars)


def _cut(body: str, max_chars: int, wanted: int, rng: random.Random) -> int:
    """Seeded; on a line too short for `wanted`, the cut leaving the most to type."""
    lowest = max(MIN_CUT, len(body) - max_chars)
    roomy = len(body) - max(MIN_TYPED, wanted)
    return rng.randint(lowest, roomy) if roomy >= lowest else lowest


def did_open_params(file: OpenFile) -> dict[str, Any]:
    """`textDocument/didOpen` for one file, version 1."""
    return {"textDocument": {"uri": file.uri, "languageId": file.language_id, "version": 1,
                             "text": file.text}}


def delete_change(visit: Visit) -> dict[str, Any]:
    """The content change deleting the line's tail from the cut to the end of the line."""
    start = {"line": visit.line, "character": visit.column(0)}
    end = {"line": visit.line, "character": visit.line_end}
    return {"range": {"start": start, "end": end}, "text": ""}


def type_change(visit: Visit, typed: int) -> dict[str, Any]:
    """The content change inserting the `typed`-th re-typed character (1-based)."""
    where = {"line": visit.line, "character": visit.column(typed - 1)}
    return {"range": {"start": where, "end": where}, "text": visit.removed[typed - 1]}


def paste_change(visit: Visit) -> dict[str, Any] | None:
    """The content change putting back the deleted text not typed, at the cursor after the
    last keystroke, so the line is whole again; None when everything was typed."""
    if visit.typed_chars == len(visit.removed):
        return None
    where = {"line": visit.line, "character": visit.column(visit.typed_chars)}
    return {"range": {"start": where, "end": where},
            "text": visit.removed[visit.typed_chars:]}


def describe(plan: SessionPlan) -> list[dict[str, Any]]:
    """The visits as JSON: file, line, cut, the deleted and the typed text, whether it is a
    new place or a return (and to which visit)."""
    return [{"visit": v.index, "kind": "return" if v.is_return else "new",
             "path": plan.files[v.file].path, "line": v.line, "cut": v.cut,
             "removed": v.removed, "typed_chars": v.typed_chars, "typed": v.typed,
             "return_of": v.return_of} for v in plan.visits]
