"""What every `flashls bench` command shares: starting `flashls serve` as an editor would
(initialize, warm up, shut down), the handler's body, and the header of each report.

The JSON-RPC plumbing is `client.py`'s; the statistics and drawing are `report.py`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flashls import __version__
from flashls.bench import report
from flashls.bench.client import LspClient, ServerError
from flashls.bench.replay import INLINE_COMPLETION

WARMUP_TEXT = "def add(left, right):\n    return "


class BenchError(RuntimeError):
    """A run that cannot give numbers; the message says why."""


def initialize_params(workspace: str = "", name: str = "") -> dict[str, Any]:
    """What an editor with inline completion support says about itself; with `workspace`,
    one that opened that folder (named `name`, by default the folder's own name)."""
    params: dict[str, Any] = {
        "processId": None, "clientInfo": {"name": "flashls-bench", "version": __version__},
        "rootUri": None, "workspaceFolders": None, "initializationOptions": {},
        "capabilities": {
            "general": {"positionEncodings": ["utf-16"]},
            "workspace": {"configuration": True},
            "textDocument": {
                "synchronization": {"dynamicRegistration": False, "didSave": False},
                "inlineCompletion": {"dynamicRegistration": False},
            },
            "window": {"workDoneProgress": False},
        },
    }
    if workspace:
        uri = Path(workspace).absolute().as_uri()
        params.update(rootUri=uri, rootPath=workspace, workspaceFolders=[
            {"uri": uri, "name": name or Path(workspace).name}])
    return params


async def initialize_server(client: LspClient, timeout_s: float, workspace: str = "",
                            name: str = "") -> None:
    """`initialize` (see `initialize_params`) and `initialized`; fails unless inline
    completion is advertised."""
    response = await client.request("initialize", initialize_params(workspace, name),
                                    timeout_s)
    if response.error is not None:
        raise BenchError(f"initialize failed: {response.error}")
    capabilities = (response.result or {}).get("capabilities", {})
    if capabilities.get("inlineCompletionProvider") in (None, False):
        raise BenchError("the server does not advertise inlineCompletionProvider")
    await client.notify("initialized", {})


async def wait_until_ready(client: LspClient, timeout_s: float) -> None:
    """One request on a scratch document, so model loading is not timed as typing."""
    uri = (Path(tempfile.gettempdir()) / "flashls-bench-warmup.py").as_uri()
    await client.notify("textDocument/didOpen", {"textDocument": {
        "uri": uri, "languageId": "python", "version": 1, "text": WARMUP_TEXT}})
    response = await client.request(INLINE_COMPLETION, {
        "textDocument": {"uri": uri}, "position": {"line": 1, "character": 11},
        "context": {"triggerKind": 2}}, timeout_s)
    if response.error is not None:
        raise BenchError(f"warm-up request failed: {response.error}")
    await client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})


@dataclass
class StartedServer:
    """A `flashls serve` that answered its warm-up request, and how long that took."""

    client: LspClient
    startup_ms: float  # start to the `initialize` answer
    warmup_ms: float  # the warm-up request (model loading, mostly)
    warm_at: float  # time.perf_counter() once warm


async def start_server(command: Sequence[str], label: str, timeout_s: float,
                       workspace: str = "", name: str = "") -> StartedServer:
    """Start, initialize and warm up a server; killed again if that fails or the start
    is cancelled (another user's failed). `label` names it in error messages."""
    started = time.perf_counter()
    client = await LspClient.start(command)
    ready = False
    try:
        await initialize_server(client, timeout_s, workspace, name)
        initialized = time.perf_counter()
        await wait_until_ready(client, timeout_s)
        ready = True
    except (ServerError, BenchError) as error:
        raise BenchError(client.failure(label, command, error)) from error
    finally:
        if not ready:
            await client.kill()
    warm = time.perf_counter()
    return StartedServer(client, (initialized - started) * 1000, (warm - initialized) * 1000,
                         warm)


@contextlib.asynccontextmanager
async def serving(command: Sequence[str], label: str, timeout_s: float, workspace: str = "",
                  name: str = "") -> AsyncIterator[StartedServer]:
    """A warm server for the body of a `with`, shut down after it and killed whatever
    happens; a failure inside names the server and ends with its stderr."""
    server = await start_server(command, label, timeout_s, workspace, name)
    try:
        yield server
        await server.client.close()
    except (ServerError, BenchError) as error:
        raise BenchError(server.client.failure(label, command, error)) from error
    finally:
        await server.client.kill()


def run_header(benchmark: str, config: Any = None) -> dict[str, Any]:
    """The keys every report starts with: which benchmark, which flashls, when, where,
    and the config (a dataclass) when there is one."""
    header: dict[str, Any] = {
        "benchmark": benchmark, "flashls_version": __version__,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    if config is not None:
        header["config"] = dataclasses.asdict(config)
    return {**header, "python": sys.version.split()[0], "platform": platform.platform()}


def write_report(out_dir: Path, name: str, payload: Mapping[str, Any],
                 draw: Callable[[Path, Mapping[str, Any]], None]) -> tuple[Path, Path]:
    """`NAME-<timestamp>.json` and the `.png` that `draw` makes of it, in `out_dir`."""
    json_path, plot_path = report.report_paths(out_dir, name)
    report.write_json(json_path, payload)
    draw(plot_path, payload)
    return json_path, plot_path


def run_command(name: str, arguments: argparse.Namespace,
                make_config: Callable[[argparse.Namespace], Any],
                run: Callable[[Any], Coroutine[Any, Any, dict[str, Any]]],
                draw: Callable[[Path, Mapping[str, Any]], None],
                describe: Callable[[Any, dict[str, Any]], str]) -> int:
    """The body of a `flashls bench NAME` handler: config from the options, the run, what
    `describe` says of it (headline and table), and `NAME-<timestamp>.json` with the PNG
    `draw` makes. Without matplotlib it stops before running, rather than after with no PNG."""
    try:
        if (missing := report.plotting_missing()) is not None:
            raise BenchError(missing)
        config = make_config(arguments)
        payload = asyncio.run(run(config))
    except BenchError as error:
        print(f"flashls bench {name}: {error}", file=sys.stderr)
        return 1
    json_path, plot_path = write_report(Path(config.out_dir), name, payload, draw)
    print(describe(config, payload))
    print(f"wrote {json_path} and {plot_path}")
    return 0
