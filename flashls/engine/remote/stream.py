"""One streamed reply from an inference server, read on its own thread.

The engine's thread waits on a queue instead of a socket, so it keeps to its cancel token
and deadline while the server is silent (evaluating a long prompt), and a reply that a
deadline cut can be left open and read on later (`RemoteEngine.resume`).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from flashls.engine.base import EngineError
from flashls.engine.remote.connection import Trace


class End:
    """Queued after a reply's last event: the server closed the body normally."""


END = End()
Item = dict[str, Any] | End | EngineError


class ReplyStream:
    """A request sent and its reply's events, read by a daemon thread into a queue.

    Invariants:
    - only the reader thread touches the httpx response (sends, reads, closes it); `close`
      from another thread only marks the stream abandoned and shuts the socket down, which
      wakes a blocked read at once, whether the reply's headers came or not, and tells the
      server the client is gone (that is what cancels generation on llama-server, vLLM,
      llama_cpp.server and Ollama);
    - the socket is known from the moment it connects (`Connection.open`'s trace); one
      that connects after `close` is shut down at once;
    - the queue holds the reply's events in order, then exactly one End or EngineError,
      unless the stream was abandoned (then nothing more is queued);
    - `heard` turns true once the server answered (a reply's headers, an error status
      included) and stays true.
    """

    def __init__(self, send: Callable[[Callable[[], bool], Trace], httpx.Response],
                 events: Callable[[httpx.Response], Iterator[dict[str, Any]]],
                 describe_error: Callable[[httpx.HTTPError], EngineError]) -> None:
        self._send = send
        self._events = events
        self._describe_error = describe_error
        self._items: queue.Queue[Item] = queue.Queue()
        self._lock = threading.Lock()  # orders `_socket` against `_abandoned`
        self._socket: socket.socket | None = None
        self._abandoned = False
        self.heard = False
        self._thread = threading.Thread(target=self._read, name="flashls-remote-reply",
                                        daemon=True)
        self._thread.start()

    @property
    def abandoned(self) -> bool:
        """True once `close` was called."""
        return self._abandoned

    def next(self, timeout: float) -> Item | None:
        """The next event, End, or the EngineError that ended the reply; None when nothing
        came within `timeout` seconds."""
        try:
            return self._items.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def close(self) -> None:
        """Abandon the reply: the server sees the connection close and stops generating."""
        with self._lock:
            self._abandoned = True
            connected = self._socket
        if connected is not None:
            _shut_down(connected)

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's steps of the request, on the reader thread: keep the socket once
        connected (TLS replaces the plain one), note the server's answer."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            connected = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(connected, socket.socket):
                with self._lock:
                    self._socket = connected
                    abandoned = self._abandoned
                if abandoned:
                    _shut_down(connected)
        elif event == "http11.receive_response_headers.complete":
            self.heard = True

    def _read(self) -> None:
        response: httpx.Response | None = None
        try:
            response = self._send(lambda: self._abandoned, self._trace)
            if not self._abandoned:
                for event in self._events(response):
                    if self._abandoned:
                        break
                    self._put(event)
                self._put(END)
        except EngineError as error:
            self._put(error)
        except httpx.HTTPError as error:
            self._put(self._describe_error(error))
        except Exception as error:  # whatever breaks, the engine's thread must hear of it
            self._put(EngineError(f"could not read the server's reply: {error}"))
        finally:
            if response is not None:
                response.close()

    def _put(self, item: Item) -> None:
        if not self._abandoned:
            self._items.put(item)


def _shut_down(connected: socket.socket) -> None:
    """Shut the reply's socket down; closing it alone would not wake the reader blocked
    on it."""
    with contextlib.suppress(OSError):  # already closed, by either side
        connected.shutdown(socket.SHUT_RDWR)
