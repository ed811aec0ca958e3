"""Shared test fixtures: where the real default model is, and how to start the server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from flashls.models import ModelUnavailable, check_model_file, resolve_model_path

SERVE = [sys.executable, "-m", "flashls", "serve"]


def default_model_path() -> Path | None:
    """The installed default model, or None (a failure under FLASHLS_REQUIRE_MODEL=1)."""
    path = resolve_model_path("")
    try:
        check_model_file(path)
    except ModelUnavailable as error:
        if os.environ.get("FLASHLS_REQUIRE_MODEL") == "1":
            pytest.fail(f"the default model is required here: {error}")
        return None
    return path


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The real default model; tests that need it skip only outside CI."""
    path = default_model_path()
    if path is None:
        pytest.skip("the default model is not installed (run `flashls models install`)")
    return path


def real_server_command() -> list[str]:
    """`flashls serve` on the real default model, two threads as on CI machines."""
    path = resolve_model_path("")
    return [*SERVE, "--model", str(path), "--n-threads", "2"]
