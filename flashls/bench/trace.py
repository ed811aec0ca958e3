"""Typing traces for the benchmark: which lines of real files get re-typed, and the edits.

Only plain data lives here (sites, keystrokes, positions); nothing talks to a server.
"""

from __future__ import annotations

import io
import os
import random
import re
import sysconfig
import tokenize
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

MIN_SITE_CHARS = 12
MAX_FILE_BYTES = 200_000
SKIPPED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages",
                          "__pycache__", "node_modules"})
LANGUAGE_IDS = {
    ".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript",
    ".jsx": "javascriptreact", ".ts": "typescript", ".tsx": "typescriptreact", ".go": "go",
    ".rs": "rust", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".hpp": "cpp",
    ".java": "java",
}
COMMENT_MARKERS = ("#", "//", "/*", "*", "--", '"""', "'''")
_LINE_BREAK = re.compile(r"(?<=\n)|(?<=\r)(?!\n)")
_NOT_CODE_TOKENS = frozenset({tokenize.STRING, tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE,
                              tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING,
                              tokenize.ENDMARKER})


@dataclass(frozen=True)
class Position:
    """An LSP position: 0-based line and UTF-16 code-unit column."""

    line: int
    character: int

    def to_lsp(self) -> dict[str, int]:
        """The JSON-RPC shape."""
        return {"line": self.line, "character": self.character}


@dataclass(frozen=True)
class Site:
    """One line of one file that the benchmark re-types."""

    path: str
    line: int
    indent: str
    body: str  # the line after its indentation, without trailing whitespace


@dataclass(frozen=True)
class Keystroke:
    """One typed character, the document version it produces and what is left to type."""

    version: int
    typed: int  # characters of the body typed once this keystroke lands
    insert_at: Position
    text: str
    cursor: Position
    rest: str  # the part of the body still to type: the ideal suggestion


@dataclass(frozen=True)
class Trace:
    """Everything needed to replay one site: the opened text and the keystrokes."""

    site: Site
    uri: str
    language_id: str
    open_text: str
    keystrokes: tuple[Keystroke, ...]


def utf16_length(text: str) -> int:
    """Length of `text` in UTF-16 code units, the LSP's default column unit."""
    return len(text.encode("utf-16-le")) // 2


def utf16_to_index(text: str, offset: int) -> int:
    """The Python index in `text` that sits `offset` UTF-16 code units in."""
    units = 0
    for index, char in enumerate(text):
        if units >= offset:
            return index
        units += 2 if ord(char) > 0xFFFF else 1
    return len(text)


def split_lines(text: str) -> list[str]:
    """Lines with their endings, broken where LSP breaks them (\\n, \\r\\n, \\r only)."""
    lines = _LINE_BREAK.split(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def read_source(path: str) -> str | None:
    """A file's text with its line endings untouched, or None if it is not UTF-8 text."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError):
        return None


def language_id(path: str) -> str:
    """The LSP language id an editor would send for `path`."""
    return LANGUAGE_IDS.get(Path(path).suffix.lower(), "plaintext")


def default_corpus() -> list[str]:
    """The `.py` files of this Python's standard library, tests and site-packages left out."""
    return sorted(_walk(sysconfig.get_paths()["stdlib"], suffixes=(".py",)))


def collect_files(paths: Sequence[str]) -> list[str]:
    """Files named on the command line; directories contribute their source files."""
    found: set[str] = set()
    for path in paths:
        if os.path.isdir(path):
            found.update(_walk(path, suffixes=tuple(LANGUAGE_IDS)))
        elif os.path.isfile(path):
            found.add(os.path.abspath(path))
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    return sorted(found)


def _walk(root: str, suffixes: tuple[str, ...]) -> Iterator[str]:
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories
                                   if name not in SKIPPED_DIRS and not name.startswith("."))
        for name in sorted(names):
            path = os.path.abspath(os.path.join(directory, name))
            if name.endswith(suffixes) and os.path.getsize(path) <= MAX_FILE_BYTES:
                yield path


def _python_code_lines(text: str) -> set[int] | None:
    """0-based lines holding real code tokens; None when the file does not tokenize."""
    code_lines: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(text, newline=None).readline):
            if token.type not in _NOT_CODE_TOKENS:
                code_lines.add(token.start[0] - 1)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return None
    return code_lines


def _split_indent(line: str) -> tuple[str, str]:
    content = line.rstrip("\r\n")
    body = content.lstrip(" \t")
    return content[: len(content) - len(body)], body.rstrip()


def candidate_lines(path: str, text: str) -> list[int]:
    """0-based lines worth re-typing: code, not comments or docstrings, enough characters."""
    code_lines = _python_code_lines(text) if language_id(path) == "python" else None
    candidates = []
    for number, line in enumerate(split_lines(text)):
        body = _split_indent(line)[1]
        if sum(not char.isspace() for char in body) < MIN_SITE_CHARS:
            continue
        if body.startswith(COMMENT_MARKERS):
            continue
        if code_lines is not None and number not in code_lines:
            continue
        candidates.append(number)
    return candidates


def pick_sites(files: Sequence[str], count: int, seed: int) -> list[Site]:
    """`count` sites, one per file in a seeded shuffle, coming back round for more if needed."""
    rng = random.Random(seed)
    order = list(files)
    rng.shuffle(order)
    remaining: dict[str, list[int]] = {}
    sites: list[Site] = []
    while len(sites) < count and order:
        for path in list(order):
            if path not in remaining:
                remaining[path] = _shuffled_candidates(path, rng)
            if not remaining[path]:
                order.remove(path)
                continue
            sites.append(_site_at(path, remaining[path].pop()))
            if len(sites) == count:
                break
    return sites


def _shuffled_candidates(path: str, rng: random.Random) -> list[int]:
    text = read_source(path)
    candidates = candidate_lines(path, text) if text is not None else []
    rng.shuffle(candidates)
    return candidates


def _site_at(path: str, line: int) -> Site:
    text = read_source(path) or ""
    indent, body = _split_indent(split_lines(text)[line])
    return Site(path=path, line=line, indent=indent, body=body)


def build_trace(site: Site, text: str, max_keystrokes: int) -> Trace:
    """The opened text (the site's body removed) and one keystroke per body character."""
    lines = split_lines(text)
    original = lines[site.line]
    ending = original[len(original.rstrip("\r\n")):]
    lines[site.line] = site.indent + ending
    column = utf16_length(site.indent)
    keystrokes = []
    for index, char in enumerate(site.body[:max_keystrokes]):
        width = utf16_length(char)
        keystrokes.append(Keystroke(
            version=index + 2, typed=index + 1,
            insert_at=Position(site.line, column), text=char,
            cursor=Position(site.line, column + width), rest=site.body[index + 1:]))
        column += width
    return Trace(site=site, uri=Path(site.path).as_uri(), language_id=language_id(site.path),
                 open_text="".join(lines), keystrokes=tuple(keystrokes))


def build_traces(sites: Sequence[Site], max_keystrokes: int) -> list[Trace]:
    """One trace per site, read from disk."""
    return [build_trace(site, read_source(site.path) or "", max_keystrokes) for site in sites]
