"""Top-level definitions of files, found with tree-sitter, and an index of them by name.

A definition's text is what a reader of another file needs: its header (signature), the
first lines of its docstring and, for a class, the headers of its methods. Bodies are
left out. The index can also keep each file's lines that use names it imports or defines
(`usages.py`).
It is filled from open documents and from the workspace's files (see `workspace.py`) and
may be written by one thread while another reads it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import tree_sitter

from flashls.context.imports import find_imports
from flashls.context.languages import SPECS, grammar, key_path, top_level_nodes
from flashls.context.members import Exports, extract_exports
from flashls.context.syntax import line_starts_in_string_or_comment
from flashls.context.usages import Usage, extract_usages

MAX_HEADER_LINES = 4
MAX_DOC_LINES = 3
MAX_MEMBERS = 16
MAX_DEFINITION_CHARS = 1200
MAX_CONSTANT_CHARS = 160
# Nodes that wrap a definition without being one (decorators, `export`).
_WRAPPERS = frozenset({"decorated_definition", "export_statement"})
# Top-level statements that bind a constant or variable name.
_BINDINGS = frozenset({"expression_statement", "lexical_declaration", "variable_declaration",
                       "const_declaration", "var_declaration", "static_item", "const_item",
                       "declaration"})


def stem_and_folder(key: str) -> tuple[str, str]:
    """A file's name without its extension, and the name of its folder."""
    path = key_path(key)
    return path.stem, path.parent.name


def module_name(key: str) -> str:
    """The name an import gives the file: its stem, or its folder's for `__init__`."""
    stem, folder = stem_and_folder(key)
    return folder if stem == "__init__" else stem


@dataclass(frozen=True)
class Definition:
    """One top-level name of a file and the text that shows it to another file."""

    name: str
    key: str  # the file: a document URI
    line: int  # 0-based row of its first line
    text: str
    header_lines: int = 1  # how many of `text`'s first lines are its header (signature)

    @property
    def header(self) -> str:
        """The signature alone: what a tight budget still shows of it."""
        return "\n".join(self.text.split("\n", self.header_lines)[:self.header_lines])


def _line_range(lines: list[bytes], first: int, last: int) -> list[str]:
    return [line.decode("utf-8", errors="replace").rstrip() for line in lines[first:last + 1]]


def _unwrap(node: tree_sitter.Node) -> tree_sitter.Node:
    while node.type in _WRAPPERS:
        inner = (node.child_by_field_name("definition")
                 or node.child_by_field_name("declaration"))
        if inner is None:
            named = [child for child in node.named_children if child.type != "decorator"]
            if not named:
                return node
            inner = named[-1]
        node = inner
    return node


def _header_rows(node: tree_sitter.Node) -> tuple[int, int]:
    """First and last row of a definition's header: up to its body, a few lines at most."""
    body = node.child_by_field_name("body")
    last = node.start_point.row
    if body is not None:  # the header's own tokens end it, not comments above the body
        last = max([child.end_point.row for child in node.children
                    if child.start_byte < body.start_byte and child.type != "comment"],
                   default=last)
    return node.start_point.row, min(last, node.start_point.row + MAX_HEADER_LINES - 1)


def _docstring_rows(node: tree_sitter.Node) -> tuple[int, int] | None:
    """Rows of the opening of a Python docstring that starts the body, if any."""
    body = node.child_by_field_name("body")
    if body is None or not body.named_children:
        return None
    first = body.named_children[0]
    if first.type != "expression_statement" or not first.named_children:
        return None
    if first.named_children[0].type != "string":
        return None
    return first.start_point.row, min(first.end_point.row,
                                      first.start_point.row + MAX_DOC_LINES - 1)


def _members(node: tree_sitter.Node, scopes: frozenset[str]) -> Iterator[tree_sitter.Node]:
    body = node.child_by_field_name("body")
    if body is None:
        return
    for child in body.named_children:
        inner = _unwrap(child)
        if inner.type in scopes and inner.child_by_field_name("name") is not None:
            yield inner


def _definition_text(node: tree_sitter.Node, lines: list[bytes],
                     scopes: frozenset[str]) -> tuple[str, int]:
    """The definition's text and how many of its first lines are the header."""
    header = _header_rows(node)
    rows: list[tuple[int, int]] = [header]
    docstring = _docstring_rows(node)
    if docstring is not None:
        rows.append(docstring)
    for count, member in enumerate(_members(node, scopes)):
        if count == MAX_MEMBERS:
            break
        rows.append(_header_rows(member))
        if count == 0:  # the constructor's (or first method's) docstring is often the API
            member_doc = _docstring_rows(member)
            if member_doc is not None:
                rows.append(member_doc)
    kept: list[str] = []
    seen: set[int] = set()
    for first, last in sorted(rows):
        for row in range(first, last + 1):
            if row not in seen:
                seen.add(row)
                kept.extend(_line_range(lines, row, row))
    text = "\n".join(kept)
    if len(text) > MAX_DEFINITION_CHARS:  # whole lines only
        cut = text.rfind("\n", 0, MAX_DEFINITION_CHARS)
        text = text[:cut if cut > 0 else MAX_DEFINITION_CHARS]
    return text, header[1] - header[0] + 1


def _bound_names(node: tree_sitter.Node) -> list[str]:
    """Names a top-level binding statement defines (`X = 1`, `const x = …`)."""
    names: list[str] = []
    for child in node.named_children:
        target = (child.child_by_field_name("left") or child.child_by_field_name("name")
                  or child.child_by_field_name("declarator"))
        if target is not None and target.type in ("identifier", "type_identifier"):
            names.append((target.text or b"").decode("utf-8", errors="replace"))
    return names


def extract_definitions(key: str, language_id: str, tree: tree_sitter.Tree,
                        source: bytes) -> list[Definition]:
    """The top-level definitions of one parsed file, in file order."""
    spec = SPECS.get(language_id)
    if spec is None:
        return []
    lines = source.split(b"\n")
    found: list[Definition] = []
    for child in top_level_nodes(tree.root_node, named=True):
        node = _unwrap(child)
        name_node = node.child_by_field_name("name")
        if node.type in spec.scopes and name_node is not None:
            name = (name_node.text or b"").decode("utf-8", errors="replace")
            text, header_lines = _definition_text(node, lines, spec.scopes)
            found.append(Definition(name, key, child.start_point.row, text, header_lines))
        elif node.type in _BINDINGS:
            line = _line_range(lines, node.start_point.row, node.start_point.row)[0]
            for name in _bound_names(node):
                found.append(Definition(name, key, node.start_point.row,
                                        line[:MAX_CONSTANT_CHARS]))
    return found


class IndexedFile(NamedTuple):
    """What the index holds of one file."""

    definitions: tuple[Definition, ...]
    usages: tuple[Usage, ...] = ()
    exports: Exports | None = None  # a Python module's top-level names (`members.py`)


def parse_source(key: str, language_id: str, text: str, usages: bool = True) -> IndexedFile:
    """Parse `text` once: its top-level definitions, its top-level names as a module,
    and (with `usages`) its lines that use names it imports or defines (`usages.py`);
    nothing without a grammar."""
    language = grammar(language_id)
    if language is None:
        return IndexedFile(())
    source = text.encode("utf-8", errors="surrogatepass")
    tree = tree_sitter.Parser(language).parse(source)
    definitions = extract_definitions(key, language_id, tree, source)
    exports = extract_exports(tree, language_id)
    if not usages:
        return IndexedFile(tuple(definitions), (), exports)
    lines = text.split("\n")
    return IndexedFile(tuple(definitions), tuple(extract_usages(
        key, find_imports(tree, language_id), lines,
        [definition.name for definition in definitions],
        lambda row: line_starts_in_string_or_comment(tree, row, lines[row]))), exports)


class IndexCounts(NamedTuple):
    """Files, definitions, characters of definition text and usage lines held."""

    files: int
    definitions: int
    definition_chars: int
    usages: int


class DefinitionIndex:
    """Definitions (and usages of imported names) by name, replaced a whole file at a time.

    Invariant: `_by_name` and `_usages_by_name` hold exactly the definitions and usages of
    `_by_file`'s records; all change together under `_lock`. `generation` grows with every
    change, so a reader can tell whether anything it computed from the index may be out of
    date.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_file: dict[str, IndexedFile] = {}
        self._by_name: dict[str, list[Definition]] = {}
        self._usages_by_name: dict[str, list[Usage]] = {}
        self._by_module: dict[str, list[str]] = {}  # module_name(key) -> keys
        self.generation = 0

    def replace(self, key: str, definitions: Iterable[Definition],
                usages: Iterable[Usage] = (), exports: Exports | None = None) -> None:
        """Make `definitions` (and `usages`, `exports`) the file's only ones."""
        with self._lock:
            self._drop(key)
            self._add(key, IndexedFile(tuple(definitions), tuple(usages), exports))

    def add_if_absent(self, key: str, definitions: Iterable[Definition],
                      usages: Iterable[Usage] = (), exports: Exports | None = None) -> bool:
        """Index a file unless it is indexed already (an open document's text is newer
        than the disk's); whether it was added."""
        with self._lock:
            if key in self._by_file:
                return False
            self._add(key, IndexedFile(tuple(definitions), tuple(usages), exports))
            return True

    def remove(self, key: str) -> None:
        """Forget a file."""
        with self._lock:
            self._drop(key)
            self.generation += 1

    def _add(self, key: str, record: IndexedFile) -> None:
        self._by_file[key] = record
        self._by_module.setdefault(module_name(key), []).append(key)
        for definition in record.definitions:
            self._by_name.setdefault(definition.name, []).append(definition)
        for usage in record.usages:
            for name in usage.names:
                self._usages_by_name.setdefault(name, []).append(usage)
        self.generation += 1

    def _drop(self, key: str) -> None:
        record = self._by_file.pop(key, None)
        if record is None:
            return
        _unlist(self._by_name, {d.name for d in record.definitions}, key)
        _unlist(self._usages_by_name, {n for u in record.usages for n in u.names}, key)
        module = module_name(key)
        self._by_module[module].remove(key)
        if not self._by_module[module]:
            del self._by_module[module]

    def find(self, name: str) -> list[Definition]:
        """Every definition of `name`, in the order their files were indexed."""
        with self._lock:
            return list(self._by_name.get(name, ()))

    def usages(self, names: Iterable[str]) -> list[Usage]:
        """Every indexed line that uses one of `names` (imported or defined there), each
        once."""
        with self._lock:
            found = [usage for name in names for usage in self._usages_by_name.get(name, ())]
        return list(dict.fromkeys(found))

    def of_file(self, key: str) -> tuple[Definition, ...]:
        """A file's definitions, in file order."""
        with self._lock:
            record = self._by_file.get(key)
            return () if record is None else record.definitions

    def exports(self, key: str) -> Exports | None:
        """A Python file's top-level names as a module; None when not indexed or not
        Python."""
        with self._lock:
            record = self._by_file.get(key)
            return None if record is None else record.exports

    def module_files(self, module: str) -> list[str]:
        """The indexed files that an import of `module` names (`module.py`, or
        `module/__init__.py`), in the order they were indexed."""
        with self._lock:
            return list(self._by_module.get(module, ()))

    def files(self) -> list[str]:
        """The keys of the indexed files."""
        with self._lock:
            return list(self._by_file)

    def has_file(self, key: str) -> bool:
        """Whether the file was indexed."""
        with self._lock:
            return key in self._by_file

    def counts(self) -> IndexCounts:
        """What the index holds."""
        with self._lock:
            definitions = [d for record in self._by_file.values() for d in record.definitions]
            return IndexCounts(len(self._by_file), len(definitions),
                               sum(len(d.text) + len(d.name) for d in definitions),
                               sum(len(record.usages) for record in self._by_file.values()))


def _unlist(by_name: dict[str, list[Any]], names: set[str], key: str) -> None:
    """Remove file `key`'s entries under `names` (dropping names left with none)."""
    for name in names:
        same = by_name.get(name)
        if same is None:
            continue
        same[:] = [entry for entry in same if entry.key != key]
        if not same:
            del by_name[name]
