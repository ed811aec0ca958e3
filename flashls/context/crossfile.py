"""The prompt's cross-file part: what other files say that the cursor's file may need.

Sources (setting `context_sources`):
- `definitions`: definitions of the names the document imports (anywhere in it), in
  import order, then of names it uses as `module.name`, found in open documents and the
  workspace index; every wanted signature first, whole definitions while room is left;
- `recent`: the regions where the user last edited or rested in other open documents,
  most recent last;
- `ring`: llama.vim's ring buffer, the baseline the benchmark compares with: a chunk of
  each document the user entered, oldest first, evicting chunks that mostly repeat.
All are bounded together by `context_budget_tokens`. The definitions part depends on the
document's imports and the index, not on the cursor, and is ordered by file, so it stays
the same while the user types and moves in a file: the model's cache keeps it.

Nothing here reads the disk or speaks LSP: the service feeds open documents, the
workspace indexer (`workspace.py`) feeds files on disk.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urlparse

import tree_sitter

from flashls.context.definitions import (
    Definition,
    DefinitionIndex,
    parse_definitions,
    stem_and_folder,
)
from flashls.context.languages import import_query
from flashls.context.window import estimate_tokens

SOURCES = ("definitions", "recent", "ring")
RECENT_ABOVE = 12  # lines shown above and below a recent place
RECENT_BELOW = 8
MAX_RECENT = 8
RING_CHUNK_LINES = 64  # llama.vim's defaults: ring_chunk_size 64, ring_n_chunks 16
RING_CHUNKS = 16
RING_EVICT_SIMILARITY = 0.9
MIN_RING_LINES = 8  # a chunk cut shorter than this is left out
_SKIPPED_NAMES = frozenset({"__all__", "__version__", "__author__"})
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A word followed by a dot: `module.` (a name's use, or being typed).
_DOTTED = re.compile(r"(?<!\w)(\w+)\.")
# `module.name` uses, overlapping so that `a.b.c` yields (a, b) and (b, c).
_ATTRIBUTE = re.compile(r"(?<![\w.])(?=([A-Za-z_]\w*)\.([A-Za-z_]\w*))")
_IMPORT_WORDS = frozenset({"import", "from", "as", "use", "crate", "self", "super", "pub",
                           "package", "include", "extern", "static", "type", "typeof",
                           "default", "require", "mod"})


@dataclass(frozen=True)
class FileSection:
    """One other file's part of the prompt."""

    path: str  # as the model sees it: relative to the workspace folder
    text: str


@dataclass(frozen=True)
class Imports:
    """What a document imports: names (each with the module it came from, or "") and the
    names under which whole modules are bound."""

    names: tuple[tuple[str, str], ...]
    modules: frozenset[str]


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
    for child in sorted(found, key=lambda node: node.start_byte):
        if language_id == "python":
            _python_imports(child, names, modules)
            continue
        for word in _WORD.findall(_text(child)):  # other languages: every imported word
            if word not in _IMPORT_WORDS:
                names.append((word, ""))
    return Imports(tuple(dict.fromkeys(names)), frozenset(modules))


def _matches(definition: Definition, hint: str) -> bool:
    """Whether `definition` may be what an import from module `hint` names: it is in that
    module's file, or in a file of the package folder `hint`."""
    return hint in stem_and_folder(definition.key)


def _outline(index: DefinitionIndex, module: str, key: str) -> list[Definition]:
    """The first line of each top-level name of the module imported as `module`: what
    `module.` can go on with; public names first, then private ones (code inside a
    package often reaches into its siblings' private names)."""
    found = [dataclasses.replace(definition, text=definition.text.split("\n", 1)[0],
                                 header_lines=1)
             for file in index.module_files(module) if file != key
             for definition in index.of_file(file)]
    return sorted(found, key=lambda definition: definition.name.startswith("_"))


def _pick(index: DefinitionIndex, name: str, hint: str, key: str) -> Definition | None:
    """The definition an import of `name` from module `hint` most likely means."""
    found = [d for d in index.find(name) if d.key != key]
    if hint:
        matching = [d for d in found if _matches(d, hint)]
        if matching:
            return matching[0]
    return found[0] if len(found) == 1 else None


def select_definitions(index: DefinitionIndex, key: str, imports: Imports, text: str,
                       budget_tokens: int) -> list[Definition]:
    """Definitions for the document `key`, within the budget, in the order they are wanted:
    imported names first (in import order), then `module.name` uses (first use first),
    then the first lines of the other names of modules the file uses as `module.`."""
    wanted: list[tuple[str, str]] = [pair for pair in imports.names
                                     if pair[0] not in _SKIPPED_NAMES]
    used_modules: dict[str, None] = {}
    for match in _ATTRIBUTE.finditer(text):
        module, name = match.group(1), match.group(2)
        if module in imports.modules:
            wanted.append((name, module))
            used_modules[module] = None
    for module in sorted(_dotted_modules(text, imports.modules)):  # `module.` being typed
        used_modules.setdefault(module, None)
    candidates = [_pick(index, name, hint, key) for name, hint in dict.fromkeys(wanted)]
    candidates += [d for module in used_modules for d in _outline(index, module, key)]
    unique: dict[tuple[str, int], Definition] = {}  # the first mention of a definition wins
    for definition in candidates:
        if definition is not None:
            unique.setdefault((definition.key, definition.line), definition)
    return _fit(list(unique.values()), budget_tokens)


def _fit(candidates: list[Definition], budget_tokens: int) -> list[Definition]:
    """As many of `candidates` (most wanted first) as the budget holds: first every
    signature that fits, then whole definitions in the same order while room is left, so
    a long class early on does not crowd out the names after it."""
    chosen: dict[Definition, Definition] = {}  # candidate -> what of it is shown
    used = 0
    for definition in candidates:
        header = dataclasses.replace(definition, text=definition.header)
        cost = estimate_tokens(header.text) + 1
        if used + cost <= budget_tokens:  # a smaller one further down may still fit
            used += cost
            chosen[definition] = header
    for definition, shown in chosen.items():
        extra = estimate_tokens(definition.text) - estimate_tokens(shown.text)
        if extra > 0 and used + extra <= budget_tokens:
            used += extra
            chosen[definition] = definition
    return list(chosen.values())


class RecentPlaces:
    """Where the user last was in each open document, least recent first."""

    def __init__(self, limit: int = MAX_RECENT) -> None:
        self._limit = limit
        self._places: OrderedDict[str, int] = OrderedDict()

    def touch(self, key: str, line: int) -> None:
        """The user edited or rested at `line` of `key`."""
        self._places[key] = line
        self._places.move_to_end(key)
        while len(self._places) > self._limit:
            self._places.popitem(last=False)

    def forget(self, key: str) -> None:
        """A closed document has no place."""
        self._places.pop(key, None)

    def places(self) -> list[tuple[str, int]]:
        """(document, line), least recent first."""
        return list(self._places.items())


def _similarity(left: list[str], right: list[str]) -> float:
    """llama.vim's chunk similarity: the share of lines the two chunks have in common."""
    if not left or not right:
        return 0.0
    common = len(set(left) & set(right))
    return 2 * common / (len(left) + len(right))


class Ring:
    """llama.vim's ring buffer of chunks from entered documents, oldest first."""

    def __init__(self, chunks: int = RING_CHUNKS, lines: int = RING_CHUNK_LINES) -> None:
        self._size = chunks
        self._lines = lines
        self._chunks: list[tuple[str, list[str]]] = []

    def enter(self, key: str, text: str, line: int) -> None:
        """The user entered `key` at `line`: keep the chunk around it."""
        lines = text.split("\n")
        start = max(0, min(line - self._lines // 2, len(lines) - self._lines))
        chunk = lines[start:start + self._lines]
        if not any(part.strip() for part in chunk):
            return
        self._chunks = [(k, c) for k, c in self._chunks
                        if _similarity(c, chunk) <= RING_EVICT_SIMILARITY]
        self._chunks.append((key, chunk))
        del self._chunks[:-self._size]

    def forget(self, key: str) -> None:
        """Drop a closed document's chunks."""
        self._chunks = [(k, c) for k, c in self._chunks if k != key]

    def chunks(self) -> list[tuple[str, str]]:
        """(document, text), oldest first."""
        return [(key, "\n".join(lines)) for key, lines in self._chunks]


@dataclass(frozen=True)
class _Selection:
    """The definitions part chosen for a document, and what it was chosen from: it holds
    while the index and the text outside the cursor's line stay the same and the line
    names no other module as `module.`."""

    generation: int
    budget_tokens: int
    before: str  # the document's text before the cursor's line
    after: str  # and after it
    modules: frozenset[str]  # the document's imported module names
    line_modules: frozenset[str]  # those of them the cursor's line uses as `module.`
    chosen: tuple[Definition, ...]

    def holds(self, generation: int, budget_tokens: int, before: str, after: str,
              line: str) -> bool:
        return (generation == self.generation and budget_tokens == self.budget_tokens
                and before == self.before and after == self.after
                and _dotted_modules(line, self.modules) <= self.line_modules)


def _dotted_modules(text: str, modules: frozenset[str]) -> frozenset[str]:
    """Which of `modules` `text` uses as `module.`."""
    return frozenset(word for word in _DOTTED.findall(text) if word in modules)


@dataclass
class _OpenDocument:
    """An open document's latest text, whether the index has its definitions, and the
    definitions last chosen for it (kept across its edits; `_Selection.holds` says when
    they may be reused)."""

    text: str
    language_id: str
    indexed: bool = False
    selection: _Selection | None = None


class CrossFileContext:
    """The sources above, fed with the open documents' text, and the sections they give.

    Invariant: `_open` has one record per open document; `indexed` is False until its
    latest text is in the index. A document's definitions are extracted when another
    document asks for them, not at every keystroke.
    """

    def __init__(self, sources: Iterable[str], budget_tokens: int,
                 index: DefinitionIndex | None = None) -> None:
        self.sources = frozenset(sources)
        self.budget_tokens = budget_tokens
        self.index = index if index is not None else DefinitionIndex()
        self.roots: list[str] = []  # workspace folders, as URIs
        self.recent = RecentPlaces()
        self.ring = Ring()
        self._open: dict[str, _OpenDocument] = {}
        self._last_entered = ""

    def is_open(self, key: str) -> bool:
        """Whether the editor has the document open (its text is newer than the disk's)."""
        return key in self._open

    @property
    def enabled(self) -> bool:
        return bool(self.sources) and self.budget_tokens > 0

    def document_changed(self, key: str, language_id: str, text: str) -> None:
        """An open document's new text."""
        previous = self._open.get(key)
        self._open[key] = _OpenDocument(text, language_id, selection=None if previous is None
                                        else previous.selection)

    def document_closed(self, key: str) -> None:
        """Its places and chunks go; its definitions stay (the file is still there)."""
        if "definitions" in self.sources:
            self._flush(key)
        self._open.pop(key, None)
        self.recent.forget(key)
        self.ring.forget(key)

    def visited(self, key: str, line: int) -> None:
        """The user edits, asks or rests at `line` of `key`."""
        if "recent" in self.sources:
            self.recent.touch(key, line)
        if key != self._last_entered:
            self.entered(key, line)

    def entered(self, key: str, line: int) -> None:
        """The user switched to `key` (opened it, or came back to it) at `line`."""
        document = self._open.get(key)
        if document is not None and "ring" in self.sources:
            self.ring.enter(key, document.text, line)
            self._last_entered = key

    def _flush(self, key: str) -> None:
        document = self._open.get(key)
        if document is not None and not document.indexed:
            self.index.replace(key, parse_definitions(key, document.language_id,
                                                      document.text))
            document.indexed = True

    def path_of(self, key: str) -> str:
        """`key` as the model sees it: relative to its workspace folder, else its name."""
        path = unquote(urlparse(key).path) if "://" in key else key
        for root in self.roots:
            base = unquote(urlparse(root).path).rstrip("/") if "://" in root else root
            if path.startswith(base + "/"):
                return path[len(base) + 1:]
        return PurePosixPath(path).name

    def repo_name(self) -> str:
        """The workspace folder's name (the repository in the model's layout)."""
        if not self.roots:
            return ""
        return PurePosixPath(unquote(urlparse(self.roots[0]).path).rstrip("/")).name

    def sections(self, key: str, language_id: str, tree: tree_sitter.Tree | None,
                 text: str, cursor: int | None = None) -> tuple[FileSection, ...]:
        """The cross-file part for the document `key` with `text`, within the budget.
        With the `cursor` (a string offset), the definitions chosen for an open document are reused
        while typing along that line (see `_Selection`): finding them scans the whole
        document, which is too slow for every keystroke in a long file."""
        if not self.enabled:
            return ()
        for other in [k for k, d in self._open.items() if k != key and not d.indexed]:
            self._flush(other)
        budget = self.budget_tokens
        sections: list[FileSection] = []
        if "definitions" in self.sources and tree is not None:
            chosen = self._definitions(key, language_id, tree, text, cursor)
            budget -= sum(estimate_tokens(d.text) + 1 for d in chosen)
            sections += self._definition_sections(list(chosen))
        if "recent" in self.sources:
            sections += self._recent_sections(key, budget, estimate_tokens)
        if "ring" in self.sources:
            sections += self._ring_sections(key, budget)
        return tuple(sections)

    def _definitions(self, key: str, language_id: str, tree: tree_sitter.Tree, text: str,
                     cursor: int | None) -> tuple[Definition, ...]:
        document = self._open.get(key)
        if cursor is None or document is None:
            imports = find_imports(tree, language_id)
            return tuple(select_definitions(self.index, key, imports, text,
                                            self.budget_tokens))
        start = text.rfind("\n", 0, cursor) + 1
        end = text.find("\n", cursor)
        end = len(text) if end < 0 else end
        before, cursor_line, after = text[:start], text[start:end], text[end:]
        generation = self.index.generation
        cached = document.selection
        if cached is not None and cached.holds(generation, self.budget_tokens, before, after,
                                               cursor_line):
            return cached.chosen
        imports = find_imports(tree, language_id)
        chosen = tuple(select_definitions(self.index, key, imports, text, self.budget_tokens))
        document.selection = _Selection(generation, self.budget_tokens, before, after,
                                        imports.modules,
                                        _dotted_modules(cursor_line, imports.modules), chosen)
        return chosen

    def _definition_sections(self, chosen: list[Definition]) -> list[FileSection]:
        by_file: dict[str, list[Definition]] = {}
        for definition in chosen:
            by_file.setdefault(definition.key, []).append(definition)
        return [FileSection(self.path_of(key),
                            "\n\n".join(d.text for d in sorted(defs, key=lambda d: d.line)))
                for key, defs in sorted(by_file.items(), key=lambda item: self.path_of(item[0]))]

    def _recent_sections(self, key: str, budget: int,
                         cost: Callable[[str], int]) -> list[FileSection]:
        picked: list[FileSection] = []
        for other, line in reversed(self.recent.places()):  # most recent first
            document = self._open.get(other)
            if other == key or document is None:
                continue
            lines = document.text.split("\n")
            region = "\n".join(lines[max(0, line - RECENT_ABOVE):line + RECENT_BELOW + 1])
            if not region.strip() or cost(region) + 1 > budget:
                continue
            budget -= cost(region) + 1
            picked.append(FileSection(self.path_of(other), region))
        return picked[::-1]  # the most recent nearest the cursor's file

    def _ring_sections(self, key: str, budget: int) -> list[FileSection]:
        """Newest chunks first while they fit; one that does not is cut to its first lines
        (llama.vim sends whole 64-line chunks, which a budget this size cannot hold)."""
        picked: list[FileSection] = []
        for other, chunk in reversed(self.ring.chunks()):
            if other == key:
                continue
            lines = chunk.split("\n")
            while lines and estimate_tokens("\n".join(lines)) + 1 > budget:
                lines.pop()
            if not lines or len(lines) < min(MIN_RING_LINES, chunk.count("\n") + 1):
                continue
            text = "\n".join(lines)
            budget -= estimate_tokens(text) + 1
            picked.append(FileSection(self.path_of(other), text))
        return picked[::-1]
