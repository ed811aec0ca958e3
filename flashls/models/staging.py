"""The one rule every download follows: build the file beside its target, verify it, and
only then rename it into place, so a bad download never replaces a good model.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from flashls.models.store import GGUF_MAGIC, MIN_GGUF_BYTES, file_sha256, has_gguf_magic

logger = logging.getLogger(__name__)


class InstallError(Exception):
    """Fetching a model failed; the existing model file, if any, is untouched."""


def partial_path(target: Path) -> Path:
    """The file a download of `target` is written to before it is verified."""
    return target.with_name(target.name + ".partial")


@contextlib.contextmanager
def staged_file(target: Path) -> Iterator[Path]:
    """Yield `target`'s partial path; if the block fails in any way, delete that file."""
    partial = partial_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)
    try:
        yield partial
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def verify_candidate(candidate: Path, *, label: str, size: int | None,
                     sha256: str | None, actual_sha256: str | None = None) -> None:
    """Raise `InstallError` unless `candidate` is a GGUF file of the expected size and hash.

    `actual_sha256` saves re-reading the file when the writer already hashed it.
    """
    actual_size = candidate.stat().st_size
    if size is not None and actual_size != size:
        raise InstallError(f"{label}: downloaded {actual_size} bytes, expected {size}; "
                           "the download is incomplete or the source changed")
    if actual_size < MIN_GGUF_BYTES or not has_gguf_magic(candidate):
        raise InstallError(f"{label}: the downloaded file is not a GGUF model (it does not "
                           f"start with {GGUF_MAGIC!r})")
    if sha256 is None:
        logger.info("%s: no sha256 in the manifest; checked only the GGUF magic", label)
        return
    actual = actual_sha256 if actual_sha256 is not None else file_sha256(candidate)
    if actual != sha256:
        raise InstallError(f"{label}: sha256 mismatch (got {actual}, expected {sha256}); "
                           "the download is corrupt")


def promote(candidate: Path, target: Path) -> None:
    """Flush `candidate` to disk and atomically rename it onto `target`."""
    with candidate.open("rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(candidate, target)
