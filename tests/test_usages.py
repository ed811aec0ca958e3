"""Tests of the `usages` source: lines of other files that use imported names, how they are
ranked against the cursor's block, and how the prompt's usages part stays put while typing."""

from __future__ import annotations

import textwrap
from pathlib import Path

from flashls.context.crossfile import CrossFileContext
from flashls.context.definitions import DefinitionIndex, parse_source
from flashls.context.imports import Imports
from flashls.context.syntax import SyntaxTrees
from flashls.context.usages import (
    MAX_PER_NAME,
    Usage,
    extract_usages,
    query_words,
    select_usages,
)
from flashls.context.workspace import WorkspaceIndexer

SENDER = textwrap.dedent("""\
    import os
    from .utils import quote, unquote  # the import line is no usage

    def send(header, charset):
        # quote(header) in a comment is no usage either
        value = quote(header, charset)
        path = os.path.join("a", "b")
        return value

    def receive(header):
        '''Undo send(): unquote the header.

        Nor is a docstring: quote(header) and send() are prose here.'''
        return unquote(header)
""")


def _usage(key: str, line: int, text: str, context: str) -> Usage:
    return Usage(key, line, text, ("quote",), tuple(context.split()))


def test_a_file_s_usages_are_its_lines_using_imported_names_with_the_words_above() -> None:
    usages = parse_source("file:///p/sender.py", "python", SENDER).usages
    assert [(u.line, u.text, u.names) for u in usages] == [
        (3, "def send(header, charset):", ("send",)),  # a defined name: its header shows it
        (5, "value = quote(header, charset)", ("quote",)),
        (6, 'path = os.path.join("a", "b")', ("os",)),
        (9, "def receive(header):", ("receive",)),
        (13, "return unquote(header)", ("unquote",))]
    assert {"send", "header", "charset", "value"} <= set(usages[1].context)
    assert "path" not in usages[1].context  # only the line and the lines above it


def test_a_file_keeps_only_its_first_usages_of_one_name() -> None:
    lines = [f"x{row} = quote({row})" for row in range(MAX_PER_NAME + 5)]
    found = extract_usages("k", Imports((("quote", "utils"),), frozenset()), lines)
    assert [u.line for u in found] == list(range(MAX_PER_NAME))


def test_the_selection_ranks_other_files_usages_by_their_words_and_fits_the_budget() -> None:
    usages = [_usage("a", 1, "x = quote(name)", "def header name quote"),
              _usage("b", 7, "y = quote(path, safe)", "def path safe quote url"),
              _usage("c", 2, "y = quote(path, safe)", "path safe quote url"),  # same text
              _usage("own", 3, "z = quote(path)", "path safe quote url")]
    query = frozenset({"path", "safe", "url"})
    chosen = select_usages(usages, "own", query, budget_tokens=1000)
    assert [u.key for u in chosen] == ["c", "a"]  # most alike first, one of each text
    assert select_usages(usages, "own", query, budget_tokens=8) == chosen[:1]
    assert select_usages(usages, "own", query, budget_tokens=0) == []


def test_the_query_is_the_cursor_s_block_of_lines() -> None:
    lines = [f"word{row}" for row in range(40)]
    assert query_words(lines, 17, 16) == query_words(lines, 31, 16)
    assert "word16" in query_words(lines, 17, 16) and "word15" not in query_words(lines, 17, 16)
    assert query_words(lines, 15, 16) != query_words(lines, 16, 16)


def test_the_index_replaces_and_forgets_a_file_s_usages_with_it() -> None:
    index = DefinitionIndex()
    index.replace("a", *parse_source("a", "python", SENDER))
    index.replace("b", *parse_source("b", "python", "from u import quote\nquote(1)\n"))
    assert sorted((u.key, u.text) for u in index.usages(["quote", "os"])) == [
        ("a", 'path = os.path.join("a", "b")'), ("a", "value = quote(header, charset)"),
        ("b", "quote(1)")]
    index.replace("a", *parse_source("a", "python", "from u import quote\nquote(2)\n"))
    index.remove("b")
    assert [u.text for u in index.usages(["quote", "os"])] == ["quote(2)"]


def _lines_of(sections: tuple[object, ...]) -> list[str]:
    return [line for section in sections for line in section.text.split("\n")]  # type: ignore[attr-defined]


def test_the_usages_part_follows_the_cursor_s_block_not_each_keystroke() -> None:
    context = CrossFileContext(["usages"], budget_tokens=12)  # room for one usage line
    context.roots = ["file:///p"]
    context.document_changed("file:///p/utils.py", "python", "def quote(value): pass\n")
    context.document_changed("file:///p/mail.py", "python",
                             "from .utils import quote\n\ndef mail(header, charset):\n"
                             "    return quote(header, charset)\n")
    context.document_changed("file:///p/web.py", "python",
                             "from .utils import quote\n\ndef web(path, safe):\n"
                             "    return quote(path, safe)\n")
    head = "from .utils import quote\n"
    top = "def mail_like(header, charset):\n"
    bottom = "def web_like(path, safe):\n"
    text = head + top + "    x = \n" + "\n" * 20 + bottom + "    y = \n"
    user = "file:///p/user.py"
    context.document_changed(user, "python", text)
    trees = SyntaxTrees()

    def ask(body: str, cursor: int) -> list[str]:
        context.document_changed(user, "python", body)
        return _lines_of(context.sections(user, "python", trees.update(user, "python", body),
                                          body, cursor))

    first_block = len(head + top + "    x = ")
    assert ask(text, first_block) == ["return quote(header, charset)"]
    # Typing the other usage's words in the same block (which alone would rank it first)
    # changes nothing.
    typed = text[:first_block] + "web(path, safe) " + text[first_block:]
    assert ask(typed, first_block + len("web(path, safe) ")) == [
        "return quote(header, charset)"]
    # Another block of lines ranks again.
    assert ask(typed, typed.rindex("    y = ") + len("    y = ")) == [
        "return quote(path, safe)"]
    assert [s.path for s in context.sections(user, "python",
                                             trees.update(user, "python", typed), typed,
                                             len(typed))] == ["web.py"]


def test_definitions_come_first_and_leave_the_usages_half_the_budget() -> None:
    context = CrossFileContext(["definitions", "usages"], budget_tokens=40)
    context.roots = ["file:///p"]
    context.document_changed("file:///p/utils.py", "python",
                             "def quote(value, safe='/'):\n    return value\n")
    context.document_changed("file:///p/web.py", "python",
                             "from .utils import quote\nquote(path, safe)\n")
    user = "from .utils import quote\nx = \n"
    sections = context.sections("file:///p/user.py", "python",
                                SyntaxTrees().update("file:///p/user.py", "python", user), user,
                                len(user) - 1)
    assert [(s.path, s.text) for s in sections] == [
        ("utils.py", "def quote(value, safe='/'):"), ("web.py", "quote(path, safe)")]


def test_the_workspace_walk_indexes_usages_from_disk(tmp_path: Path) -> None:
    (tmp_path / "sender.py").write_text(SENDER)
    index = DefinitionIndex()
    indexer = WorkspaceIndexer(index, max_files=10, max_bytes=1 << 20,
                               is_open=lambda key: False)
    indexer.start([tmp_path])
    assert indexer.join(timeout=30)
    assert [u.text for u in index.usages(["quote"])] == ["value = quote(header, charset)"]
    indexer.stop()
    assert indexer.join(timeout=5)

