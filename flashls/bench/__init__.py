"""`flashls bench`: measurements of flashls driven over real JSON-RPC, as an editor would.

Only the command-line wiring lives here; `latency.py` holds the latency benchmark,
`session.py` the editing-session benchmark, `waiting.py` what a user who waits sees,
`users.py` many users sharing one inference server, `repo.py` cross-file completions,
`index.py` the cost of the workspace index, `infill.py` the accuracy of KV-cache reuse.
What they share is in `harness.py`, `client.py`, `replay.py`, `trace.py` and `report.py`.
"""

from __future__ import annotations

import argparse
import importlib

# `flashls bench NAME` -> the module with its HELP, DESCRIPTION, add_arguments and handler.
COMMANDS = {"latency": "latency", "session": "session", "infill": "infill", "wait": "waiting",
            "repo": "repo", "users": "users", "index": "index"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench` and its sub-commands to the `flashls` parser."""
    bench = subparsers.add_parser("bench", help="measure flashls over JSON-RPC")
    kinds = bench.add_subparsers(dest="bench_command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"flashls.bench.{module_name}")
        parser = kinds.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(parser)
        parser.set_defaults(func=module.handler)
