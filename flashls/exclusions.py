"""Where no suggestion is offered, and the files never sent anywhere.

Excluded files are never sent: no completion is offered in them and no context source
(definitions, usages, recent places, the ring, yanks) takes text from them. Their patterns
are the built-in list (`DEFAULT_PATTERNS`), then each workspace folder's `.flashlsignore`,
then the `exclude_files` setting; later lines win, so a `!pattern` takes a file back.
Silenced documents get no suggestion but still serve as context: a language in
`disabled_languages`, a file matching `disabled_files`; every excluded file is silenced too.

Patterns are gitignore lines (`pathspec`), matched against a file's path relative to the
workspace folder it lies in, or its absolute path outside every folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import pathspec

from flashls.context.workspace import read_regular_file

log = logging.getLogger(__name__)

# Secrets and credentials by their usual names; `.git/` holds remotes with passwords.
DEFAULT_PATTERNS = (
    ".env", ".env.*", "*.env", ".envrc", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks",
    "*.keystore", "*.kdbx", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*secret*",
    "*Secret*", "*SECRET*", "*credential*", "*Credential*", ".netrc", ".npmrc", ".pypirc",
    ".pgpass", ".htpasswd", ".git-credentials", ".git/", ".ssh/", ".aws/", ".gnupg/",
    ".docker/config.json", "*.tfstate", "*.tfvars",
)
# A workspace folder's own exclusions, in gitignore syntax.
IGNORE_FILE = ".flashlsignore"
IGNORE_FILE_MAX_BYTES = 1024 * 1024


def split_patterns(setting: str) -> list[str]:
    """The entries of a comma-separated setting (`exclude_files`, `disabled_files`,
    `disabled_languages`), blanks dropped."""
    return [part.strip() for part in setting.split(",") if part.strip()]


class _IgnoreFile:
    """A workspace folder's `.flashlsignore`: its lines, read again when the file changes
    (one `stat` a check)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: tuple[str, ...] = ()
        self._seen: tuple[int, int, int] | None = None  # mtime, size, inode; None: absent

    def reload(self) -> bool:
        """Read the file again if it appeared, changed or went; whether it did."""
        try:
            info = os.stat(self.path)
            seen: tuple[int, int, int] | None = (info.st_mtime_ns, info.st_size, info.st_ino)
        except OSError:
            seen = None
        if seen == self._seen:
            return False
        self._seen = seen
        self.lines = () if seen is None else self._read()
        return True

    def _read(self) -> tuple[str, ...]:
        try:
            read = read_regular_file(self.path, IGNORE_FILE_MAX_BYTES)
        except OSError as error:
            log.warning("%s cannot be read (%s); only the other exclusions apply",
                        self.path, error)
            return ()
        if read is None:
            log.warning("%s is not a regular file of at most %d bytes; only the other "
                        "exclusions apply", self.path, IGNORE_FILE_MAX_BYTES)
            return ()
        return tuple(read[0].splitlines())


class Exclusions:
    """Decides whether a document (by URI) or a workspace file (by path) is excluded, and
    whether a document is offered suggestions."""

    def __init__(self, extra: Iterable[str] = (), roots: Iterable[str] = (), *,
                 disabled_files: Iterable[str] = (),
                 disabled_languages: Iterable[str] = ()) -> None:
        self._extra = tuple(extra)
        self._disabled_files = tuple(disabled_files)
        self._disabled_languages = frozenset(name.lower() for name in disabled_languages)
        self._roots = [_path_of(root) for root in roots]
        self._ignore_files = {root: _IgnoreFile(Path(root) / IGNORE_FILE)
                              for root in self._roots if root}
        self._outside = pathspec.GitIgnoreSpec.from_lines([*DEFAULT_PATTERNS, *self._extra])
        self._silenced = pathspec.GitIgnoreSpec.from_lines(self._disabled_files)
        self._specs: dict[str, pathspec.GitIgnoreSpec] = {}
        self.refresh()

    def with_roots(self, roots: Iterable[str]) -> Exclusions:
        """The same patterns, relative to these workspace folder URIs."""
        return Exclusions(self._extra, roots, disabled_files=self._disabled_files,
                          disabled_languages=self._disabled_languages)

    def refresh(self) -> bool:
        """Read the folders' `.flashlsignore` files again where they changed; whether
        any did (then what was taken from files excluded now must be dropped)."""
        changed = [root for root, ignore in self._ignore_files.items() if ignore.reload()]
        if changed or len(self._specs) != len(self._ignore_files):
            # One assignment: the index thread reads `_specs` while this runs.
            self._specs = {root: pathspec.GitIgnoreSpec.from_lines(
                [*DEFAULT_PATTERNS, *ignore.lines, *self._extra])
                for root, ignore in self._ignore_files.items()}
        return bool(changed)

    def excludes_uri(self, uri: str) -> bool:
        """Whether the document at `uri` is excluded; documents that are not files
        (untitled buffers) are matched by their path part."""
        return self.excludes_path(_path_of(uri))

    def excludes_path(self, path: str) -> bool:
        """Whether the file at the absolute POSIX `path` is excluded."""
        root, relative = self._locate(path)
        return self._specs.get(root, self._outside).match_file(relative)

    def why_silent(self, uri: str, language_id: str) -> str:
        """Why no suggestion is offered in the document at `uri`, or "" if one is."""
        if self.excludes_uri(uri):
            return "the document is excluded (a secret file, `.flashlsignore` or " \
                   "`exclude_files`)"
        if language_id.lower() in self._disabled_languages:
            return f"suggestions are off for {language_id!r} (`disabled_languages`)"
        if self._silenced.match_file(self._locate(_path_of(uri))[1]):
            return "suggestions are off for this file (`disabled_files`)"
        return ""

    def _locate(self, path: str) -> tuple[str, str]:
        """The workspace folder holding `path` ("" for none) and the path relative to it."""
        pure = PurePosixPath(path)
        for root in self._roots:
            root_path = PurePosixPath(root)
            if root and pure.is_relative_to(root_path) and pure != root_path:
                return root, str(pure.relative_to(root_path))
        return "", str(pure).lstrip("/")


def _path_of(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme else uri
