"""Which of the brackets open at the cursor the code below it closes, and how many are open
since the start of the statement that holds it.

A suggestion that closes one of those closes it twice: `and issubclass(obj, case.` with
`):` two lines below gets `TestCase)):` from a small model, where `TestCase)` was meant.
Where a line's end ends a statement (Python), a suggestion that leaves no bracket of its
statement open and ends in a comma turns the statement into a tuple: `x = f(a),`. Fewer
than one logical line in 17,000 of Python's standard library and site-packages ends so
(112 of 1,988,586, most of them `__slots__ = "name",`); a small model writes it more often.
The brackets come from the parse tree's tokens, so brackets inside strings and comments
do not count, in every language with a grammar; tokens the parser invented to recover
from an error (`is_missing`) do not count either.
"""

from __future__ import annotations

import functools

import tree_sitter

from flashls.context.languages import LanguageSpec
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


def _starts_statement(tree: tree_sitter.Tree, source: bytes, line_start: int, limit: int,
                      spec: LanguageSpec) -> bool:
    """Whether the line at `line_start` has a token before `limit` and its first one
    begins a statement: a node, not a parser's ERROR, whose parent is one of the
    language's statement lists, or a keyword that only begins statements (`def`,
    `return`; the parser's recovery from the half-written line at the cursor often
    wraps the statements around it in an ERROR, but keeps their keywords)."""
    line_end = source.find(b"\n", line_start)
    line = source[line_start:line_end if line_end >= 0 else len(source)]
    first = line_start + len(line) - len(line.lstrip(b" \t"))
    if first >= min(limit, line_start + len(line)):
        return False
    node: tree_sitter.Node | None = tree.root_node.descendant_for_byte_range(first, first)
    if node is not None and node.type in spec.statement_keywords and node.child_count == 0:
        return True
    while node is not None and node.start_byte == first:
        parent = node.parent
        if parent is not None and parent.type in spec.statement_lists and not node.is_error:
            return True
        node = parent
    return False


def statement_depth(tree: tree_sitter.Tree, source: bytes, cursor_byte: int,
                    spec: LanguageSpec) -> int | None:
    """How many brackets are open at `cursor_byte` since the start of the statement that
    holds it, in a language where a line's end ends a statement outside brackets (a
    `spec` with statement lists: Python). The statement starts on the nearest line within
    SCAN_LINES above the cursor, or the cursor's own before it, whose first token begins
    a statement. None in other languages, when no such line is found, with the cursor in
    a string or comment, or when a closer does not match (a count not to trust)."""
    if (not spec.statement_lists or cursor_byte > len(source)
            or in_string_or_comment(tree, cursor_byte)):
        return None
    start = source.rfind(b"\n", 0, cursor_byte) + 1
    for _ in range(SCAN_LINES):
        if _starts_statement(tree, source, start, cursor_byte, spec):
            break
        if start == 0:
            return None
        start = source.rfind(b"\n", 0, start - 1) + 1
    else:
        return None
    open_brackets: list[str] = []
    for _, bracket in _bracket_tokens(tree, start, cursor_byte):
        if bracket in _CLOSER_OF:
            open_brackets.append(bracket)
        elif open_brackets and _CLOSER_OF[open_brackets[-1]] == bracket:
            open_brackets.pop()
        else:
            return None
    return len(open_brackets)


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
