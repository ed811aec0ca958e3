"""Context extraction: positions, budgets, anchoring, syntax-aware headers, incremental parsing,
brackets open at the cursor."""

from __future__ import annotations

import inspect
import itertools
import json
import textwrap

import tree_sitter

from flashls.context import (
    SyntaxTrees,
    WindowHeads,
    build_context,
    language_of_path,
    position_to_offset,
)
from flashls.context.brackets import closable_brackets
from flashls.context.syntax import line_starts_in_string_or_comment
from flashls.context.window import ANCHOR_LINES, LINE_GROWTH_TOKENS, estimate_tokens


def test_utf16_positions_and_past_the_end() -> None:
    text = "a😀b\nxy"
    assert position_to_offset(text, 0, 3) == 2  # the emoji counts two UTF-16 units
    assert position_to_offset(text, 0, 4) == 3
    assert position_to_offset(text, 1, 2) == len(text)
    assert position_to_offset(text, 1, 3) is None
    assert position_to_offset(text, 2, 0) is None
    assert position_to_offset(text, -1, 0) is None
    assert position_to_offset(text, 0, 5, "utf-8") == 2  # four UTF-8 bytes
    assert position_to_offset(text, 0, 2, "utf-32") == 2


def test_small_file_is_taken_whole() -> None:
    text = "import os\n\ndef f(x):\n    return x\n"
    cursor = text.index("return") + 3
    context = build_context(text, cursor, language_id="python", tree=None,
                            prefix_budget=1000, suffix_budget=1000, multiline="auto")
    assert context.prefix + context.suffix == text
    assert (context.line_prefix, context.line_suffix) == ("    ret", "urn x")
    assert not context.multiline


def _big_module() -> str:
    body = "\n".join(f"    value_{index} = compute({index}, 'padding text')"
                     for index in range(400))
    return f"import os\nimport sys\n\nclass Holder:\n    def method(self):\n{body}\n"


def test_budget_keeps_imports_and_enclosing_headers() -> None:
    text = _big_module()
    cursor = text.index("value_300 =")
    tree = SyntaxTrees().update("file:///m.py", "python", text)
    context = build_context(text, cursor, language_id="python", tree=tree,
                            prefix_budget=400, suffix_budget=100, multiline="auto")
    # What the headers leave of their quarter of the budget goes to the window.
    assert 400 * 0.85 < estimate_tokens(context.prefix) <= 400 + 20
    header = "import os\nimport sys\nclass Holder:\n    def method(self):\n"
    assert context.prefix.startswith(header)
    assert "value_299" in context.prefix and "value_10 " not in context.prefix
    assert context.suffix.startswith("value_300 =")
    assert estimate_tokens(context.suffix) <= 100


# Reduced from `logging/handlers.py` masked mid-line: tree-sitter's recovery wraps the whole
# file, imports included, in one top-level ERROR node.
SWALLOWED = ('import os\nfrom .shapes import Circle\n    """\n        """\n'
             + "".join(f"        Use the specified filename for streamed logging {i}\n"
                       for i in range(300))
             + '        """\n        """\n    """\n    """\n'
             + '    def __init__(self, host, url, method="GET", secure=False, credentials=None,\n'
             + '                 context=None):\n        self.shape = Circle(\n')


def test_imports_above_the_window_are_kept_when_an_error_swallows_the_file() -> None:
    tree = SyntaxTrees().update("file:///m.py", "python", SWALLOWED)
    assert [child.type for child in tree.root_node.children] == ["ERROR"]
    context = build_context(SWALLOWED, SWALLOWED.index("Circle(\n") + 7, language_id="python",
                            tree=tree, prefix_budget=400, suffix_budget=100, multiline="auto")
    assert context.prefix.startswith("import os\nfrom .shapes import Circle\n")
    assert "streamed logging 299" in context.prefix and "logging 10\n" not in context.prefix


def test_window_start_is_anchored_while_typing() -> None:
    text = _big_module()
    cursor = text.index("value_300 =")
    starts = set()
    for typed in range(12):
        edited = text[:cursor] + "x" * typed + text[cursor:]
        context = build_context(edited, cursor + typed, language_id="python", tree=None,
                                prefix_budget=400, suffix_budget=100, multiline="auto")
        starts.add(context.prefix.split("\n", 1)[0])
    assert len(starts) == 1
    first_line = starts.pop()
    # About 30 lines fit: anchored every 8 lines, so that at most a quarter is dropped.
    assert text.split("\n").index(first_line) % (ANCHOR_LINES // 2) == 0


def test_a_small_window_keeps_most_of_its_lines() -> None:
    """The cold-place window (a few hundred tokens) is anchored in small steps: anchoring
    at 16 lines could leave it one line of prefix and none of suffix."""
    text = _big_module()
    for cursor in (text.index("value_300 ="), text.index("value_305 ="), text.index("value_311 =")):
        context = build_context(text, cursor, language_id="python", tree=None,
                                prefix_budget=144, suffix_budget=48, multiline="auto")
        assert context.prefix.count("\n") >= 8 and context.suffix.count("\n") >= 2, (
            context.prefix, context.suffix)


def test_multiline_only_after_block_opener_on_empty_line() -> None:
    text = "def f(x):\n    \n"
    context = build_context(text, len("def f(x):\n    "), language_id="python", tree=None,
                            prefix_budget=100, suffix_budget=100, multiline="auto")
    assert context.multiline and context.indent == "    "
    text = "x = 1\n\n"
    context = build_context(text, len("x = 1\n"), language_id="python", tree=None,
                            prefix_budget=100, suffix_budget=100, multiline="auto")
    assert not context.multiline


def test_incremental_parse_matches_full_parse() -> None:
    source = inspect.getsource(json)
    trees = SyntaxTrees()
    trees.update("file:///j.py", "python", source)
    edited = source.replace("def dumps(", "def dumps_renamed(", 1)
    edited = edited.replace("import codecs", "import codecs\nimport os", 1)
    incremental = trees.update("file:///j.py", "python", edited)
    parser = tree_sitter.Parser(tree_sitter.Language(__import__("tree_sitter_python").language()))
    full = parser.parse(edited.encode())
    assert incremental is not None
    assert str(incremental.root_node) == str(full.root_node)
    assert not incremental.root_node.has_error


def test_languages_and_unknown_ones() -> None:
    assert language_of_path("a/b.tsx") == "typescriptreact"
    assert language_of_path("notes.xyz") == "plaintext"
    trees = SyntaxTrees()
    for language, text in (("go", "package main\nfunc main() {}\n"),
                           ("rust", "fn main() {}\n"), ("c", "int main(void) { return 0; }\n"),
                           ("cpp", "int main() {}\n"), ("java", "class A {}\n"),
                           ("javascript", "function f() {}\n"),
                           ("typescript", "let x: number = 1;\n")):
        tree = trees.update(f"file:///x.{language}", language, text)
        assert tree is not None and not tree.root_node.has_error, language
    assert trees.update("file:///x.txt", "plaintext", "hello") is None
    text = textwrap.dedent("""\
        some words
        more words
        """)
    context = build_context(text, 4, language_id="plaintext", tree=None, prefix_budget=50,
                            suffix_budget=50, multiline="auto")
    assert context.prefix == "some"


def _parsed_closable(text: str) -> int | None:
    """What `build_context` says of the brackets at `|` in Python `text`."""
    cursor = text.index("|")
    text = text.replace("|", "", 1)
    tree = SyntaxTrees().update("file:///t.py", "python", text)
    return build_context(text, cursor, language_id="python", tree=tree, prefix_budget=500,
                         suffix_budget=500, multiline="never").closable


def test_brackets_are_counted_from_the_parse_tree_not_from_strings_or_comments() -> None:
    # `f(` and `g(` are open; the code below closes `g(`
    assert _parsed_closable('x = f("((", g(|\n    # a comment: (((\n    1)\n') == 1
    assert _parsed_closable("x = f(|\ny = 2\n") is None  # nothing closes below
    assert _parsed_closable('s = """(|\n)"""\n') is None  # the cursor in a string
    assert _parsed_closable("x = [f(|\n]\n") is None  # `]` cannot close `(`
    assert _parsed_closable("x = f(|)\n") is None  # the rest of the line decides


def test_brackets_are_counted_in_other_languages_too() -> None:
    text = "const x = [\n  f(a, '}'),\n  g(\n  ),\n];\n"
    cursor = text.index("g(") + 2
    tree = SyntaxTrees().update("file:///t.js", "javascript", text)
    assert tree is not None
    # `[` and `g(` are open and both close below; the quoted `}` is no token
    assert closable_brackets(tree, text.encode(), cursor) == 0
    assert closable_brackets(tree, text.encode(), len(text) + 9) is None  # a stale tree


def test_a_line_starts_in_a_string_or_comment_by_its_first_non_blank_character() -> None:
    text = textwrap.dedent('''\
        def f(x):
            """One line."""
            y = """a string
        that goes on
        and ends""" + x
            # a comment
            return g("text", x)  # a trailing comment
        ''')
    lines = text.split("\n")
    tree = SyntaxTrees().update("file:///t.py", "python", text)
    assert tree is not None
    assert [row for row, line in enumerate(lines)
            if line_starts_in_string_or_comment(tree, row, line)] == [1, 3, 4, 5]
    js = "const s = `a\n  b`;\n/* c\n d */ f();\n"
    tree = SyntaxTrees().update("file:///t.js", "javascript", js)
    assert tree is not None
    assert [row for row, line in enumerate(js.split("\n"))
            if line_starts_in_string_or_comment(tree, row, line)] == [1, 2, 3]


def _typing_contexts(heads: WindowHeads | None, text_above: str = "") -> list[str]:
    """The prompt prefixes while `value = compute(...)` is typed on one line."""
    trees = SyntaxTrees()
    lines = "".join(f"item_{index} = {index} * 777\n" for index in range(40))
    line = "value = compute(first_argument, second_argument, third)"
    prefixes = []
    for typed in range(len(line) + 1):
        text = text_above + lines + line[:typed] + "\nprint(value)\n"
        trees.update("file:///w/a.py", "python", text)
        cursor = len(text_above + lines) + typed
        arguments = {"language_id": "python", "tree": trees.tree("file:///w/a.py"),
                     "prefix_budget": 128, "suffix_budget": 16, "multiline": "auto"}
        context = (build_context(text, cursor, **arguments) if heads is None else
                   heads.context("file:///w/a.py", text, cursor, **arguments))
        prefixes.append(context.prefix)
    return prefixes


def test_the_window_start_stays_put_while_typing_on_one_line() -> None:
    # Without kept heads the growing line pushes the window's first line down...
    moving = _typing_contexts(None)
    assert any(not later.startswith(earlier[:-1] if earlier else earlier)
               for earlier, later in itertools.pairwise(moving))
    # ...with them each prompt extends the one before: the model's cache of it holds.
    heads = WindowHeads()
    steady = _typing_contexts(heads)
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(steady))
    assert all(estimate_tokens(prefix) <= 128 + LINE_GROWTH_TOKENS for prefix in steady)
    # Text above the line changed: the head is made anew for the new text.
    changed = _typing_contexts(heads, text_above="import os\n")
    assert changed[0] == _typing_contexts(None, text_above="import os\n")[0]
    heads.forget("file:///w/a.py")
