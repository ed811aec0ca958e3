"""The `flashls` command: serve, complete, bench and models, all over the same pipeline."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from flashls import __version__, settings
from flashls.logs import configure_logging


def _run_serve(arguments: argparse.Namespace) -> int:
    from flashls.server import serve

    config, problems = settings.from_arguments(arguments)
    configure_logging(config.log_level, arguments.log_file)
    for problem in problems:
        logging.getLogger("flashls").warning(problem)
    try:
        token = _tcp_token(arguments)
    except (OSError, ValueError) as error:
        print(f"flashls: {error}", file=sys.stderr)
        return 2
    return serve(config, tcp=arguments.tcp, engine_kind=settings.engine_switch(arguments),
                 allow_remote=arguments.allow_remote, token=token)


def _tcp_token(arguments: argparse.Namespace) -> str | None:
    """The token a TCP client must present (--token-file, else FLASHLS_TCP_TOKEN); with
    --allow-remote there always is one: a new one is printed when neither is set."""
    from flashls.transport import ensure_token, read_token

    if arguments.tcp and arguments.allow_remote:
        return ensure_token(arguments.token_file)
    return read_token(arguments.token_file)


def _run_complete(arguments: argparse.Namespace) -> int:
    from flashls.complete import complete_file

    config, problems = settings.from_arguments(arguments)
    configure_logging("warning" if config.log_level == "info" else config.log_level,
                       arguments.log_file)
    for problem in problems:
        print(f"flashls: {problem}", file=sys.stderr)
    return complete_file(config, arguments)


def _add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = subparsers.add_parser("serve", help="run the language server (stdio by default)")
    serve.add_argument("--tcp", metavar="HOST:PORT", default=None,
                       help="listen on TCP instead of stdio (HOST must be a loopback "
                            "address unless --allow-remote is given)")
    serve.add_argument("--allow-remote", action="store_true",
                       help="allow --tcp to bind a non-loopback address; clients must then "
                            "present a token (see --token-file)")
    serve.add_argument("--token-file", default=None,
                       help="TCP only: clients must send this file's text as "
                            "initializationOptions.authToken (also FLASHLS_TCP_TOKEN); with "
                            "--allow-remote and no token one is generated and printed")
    serve.add_argument("--log-file", default=None, help="write logs here instead of stderr")
    serve.add_argument("--stdio", action="store_true", help="accepted for editor compatibility")
    settings.add_arguments(serve)
    serve.set_defaults(func=_run_serve)


def _add_complete(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    complete = subparsers.add_parser("complete", help="print the completion at a position")
    complete.add_argument("file", help="source file")
    complete.add_argument("--line", type=int, required=True, help="0-based line")
    complete.add_argument("--col", type=int, required=True,
                          help="0-based column in UTF-16 code units (LSP convention)")
    complete.add_argument("--language", default=None,
                          help="language id; guessed from the file name by default")
    complete.add_argument("--json", action="store_true", help="print the result and timings "
                          "as JSON")
    complete.add_argument("--log-file", default=None, help="write logs here instead of stderr")
    settings.add_arguments(complete)
    complete.set_defaults(func=_run_complete)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, sub-commands included."""
    from flashls.bench import register as register_bench
    from flashls.models.cli import register as register_models

    parser = argparse.ArgumentParser(prog="flashls", description=__doc__)
    parser.add_argument("--version", action="version", version=f"flashls {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_serve(subparsers)
    _add_complete(subparsers)
    register_bench(subparsers)
    register_models(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `flashls` console script."""
    arguments = build_parser().parse_args(argv)
    try:
        return int(arguments.func(arguments))
    except KeyboardInterrupt:
        return 130
