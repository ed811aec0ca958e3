"""`flashls bench`: measurements of flashls driven over real JSON-RPC, as an editor would.

Only the command-line wiring lives here; `latency.py` holds the latency benchmark,
`session.py` the editing-session benchmark, `waiting.py` what a user who waits sees,
`users.py` many users sharing one inference server, `repo.py` cross-file completions,
`index.py` the cost of the workspace index.
"""

from __future__ import annotations

import argparse


def _run_latency(arguments: argparse.Namespace) -> int:
    from flashls.bench.latency import handler

    return handler(arguments)


def _run_session(arguments: argparse.Namespace) -> int:
    from flashls.bench.session import handler

    return handler(arguments)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench` and its sub-commands to the `flashls` parser."""
    from flashls.bench.latency import add_arguments

    bench = subparsers.add_parser("bench", help="measure flashls over JSON-RPC")
    kinds = bench.add_subparsers(dest="bench_command", required=True)
    latency = kinds.add_parser(
        "latency", help="replay typing against `flashls serve` and time each suggestion",
        description="Re-type lines of real files one character at a time, ask for an inline "
                    "completion after each keystroke, and compare flashls with a naive "
                    "baseline (no KV-prefix reuse, no speculative cache).")
    add_arguments(latency)
    latency.set_defaults(func=_run_latency)
    from flashls.bench.session import add_arguments as add_session_arguments

    session = kinds.add_parser(
        "session", help="play an editing session across open files and time what shows",
        description="Open several files, visit places across them (some of them twice), "
                    "delete and re-type each line's tail as VS Code or Neovim would drive "
                    "`flashls serve`, and report how often and how soon a suggestion shows.")
    add_session_arguments(session)
    session.set_defaults(func=_run_session)
    from flashls.bench.infill import add_infill_parser
    add_infill_parser(kinds)
    from flashls.bench.waiting import add_wait_parser
    add_wait_parser(kinds)
    from flashls.bench.repo import add_repo_parser
    add_repo_parser(kinds)
    from flashls.bench.users import add_users_parser
    add_users_parser(kinds)
    from flashls.bench.index import add_index_parser
    add_index_parser(kinds)
