"""What a document imports, found with tree-sitter: the names it imports (each with the
module it came from), the names whole modules are bound to, and the rows its imports span.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import tree_sitter

from flashls.context.languages import import_query

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IMPORT_WORDS = frozenset({"import", "from", "as", "use", "crate", "self", "super", "pub",
                           "package", "include", "extern", "static", "type", "typeof",
                           "default", "require", "mod"})


@dataclass(frozen=True)
class Imports:
    """What a document imports: names (each with the module it came from, or "") and the
    names under which whole modules are bound; `rows` are the 0-based lines its import
    statements span."""

    names: tuple[tuple[str, str], ...]
    modules: frozenset[str]
    rows: frozenset[int] = frozenset()
    # Python: each name the imports bind with the module it may name (`python_bindings`),
    # in import order.
    bindings: tuple[tuple[str, str], ...] = ()

    def bound(self) -> frozenset[str]:
        """Every name the imports bind: imported names and module names."""
        return frozenset(name for name, _ in self.names) | self.modules

    def module_of(self, name: str) -> str | None:
        """The module the document's last import of `name` binds it to, as written
        (`.events`, `a.b`); None when no import binds it."""
        found = None
        for local, module in self.bindings:
            if local == name:
                found = module
        return found


def node_text(node: tree_sitter.Node | None) -> str:
    """A node's source text ("" for none)."""
    return "" if node is None else (node.text or b"").decode("utf-8", errors="replace")


def _listed(node: tree_sitter.Node) -> Iterator[tuple[tree_sitter.Node | None,
                                                      tree_sitter.Node | None]]:
    """(name, alias) for each name a Python import statement lists."""
    for child in node.children_by_field_name("name"):
        if child.type == "aliased_import":
            yield child.child_by_field_name("name"), child.child_by_field_name("alias")
        else:
            yield child, None


def python_bindings(node: tree_sitter.Node) -> list[tuple[str, str]]:
    """(local name, the module it may name as written, relative ones with their dots) for
    one Python import statement: `import a.b` binds `a` to `a`; `import a.b as x` binds
    `x` to `a.b`; `from .p import m` binds `m` to `.p.m` (a module, or a name in `.p`)."""
    found: list[tuple[str, str]] = []
    if node.type == "import_statement":
        for target, alias in _listed(node):
            dotted = node_text(target)
            if alias is not None:
                found.append((node_text(alias), dotted))
            else:
                top = dotted.split(".", 1)[0]
                found.append((top, top))
    elif node.type == "import_from_statement":
        source = node_text(node.child_by_field_name("module_name"))
        for target, alias in _listed(node):
            name = node_text(target)
            joined = source + name if source.endswith(".") else f"{source}.{name}"
            found.append((node_text(alias) or name.rsplit(".", 1)[-1], joined))
    return found


def _python_imports(node: tree_sitter.Node, names: list[tuple[str, str]],
                    modules: set[str], bindings: list[tuple[str, str]]) -> None:
    bindings += python_bindings(node)
    if node.type == "import_from_statement":
        module = node_text(node.child_by_field_name("module_name")).lstrip(".")
        hint = module.rsplit(".", 1)[-1]
        for target, alias in _listed(node):
            name = node_text(target).rsplit(".", 1)[-1]
            names.append((name, hint))
            modules.add(node_text(alias) or name)  # `from . import utils`: may be a module
    elif node.type == "import_statement":
        for target, alias in _listed(node):
            dotted = node_text(target)
            modules.add(node_text(alias) or dotted.split(".", 1)[0])
            modules.update(dotted.split("."))


def find_imports(tree: tree_sitter.Tree, language_id: str) -> Imports:
    """A document's imports, wherever they are (top level, `try:`, functions), in order."""
    query = import_query(language_id)
    if query is None:
        return Imports((), frozenset())
    names: list[tuple[str, str]] = []
    modules: set[str] = set()
    bindings: list[tuple[str, str]] = []
    found = tree_sitter.QueryCursor(query).captures(tree.root_node).get("import", [])
    rows: set[int] = set()
    for child in sorted(found, key=lambda node: node.start_byte):
        rows.update(range(child.start_point.row, child.end_point.row + 1))
        if language_id == "python":
            _python_imports(child, names, modules, bindings)
            continue
        for word in WORD.findall(node_text(child)):  # other languages: every imported word
            if word not in _IMPORT_WORDS:
                names.append((word, ""))
    return Imports(tuple(dict.fromkeys(names)), frozenset(modules), frozenset(rows),
                   tuple(bindings))
