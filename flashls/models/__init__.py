"""Model files: the manifest of known models, the on-disk store, and fetching into it.

The engine needs only `resolve_model_path` and `check_model_file`; loading a model is the
engine's business, not this package's.
"""

from flashls.models.install import install
from flashls.models.manifest import (
    HuggingFaceSource,
    ManifestError,
    ModelInfo,
    PypiPartsSource,
    default_model,
    find_model,
    known_models,
)
from flashls.models.pull import pull, pull_model
from flashls.models.staging import InstallError
from flashls.models.store import (
    ModelUnavailable,
    check_model_file,
    installed_problem,
    model_path,
    models_dir,
    resolve_model_path,
)

__all__ = [
    "HuggingFaceSource",
    "InstallError",
    "ManifestError",
    "ModelInfo",
    "ModelUnavailable",
    "PypiPartsSource",
    "check_model_file",
    "default_model",
    "find_model",
    "install",
    "installed_problem",
    "known_models",
    "model_path",
    "models_dir",
    "pull",
    "pull_model",
    "resolve_model_path",
]
