"""What `module.` can go on with when the module is a file of the workspace: the names the
module binds at its top level (definitions, assignments, imports, star imports followed),
its submodules and the attributes every module has.

The engine keeps the identifier a suggestion writes after `module.` to these names
(`engine/names.py`): a small model asked for `tasks.` often invents `tasks.get` where the
project has `tasks.all_tasks`. Python only; the rule is left off wherever the set of
names cannot be known: a module-level `__getattr__`, a star import from outside the
workspace, a module the workspace does not hold, a cursor in a string or comment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import tree_sitter

from flashls.context.imports import node_text, python_bindings
from flashls.context.languages import key_path, top_level_nodes
from flashls.engine.base import NameConstraint

# The attributes every module has, whatever it defines.
MODULE_ATTRIBUTES = frozenset({
    "__name__", "__file__", "__doc__", "__dict__", "__spec__", "__loader__", "__package__",
    "__path__", "__all__", "__builtins__", "__cached__", "__annotations__"})
MAX_STAR_DEPTH = 4  # star imports followed through at most this many modules
# `a.b.` or `a.b.na` right before the cursor, starting a name (not `x().a.`, not `1.5`).
_CHAIN = re.compile(r"(?<![\w.)\]'\"])((?:[A-Za-z_]\w*\.)+)([A-Za-z_]\w*)?$")
_COMPOUND = frozenset({"if_statement", "try_statement", "with_statement", "elif_clause",
                       "else_clause", "except_clause", "finally_clause", "block"})


@dataclass(frozen=True, slots=True)
class Exports:
    """The names a Python module binds at its top level."""

    names: frozenset[str]
    stars: tuple[str, ...] = ()  # `from X import *` sources as written: ".base_events"
    open_ended: bool = False  # a module-level `__getattr__`: any name may be an attribute


def _statements(nodes: Iterator[tree_sitter.Node]) -> Iterator[tree_sitter.Node]:
    """Top-level statements, those inside top-level `if`/`try`/`with` blocks included
    (`try: from _c import f` / `except ImportError: def f(): ...`)."""
    for node in nodes:
        if node.type in _COMPOUND:
            yield from _statements(iter(node.named_children))
        else:
            yield node


def _targets(node: tree_sitter.Node) -> Iterator[str]:
    if node.type == "identifier":
        yield node_text(node)
    elif node.type in ("pattern_list", "tuple_pattern", "list_pattern"):
        for child in node.named_children:
            yield from _targets(child)


def extract_exports(tree: tree_sitter.Tree, language_id: str) -> Exports | None:
    """A Python module's top-level names; None for other languages."""
    if language_id != "python":
        return None
    names: set[str] = set()
    stars: list[str] = []
    for node in _statements(top_level_nodes(tree.root_node, named=True)):
        if node.type == "decorated_definition":
            node = node.child_by_field_name("definition") or node
        if node.type in ("function_definition", "class_definition"):
            names.add(node_text(node.child_by_field_name("name")))
        elif node.type == "expression_statement":
            for child in node.named_children:
                if child.type in ("assignment", "augmented_assignment"):
                    left = child.child_by_field_name("left")
                    if left is not None:
                        names.update(_targets(left))
        elif node.type in ("import_statement", "import_from_statement"):
            # What a module imports is its attribute too, and a package re-exports its
            # API so; a private name it imports (`_simple_enum`) is its own business.
            names.update(name for name, _ in python_bindings(node) if not name.startswith("_"))
            if node.type == "import_from_statement" and any(
                    child.type == "wildcard_import" for child in node.children):
                stars.append(node_text(node.child_by_field_name("module_name")))
    return Exports(frozenset(names), tuple(stars), "__getattr__" in names)


def chain_before(line_before: str) -> tuple[list[str], str] | None:
    """`(["a", "b"], "na")` for a line ending in `a.b.na` (the cursor after it)."""
    match = _CHAIN.search(line_before)
    if match is None:
        return None
    return match.group(1).rstrip(".").split("."), match.group(2) or ""


def module_files(dotted: str, importer: str,
                 files_named: Callable[[str], list[str]]) -> list[str]:
    """The indexed files `dotted` names when the file `importer` imports it: relative
    (`..p.m`) from the importer's folder, absolute (`p.m`) by the end of the path.
    `files_named(stem)` lists the indexed files an import of `stem` names (`stem.py`,
    `stem/__init__.py`)."""
    level = len(dotted) - len(dotted.lstrip("."))
    parts = [part for part in dotted[level:].split(".") if part]
    if level:
        folder = key_path(importer).parent
        for _ in range(level - 1):
            folder = folder.parent
        target = folder.joinpath(*parts)
        wanted = {target.with_name(target.name + ".py"), target / "__init__.py"} \
            if parts else {folder / "__init__.py"}
        stem = parts[-1] if parts else folder.name
        return [key for key in files_named(stem) if key_path(key) in wanted]
    if not parts:
        return []
    tail = "/" + "/".join(parts)
    return [key for key in files_named(parts[-1])
            if str(key_path(key)).endswith((tail + ".py", tail + "/__init__.py"))]


def submodules(package_init: str, files: list[str]) -> set[str]:
    """The modules and packages right inside the package whose `__init__.py` is
    `package_init`, among `files`."""
    folder = key_path(package_init).parent
    found: set[str] = set()
    for key in files:
        path = key_path(key)
        if path.parent == folder and path.suffix == ".py" and path.stem != "__init__":
            found.add(path.stem)
        elif path.name == "__init__.py" and path.parent.parent == folder:
            found.add(path.parent.name)
    return found


def constraint_for(names: frozenset[str] | None, typed: str) -> NameConstraint | None:
    """The rule for the cursor: None when the names are unknown or none goes on from what
    is typed (the user knows a name the index does not: leave them be). Names starting
    with `__` (`__name__`, `__dict__`, a marker such as `__unittest`) only once `__` is
    typed: a model unsure of the name takes them, and they seldom follow `module.`."""
    if not names:
        return None
    fitting = sorted(name for name in names if name.startswith(typed) and (
        typed.startswith("__") or not name.startswith("__")))
    if not fitting or fitting == [typed]:
        return None
    return NameConstraint(typed, tuple(fitting))


def members_of(files: list[str], exports_of: Callable[[str], Exports | None],
               files_named: Callable[[str], list[str]], all_files: Callable[[], list[str]],
               depth: int = 0) -> frozenset[str] | None:
    """Every attribute of the module held in `files` (several where an absolute import
    is ambiguous: their union); None when it cannot be known."""
    if not files:
        return None
    names = set(MODULE_ATTRIBUTES)
    for key in files:
        exports = exports_of(key)
        if exports is None or exports.open_ended:
            return None
        names |= exports.names
        if key_path(key).name == "__init__.py":
            names |= submodules(key, all_files())
        for star in exports.stars:
            inner = None if depth >= MAX_STAR_DEPTH else members_of(
                module_files(star, key, files_named), exports_of, files_named, all_files,
                depth + 1)
            if inner is None:
                return None
            names |= inner
    return frozenset(names)
