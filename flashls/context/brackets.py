"""Which of the brackets open at the cursor the code below it closes.

A suggestion that closes one of those closes it twice: `and issubclass(obj, case.` with
`):` two lines below gets `TestCase)):` from a small model, where `TestCase)` was meant.
The brackets come from the parse tree's tokens, so brackets inside strings and comments
do not count, in every language with a grammar; tokens the parser invented to recover
from an error (`is_missing`) do not count either.
"""

from __future__ import annotations

import tree_sitter

SCAN_LINES = 40  # brackets are matched within this many lines above and below the cursor
_CLOSER_OF = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = frozenset(_CLOSER_OF.values())


def _bracket_tokens(node: tree_sitter.Node, start: int, end: int) -> list[tuple[int, str]]:
    """(byte, bracket) of the leaf tokens that are brackets within [start, end), in order."""
    found: list[tuple[int, str]] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if current.end_byte <= start or current.start_byte >= end:
            continue
        if current.child_count == 0:
            if (current.type in _CLOSER_OF or current.type in _CLOSERS) and not current.is_missing \
                    and current.end_byte > current.start_byte and current.start_byte >= start:
                found.append((current.start_byte, current.type))
            continue
        stack.extend(reversed(current.children))
    return found


def _in_text(tree: tree_sitter.Tree, byte: int) -> bool:
    """Whether `byte` lies in a string or comment (by its node's kind, in any grammar)."""
    node: tree_sitter.Node | None = tree.root_node.descendant_for_byte_range(
        max(0, byte - 1), max(0, byte - 1))
    while node is not None:
        if "string" in node.type or "comment" in node.type:
            return True
        node = node.parent
    return False


def closable_brackets(tree: tree_sitter.Tree, source: bytes, cursor_byte: int) -> int | None:
    """How many of the brackets open at `cursor_byte` a suggestion may close: those open
    there less those the code after the cursor closes. None when the code after the
    cursor closes none of them, or when the count is not consistent within SCAN_LINES
    (a closer of another kind, or more closers than openers), or with the cursor in a
    string or comment: then nothing is cut."""
    if _in_text(tree, cursor_byte):
        return None
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
    for offset, bracket in _bracket_tokens(tree.root_node, start, end):
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
