"""The prompt's cross-file part: what other files say that the cursor's file may need.

Sources (setting `context_sources`):
- `definitions`: definitions of the names the document imports (anywhere in it), in
  import order, then of names it uses as `module.name`, found in open documents and the
  workspace index; every wanted signature first, whole definitions while room is left;
- `usages`: lines of other files that use the names the document imports (calls as the
  project writes them), those whose surroundings most resemble the block of lines around
  the cursor first (see `usages.py`);
- `recent`: the regions where the user last edited or rested in other open documents,
  most recent last, then the text the user last yanked or selected where the editor
  integration reports it (`flashls/didYank`), the latest last, nearest the cursor's file;
- `ring`: llama.vim's ring buffer, the baseline the benchmark compares with: a chunk of
  each document the user entered, oldest first, evicting chunks that mostly repeat.
All are bounded together by `context_budget_tokens` (definitions get half of it when
usages are on too). The definitions part depends on the document's imports and the index,
not on the cursor, and is ordered by file, so it stays the same while the user types and
moves in a file: the model's cache keeps it. The usages part comes after it and changes
only when the cursor enters another block of `ANCHOR_LINES` lines (when the prompt's
window often moves too), the imports change, or the index does.

With an indexed source on, the index also tells what may follow `module.` at the cursor
(`member_constraint`, from `members.py`): the engine keeps the suggestion's name to it.

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
    parse_source,
    stem_and_folder,
)
from flashls.context.imports import Imports, find_imports
from flashls.context.members import (
    chain_before,
    constraint_for,
    members_of,
    module_files,
)
from flashls.context.syntax import in_string_or_comment
from flashls.context.usages import Usage, query_words, select_usages
from flashls.context.window import ANCHOR_LINES, estimate_tokens
from flashls.engine.base import NameConstraint

SOURCES = ("definitions", "usages", "recent", "ring")
INDEXED_SOURCES = frozenset({"definitions", "usages"})  # what the workspace index feeds
RECENT_ABOVE = 12  # lines shown above and below a recent place
RECENT_BELOW = 8
MAX_RECENT = 8
MAX_YANKS = 4
MAX_YANK_LINES = 40  # of a longer yank, its first lines
MAX_YANK_CHARS = 2000
MIN_YANK_CHARS = 8  # a word or two is no context
RING_CHUNK_LINES = 64  # llama.vim's defaults: ring_chunk_size 64, ring_n_chunks 16
RING_CHUNKS = 16
RING_EVICT_SIMILARITY = 0.9
MIN_RING_LINES = 8  # a chunk cut shorter than this is left out
_SKIPPED_NAMES = frozenset({"__all__", "__version__", "__author__"})
# A word followed by a dot: `module.` (a name's use, or being typed).
_DOTTED = re.compile(r"(?<!\w)(\w+)\.")
# `module.name` uses, overlapping so that `a.b.c` yields (a, b) and (b, c).
_ATTRIBUTE = re.compile(r"(?<![\w.])(?=([A-Za-z_]\w*)\.([A-Za-z_]\w*))")


@dataclass(frozen=True)
class FileSection:
    """One other file's part of the prompt."""

    path: str  # as the model sees it: relative to the workspace folder
    text: str


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


class Yanks:
    """The texts the user last yanked or selected, and where from, least recent first;
    one of each text."""

    def __init__(self, limit: int = MAX_YANKS) -> None:
        self._limit = limit
        self._texts: OrderedDict[str, str] = OrderedDict()  # text -> document

    def add(self, key: str, text: str) -> bool:
        """Keep `text` (cut to MAX_YANK_LINES lines, MAX_YANK_CHARS characters) as the
        latest; whether it was kept (not too short)."""
        lines = [line.rstrip() for line in text.split("\n")[:MAX_YANK_LINES]]
        kept = "\n".join(lines).strip("\n")[:MAX_YANK_CHARS]
        if len("".join(kept.split())) < MIN_YANK_CHARS:
            return False
        self._texts.pop(kept, None)
        self._texts[kept] = key
        while len(self._texts) > self._limit:
            self._texts.popitem(last=False)
        return True

    def entries(self) -> list[tuple[str, str]]:
        """(document, text), least recent first."""
        return [(key, text) for text, key in self._texts.items()]

    def forget(self, key: str) -> None:
        """Drop what was yanked in `key`."""
        for text in [text for text, document in self._texts.items() if document == key]:
            del self._texts[text]


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
    imports: Imports  # the document's imports
    line_modules: frozenset[str]  # its imported modules the cursor's line uses as `module.`
    chosen: tuple[Definition, ...]

    def holds(self, generation: int, budget_tokens: int, before: str, after: str,
              line: str) -> bool:
        return (generation == self.generation and budget_tokens == self.budget_tokens
                and before == self.before and after == self.after
                and _dotted_modules(line, self.imports.modules) <= self.line_modules)


def _dotted_modules(text: str, modules: frozenset[str]) -> frozenset[str]:
    """Which of `modules` `text` uses as `module.`."""
    return frozenset(word for word in _DOTTED.findall(text) if word in modules)


@dataclass(frozen=True)
class _UsageChoice:
    """The usages chosen for a document's block of lines, and what they were chosen from:
    the block's words when it was first asked for (not its text since, so that typing in
    the block keeps the prompt's usages part)."""

    generation: int
    budget_tokens: int
    block: int  # the first line of the block
    bound: frozenset[str]  # the names the document's imports bind (`Imports.bound`)
    shown: frozenset[str]  # lines the definitions part shows already
    query: frozenset[str]
    chosen: tuple[Usage, ...]


@dataclass
class _OpenDocument:
    """An open document's latest text, whether the index has its definitions, and the
    definitions and usages last chosen for it (kept across its edits;
    `_Selection.holds` and `_UsageChoice` say when they may be reused)."""

    text: str
    language_id: str
    indexed: bool = False
    selection: _Selection | None = None
    usages: _UsageChoice | None = None


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
        self.yanks = Yanks()
        self.ring = Ring()
        self._open: dict[str, _OpenDocument] = {}
        self._last_entered = ""
        # (index generation, {(importing file, module as written): its attributes}).
        self._members: tuple[int, dict[tuple[str, str], frozenset[str] | None]] = (-1, {})

    def reset_index(self) -> None:
        """Start a new, empty index (the workspace is read again): every open document is
        indexed again when asked for, and nothing chosen from the old one is kept."""
        self.index = DefinitionIndex()
        self._members = (-1, {})  # its generations count from 0 again
        for document in self._open.values():
            document.indexed, document.selection, document.usages = False, None, None

    def is_open(self, key: str) -> bool:
        """Whether the editor has the document open (its text is newer than the disk's)."""
        return key in self._open

    @property
    def enabled(self) -> bool:
        return bool(self.sources) and self.budget_tokens > 0

    def document_changed(self, key: str, language_id: str, text: str) -> None:
        """An open document's new text."""
        previous = self._open.get(key)
        self._open[key] = (_OpenDocument(text, language_id) if previous is None else
                           _OpenDocument(text, language_id, selection=previous.selection,
                                         usages=previous.usages))

    def document_closed(self, key: str) -> None:
        """Its places and chunks go; its definitions stay (the file is still there)."""
        if self.sources & INDEXED_SOURCES:
            self._flush(key)
        self._open.pop(key, None)
        self.recent.forget(key)
        self.ring.forget(key)

    def forget(self, key: str) -> None:
        """Drop everything taken from `key`: its text, places, chunks, yanks and
        definitions (an excluded file)."""
        self._open.pop(key, None)
        self.recent.forget(key)
        self.ring.forget(key)
        self.yanks.forget(key)
        self.index.remove(key)

    def documents(self) -> set[str]:
        """Every document something is kept from: open, visited, entered, yanked or
        indexed."""
        return {*self._open, *(key for key, _ in self.recent.places()),
                *(key for key, _ in self.ring.chunks()),
                *(key for key, _ in self.yanks.entries()), *self.index.files()}

    def visited(self, key: str, line: int) -> None:
        """The user edits, asks or rests at `line` of `key`."""
        if "recent" in self.sources:
            self.recent.touch(key, line)
        if key != self._last_entered:
            self.entered(key, line)

    def yanked(self, key: str, text: str) -> None:
        """The user yanked (copied) or selected `text` in `key`."""
        if "recent" in self.sources:
            self.yanks.add(key, text)

    def entered(self, key: str, line: int) -> None:
        """The user switched to `key` (opened it, or came back to it) at `line`."""
        document = self._open.get(key)
        if document is not None and "ring" in self.sources:
            self.ring.enter(key, document.text, line)
            self._last_entered = key

    def _flush(self, key: str) -> None:
        document = self._open.get(key)
        if document is not None and not document.indexed:
            self.index.replace(key, *parse_source(key, document.language_id, document.text,
                                                  usages="usages" in self.sources))
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
        if self.sources & INDEXED_SOURCES and tree is not None:
            selection = self._selection(key, language_id, tree, text, cursor,
                                        self._definitions_budget())
            budget -= sum(estimate_tokens(d.text) + 1 for d in selection.chosen)
            sections += self._definition_sections(list(selection.chosen))
            if "usages" in self.sources:
                shown = frozenset(line.strip() for definition in selection.chosen
                                  for line in definition.text.split("\n"))
                usages = self._usages(key, selection.imports, text, cursor, budget, shown)
                budget -= sum(estimate_tokens(u.text) + 1 for u in usages)
                sections += self._usage_sections(usages)
        if "recent" in self.sources:
            yanks = self._yank_sections(budget)
            budget -= sum(estimate_tokens(section.text) + 1 for section in yanks)
            sections += self._recent_sections(key, budget, estimate_tokens) + yanks
        if "ring" in self.sources:
            sections += self._ring_sections(key, budget)
        return tuple(sections)

    def _definitions_budget(self) -> int:
        """The definitions part's share of the budget (half when usages are on too)."""
        if "definitions" not in self.sources:
            return 0
        return self.budget_tokens // 2 if self.sources >= INDEXED_SOURCES else self.budget_tokens

    def member_constraint(self, key: str, language_id: str, tree: tree_sitter.Tree | None,
                          text: str, cursor: int) -> NameConstraint | None:
        """The names the identifier at the `cursor` (a string offset) may become when the
        text before it is `module.` (or `module.na`) and the module is a workspace file
        whose names are known (`members.py`); None anywhere else, and without an indexed
        source. Cheap while the cursor is after no imported module's name: this runs at
        every keystroke."""
        if not self.sources & INDEXED_SOURCES or tree is None or language_id != "python":
            return None
        found = chain_before(text[text.rfind("\n", 0, cursor) + 1:cursor])
        if found is None:
            return None
        chain, typed = found
        imports = self._selection(key, language_id, tree, text, cursor,
                                  self._definitions_budget()).imports
        dotted = imports.module_of(chain[0])
        if dotted is None or in_string_or_comment(
                tree, len(text[:cursor].encode("utf-8", errors="surrogatepass"))):
            return None
        for part in chain[1:]:
            dotted = dotted + part if dotted.endswith(".") else f"{dotted}.{part}"
        return constraint_for(self._module_members(key, dotted), typed)

    def _module_members(self, importer: str, dotted: str) -> frozenset[str] | None:
        """The attributes of the module `importer` imports as `dotted`, cached until the
        index changes."""
        index = self.index
        generation, cache = self._members
        if generation != index.generation:
            cache = {}
            self._members = (index.generation, cache)
        if (importer, dotted) not in cache:
            files = module_files(dotted, importer, index.module_files)
            cache[(importer, dotted)] = members_of(files, index.exports, index.module_files,
                                                   index.files)
        return cache[(importer, dotted)]

    def _selection(self, key: str, language_id: str, tree: tree_sitter.Tree, text: str,
                   cursor: int | None, budget: int) -> _Selection:
        """The document's imports and the definitions chosen for them within `budget`."""
        document = self._open.get(key)
        position = len(text) if cursor is None else cursor
        start = text.rfind("\n", 0, position) + 1
        end = text.find("\n", position)
        end = len(text) if end < 0 else end
        before, cursor_line, after = text[:start], text[start:end], text[end:]
        generation = self.index.generation
        cached = None if document is None or cursor is None else document.selection
        if cached is not None and cached.holds(generation, budget, before, after, cursor_line):
            return cached
        imports = find_imports(tree, language_id)
        chosen = tuple(select_definitions(self.index, key, imports, text, budget)
                       if budget > 0 else ())
        selection = _Selection(generation, budget, before, after, imports,
                               _dotted_modules(cursor_line, imports.modules), chosen)
        if document is not None and cursor is not None:
            document.selection = selection
        return selection

    def _usages(self, key: str, imports: Imports, text: str, cursor: int | None,
                budget: int, shown: frozenset[str]) -> tuple[Usage, ...]:
        """Usages for the cursor's block, reusing the document's last choice while the
        block, the imports, the budget and the index stay the same (a changed index is
        ranked against the block's first words again, not its current text). Nothing is
        looked up in the index while the choice holds: this runs at every keystroke."""
        document = self._open.get(key)
        line = 0 if cursor is None else text.count("\n", 0, cursor)
        block = line // ANCHOR_LINES * ANCHOR_LINES
        generation = self.index.generation
        cached = None if document is None else document.usages
        bound = imports.bound()
        if cached is None or (cached.block, cached.bound, cached.shown,
                              cached.budget_tokens) != (block, bound, shown, budget):
            query = query_words(text.split("\n"), line, ANCHOR_LINES)
        elif cached.generation == generation:
            return cached.chosen
        else:
            query = cached.query
        candidates = self.index.usages(self._workspace_names(imports))
        chosen = tuple(select_usages(candidates, key, query, budget, shown))
        if document is not None:
            document.usages = _UsageChoice(generation, budget, block, bound,
                                           shown, query, chosen)
        return chosen

    def _definition_sections(self, chosen: list[Definition]) -> list[FileSection]:
        by_file: dict[str, list[Definition]] = {}
        for definition in chosen:
            by_file.setdefault(definition.key, []).append(definition)
        return [FileSection(self.path_of(key),
                            "\n\n".join(d.text for d in sorted(defs, key=lambda d: d.line)))
                for key, defs in sorted(by_file.items(), key=lambda item: self.path_of(item[0]))]

    def _workspace_names(self, imports: Imports) -> frozenset[str]:
        """The names whose usages may help: those the document imports that the workspace
        defines, and the top-level names of the workspace modules it imports whole (for
        `module.name`)."""
        index = self.index
        names = {name for name in imports.bound() if index.find(name)}
        for module in imports.modules:
            for file in index.module_files(module):
                names.add(module)
                names.update(definition.name for definition in index.of_file(file))
        return frozenset(names)

    def _usage_sections(self, usages: tuple[Usage, ...]) -> list[FileSection]:
        """One section a file, its lines in file order; the file with the most alike
        usage last (nearest the cursor's file)."""
        by_file: dict[str, list[Usage]] = {}
        for usage in usages:  # most alike first
            by_file.setdefault(usage.key, []).append(usage)
        return [FileSection(self.path_of(key),
                            "\n".join(u.text for u in sorted(found, key=lambda u: u.line)))
                for key, found in reversed(by_file.items())]

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

    def _yank_sections(self, budget: int) -> list[FileSection]:
        """The latest yanks that fit, least recent first (the latest nearest the cursor's
        file); from any document, the cursor's too: a yank far above the window is
        context the window does not hold."""
        picked: list[FileSection] = []
        for key, text in reversed(self.yanks.entries()):
            cost = estimate_tokens(text) + 1
            if cost <= budget:
                budget -= cost
                picked.append(FileSection(self.path_of(key), text))
        return picked[::-1]

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
