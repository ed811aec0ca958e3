"""Inference servers that a benchmark starts for itself: which llama-server binary and
model, the command line, a free loopback port, the wait until it serves, and the stop.

`bench users` and `bench session` start theirs through here; what they measure lives in
their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import IO

import httpx

from flashls.bench.harness import BenchError
from flashls.models import ModelUnavailable, check_model_file, resolve_model_path

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_llama_server.sh"
READY_POLL_S = 0.3


def llama_server_binary(configured: str) -> str:
    """The llama-server to start: the given path, the one scripts/build_llama_server.sh
    built (same llama.cpp as llama-cpp-python), or one on PATH."""
    if configured:
        return configured
    if BUILD_SCRIPT.is_file():
        built = subprocess.run(["bash", str(BUILD_SCRIPT), "--print-path"],
                               capture_output=True, text=True, check=False).stdout.strip()
        if built and Path(built).is_file():
            return built
    found = shutil.which("llama-server")
    if found is None:
        raise BenchError("no llama-server: build it with scripts/build_llama_server.sh or "
                         "pass --llama-server-binary PATH")
    return found


def model_file(model: str) -> str:
    """The GGUF a started server loads (`model`, else the default model)."""
    path = resolve_model_path(model)
    try:
        check_model_file(path)
    except ModelUnavailable as error:
        raise BenchError(str(error)) from error
    return str(path)


def llama_server_command(binary: str, model: str, port: int, slots: int, ctx_per_slot: int,
                         threads: int, batch: int | None = None) -> list[str]:
    """llama-server on a loopback port with `slots` parallel slots of `ctx_per_slot`
    tokens each, and its /metrics and /slots endpoints on; `batch` sets its logical and
    physical batch (a closed connection stops a prompt only between batches)."""
    sizes = [] if batch is None else ["-b", str(batch), "-ub", str(batch)]
    return [binary, "-m", model, "--host", "127.0.0.1", "--port", str(port),
            "-np", str(slots), "-c", str(slots * ctx_per_slot), "-t", str(threads),
            *sizes, "--metrics", "--slots"]


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(name: str, command: Sequence[str], endpoint: str, ready_path: str,
                  timeout_s: float) -> AsyncIterator[None]:
    """`command` running (its log in a temporary file) until the block ends, whatever
    happens; the block starts once `endpoint + ready_path` answers 200."""
    with tempfile.TemporaryFile() as log:
        process = await _start(command, log)
        try:
            await _wait_until_serving(process, name, endpoint + ready_path, log, timeout_s)
            yield
        finally:
            await _stop(process)


@contextlib.asynccontextmanager
async def started_on_free_port(name: str, command_for: Callable[[int], list[str]],
                               ready_path: str, timeout_s: float,
                               ) -> AsyncIterator[tuple[list[str], str]]:
    """`serving` the command made for a free loopback port; yields the command and its
    base URL."""
    port = free_port()
    command = command_for(port)
    endpoint = f"http://127.0.0.1:{port}"
    async with serving(name, command, endpoint, ready_path, timeout_s):
        yield command, endpoint


async def _start(command: Sequence[str], log: IO[bytes]) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
    except OSError as error:
        raise BenchError(f"cannot start {command[0]}: {error}") from error


async def _wait_until_serving(process: asyncio.subprocess.Process, name: str, url: str,
                              log: IO[bytes], timeout_s: float) -> None:
    """Poll `url` until it answers 200; the server's exit or silence is an error."""
    deadline = time.perf_counter() + timeout_s
    async with httpx.AsyncClient(timeout=2) as http:
        while time.perf_counter() < deadline:
            if process.returncode is not None:
                raise BenchError(f"{name} exited with status {process.returncode}; "
                                 f"its log ends with:\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(READY_POLL_S)
    raise BenchError(f"{name} did not answer {url} within {timeout_s:g} s; "
                     f"its log ends with:\n{_tail(log)}")


def _tail(log: IO[bytes], limit: int = 2000) -> str:
    # pread leaves the offset alone: the server shares this file description.
    descriptor = log.fileno()
    size = os.fstat(descriptor).st_size
    return os.pread(descriptor, limit, max(0, size - limit)).decode("utf-8", "replace")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
