"""The workspace's files, indexed for their definitions in a background thread.

The walk honours `.gitignore` files (each applies below its folder, as git reads them),
skips hidden folders and well-known dependency and build folders, and stops at
`max_files` files or `max_bytes` bytes read. It never blocks a request: it runs on its own
daemon thread, and the index it fills is safe to read meanwhile. A file the editor has
open is indexed from the editor's text instead (the service does that), so the walk
leaves alone any file already in the index.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from flashls.context.definitions import DefinitionIndex, parse_definitions
from flashls.context.languages import SPECS, language_of_path

log = logging.getLogger(__name__)

SKIPPED_FOLDERS = frozenset({"node_modules", "__pycache__", "site-packages", "venv",
                             "target", "build", "dist", "vendor", "third_party"})
MAX_FILE_BYTES = 256 * 1024


@dataclass
class IndexStats:
    """What a walk did, for logs and the benchmark."""

    files: int = 0
    bytes: int = 0
    skipped_large: int = 0
    seconds: float = 0.0
    finished: bool = False
    stopped_at_limit: bool = False
    errors: list[str] = field(default_factory=list)


def _ignore_spec(folder: Path) -> pathspec.GitIgnoreSpec | None:
    ignore = folder / ".gitignore"
    try:
        lines = ignore.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def source_files(root: Path) -> Iterator[Path]:
    """Files of languages with a grammar under `root`, in a stable order, minus ignored
    ones (every `.gitignore` on the way down applies to what lies below it)."""
    specs: list[tuple[Path, pathspec.GitIgnoreSpec]] = []
    for folder, folders, files in os.walk(root):
        here = Path(folder)
        specs = [(base, spec) for base, spec in specs if here.is_relative_to(base)]
        spec = _ignore_spec(here)
        if spec is not None:
            specs.append((here, spec))
        folders[:] = sorted(name for name in folders
                            if not name.startswith(".") and name not in SKIPPED_FOLDERS
                            and not _ignored(specs, here / name, True))
        for name in sorted(files):
            path = here / name
            if language_of_path(name) in SPECS and not _ignored(specs, path, False):
                yield path


def _ignored(specs: list[tuple[Path, pathspec.GitIgnoreSpec]], path: Path,
             is_folder: bool) -> bool:
    for base, rules in specs:
        relative = path.relative_to(base).as_posix() + ("/" if is_folder else "")
        if rules.match_file(relative):
            return True
    return False


class WorkspaceIndexer:
    """Walks workspace folders once, on a daemon thread, into a DefinitionIndex."""

    def __init__(self, index: DefinitionIndex, max_files: int, max_bytes: int) -> None:
        self._index = index
        self._max_files = max_files
        self._max_bytes = max_bytes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = IndexStats()

    def start(self, roots: list[Path]) -> None:
        """Index `roots` in the background (once; later calls do nothing)."""
        if self._thread is not None or not roots:
            return
        self._thread = threading.Thread(target=self._run, args=(roots,), daemon=True,
                                        name="flashls-index")
        self._thread.start()

    def stop(self) -> None:
        """Ask the walk to end after its current file."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the walk; whether it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self, roots: list[Path]) -> None:
        started = time.perf_counter()
        try:
            for root in roots:
                if not self._walk(root):
                    break
        except Exception as error:  # a walk must never take the server down
            log.exception("workspace indexing failed")
            self.stats.errors.append(str(error))
        self.stats.seconds = time.perf_counter() - started
        self.stats.finished = True
        log.info("indexed %d files (%d bytes) in %.1f s", self.stats.files, self.stats.bytes,
                 self.stats.seconds)

    def _walk(self, root: Path) -> bool:
        for path in source_files(root):
            if self._stop.is_set():
                return False
            if self.stats.files >= self._max_files or self.stats.bytes >= self._max_bytes:
                self.stats.stopped_at_limit = True
                return False
            self._index_file(path)
            time.sleep(0)  # let the server's threads run between files
        return True

    def _index_file(self, path: Path) -> None:
        key = path.as_uri()
        if self._index.has_file(key):  # open in the editor: its text is newer
            return
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                self.stats.skipped_large += 1
                return
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            self.stats.errors.append(f"{path}: {error}")
            return
        self.stats.files += 1
        self.stats.bytes += size
        self._index.add_if_absent(key, parse_definitions(key, language_of_path(path.name),
                                                          text))
