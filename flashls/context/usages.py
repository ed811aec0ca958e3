"""How other files use the names a document imports: their lines that use an imported name,
and the choice of those most like the code around the cursor (the `usages` source).

A file's usages are extracted when it is indexed (`definitions.parse_source`); choosing
among them happens per request in `crossfile.py`. A call written elsewhere in the project
(`quote(addr, charset)`) is what the model most often needs to write the same call here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from flashls.context.imports import WORD, Imports
from flashls.context.window import estimate_tokens

CONTEXT_LINES = 3  # a usage is ranked by its line and this many lines above it
MAX_USAGE_CHARS = 160  # a longer line is not a usage worth its tokens
MAX_PER_NAME = 6  # of one file's usages of one name, the first ones
MAX_PER_FILE = 96
MIN_NAME_CHARS = 2


@dataclass(frozen=True, slots=True)  # a workspace holds 10**5 of them
class Usage:
    """One line of a file that uses names the file imports or defines at top level."""

    key: str  # the file: a document URI
    line: int  # 0-based row
    text: str  # the line, stripped
    names: tuple[str, ...]  # the imported or defined names it uses
    context: tuple[str, ...]  # the words of the line and the lines above it, interned


def extract_usages(key: str, imports: Imports, lines: Sequence[str],
                   defined: Iterable[str] = (),
                   prose: Callable[[int], bool] | None = None) -> list[Usage]:
    """The lines of a file that use names it imports or `defined` names (its top-level
    ones: how a module uses its own class is how others use it too, and a definition's
    own header line shows how to call it), import statements, comments and the rows
    `prose` says start in a string or comment (docstrings, whose words name the module's
    names as often as its code does) left out, at most MAX_PER_NAME a name and
    MAX_PER_FILE in all, in file order."""
    wanted = {name for name in (*imports.bound(), *defined) if len(name) >= MIN_NAME_CHARS}
    if not wanted:
        return []
    found: list[Usage] = []
    per_name: dict[str, int] = {}
    for row, line in enumerate(lines):
        text = line.strip()
        if (row in imports.rows or not text or len(text) > MAX_USAGE_CHARS
                or text.startswith(("#", "//"))):
            continue
        used = tuple(dict.fromkeys(word for word in WORD.findall(text) if word in wanted
                                   and per_name.get(word, 0) < MAX_PER_NAME))
        if not used or (prose is not None and prose(row)):
            continue
        for name in used:
            per_name[name] = per_name.get(name, 0) + 1
        above = "\n".join(lines[max(0, row - CONTEXT_LINES):row + 1])
        context = tuple(sys.intern(word) for word in dict.fromkeys(WORD.findall(above)))
        found.append(Usage(key, row, text, used, context))
        if len(found) == MAX_PER_FILE:
            break
    return found


def query_words(lines: Sequence[str], line: int, block_lines: int) -> frozenset[str]:
    """What usages are ranked against: the words of the `block_lines`-line block holding
    `line` (blocks start at multiples of `block_lines`, so the query, and with it the
    prompt's usages part, stays the same while the user works inside one block)."""
    start = line // block_lines * block_lines
    return frozenset(WORD.findall("\n".join(lines[start:start + block_lines])))


def _similarity(query: frozenset[str], usage: Usage) -> float:
    """Jaccard similarity of the query's words and the usage's."""
    words = set(usage.context)
    union = len(query | words)
    return len(query & words) / union if union else 0.0


def select_usages(candidates: Iterable[Usage], key: str, query: frozenset[str],
                  budget_tokens: int, shown: Iterable[str] = ()) -> list[Usage]:
    """Usages from files other than `key`, most like the query first, one of each text
    and none of the lines already `shown` (stripped), as many as the budget holds."""
    ranked = sorted((usage for usage in candidates if usage.key != key),
                    key=lambda usage: (-_similarity(query, usage), usage.key, usage.line))
    chosen: list[Usage] = []
    seen = set(shown)
    used = 0
    for usage in ranked:
        cost = estimate_tokens(usage.text) + 1
        if usage.text in seen or used + cost > budget_tokens:
            continue
        seen.add(usage.text)
        used += cost
        chosen.append(usage)
    return chosen
