"""Which of the brackets open at the cursor the code below it closes.

A suggestion that closes one of those closes it twice: `and issubclass(obj, case.` with
`):` two lines below gets `TestCase)):` from a small model, where `TestCase)` was meant.
The brackets come from the parse tree's tokens, so brackets inside strings and comments
do not count, in every language with a grammar; tokens the parser invented to recover
from an error (`is_missing`) do not count either.
"""

from __future__ import annotations

import functools

import tree_sitter

from flashls.context.syntax import in_string_or_comment

SCAN_LINES = 40  # brackets are matched within this many lines above and below the cursor
_CLOSER_OF = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = frozenset(_CLOSER_OF.values())


@functools.cache
def _bracket_query(language: tree_sitter.Language) -> tree_sitter.Query | None:
    """A query capturing the language's bracket tokens; None when it has none."""
    kinds = [kind for kind in (*_CLOSER_OF, *_CLOSERS) if language.id_for_node_kind(kind, False)]
    if not kinds:
        return None
    return tree_sitter.Query(language, "[" + " ".join(f'"{kind}"' for kind in kinds) + "] @b")


def _bracket_tokens(tree: tree_sitter.Tree, start: int, end: int) -> list[tuple[int, str]]:
    """(byte, bracket) of the bracket tokens within [start, end), in order (a query, not
    a walk in Python: this runs at every keystroke)."""
    query = _bracket_query(tree.language)
    if query is None:
        return []
    cursor = tree_sitter.QueryCursor(query)
    cursor.set_byte_range(start, end)
    return sorted((node.start_byte, node.type) for node in cursor.captures(tree.root_node).get(
        "b", []) if not node.is_missing and node.end_byte > node.start_byte
        and start <= node.start_byte < end)


def closable_brackets(tree: tree_sitter.Tree, source: bytes, cursor_byte: int) -> int | None:
    """How many of the brackets open at `cursor_byte` a suggestion may close: those open
    there less those the code after the cursor closes. None when the code after the
    cursor closes none of them, or when the count is not consistent within SCAN_LINES
    (a closer of another kind, or more closers than openers), or with the cursor in a
    string or comment: then nothing is cut."""
    if cursor_byte > len(source) or in_string_or_comment(tree, cursor_byte):
        return None  # (past the end: a tree of an older text)
    start = cursor_byte
    for _ in range(SCAN_LINES):
        start = source.rfind(b"\n", 0, start - 1) + 1 if start > 0 else 0
        if start == 0:
            break
    end = cursor_byte
    for _ in range(SCAN_LINES):
        newline = source.find(b"\n", end + 1)
        if newline < 0:
            end = len(source)
            break
        end = newline
    open_at_cursor: list[str] = []
    after: list[str] = []
    closed_below = 0
    for offset, bracket in _bracket_tokens(tree, start, end):
        if offset < cursor_byte:
            if bracket in _CLOSER_OF:
                open_at_cursor.append(bracket)
            elif open_at_cursor and _CLOSER_OF[open_at_cursor[-1]] == bracket:
                open_at_cursor.pop()
            else:
                open_at_cursor.clear()  # an opener above the scanned lines: start afresh
        elif bracket in _CLOSER_OF:
            after.append(bracket)
        elif after:
            if _CLOSER_OF[after.pop()] != bracket:
                return None
        else:
            closed_below += 1
            if closed_below > len(open_at_cursor):
                return None
            if _CLOSER_OF[open_at_cursor[-closed_below]] != bracket:
                return None
    if not closed_below:
        return None
    return len(open_at_cursor) - closed_below
