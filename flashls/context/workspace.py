"""The workspace's files, indexed for their definitions in a background thread.

The walk honours `.gitignore` files (each applies below its folder, as git reads them),
skips hidden folders and well-known dependency and build folders, and stops at
`max_files` files or `max_bytes` bytes read. It never blocks a request: it runs on its own
daemon thread, and the index it fills is safe to read meanwhile. A file the editor has
open is indexed from the editor's text instead (the service does that), so the walk
leaves alone any file already in the index, and a change on disk to an open file is
ignored.

The index follows the workspace afterwards: folders added and removed
(`workspace/didChangeWorkspaceFolders`) and files created, changed or deleted on disk
(`workspace/didChangeWatchedFiles`) are queued as tasks for the same thread.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from flashls.context.definitions import DefinitionIndex, parse_source
from flashls.context.languages import SPECS, language_of_path

log = logging.getLogger(__name__)

SKIPPED_FOLDERS = frozenset({"node_modules", "__pycache__", "site-packages", "venv",
                             "target", "build", "dist", "vendor", "third_party"})
MAX_FILE_BYTES = 256 * 1024
# Folders never walked as a workspace: the whole disk, the user's home, the kernel's.
REFUSED_ROOTS = (Path("/"), Path("/proc"), Path("/sys"), Path("/dev"))


def refused_root(root: Path) -> bool:
    """Whether `root` is a folder the index will not walk (see REFUSED_ROOTS), or one of
    their subfolders for the kernel's."""
    resolved = root.resolve()
    if resolved in (*REFUSED_ROOTS, Path.home().resolve()):
        return True
    return any(resolved.is_relative_to(kernel) for kernel in REFUSED_ROOTS[1:])


def read_regular_file(path: Path, max_bytes: int) -> tuple[str, int] | None:
    """The text and size of `path` if it is a regular file of at most `max_bytes`; None
    for anything else (a FIFO, socket or device is never waited on: opened without
    blocking, checked with fstat before reading). Raises OSError."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            return None
        with os.fdopen(descriptor, "rb", closefd=False) as stream:
            data = stream.read(max_bytes + 1)
    finally:
        os.close(descriptor)
    return data.decode("utf-8", errors="replace"), len(data)


@dataclass
class IndexStats:
    """What a walk did, for logs and the benchmark."""

    files: int = 0
    bytes: int = 0
    skipped_large: int = 0  # over MAX_FILE_BYTES, or not a regular file
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


def _under(key: str, root: Path) -> bool:
    """Whether the indexed file `key` (a file URI, as `Path.as_uri` writes it) lies in
    `root`."""
    return key.startswith(root.as_uri().rstrip("/") + "/")


@dataclass(frozen=True)
class _Task:
    """One piece of indexing work: walk or forget a folder, re-read or forget a file."""

    kind: str  # "walk" | "forget-root" | "file" | "forget-file" | "stop"
    path: Path


class WorkspaceIndexer:
    """Keeps a DefinitionIndex in step with workspace folders on disk, on one daemon thread.

    Invariants: tasks run one at a time in the order they were queued; `_pending` counts
    the tasks queued and not yet done (`join` waits for it to reach 0); a walk of a folder
    that was removed meanwhile stops at its next file; `is_open(key)` files (the editor's
    text is newer) are never read from disk nor forgotten; `excluded(path)` files are
    never read.
    """

    def __init__(self, index: DefinitionIndex, max_files: int, max_bytes: int,
                 is_open: Callable[[str], bool] = lambda key: False,
                 usages: bool = True,
                 excluded: Callable[[Path], bool] = lambda path: False) -> None:
        self._index = index
        self.keeps_usages = usages  # usage lines are kept too (the `usages` source is on)
        self._max_files = max_files
        self._max_bytes = max_bytes
        self._is_open = is_open
        self._excluded = excluded
        self._stop = threading.Event()
        self._tasks: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._roots: list[Path] = []  # folders added and not removed, in order
        self._thread: threading.Thread | None = None
        self.stats = IndexStats()

    def start(self, roots: list[Path]) -> list[Path]:
        """Index `roots` in the background (the workspace folders at start-up); those
        refused (see `refused_root`), for the caller to tell the user."""
        return self.add_roots(roots)

    def add_roots(self, roots: list[Path]) -> list[Path]:
        """Walk folders not walked yet; those refused (see `refused_root`)."""
        refused = [root for root in roots if refused_root(root)]
        for root in roots:
            if root not in refused and root not in self._roots:
                self._roots.append(root)
                self._queue(_Task("walk", root))
        return refused

    def remove_roots(self, roots: list[Path]) -> None:
        """Forget what was read from these folders (open files stay)."""
        for root in roots:
            if root in self._roots:
                self._roots.remove(root)
                self._queue(_Task("forget-root", root))

    def file_changed(self, path: Path, deleted: bool) -> None:
        """A file created, changed or deleted on disk, under one of the folders."""
        if any(path.is_relative_to(root) for root in self._roots):
            self._queue(_Task("forget-file" if deleted else "file", path))

    def _queue(self, task: _Task) -> None:
        if self._stop.is_set():
            return
        with self._idle:
            self._pending += 1
        self._tasks.put(task)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="flashls-index")
            self._thread.start()

    def stop(self) -> None:
        """End the thread after its current file; queued work is dropped."""
        self._stop.set()
        self._tasks.put(_Task("stop", Path()))

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the work queued so far is done (or the indexer stopped); whether
        it is."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0 or self._stop.is_set(),
                                       timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            task = self._tasks.get()
            if task.kind == "stop":
                break
            started = time.perf_counter()
            try:
                self._do(task)
            except Exception as error:  # indexing must never take the server down
                log.exception("workspace indexing failed")
                self.stats.errors.append(str(error))
            finally:
                self.stats.seconds += time.perf_counter() - started
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self.stats.finished = True
                        self._idle.notify_all()
        with self._idle:
            self._idle.notify_all()

    def _do(self, task: _Task) -> None:
        if task.kind == "walk":
            if self._walk(task.path):
                log.info("indexed %s: %d files (%d bytes) so far, %.1f s", task.path,
                         self.stats.files, self.stats.bytes, self.stats.seconds)
        elif task.kind == "forget-root":
            for key in self._index.files():
                if _under(key, task.path) and not self._is_open(key) and not any(
                        _under(key, root) for root in self._roots):  # nested in another
                    self._index.remove(key)
        elif task.kind == "file":
            key = task.path.as_uri()
            if not self._is_open(key) and language_of_path(task.path.name) in SPECS \
                    and task.path.is_file():
                self._read(task.path, replace=True)
        elif task.kind == "forget-file":
            key = task.path.as_uri()
            if not self._is_open(key):
                self._index.remove(key)

    def _walk(self, root: Path) -> bool:
        """Read `root`'s source files; False when stopped, removed or at a limit."""
        for path in source_files(root):
            if self._stop.is_set() or root not in self._roots:
                return False
            if self.stats.files >= self._max_files or self.stats.bytes >= self._max_bytes:
                self.stats.stopped_at_limit = True
                return False
            if not self._index.has_file(path.as_uri()):  # open in the editor: newer there
                self._read(path, replace=False)
            time.sleep(0)  # let the server's threads run between files
        return True

    def _inside(self, path: Path) -> bool:
        """Whether `path`, its links followed, lies in a workspace folder."""
        resolved = path.resolve()
        return any(resolved.is_relative_to(root.resolve()) for root in self._roots)

    def _read(self, path: Path, replace: bool) -> None:
        key = path.as_uri()
        if self._excluded(path) or not self._inside(path):
            self._index.remove(key)
            return
        try:
            read = read_regular_file(path, MAX_FILE_BYTES)
        except OSError as error:
            self.stats.errors.append(f"{path}: {error}")
            return
        if read is None:  # too large, or not a regular file (a FIFO, a device)
            self.stats.skipped_large += 1
            if replace:
                self._index.remove(key)
            return
        text, size = read
        self.stats.files += 1
        self.stats.bytes += size
        record = parse_source(key, language_of_path(path.name), text,
                              usages=self.keeps_usages)
        if replace:
            self._index.replace(key, *record)
        else:
            self._index.add_if_absent(key, *record)
