"""The prefix and suffix put into a prompt: a token budget around the cursor, cut at lines.

The window's edges move in whole steps of `ANCHOR_LINES`, not per keystroke, so that
consecutive prompts share a long common token prefix and the model's cache is reused.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

import tree_sitter

from flashls.context.brackets import closable_brackets, statement_depth
from flashls.context.languages import SPECS, top_level_nodes
from flashls.engine.base import NameConstraint

ANCHOR_LINES = 16
_IDENTIFIER_TAIL = re.compile(r"[A-Za-z0-9_]+$")
BLOCK_OPENERS = re.compile(r"(:|\{|\(|\[|=>|->|\bdo|\bthen|=)\s*$")


# Tokens a kept window head lets the prefix grow past its budget while the user types on
# the cursor's line (the engine trims a prompt that `n_ctx` cannot hold).
LINE_GROWTH_TOKENS = 24


# A cheap, slightly generous count of code's tokens, where the model's tokenizer has not
# measured the document (`density.py`): Qwen2.5-Coder's gives 4.0-5.0 characters a token.
CHARS_PER_TOKEN = 3.2


def estimate_tokens(text: str, chars_per_token: float = CHARS_PER_TOKEN) -> int:
    """A token count for code at `chars_per_token` characters a token."""
    return math.ceil(len(text) / chars_per_token)


@dataclass(frozen=True)
class CompletionContext:
    """What the model sees around the cursor, and what post-processing needs to know."""

    prefix: str
    suffix: str
    line_prefix: str
    line_suffix: str
    multiline: bool
    indent: str
    # Other files' part of the prompt (`crossfile.py`), the file's path and the
    # repository's name as the model sees them; empty without cross-file context.
    extra: tuple[tuple[str, str], ...] = ()
    path: str = ""
    repo_name: str = ""
    # What the identifier at the cursor may become (after a workspace module's `module.`).
    names: NameConstraint | None = None
    # How many of the brackets open at the cursor the suggestion may close, where the
    # code below closes the others (`brackets.py`); None: no limit.
    closable: int | None = None
    # Where a line's end ends a statement (Python), how many brackets are open at the
    # cursor since its statement began (`brackets.py`); None: unknown, or another kind of
    # language, or text after the cursor on its line.
    statement_depth: int | None = None
    # Where the prefix's text starts in the document and the outer context put before it
    # (`WindowHead`); None for a context not made by `build_context`.
    head: WindowHead | None = None


@dataclass(frozen=True)
class WindowHead:
    """The start of a prompt's window: the offset of its first line and the enclosing
    scopes' headers put before it. Kept while the user types on one line (`build_context`'s
    `head`), so that the prompt's start, and the model's cache of it, stay put: typing
    changes the line's length, and a half-typed line can change the parse of the scopes
    around it (typing `def` in a class made the enclosing headers differ)."""

    start: int
    outer: str


def _unit_width(char: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(char.encode("utf-8", errors="surrogatepass"))
    if encoding == "utf-32":
        return 1
    return 2 if ord(char) > 0xFFFF else 1


def position_to_offset(text: str, line: int, character: int,
                       encoding: str = "utf-16") -> int | None:
    """The string offset of an LSP position, or None when it lies past the document's end.

    `character` counts code units of the negotiated position encoding (UTF-16 by default).
    """
    if line < 0 or character < 0:
        return None
    start = 0
    for _ in range(line):
        newline = text.find("\n", start)
        if newline < 0:
            return None
        start = newline + 1
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    units = 0
    for index in range(start, end):
        if units >= character:
            return index if units == character else None
        units += _unit_width(text[index], encoding)
    return end if units == character else None


def identifier_before(text: str, line: int, character: int, encoding: str = "utf-16") -> str:
    """The ASCII identifier characters right before an LSP position ("" past the end)."""
    cursor = position_to_offset(text, line, character, encoding)
    if cursor is None:
        return ""
    head = text[_line_start(text, cursor):cursor]
    match = _IDENTIFIER_TAIL.search(head)
    return match.group() if match else ""


def _line_start(text: str, offset: int) -> int:
    return text.rfind("\n", 0, offset) + 1


def _window_start(text: str, line_start: int, budget: int,
                  density: float) -> tuple[int, int]:
    """(offset, lines back) of the earliest whole line whose text up to the cursor fits."""
    used = 0
    start = line_start
    lines_back = 0
    while start > 0:
        previous = text.rfind("\n", 0, start - 1) + 1
        cost = estimate_tokens(text[previous:start], density)
        if used + cost > budget:
            break
        used += cost
        start = previous
        lines_back += 1
    return start, lines_back


def _anchor_step(lines: int) -> int:
    """Lines between anchors for a window of `lines` lines: ANCHOR_LINES, but small
    windows (the cold-place window) must not lose more than a quarter of their lines."""
    step = ANCHOR_LINES
    while step > 1 and step - 1 > lines // 4:
        step //= 2
    return step


def _anchored_prefix_start(text: str, line_start: int, budget: int, density: float) -> int:
    start, lines_back = _window_start(text, line_start, budget, density)
    if start == 0:
        return 0
    # Drop lines until the first line's number is a multiple of the anchor step.
    first_row = text.count("\n", 0, start)
    surplus = (-first_row) % _anchor_step(lines_back)
    for _ in range(min(surplus, lines_back)):
        start = text.find("\n", start) + 1
    return start


def _suffix_end(text: str, cursor: int, budget: int, density: float) -> int:
    line_end = text.find("\n", cursor)
    if line_end < 0:
        return len(text)
    used = estimate_tokens(text[cursor:line_end], density)
    end = line_end
    rows = 0
    while end < len(text):
        next_end = text.find("\n", end + 1)
        next_end = len(text) if next_end < 0 else next_end
        cost = estimate_tokens(text[end:next_end], density)
        if used + cost > budget:
            break
        used += cost
        end = next_end
        rows += 1
    if end < len(text):
        # Keep a whole number of anchor steps below the cursor line.
        for _ in range(rows % _anchor_step(rows)):
            end = text.rfind("\n", 0, end)
    return end


def _lines_of(source: bytes, first_row: int, last_row: int) -> list[str]:
    lines = source.split(b"\n")[first_row:last_row + 1]
    return [line.decode("utf-8", errors="replace") for line in lines]


def _outer_line_cost(line: str, density: float) -> int:
    """Tokens a line of the outer context costs: its text and its newline. The window's
    refund (`_window_head`) counts what the outer context spent with it too."""
    return estimate_tokens(line, density) + 1


def _outer_context(tree: tree_sitter.Tree, language_id: str, cursor_byte: int,
                   window_row: int, budget: int, density: float) -> str:
    """Imports and enclosing headers that lie above the window, as far as `budget` allows."""
    spec = SPECS.get(language_id)
    if spec is None or window_row == 0:
        return ""
    source = tree.root_node.text or b""
    pieces: list[str] = []
    for child in top_level_nodes(tree.root_node):
        if child.type in spec.imports and child.end_point.row < window_row:
            pieces.extend(_lines_of(source, child.start_point.row, child.end_point.row))
    headers: list[str] = []
    node: tree_sitter.Node | None = tree.root_node.descendant_for_byte_range(cursor_byte,
                                                                            cursor_byte)
    while node is not None:
        if node.type in spec.scopes and node.start_point.row < window_row:
            body = node.child_by_field_name("body")
            last_row = body.start_point.row if body is not None else node.start_point.row
            last_row = min(last_row, node.start_point.row + 3, window_row - 1)
            headers[:0] = _lines_of(source, node.start_point.row, last_row)
        node = node.parent
    kept: list[str] = []
    used = 0
    for line in headers[::-1] + pieces[::-1]:
        used += _outer_line_cost(line, density)
        if used > budget:
            break
        kept.append(line)
    chosen = set(kept)
    ordered = [line for line in pieces + headers if line in chosen]
    return "\n".join(ordered) + "\n" if ordered else ""


def _wants_multiline(text: str, line_start: int, line_prefix: str, line_suffix: str) -> bool:
    if (line_prefix + line_suffix).strip():
        return False
    above = text[:max(line_start - 1, 0)].rstrip()
    last_line = above[above.rfind("\n") + 1:]
    return bool(BLOCK_OPENERS.search(last_line)) and not last_line.lstrip().startswith("#")


def build_context(text: str, cursor: int, *, language_id: str, tree: tree_sitter.Tree | None,
                  prefix_budget: int, suffix_budget: int, multiline: str,
                  head: WindowHead | None = None,
                  density: float = CHARS_PER_TOKEN) -> CompletionContext:
    """Prefix and suffix for the cursor at string offset `cursor`, within the token budgets
    counted at `density` characters a token; with `head` (a window start before the
    cursor's line), the prefix starts there."""
    line_start = _line_start(text, cursor)
    line_end = text.find("\n", cursor)
    line_end = len(text) if line_end < 0 else line_end
    line_prefix = text[line_start:cursor]
    line_suffix = text[cursor:line_end]
    cursor_byte = 0  # the cursor's offset in the tree's source, when there is a tree
    if tree is not None:
        cursor_byte = len(text[:cursor].encode("utf-8", errors="surrogatepass"))
    if (head is None or head.start > line_start
            or estimate_tokens(head.outer, density)
            + estimate_tokens(text[head.start:cursor], density)
            > prefix_budget + LINE_GROWTH_TOKENS):
        head = _window_head(text, line_start, line_prefix, language_id, tree, cursor_byte,
                            prefix_budget, density)
    start, outer = head.start, head.outer
    suffix = text[cursor:_suffix_end(text, cursor, suffix_budget, density)]
    wants = {"always": True, "never": False}.get(
        multiline, _wants_multiline(text, line_start, line_prefix, line_suffix))
    indent = line_prefix[:len(line_prefix) - len(line_prefix.lstrip())]
    closable = depth = None
    if tree is not None and not line_suffix.strip():
        source = tree.root_node.text or b""
        closable = closable_brackets(tree, source, cursor_byte)
        spec = SPECS.get(language_id)
        if spec is not None:
            depth = statement_depth(tree, source, cursor_byte, spec)
    return CompletionContext(prefix=outer + text[start:cursor], suffix=suffix,
                             line_prefix=line_prefix, line_suffix=line_suffix,
                             multiline=wants, indent=indent, closable=closable,
                             statement_depth=depth, head=head)


def _window_head(text: str, line_start: int, line_prefix: str, language_id: str,
                 tree: tree_sitter.Tree | None, cursor_byte: int,
                 prefix_budget: int, density: float) -> WindowHead:
    """Whole lines before the cursor's within the budget, anchored; the enclosing scopes'
    headers before them when the window starts below them (at most a quarter of the
    budget: what they leave of it goes to the window)."""
    outer_budget = prefix_budget // 4
    window_budget = prefix_budget - estimate_tokens(line_prefix, density)
    start = _anchored_prefix_start(text, line_start, max(window_budget - outer_budget, 0),
                                   density)
    outer = ""
    if tree is not None and start > 0:
        outer = _outer_context(tree, language_id, cursor_byte, text.count("\n", 0, start),
                               outer_budget, density)
        spent = sum(_outer_line_cost(line, density) for line in outer.splitlines())
        if outer and spent < outer_budget:
            start = _anchored_prefix_start(text, line_start, max(window_budget - spent, 0),
                                           density)
            # The lines the window now holds leave the outer context, which keeps within
            # what it spent: the two stay within the budget.
            outer = _outer_context(tree, language_id, cursor_byte,
                                   text.count("\n", 0, start), spent, density)
    if not outer:
        start = _anchored_prefix_start(text, line_start, max(window_budget, 0), density)
    return WindowHead(start, outer)


class WindowHeads:
    """The window head last used for each document and prefix budget, reused while the
    user types on the cursor's line (see `WindowHead`).

    Invariant: an entry is used only for a cursor whose line starts at the same offset,
    with the same text before it, as when the entry was made; `forget` drops a closed
    document's entries."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, int], tuple[int, bytes, WindowHead]] = {}

    def context(self, uri: str, text: str, cursor: int, *, language_id: str,
                tree: tree_sitter.Tree | None, prefix_budget: int, suffix_budget: int,
                multiline: str, density: float = CHARS_PER_TOKEN) -> CompletionContext:
        """`build_context`, with the head kept for this line when there is one."""
        line_start = _line_start(text, cursor)
        digest = hashlib.blake2b(text[:line_start].encode("utf-8", errors="surrogatepass"),
                                 digest_size=16).digest()
        kept = self._kept.get((uri, prefix_budget))
        head = kept[2] if kept is not None and kept[:2] == (line_start, digest) else None
        context = build_context(text, cursor, language_id=language_id, tree=tree,
                                prefix_budget=prefix_budget, suffix_budget=suffix_budget,
                                multiline=multiline, head=head, density=density)
        if context.head is not None:
            self._kept[(uri, prefix_budget)] = (line_start, digest, context.head)
        return context

    def forget(self, uri: str) -> None:
        """Drop what was kept for a document."""
        for key in [key for key in self._kept if key[0] == uri]:
            del self._kept[key]
