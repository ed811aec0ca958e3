"""What a document imports, found with tree-sitter: the names it imports (each with the
module it came from), the names whole modules are bound to, and the rows its imports span.
"""

from __future__ import annotations

import re
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

    def bound(self) -> frozenset[str]:
        """Every name the imports bind: imported names and module names."""
        return frozenset(name for name, _ in self.names) | self.modules


def _text(node: tree_sitter.Node | None) -> str:
    return "" if node is None else (node.text or b"").decode("utf-8", errors="replace")


def _python_imports(node: tree_sitter.Node, names: list[tuple[str, str]],
                    modules: set[str]) -> None:
    if node.type == "import_from_statement":
        module = _text(node.child_by_field_name("module_name")).lstrip(".")
        hint = module.rsplit(".", 1)[-1]
        for child in node.children_by_field_name("name"):
            target = child.child_by_field_name("name") if child.type == "aliased_import" else child
            alias = child.child_by_field_name("alias") if child.type == "aliased_import" else None
            name = _text(target).rsplit(".", 1)[-1]
            names.append((name, hint))
            modules.add(_text(alias) or name)  # `from . import utils`: utils may be a module
    elif node.type == "import_statement":
        for child in node.children_by_field_name("name"):
            target = child.child_by_field_name("name") if child.type == "aliased_import" else child
            alias = child.child_by_field_name("alias") if child.type == "aliased_import" else None
            dotted = _text(target)
            modules.add(_text(alias) or dotted.split(".", 1)[0])
            modules.update(dotted.split("."))


def find_imports(tree: tree_sitter.Tree, language_id: str) -> Imports:
    """A document's imports, wherever they are (top level, `try:`, functions), in order."""
    query = import_query(language_id)
    if query is None:
        return Imports((), frozenset())
    names: list[tuple[str, str]] = []
    modules: set[str] = set()
    found = tree_sitter.QueryCursor(query).captures(tree.root_node).get("import", [])
    rows: set[int] = set()
    for child in sorted(found, key=lambda node: node.start_byte):
        rows.update(range(child.start_point.row, child.end_point.row + 1))
        if language_id == "python":
            _python_imports(child, names, modules)
            continue
        for word in WORD.findall(_text(child)):  # other languages: every imported word
            if word not in _IMPORT_WORDS:
                names.append((word, ""))
    return Imports(tuple(dict.fromkeys(names)), frozenset(modules), frozenset(rows))
