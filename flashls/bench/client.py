"""A small LSP client over a subprocess's stdio, built for timing: it stamps each response
when its last byte is read and numbers every message in arrival order. It answers the few
requests servers send to editors and reads the server's RSS; it knows nothing about completions.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shlex
import signal
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger(__name__)

REQUEST_CANCELLED = -32800
METHOD_NOT_FOUND = -32601
_NULL_ANSWERED = frozenset({"window/workDoneProgress/create", "client/registerCapability",
                            "client/unregisterCapability", "window/showMessageRequest",
                            "workspace/codeLens/refresh", "workspace/inlayHint/refresh",
                            "workspace/semanticTokens/refresh", "workspace/diagnostic/refresh",
                            "workspace/inlineValue/refresh"})

NotificationHandler = Callable[[Any, int], None]
"""Called with a notification's params and its arrival number (see `Response.sequence`)."""


class ServerError(RuntimeError):
    """The server exited, broke the protocol, or did not answer in time."""


@dataclass(frozen=True)
class Response:
    """A response, the `time.perf_counter()` at which it was fully read, and its arrival number.

    `sequence` counts every message read from the server, so a notification with a smaller
    number arrived before this response.
    """

    message: dict[str, Any]
    arrived_at: float
    sequence: int

    @property
    def error(self) -> dict[str, Any] | None:
        """The JSON-RPC error object, if the request failed."""
        error = self.message.get("error")
        return error if isinstance(error, dict) else None

    @property
    def result(self) -> Any:
        """The result (None for errors and null results)."""
        return self.message.get("result")


@dataclass(frozen=True)
class PendingRequest:
    """A request on the wire: its id, when it left, and where its response will land."""

    request_id: int
    method: str
    sent_at: float
    future: asyncio.Future[Response]


class LspClient:
    """One server process and the JSON-RPC conversation with it."""

    def __init__(self, process: asyncio.subprocess.Process, stderr_file: IO[bytes]) -> None:
        self._process = process
        self._stderr_file = stderr_file
        self._ids = itertools.count(1)
        self._pending: dict[int, PendingRequest] = {}
        self._write_lock = asyncio.Lock()
        self._closed = False
        self._failure: ServerError | None = None
        self._received = 0
        self._handlers: dict[str, NotificationHandler] = {}
        self.notifications: list[dict[str, Any]] = []  # those no handler takes
        self._reader = asyncio.create_task(self._read_forever())

    @classmethod
    async def start(cls, command: Sequence[str]) -> LspClient:
        """Start `command` with pipes on stdin/stdout; its stderr goes to a temporary file."""
        stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by kill()
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=stderr_file)
        except OSError as error:
            stderr_file.close()
            raise ServerError(f"cannot start {command[0]}: {error}") from error
        return cls(process, stderr_file)

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self._process.pid

    def subscribe(self, method: str, handler: NotificationHandler) -> None:
        """Hand notifications of `method` to `handler` in arrival order, instead of keeping them."""
        self._handlers[method] = handler

    def rss_mb(self) -> float | None:
        """The server's resident set size in MB (VmRSS); None once it is gone or off Linux."""
        if self._process.returncode is not None:
            return None
        return read_rss_mb(self._process.pid)

    async def send_request(self, method: str, params: Any) -> PendingRequest:
        """Send a request now; await `wait` (or the future) for its response."""
        if self._failure is not None:
            raise self._failure
        request_id = next(self._ids)
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        pending = PendingRequest(request_id, method, time.perf_counter(), future)
        self._pending[request_id] = pending
        await self._write({"jsonrpc": "2.0", "id": request_id, "method": method,
                           "params": params})
        return pending

    async def wait(self, pending: PendingRequest, timeout_s: float) -> Response | None:
        """The response, or None if it did not come within `timeout_s`."""
        try:
            return await asyncio.wait_for(asyncio.shield(pending.future), timeout_s)
        except TimeoutError:
            return None

    async def request(self, method: str, params: Any, timeout_s: float) -> Response:
        """Send a request and wait for its response; a timeout raises ServerError."""
        response = await self.wait(await self.send_request(method, params), timeout_s)
        if response is None:
            raise ServerError(f"no answer to {method} within {timeout_s:g} s")
        return response

    async def notify(self, method: str, params: Any) -> None:
        """Send a notification."""
        await self._write({"jsonrpc": "2.0", "method": method, "params": params})

    async def cancel(self, request_id: int) -> None:
        """Ask the server to drop a request, as an editor does when the user types on."""
        await self.notify("$/cancelRequest", {"id": request_id})

    async def close(self, timeout_s: float = 10.0) -> None:
        """`shutdown` then `exit`; the process is killed if it does not leave in time."""
        try:
            if self._process.returncode is None:
                await self.request("shutdown", None, timeout_s)
                await self.notify("exit", None)
                await asyncio.wait_for(self._process.wait(), timeout_s)
        except (TimeoutError, ServerError, ConnectionError) as error:
            log.warning("server did not shut down cleanly: %s", error)
        finally:
            await self.kill()

    async def exited(self, timeout_s: float) -> int | None:
        """The process's exit status once it has ended, or None if it runs on after
        `timeout_s` seconds."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._process.wait(), timeout_s)
        return self._process.returncode

    async def kill(self) -> None:
        """Stop the process now if it is still running, and release the pipes."""
        if self._closed:
            return
        self._closed = True
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._process.wait(), 5.0)
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self._stderr_file.close()

    def failure(self, label: str, command: Sequence[str], error: Exception) -> str:
        """A one-paragraph message for a server that failed: who, how it was started,
        what went wrong and the end of its stderr."""
        tail = self.stderr_tail()
        return (f"{label} ({shlex.join(command)}): {error}"
                + (f"\nits stderr ends with:\n{tail}" if tail else ""))

    def stderr_tail(self, limit: int = 2000) -> str:
        """The end of what the server wrote to stderr, for error messages."""
        if self._stderr_file.closed:
            return ""
        # pread leaves the offset alone: the server shares this file description.
        descriptor = self._stderr_file.fileno()
        size = os.fstat(descriptor).st_size
        tail = os.pread(descriptor, limit, max(0, size - limit))
        return tail.decode("utf-8", "replace")

    async def _write(self, message: dict[str, Any]) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        body = json.dumps(message, ensure_ascii=False).encode("utf-8")
        async with self._write_lock:
            try:
                stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
                await stdin.drain()
            except (ConnectionError, RuntimeError) as error:
                raise self._failure or ServerError(
                    f"cannot write to the server ({error!r}); stderr:\n{self.stderr_tail()}"
                ) from error

    async def _read_forever(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        try:
            while True:
                message = await _read_message(stdout)
                self._received += 1
                await self._dispatch(message, time.perf_counter(), self._received)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ValueError) as error:
            self._fail_pending(ServerError(await self._describe_stop(error)))

    async def _describe_stop(self, error: Exception) -> str:
        """Why the conversation ended: the exit status if the process is gone, else the error."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._process.wait(), 2.0)
        code = self._process.returncode
        if code is None:
            return f"the server broke the protocol ({error!r})"
        if code < 0:
            return f"the server was killed by {_signal_name(-code)}"
        return f"the server exited with status {code}"

    async def _dispatch(self, message: dict[str, Any], arrived_at: float, sequence: int) -> None:
        if "method" not in message:
            pending = self._pending.pop(message.get("id", -1), None)
            if pending is not None and not pending.future.done():
                pending.future.set_result(Response(message, arrived_at, sequence))
        elif "id" in message:
            await self._answer(message)
        elif message["method"] in self._handlers:
            self._handlers[message["method"]](message.get("params"), sequence)
        else:
            self.notifications.append(message)

    async def _answer(self, request: dict[str, Any]) -> None:
        """What an editor with no special features answers to a server's request."""
        method = request["method"]
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        if method == "workspace/configuration":
            reply["result"] = [{} for _ in request.get("params", {}).get("items", [])]
        elif method in _NULL_ANSWERED:
            reply["result"] = None
        else:
            reply["error"] = {"code": METHOD_NOT_FOUND, "message": f"{method} not supported"}
        await self._write(reply)

    def _fail_pending(self, error: ServerError) -> None:
        self._failure = error
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
                pending.future.exception()  # retrieved here: nobody may be waiting any more
        self._pending.clear()


def as_int(value: Any) -> int | None:
    """A JSON number as an int; None for anything else (missing, null, text)."""
    return int(value) if isinstance(value, int | float) else None


def read_rss_mb(pid: int) -> float | None:
    """VmRSS of a process from `/proc/<pid>/status`, in MB (10**6 bytes); None if unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except (OSError, ValueError, IndexError):
        return None
    return None


def _signal_name(number: int) -> str:
    try:
        return f"{signal.Signals(number).name} (signal {number})"
    except ValueError:
        return f"signal {number}"


async def _read_message(stream: asyncio.StreamReader) -> dict[str, Any]:
    """One Content-Length framed JSON-RPC message."""
    length = -1
    while True:
        header = await stream.readuntil(b"\r\n")
        if header == b"\r\n":
            break
        name, _, value = header.decode("ascii").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length < 0:
        raise ValueError("message without Content-Length")
    message = json.loads(await stream.readexactly(length))
    if not isinstance(message, dict):
        raise ValueError("message is not a JSON object")
    return message
