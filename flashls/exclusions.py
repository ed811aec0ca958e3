"""Files never sent anywhere: no completion is offered in them and no context source
(definitions, usages, recent places, the ring, yanks) takes text from them.

Patterns are gitignore lines (`pathspec`), matched against a file's path relative to the
workspace folder it lies in, or its absolute path outside every folder. The built-in list
(`DEFAULT_PATTERNS`) always applies; the `exclude_files` setting adds patterns after it,
so a `!pattern` there takes a file back.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath
from urllib.parse import unquote, urlparse

import pathspec

# Secrets and credentials by their usual names; `.git/` holds remotes with passwords.
DEFAULT_PATTERNS = (
    ".env", ".env.*", "*.env", ".envrc", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks",
    "*.keystore", "*.kdbx", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*secret*",
    "*Secret*", "*SECRET*", "*credential*", "*Credential*", ".netrc", ".npmrc", ".pypirc",
    ".pgpass", ".htpasswd", ".git-credentials", ".git/", ".ssh/", ".aws/", ".gnupg/",
    ".docker/config.json", "*.tfstate", "*.tfvars",
)


def split_patterns(setting: str) -> list[str]:
    """The patterns of an `exclude_files` setting: comma-separated, blanks dropped."""
    return [part.strip() for part in setting.split(",") if part.strip()]


class Exclusions:
    """Decides whether a document (by URI) or a workspace file (by path) is excluded."""

    def __init__(self, extra: Iterable[str] = (), roots: Iterable[str] = ()) -> None:
        self._extra = tuple(extra)
        self._spec = pathspec.GitIgnoreSpec.from_lines([*DEFAULT_PATTERNS, *self._extra])
        self._roots = [_path_of(root) for root in roots]

    def with_roots(self, roots: Iterable[str]) -> Exclusions:
        """The same patterns, relative to these workspace folder URIs."""
        return Exclusions(self._extra, roots)

    def excludes_uri(self, uri: str) -> bool:
        """Whether the document at `uri` is excluded; documents that are not files
        (untitled buffers) are matched by their path part."""
        return self.excludes_path(_path_of(uri))

    def excludes_path(self, path: str) -> bool:
        """Whether the file at the absolute POSIX `path` is excluded."""
        pure = PurePosixPath(path)
        for root in self._roots:
            root_path = PurePosixPath(root)
            if root and pure.is_relative_to(root_path) and pure != root_path:
                return self._spec.match_file(str(pure.relative_to(root_path)))
        return self._spec.match_file(str(pure).lstrip("/"))


def _path_of(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme else uri
