"""Which tree-sitter grammar serves which language, and which nodes matter for context.

Grammars come from the official `tree-sitter-<lang>` wheels; a language without one
gets `None` and the context falls back to a plain line window.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath, PurePosixPath
from urllib.parse import unquote, urlparse

import tree_sitter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LanguageSpec:
    """What the context builder needs to know of one language."""

    module: str
    entry: str
    # Nodes whose first line is a header worth keeping above the window (def, class, fn).
    scopes: frozenset[str]
    # Top-level nodes that bring names into the file (imports, includes, use).
    imports: frozenset[str]
    # Where the end of a line ends a statement unless a bracket is open (Python): the
    # nodes whose children are statements, and the keywords that only ever begin one
    # (they say where a statement begins where a parse error hides the structure). Empty
    # where statements end otherwise (`;`).
    statement_lists: frozenset[str] = frozenset()
    statement_keywords: frozenset[str] = frozenset()


_C_SCOPES = frozenset({"function_definition", "struct_specifier", "class_specifier",
                       "namespace_definition", "enum_specifier"})
_JS_SCOPES = frozenset({"function_declaration", "class_declaration", "method_definition",
                        "arrow_function", "function_expression", "generator_function_declaration",
                        "interface_declaration", "function"})
_JS_IMPORTS = frozenset({"import_statement"})

SPECS: dict[str, LanguageSpec] = {
    "python": LanguageSpec("tree_sitter_python", "language",
                           frozenset({"function_definition", "class_definition"}),
                           frozenset({"import_statement", "import_from_statement",
                                      "future_import_statement"}),
                           frozenset({"module", "block"}),
                           frozenset({"def", "class", "return", "import", "from", "raise",
                                      "try", "except", "finally", "elif", "while", "with",
                                      "pass", "break", "continue", "global", "nonlocal",
                                      "del", "assert"})),
    "javascript": LanguageSpec("tree_sitter_javascript", "language", _JS_SCOPES, _JS_IMPORTS),
    "javascriptreact": LanguageSpec("tree_sitter_javascript", "language", _JS_SCOPES,
                                    _JS_IMPORTS),
    "typescript": LanguageSpec("tree_sitter_typescript", "language_typescript", _JS_SCOPES,
                               _JS_IMPORTS),
    "typescriptreact": LanguageSpec("tree_sitter_typescript", "language_tsx", _JS_SCOPES,
                                    _JS_IMPORTS),
    "go": LanguageSpec("tree_sitter_go", "language",
                       frozenset({"function_declaration", "method_declaration",
                                  "type_declaration", "func_literal"}),
                       frozenset({"import_declaration", "package_clause"})),
    "rust": LanguageSpec("tree_sitter_rust", "language",
                         frozenset({"function_item", "impl_item", "struct_item", "trait_item",
                                    "mod_item", "enum_item"}),
                         frozenset({"use_declaration", "extern_crate_declaration"})),
    "c": LanguageSpec("tree_sitter_c", "language", _C_SCOPES,
                      frozenset({"preproc_include"})),
    "cpp": LanguageSpec("tree_sitter_cpp", "language", _C_SCOPES,
                        frozenset({"preproc_include", "using_declaration"})),
    "java": LanguageSpec("tree_sitter_java", "language",
                         frozenset({"method_declaration", "class_declaration",
                                    "interface_declaration", "constructor_declaration",
                                    "enum_declaration", "record_declaration"}),
                         frozenset({"import_declaration", "package_declaration"})),
}

_EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript",
    ".cjs": "javascript", ".jsx": "javascriptreact", ".ts": "typescript", ".mts": "typescript",
    ".tsx": "typescriptreact", ".go": "go", ".rs": "rust", ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".java": "java",
    ".lua": "lua", ".rb": "ruby", ".sh": "shellscript", ".md": "markdown",
}


def indexed_extensions() -> list[str]:
    """The file extensions whose definitions are indexed (languages with a spec), sorted."""
    return sorted(suffix.lstrip(".") for suffix, language in _EXTENSIONS.items()
                  if language in SPECS)


def top_level_nodes(root: tree_sitter.Node, named: bool = False) -> Iterator[tree_sitter.Node]:
    """The statements at the top of a file: `root`'s children, and those of any ERROR node
    among them. A file being typed in often fails to parse, and tree-sitter's recovery can
    wrap most of it, imports and definitions included, in one top-level ERROR node."""
    for child in (root.named_children if named else root.children):
        if child.type == "ERROR":
            yield from top_level_nodes(child, named)
        else:
            yield child


@functools.cache
def import_query(language_id: str) -> tree_sitter.Query | None:
    """A query capturing, as `import`, every import node of the language at any depth:
    Python imports inside `try:` blocks and functions are imports of the file too."""
    spec = SPECS.get(language_id)
    language = grammar(language_id)
    if spec is None or language is None:
        return None
    return tree_sitter.Query(language, "[" + " ".join(f"({kind})" for kind in
                                                      sorted(spec.imports)) + "] @import")


def key_path(key: str) -> PurePosixPath:
    """A document's key (a file URI, or a plain path) as a path."""
    return PurePosixPath(unquote(urlparse(key).path) if "://" in key else key)


def language_of_path(path: str) -> str:
    """The LSP language id for a file name; `plaintext` when unknown."""
    return _EXTENSIONS.get(PurePath(path).suffix.lower(), "plaintext")


@functools.cache
def grammar(language_id: str) -> tree_sitter.Language | None:
    """The tree-sitter grammar for a language id, or None when there is none installed."""
    spec = SPECS.get(language_id)
    if spec is None:
        return None
    try:
        module = importlib.import_module(spec.module)
        return tree_sitter.Language(getattr(module, spec.entry)())
    except (ImportError, AttributeError, ValueError) as error:
        log.warning("no tree-sitter grammar for %s: %s", language_id, error)
        return None
