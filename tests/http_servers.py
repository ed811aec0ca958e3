"""Inference servers for tests: a real one started on a free loopback port (its log in a
file: llama.cpp logs the model's metadata at load and every request, and a pipe nobody
reads would fill and block it), ready when a URL answers 200, stopped afterwards; and a
llama-server stand-in that misbehaves on purpose (`FaultyLlamaServer`)."""

from __future__ import annotations

import contextlib
import itertools
import json
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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


def client_gone(connection: socket.socket, pause_s: float) -> bool:
    """Whether the client closed its side, watched for during a pause (llama-server polls
    its socket the same way while it generates)."""
    deadline = time.monotonic() + pause_s
    while True:
        readable, _, _ = select.select([connection], [], [], 0.005)
        if readable:
            try:
                return connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True
        if time.monotonic() >= deadline:
            return False


# The faults a `FaultyLlamaServer` can have; HEALTHY answers as llama-server does.
HEALTHY = "healthy"
HANG = "hang"  # accepts every connection (GETs too) and never answers
WEDGE = "wedge"  # the next POST gets headers and then nothing; the others are answered
STALL = "stall"  # a few pieces, then nothing, the connection kept open
CLOSE = "close"  # a few pieces, then the connection closed in the middle of the body
ERROR_500 = "500"  # {"error": {"message": "out of memory"}}
BUSY_429 = "429"  # Retry-After: 1
HTML_502 = "502"  # a proxy's HTML page, scripts and all
EMPTY_200 = "empty"  # 200 with an empty body
ENDLESS = "endless"  # pieces forever, never a final event
PROXY_PAGE = (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title><script>"
              b"window.track('x')</script></head><body><h1>Bad Gateway</h1><p>The upstream "
              b"server did not answer.</p></body></html>")


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up is no news here (flashls closes replies it abandons)."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackServer:
    """An HTTP server on 127.0.0.1 answering on a thread of its own until `close`."""

    _server: ThreadingHTTPServer

    def _serve(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FaultyLlamaServer(LoopbackServer):
    """A llama-server stand-in on 127.0.0.1 whose fault (`fault`, one of the names above)
    can be switched while it runs. It streams `pieces` as `/completion` events, answers
    `/props` and `/health`, counts the POSTs it is sent, and never keeps a thread once the
    client has gone (a hung reply waits on the client's socket, not forever)."""

    def __init__(self, port: int = 0, pieces: tuple[str, ...] = ("_zz", " +", " 1", "\n"),
                 piece_s: float = 0.01) -> None:
        self.fault = HEALTHY
        self.pieces = pieces
        self.piece_s = piece_s
        self.posts = 0
        self.held = 0  # connections held open now (hung, wedged, stalled)
        self.empty_body = b""  # what EMPTY_200 sends: nothing, or events with no last one
        self._closing = threading.Event()
        self._lock = threading.Lock()  # handlers run on threads of their own
        self._serve(_QuietServer(("127.0.0.1", port), self._handler()))

    def close(self) -> None:
        self._closing.set()
        super().close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if stand_in.fault == HANG:
                    stand_in.hold(self)
                    return
                listing = {"/health": {"status": "ok"},
                           "/props": {"model_path": "/models/qwen2.5-coder-0.5b-q4_k_m.gguf",
                                      "total_slots": 1}}
                if self.path not in listing:
                    stand_in.reply(self, 404, b'{"error": "no such path"}')
                    return
                stand_in.reply(self, 200, json.dumps(listing[self.path]).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stand_in.posts += 1
                stand_in.answer(self, body)

        return Handler

    def answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        """One POST, as the current fault has it answered."""
        fault = self.fault
        if fault == WEDGE:
            self.fault = HEALTHY  # this one only
        if fault == HANG:
            self.hold(handler)
        elif fault == ERROR_500:
            self.reply(handler, 500, b'{"error": {"code": 500, "message": "out of memory"}}')
        elif fault == BUSY_429:
            self.reply(handler, 429, b'{"error": {"message": "too many requests"}}',
                       {"Retry-After": "1"})
        elif fault == HTML_502:
            self.reply(handler, 502, PROXY_PAGE, {"Content-Type": "text/html"})
        elif fault == EMPTY_200:
            self.reply(handler, 200, self.empty_body, {"Content-Type": "text/event-stream"})
        else:
            self.stream(handler, body, fault)

    def stream(self, handler: BaseHTTPRequestHandler, body: dict[str, Any], fault: str) -> None:
        """Server-sent events, one a chunk, ended (or not) as `fault` says."""
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        pieces: Iterable[str] = (() if body.get("n_predict") == 0 or fault == WEDGE
                                 else self.pieces)
        if fault == ENDLESS:
            pieces = itertools.cycle(self.pieces)
        elif fault in (STALL, CLOSE):
            pieces = self.pieces[:2]
        for piece in pieces:
            if client_gone(handler.connection, self.piece_s) or not _chunk(
                    handler, _event({"content": piece, "stop": False})):
                return
        if fault in (WEDGE, STALL):
            self.hold(handler)
        elif fault == CLOSE:
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
        elif _chunk(handler, _event({"content": "", "stop": True, "stop_type": "eos",
                                     "timings": {"prompt_n": 10, "cache_n": 5,
                                                 "predicted_n": len(self.pieces)}})):
            _chunk(handler, b"")

    def hold(self, handler: BaseHTTPRequestHandler) -> None:
        """Say nothing more until the client goes (or the stand-in closes)."""
        with self._lock:
            self.held += 1
        try:
            while not self._closing.is_set() and not client_gone(handler.connection, 0.05):
                pass
        finally:
            with self._lock:
                self.held -= 1
        handler.close_connection = True

    @staticmethod
    def reply(handler: BaseHTTPRequestHandler, status: int, data: bytes,
              headers: dict[str, str] | None = None) -> None:
        handler.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def _event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _chunk(handler: BaseHTTPRequestHandler, data: bytes) -> bool:
    """Write one chunk (b"" ends the body); False when the client has gone."""
    try:
        handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        handler.wfile.flush()
    except OSError:
        return False
    return True
