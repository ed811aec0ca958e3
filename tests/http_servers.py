"""Starting a real inference server for a test: a free loopback port, its log in a file
(llama.cpp logs the model's metadata at load and every request: a pipe nobody reads
would fill and block it), ready when a URL answers 200, stopped afterwards."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

READY_TIMEOUT_S = 120


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_server(name: str, command: Callable[[int], list[str]], ready_path: str,
                   log_path: Path) -> Iterator[str]:
    """Start `command(port)`, wait until `ready_path` answers 200, yield the base URL;
    a server that exits or never gets ready fails the test with its log's tail."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(command(port), stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    pytest.fail(f"{name} exited: {log_path.read_text()[-2000:]}")
                try:
                    if httpx.get(endpoint + ready_path, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            else:
                pytest.fail(f"{name} did not answer within {READY_TIMEOUT_S} s")
            yield endpoint
        finally:
            process.terminate()
            process.wait(timeout=30)
