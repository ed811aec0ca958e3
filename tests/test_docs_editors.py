"""docs/editors.md: its recipes parse, the flashls settings they set exist, its links resolve."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flashls import settings
from flashls.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "editors.md"
FENCE = re.compile(r"^ *```(\w+)\n(.*?)^ *```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\((?!https?://|#)([^)#]+)(?:#[^)]*)?\)")
REPO_PATH = re.compile(r"`((?:tests|editors|scripts|flashls)/[\w/-]+\.\w+)`")


def _blocks(language: str) -> list[str]:
    return [body for kind, body in FENCE.findall(PAGE.read_text(encoding="utf-8"))
            if kind == language]


def _flashls_sections(value: Any) -> Iterator[dict[str, Any]]:
    """Every object a recipe puts under a `flashls` key, however deep (a client's entry
    for the server, also named `flashls`, is told apart by its `command`)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == settings.SECTION and isinstance(inner, dict) and "command" not in inner:
                yield inner
            yield from _flashls_sections(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _flashls_sections(inner)


def _recipes() -> list[Any]:
    return ([json.loads(body) for body in _blocks("json")]
            + [tomllib.loads(body) for body in _blocks("toml")])


def test_every_json_and_toml_recipe_parses() -> None:
    assert len(_blocks("json")) >= 5 and len(_blocks("toml")) >= 1
    _recipes()  # raises on the first that does not parse


@pytest.mark.parametrize("section", [section for recipe in _recipes()
                                     for section in _flashls_sections(recipe)])
def test_server_settings_in_recipes_are_valid(section: dict[str, Any]) -> None:
    """A misspelt or out-of-range setting would be dropped with a warning in the editor."""
    merged, problems = settings.merge(Settings(), section)
    assert not problems
    assert merged != Settings()


def test_links_and_repository_paths_exist() -> None:
    text = PAGE.read_text(encoding="utf-8")
    targets = [PAGE.parent / link for link in LINK.findall(text)]
    targets += [ROOT / path for path in REPO_PATH.findall(text)]
    assert len(targets) >= 8
    missing = [str(target.relative_to(ROOT)) for target in targets
               if not target.resolve().exists()]
    assert not missing


def test_every_client_has_a_section() -> None:
    headings = re.findall(r"^## (.+)$", PAGE.read_text(encoding="utf-8"), re.MULTILINE)
    for client in ("VS Code", "Neovim", "Emacs", "JetBrains IDEs", "coc.nvim", "Helix",
                   "Sublime Text", "Kate", "Zed"):
        assert client in headings
