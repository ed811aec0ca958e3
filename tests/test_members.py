"""What `module.` may go on with (`context/members.py`) and the token rule that keeps a
suggestion to it (`engine/names.py`): no model here, see test_engine for the model."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import tree_sitter

from flashls.context.crossfile import CrossFileContext
from flashls.context.definitions import DefinitionIndex, parse_source
from flashls.context.imports import find_imports
from flashls.context.languages import grammar
from flashls.context.members import (
    MODULE_ATTRIBUTES,
    chain_before,
    constraint_for,
    extract_exports,
    members_of,
    module_files,
)
from flashls.engine.base import NameConstraint
from flashls.engine.llama import LlamaEngine
from flashls.engine.names import NameRule, word_length
from flashls.settings import Settings

ROOT = "file:///ws/pkg"


def parse(text: str) -> tree_sitter.Tree:
    language = grammar("python")
    assert language is not None
    return tree_sitter.Parser(language).parse(textwrap.dedent(text).encode())


def indexed(files: dict[str, str]) -> DefinitionIndex:
    index = DefinitionIndex()
    for name, text in files.items():
        key = f"{ROOT}/{name}"
        index.replace(key, *parse_source(key, "python", textwrap.dedent(text)))
    return index


def test_a_module_s_names_are_its_definitions_assignments_and_imports() -> None:
    exports = extract_exports(parse("""\
        import os.path
        import json as j
        from . import events
        from .base import (Loop as L, run, _private)
        from .tasks import *
        try:
            from _speedups import fast
        except ImportError:
            def fast(): pass
        if True:
            LIMIT: int = 3
            A, (B, C) = 1, (2, 3)
        @decorated
        class Handler: pass
        def helper():
            inner = 1
        """), "python")
    assert exports is not None
    assert exports.names == {"os", "j", "events", "L", "run", "fast", "LIMIT", "A", "B", "C",
                             "Handler", "helper"}
    assert exports.stars == (".tasks",) and not exports.open_ended
    assert extract_exports(parse("def __getattr__(name): pass\n"), "python").open_ended
    assert extract_exports(parse("x = 1\n"), "javascript") is None


def test_import_bindings_name_the_module_each_local_name_may_be() -> None:
    bindings = dict(find_imports(parse("""\
        import a.b.c
        import a.b as ab
        from . import events
        from .. import up
        from .pkg import mod as m, name
        def f():
            from email import utils
        """), "python").bindings)
    assert bindings == {"a": "a", "ab": "a.b", "events": ".events", "up": "..up",
                        "m": ".pkg.mod", "name": ".pkg.name", "utils": "email.utils"}


@pytest.mark.parametrize(("line", "expected"), [
    ("    loop = events.", (["events"], "")),
    ("x = email.utils.for", (["email", "utils"], "for")),
    ("if isinstance(h, logging.Hand", (["logging"], "Hand")),
    ("value = call().attr.", None),  # not a module: starts after a call
    ("ratio = 1.", None),
    ("events", None),
    ("x = self.items[0].", None),
])
def test_the_chain_before_the_cursor(line: str, expected: object) -> None:
    assert chain_before(line) == expected


def test_module_files_resolve_relative_and_absolute_imports() -> None:
    index = indexed({"events.py": "", "sub/__init__.py": "", "sub/events.py": "",
                     "sub/deep/x.py": ""})
    importer = f"{ROOT}/sub/user.py"
    assert module_files(".events", importer, index.module_files) == [f"{ROOT}/sub/events.py"]
    assert module_files("..events", importer, index.module_files) == [f"{ROOT}/events.py"]
    assert module_files(".", importer, index.module_files) == [f"{ROOT}/sub/__init__.py"]
    assert module_files("pkg.sub", importer, index.module_files) == [f"{ROOT}/sub/__init__.py"]
    assert module_files("pkg.sub.deep.x", importer, index.module_files) == [
        f"{ROOT}/sub/deep/x.py"]
    assert module_files("other.events", importer, index.module_files) == []
    assert module_files(".missing", importer, index.module_files) == []


def test_members_follow_star_imports_and_list_a_package_s_submodules() -> None:
    index = indexed({
        "__init__.py": "from .tasks import *\nfrom .base import *\nVERSION = 1\n",
        "tasks.py": "def all_tasks(): pass\nclass Task: pass\n",
        "base.py": "from .tasks import Task\ndef run(): pass\n",
        "sub/__init__.py": "", "lonely.py": "from os.path import *\n",
        "lazy.py": "def __getattr__(name): pass\n"})

    def members(dotted: str) -> frozenset[str] | None:
        return members_of(module_files(dotted, f"{ROOT}/user.py", index.module_files),
                          index.exports, index.module_files, index.files)

    package = members(".")
    assert package is not None
    assert package - MODULE_ATTRIBUTES == {"all_tasks", "Task", "run", "VERSION", "tasks",
                                           "base", "sub", "lonely", "lazy"}
    assert members(".lonely") is None  # a star import from outside the workspace
    assert members(".lazy") is None  # any name may be an attribute
    assert members(".absent") is None


def test_the_constraint_keeps_the_names_that_go_on_from_what_is_typed() -> None:
    names = frozenset({"all_tasks", "Task", "run"})
    assert constraint_for(names, "") == NameConstraint("", ("Task", "all_tasks", "run"))
    assert constraint_for(names, "al") == NameConstraint("al", ("all_tasks",))
    assert constraint_for(names, "gather") is None  # a name the index does not know
    assert constraint_for(names, "run") is None  # already whole
    assert constraint_for(None, "") is None
    dunders = names | {"__name__", "__version__", "__marker"}
    assert constraint_for(dunders, "") == NameConstraint("", ("Task", "all_tasks", "run"))
    assert constraint_for(dunders, "__") == NameConstraint("__", (
        "__marker", "__name__", "__version__"))


def test_the_cross_file_context_gives_the_constraint_after_an_imported_module() -> None:
    context = CrossFileContext(["usages"], 384, indexed({
        "tasks.py": "def all_tasks(): pass\ndef gather(): pass\n",
        "dynamic.py": "def __getattr__(name): pass\n"}))
    context.roots = [ROOT]
    key = f"{ROOT}/user.py"
    text = ("from . import tasks, dynamic\nimport json\n\n"
            "pending = tasks.\nlabel = 'see tasks.'\nvalue = json.\nother = dynamic.\n")
    context.document_changed(key, "python", text)
    tree = parse(text)
    lines = text.split("\n")

    def at(row: int) -> NameConstraint | None:
        cursor = sum(len(line) + 1 for line in lines[:row]) + len(lines[row])
        context.sections(key, "python", tree, text, cursor)
        return context.member_constraint(key, "python", tree, text, cursor)

    found = at(3)
    assert found is not None and found.typed == ""
    assert {"all_tasks", "gather"} <= set(found.names) and "dumps" not in found.names
    assert at(4) is None  # in a string
    assert at(5) is None  # json is not a workspace file
    assert at(6) is None  # names made by __getattr__
    assert CrossFileContext(["recent"], 384).member_constraint(
        key, "python", tree, text, len(text)) is None  # no index without an indexed source


# The token rule, over a made-up vocabulary.
VOCABULARY = [b".", b".all", b".get", b"all", b"all_", b"_tasks", b"tasks", b"tasks(",
              b"tasks()", b"tasksx", b"get", b"(", b" ", b"_", b"ather", b"g"]


def rule_tokens(rule: NameRule, word: bytes, healed: bytes = b"") -> set[bytes]:
    ordered = sorted((piece, token) for token, piece in enumerate(VOCABULARY))
    found = rule.tokens(word, healed, [piece for piece, _ in ordered],
                        [token for _, token in ordered])
    return {VOCABULARY[token] for token in found}


def test_the_rule_allows_tokens_towards_a_name_and_those_that_end_one() -> None:
    rule = NameRule(NameConstraint("", ("all_tasks", "gather")))
    assert rule.allows(b"", b"all") and rule.allows(b"all", b"_tasks")
    assert rule.allows(b"all_", b"tasks(") and not rule.allows(b"all_", b"tasksx")
    assert not rule.allows(b"", b"get") and not rule.allows(b"", b"(")
    assert rule.allows(b"all_tasks", b"(") and not rule.allows(b"all_tasks", b"_")
    assert not rule.allows_end(b"") and not rule.allows_end(b"all") and rule.allows_end(
        b"gather")
    assert rule.word(b"all_") == b"all_" and rule.word(b"all_tasks(") is None
    assert rule_tokens(rule, b"") == {b"all", b"all_", b"g"}
    assert rule_tokens(rule, b"all_") == {b"tasks", b"tasks(", b"tasks()"}
    assert rule_tokens(rule, b"g") == {b"ather"}
    assert rule_tokens(rule, b"", healed=b".") == {b".", b".all"}
    assert word_length(b"caf\xc3\xa9(") == 5


def test_the_rule_counts_the_typed_part_of_the_name() -> None:
    rule = NameRule(NameConstraint("all", ("all_tasks",)))
    assert rule.word(b"") == b"all" and rule.allows(b"all", b"_tasks")
    assert rule_tokens(rule, b"all") == {b"_", b"_tasks"}


def test_the_engine_ends_a_whole_name_however_unlikely_the_end_is(model_path: Path) -> None:
    # A made-up vocabulary on an engine that is not loaded: after the whole name `zq`,
    # the 70 likeliest tokens go on with identifier bytes (`zq_area`), which the rule
    # forbids; the likeliest that ends the name (`(`) is taken, however far down.
    engine = LlamaEngine(Settings(model=str(model_path)))
    pieces = [b"_x%d" % index for index in range(70)] + [b"(", b" =", b"zq"]
    engine._pieces = pieces
    ordered = sorted((piece, token) for token, piece in enumerate(pieces))
    engine._sorted_pieces = [piece for piece, _ in ordered]
    engine._sorted_ids = [token for _, token in ordered]
    engine._ends_word = np.array([word_length(piece[:1]) == 0 for piece in pieces])
    engine._is_end = lambda token: False  # type: ignore[method-assign]
    logits = np.array([10.0 - index / 100 for index in range(70)] + [1.0, 0.5, 0.0],
                      dtype=np.float32)
    rule = NameRule(NameConstraint("", ("zq", "zr")))
    assert engine._allowed(rule, b"zq", logits, None, b"", 2) == [70]
    assert engine._allowed(rule, b"", logits, None, b"", 1) == [72]  # towards a name


def test_a_new_index_forgets_the_module_names_found_in_the_old_one() -> None:
    context = CrossFileContext(["usages"], 384, indexed({"tasks.py": "def old(): pass\n"}))
    key = f"{ROOT}/user.py"
    text = "from . import tasks\n\nx = tasks.\n"
    context.document_changed(key, "python", text)
    tree = parse(text)
    cursor = text.index("tasks.\n") + len("tasks.")
    found = context.member_constraint(key, "python", tree, text, cursor)
    assert found is not None and "old" in found.names
    generation = context.index.generation
    context.reset_index()  # the workspace is read again, into a new index
    while context.index.generation < generation:  # the same generation, other files
        context.index.replace(f"{ROOT}/tasks.py", *parse_source(
            f"{ROOT}/tasks.py", "python", "def new(): pass\n"))
    found = context.member_constraint(key, "python", tree, text, cursor)
    assert found is not None and "new" in found.names and "old" not in found.names
