"""The plan of an editing session for `flashls bench session`: which files are open, which
places are visited in which order, where each line is cut and what is re-typed.

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
MIN_TYPED = 8  # characters left to re-type
DEFAULT_FILE_LINES = (150, 1500)


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
    """One stay at one place: the line's tail after `cut` is deleted and typed again.

    Lines never change length for good (every visit restores its line's code), so line
    numbers hold for the whole session; `line_end` is the line's length in UTF-16 units
    when the visit starts (trailing whitespace is not re-typed).
    """

    index: int
    file: int  # index into SessionPlan.files
    line: int
    indent: str
    body: str  # the line's code after its indentation, trailing whitespace removed
    cut: int  # index into body where the cursor lands
    line_end: int
    return_of: int | None  # the visit this one goes back to, or None for a new place

    @property
    def removed(self) -> str:
        """The text deleted and re-typed: what an ideal suggestion would show at the cut."""
        return self.body[self.cut:]

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
               max_chars: int) -> SessionPlan:
    """Visits taking the files in turn; `returns` of them go back to an earlier place.

    New places take the files round-robin, skipping the file just visited; a return goes
    to an earlier place in another file than the one just visited. Either way every visit
    switches documents, and a return has other files between it and its first visit.
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
        visits.append(_visit(index, file, line, content, earlier, max_chars, rng))
        line_text[(file, line)] = visits[-1].indent + visits[-1].body
    return SessionPlan(tuple(files), tuple(visits))


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
           max_chars: int, rng: random.Random) -> Visit:
    body = content.lstrip(" \t").rstrip()
    indent = content[: len(content) - len(content.lstrip(" \t"))]
    lowest = max(MIN_CUT, len(body) - max_chars)
    highest = len(body) - MIN_TYPED
    cuts = [cut for cut in range(lowest, highest + 1) if earlier is None or cut != earlier.cut]
    cut = rng.choice(cuts or [earlier.cut if earlier else lowest])
    return Visit(index=index, file=file, line=line, indent=indent, body=body, cut=cut,
                 line_end=trace.utf16_length(content),
                 return_of=None if earlier is None else earlier.index)


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


def describe(plan: SessionPlan) -> list[dict[str, Any]]:
    """The visits as JSON: file, line, cut, the re-typed text, and which visit it returns to."""
    return [{"visit": v.index, "path": plan.files[v.file].path, "line": v.line, "cut": v.cut,
             "removed": v.removed, "return_of": v.return_of} for v in plan.visits]
