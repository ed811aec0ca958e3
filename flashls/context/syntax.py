"""Incremental tree-sitter parsing of open documents.

Each change is turned into one tree-sitter edit (the span where old and new text differ)
followed by an incremental reparse, so any sync kind yields correct trees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import tree_sitter

from flashls.context.languages import grammar

log = logging.getLogger(__name__)


def in_string_or_comment(tree: tree_sitter.Tree, byte: int) -> bool:
    """Whether a cursor at `byte` lies in a string or comment: a node whose kind names one
    (`string`, `string_content`, `template_string`, `line_comment`) holds the byte before
    it, in any grammar."""
    return _in_prose(tree.root_node.descendant_for_byte_range(max(0, byte - 1),
                                                              max(0, byte - 1)))


def line_starts_in_string_or_comment(tree: tree_sitter.Tree, row: int, line: str) -> bool:
    """Whether the first non-blank character of `line`, the tree's `row`, lies in a string
    or comment (a docstring's lines, a comment line). Leading blanks are ASCII, so their
    count is the tree's byte column."""
    column = len(line) - len(line.lstrip())
    return column < len(line) and _in_prose(
        tree.root_node.descendant_for_point_range((row, column), (row, column + 1)))


def _in_prose(node: tree_sitter.Node | None) -> bool:
    """Whether `node` or one above it is a string or comment (by its kind's name)."""
    while node is not None:
        if "string" in node.type or "comment" in node.type:
            return True
        node = node.parent
    return False


@dataclass
class ParsedDocument:
    """A document's last parsed bytes and tree."""

    language_id: str
    source: bytes
    tree: tree_sitter.Tree
    parser: tree_sitter.Parser


def _point_at(source: bytes, offset: int) -> tuple[int, int]:
    row = source.count(b"\n", 0, offset)
    line_start = source.rfind(b"\n", 0, offset) + 1
    return row, offset - line_start


def _changed_span(old: bytes, new: bytes) -> tuple[int, int, int]:
    """(start, old_end, new_end) of the one region where `old` and `new` differ."""
    limit = min(len(old), len(new))
    start = 0
    step = 1 << 16
    # Compare in large slices first: bytes equality runs in C.
    while start < limit:
        end = min(start + step, limit)
        if old[start:end] == new[start:end]:
            start = end
        elif step > 1:
            step //= 2
        else:
            break
    common_tail = 0
    tail_limit = limit - start
    step = 1 << 16
    while common_tail < tail_limit:
        size = min(step, tail_limit - common_tail)
        if old[len(old) - common_tail - size:len(old) - common_tail] == \
                new[len(new) - common_tail - size:len(new) - common_tail]:
            common_tail += size
        elif step > 1:
            step //= 2
        else:
            break
    return start, len(old) - common_tail, len(new) - common_tail


class SyntaxTrees:
    """Parse trees of the open documents, kept current with incremental reparses."""

    def __init__(self) -> None:
        self._documents: dict[str, ParsedDocument] = {}

    def update(self, uri: str, language_id: str, text: str) -> tree_sitter.Tree | None:
        """Bring `uri`'s tree up to date with `text`; None for languages without a grammar."""
        language = grammar(language_id)
        if language is None:
            self._documents.pop(uri, None)
            return None
        source = text.encode("utf-8", errors="surrogatepass")
        parsed = self._documents.get(uri)
        if parsed is None or parsed.language_id != language_id:
            parser = tree_sitter.Parser(language)
            parsed = ParsedDocument(language_id, source, parser.parse(source), parser)
            self._documents[uri] = parsed
            return parsed.tree
        if parsed.source == source:
            return parsed.tree
        start, old_end, new_end = _changed_span(parsed.source, source)
        parsed.tree.edit(start_byte=start, old_end_byte=old_end, new_end_byte=new_end,
                         start_point=_point_at(parsed.source, start),
                         old_end_point=_point_at(parsed.source, old_end),
                         new_end_point=_point_at(source, new_end))
        parsed.tree = parsed.parser.parse(source, parsed.tree)
        parsed.source = source
        return parsed.tree

    def tree(self, uri: str) -> tree_sitter.Tree | None:
        """The last tree parsed for `uri`."""
        parsed = self._documents.get(uri)
        return parsed.tree if parsed else None

    def close(self, uri: str) -> None:
        """Forget a closed document."""
        self._documents.pop(uri, None)
