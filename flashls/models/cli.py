"""`flashls models list|path|install|pull`: the command line over the model store.

Results go to stdout, progress and errors to stderr; errors are one line and exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from flashls.models.install import install, lookup_model
from flashls.models.manifest import ManifestError, ModelInfo, known_models
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

Handler = Callable[[argparse.Namespace], int]
_REPORTED_ERRORS = (ModelUnavailable, InstallError, ManifestError, OSError)


def _reporting_errors(handler: Handler) -> Handler:
    """Run `handler` with progress logged to stderr; turn expected errors into one line."""
    @functools.wraps(handler)
    def run(arguments: argparse.Namespace) -> int:
        try:
            with _progress_logging():
                return handler(arguments)
        except _REPORTED_ERRORS as error:
            print(f"flashls: {error}", file=sys.stderr)
            return 1
    return run


@contextlib.contextmanager
def _progress_logging() -> Iterator[None]:
    """Show the models package's info messages on stderr for the length of one command."""
    logger = logging.getLogger("flashls.models")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level, previous_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        logger.propagate = previous_propagate


def human_size(size: int | None) -> str:
    """`491400064` -> `469 MiB`; None -> `?`."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _install_state(info: ModelInfo) -> str:
    if not model_path(info).exists():
        return "no"
    return "yes" if installed_problem(info) is None else "broken"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[column]) for row in [header, *rows])
              for column in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def _unlisted_files() -> list[Path]:
    """GGUF files in the store that no manifest entry names (pulled with `--name` or by file)."""
    listed = {info.file for info in known_models()}
    store = models_dir()
    if not store.is_dir():
        return []
    return sorted(path for path in store.glob("*.gguf") if path.name not in listed)


@_reporting_errors
def _run_list(arguments: argparse.Namespace) -> int:
    rows = [[info.name + (" (default)" if info.default else ""), _install_state(info),
             human_size(info.size), info.fim, info.use] for info in known_models()]
    rows += [[path.stem, "yes", human_size(path.stat().st_size), "?", "pulled file"]
             for path in _unlisted_files()]
    print(_table(["name", "installed", "size", "fim", "use"], rows))
    print(f"\nmodel store: {models_dir()}")
    return 0


@_reporting_errors
def _run_path(arguments: argparse.Namespace) -> int:
    path = resolve_model_path(arguments.name or "")
    check_model_file(path)
    print(path)
    return 0


@_reporting_errors
def _run_install(arguments: argparse.Namespace) -> int:
    print(install(arguments.name, force=arguments.force, verify=arguments.verify))
    return 0


@_reporting_errors
def _run_pull(arguments: argparse.Namespace) -> int:
    if arguments.file is None:
        path = pull_model(lookup_model(arguments.source), force=arguments.force,
                          verify=arguments.verify)
    else:
        path = pull(arguments.source, arguments.file, name=arguments.name,
                    revision=arguments.revision, force=arguments.force, verify=arguments.verify)
    print(path)
    return 0


def _add_fetch_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="fetch again even if a good copy is already installed")
    parser.add_argument("--verify", action="store_true",
                        help="check an installed copy's sha256, not just its size, before "
                             "deciding it is good")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `flashls models` and its sub-commands."""
    models = subparsers.add_parser("models", help="list, locate, install and pull model files")
    actions = models.add_subparsers(dest="models_command", required=True)
    listing = actions.add_parser("list", help="known models and whether they are installed")
    listing.set_defaults(func=_run_list)
    where = actions.add_parser("path", help="print an installed model's file path")
    where.add_argument("name", nargs="?", default="",
                       help="manifest or pulled model name (default: the default model)")
    where.set_defaults(func=_run_path)
    installing = actions.add_parser("install", help="fetch a manifest model into the store")
    installing.add_argument("name", nargs="?", default=None,
                            help="manifest model name (default: the default model)")
    _add_fetch_flags(installing)
    installing.set_defaults(func=_run_install)
    pulling = actions.add_parser(
        "pull", help="fetch a GGUF from the Hugging Face hub (honours HF_ENDPOINT)")
    pulling.add_argument("source", metavar="REPO|NAME",
                         help="hub repository such as `Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF`, "
                              "or a manifest model hosted on the hub")
    pulling.add_argument("file", metavar="FILE", nargs="?", default=None,
                         help="GGUF file in the repository (omit with a manifest NAME)")
    pulling.add_argument("--name", default=None,
                         help="store the file as NAME.gguf so `flashls.model = NAME` finds it")
    pulling.add_argument("--revision", default="main", help="branch, tag or commit")
    _add_fetch_flags(pulling)
    pulling.set_defaults(func=_run_pull)
