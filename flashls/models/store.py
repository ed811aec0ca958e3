"""Where model files live on disk, which file a `flashls.model` setting means, and whether
a file there is usable. Fetching models is elsewhere (`install.py`, `pull.py`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import platformdirs

from flashls.models.manifest import ModelInfo, default_model, find_model, known_models

GGUF_MAGIC = b"GGUF"
# Magic, version, tensor count and metadata count: anything shorter cannot be a GGUF file.
MIN_GGUF_BYTES = 24
MODELS_DIR_ENV = "FLASHLS_MODELS_DIR"
_HASH_CHUNK_BYTES = 4 * 1024 * 1024


class ModelUnavailable(Exception):
    """The model file is missing or unusable; the message names the file and the fix."""


def models_dir() -> Path:
    """The model store: `$FLASHLS_MODELS_DIR`, else `<user cache dir>/flashls/models`."""
    override = os.environ.get(MODELS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("flashls")) / "models"


def model_path(model: ModelInfo) -> Path:
    """Where `model` lives in the store (whether or not it is there)."""
    return models_dir() / model.file


def resolve_model_path(spec: str) -> Path:
    """The file a `flashls.model` setting names: empty, a manifest or pulled name, or a path."""
    spec = spec.strip()
    if not spec:
        return model_path(default_model())
    known = find_model(spec)
    if known is not None:
        return model_path(known)
    if _is_bare_name(spec):
        pulled = models_dir() / f"{spec}.gguf"
        if pulled.is_file():
            return pulled
    return Path(spec).expanduser()


def _is_bare_name(spec: str) -> bool:
    has_separator = any(separator in spec for separator in ("/", "\\", "~"))
    return not has_separator and not spec.endswith(".gguf")


def model_for_path(path: Path) -> ModelInfo | None:
    """The manifest model whose store file is `path`, if any."""
    try:
        resolved = path.expanduser().resolve()
    except OSError:
        return None
    return next((info for info in known_models()
                 if model_path(info).expanduser().resolve() == resolved), None)


def install_command(model: ModelInfo | None, *, force: bool = False) -> str:
    """The command that (re)fetches `model`, or the default model when None."""
    words = ["flashls", "models", "install"]
    if model is not None and not model.default:
        words.append(model.name)
    if force:
        words.append("--force")
    return " ".join(words)


def has_gguf_magic(path: Path) -> bool:
    """Whether the file starts with the GGUF magic bytes."""
    with path.open("rb") as handle:
        return handle.read(len(GGUF_MAGIC)) == GGUF_MAGIC


def file_sha256(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def check_model_file(path: Path) -> None:
    """Raise `ModelUnavailable` unless `path` looks like a complete GGUF model."""
    model = model_for_path(path)
    fix = (f"Run `{install_command(model, force=True)}` to fetch "
           f"{'it' if model else 'the default model'} again, or set `flashls.model` "
           "to a GGUF path.")
    if not path.exists():
        raise ModelUnavailable(
            f"Model file {path} does not exist. Run `{install_command(model)}` to fetch "
            f"{'it' if model else 'the default model'}, or set `flashls.model` to a GGUF path.")
    if not path.is_file():
        raise ModelUnavailable(f"Model path {path} is not a regular file. Set `flashls.model` "
                               "to a GGUF file, or a model name from `flashls models list`.")
    try:
        size = path.stat().st_size
        magic_ok = has_gguf_magic(path)
    except OSError as error:
        raise ModelUnavailable(f"Model file {path} cannot be read ({error}).") from error
    if size < MIN_GGUF_BYTES:
        raise ModelUnavailable(f"Model file {path} is only {size} bytes, too small to be a "
                               f"GGUF model (truncated download). {fix}")
    if not magic_ok:
        raise ModelUnavailable(f"Model file {path} is not a GGUF file (corrupt or partial "
                               f"download). {fix}")
    if model is not None and model.size is not None and size != model.size:
        raise ModelUnavailable(f"Model file {path} has {size} bytes but {model.name} has "
                               f"{model.size} (truncated or corrupt download). {fix}")


def file_problem(path: Path, *, size: int | None, sha256: str | None,
                 full_hash: bool = False) -> str | None:
    """Why `path` is not a good copy of a model of this size and hash, or None when it is.

    The fast check is existence, magic and size; `full_hash` also compares the sha256.
    """
    try:
        check_model_file(path)
        actual_size = path.stat().st_size
        if size is not None and actual_size != size:
            return f"{path} has {actual_size} bytes, expected {size}"
        if full_hash and sha256 is not None:
            actual = file_sha256(path)
            if actual != sha256:
                return f"{path} has sha256 {actual}, expected {sha256}"
    except (ModelUnavailable, OSError) as problem:
        return str(problem)
    return None


def installed_problem(model: ModelInfo, *, full_hash: bool = False) -> str | None:
    """Why `model`'s store file is not a good install, or None when it is."""
    return file_problem(model_path(model), size=model.size, sha256=model.sha256,
                        full_hash=full_hash)
