"""The wire under `flashls serve`: framing, message validation, and the stdio and TCP loops.

It replaces pygls's reader loop, which dies or stalls on malformed input; pygls still
handles every valid message. Nothing here knows about completions or imports the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import secrets
import select
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import cattrs
from lsprotocol.types import ResponseError, ResponseErrorMessage
from pygls.io_ import StdoutWriter
from pygls.protocol import JsonRPCProtocol
from pygls.server import JsonRPCServer

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8 * 1024
MAX_BODY_BYTES = 128 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
HANDSHAKE_TIMEOUT_S = 30.0
TOKEN_ENV = "FLASHLS_TCP_TOKEN"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
AUTH_REQUIRED = "authentication required"

MessageId = int | str

# -- Framing -------------------------------------------------------------------------------

_MARKER = b"content-length:"
_HEADER_START = re.compile(re.escape(_MARKER), re.IGNORECASE)
_FIELD_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_LENGTH_VALUE = re.compile(rb"[ \t]*([0-9]+)[ \t]*")
_LENGTH_PREFIX = re.compile(rb"[ \t]*[0-9]*[ \t]*\r?")
_BLANKS = re.compile(rb"[ \t\r\n]*")
_LINE_PEEK = 256  # enough of a line to tell a header from garbage
_NOT_A_HEADER = "expected a header line (a body without a Content-Length header?)"
# A header block inside an announced body: proof that the Content-Length lied long.
_INNER_HEADER = re.compile(
    rb"content-length:[ \t]{0,16}[0-9]{1,20}[ \t]{0,16}\r?\n"
    rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}:[^\r\n]{0,512}\r?\n){0,8}\r?\n",
    re.IGNORECASE)
_INNER_HEADER_MAX = 75 + 8 * 580  # the longest text _INNER_HEADER can match


@dataclass(frozen=True)
class FramingError:
    """Bytes that are not a well-framed message; `reason` is one line."""

    reason: str


Frame = bytes | FramingError


class _HeaderError(Exception):
    """A header line that cannot belong to a valid header block."""


@dataclass(frozen=True)
class _HeaderBlock:
    content_length: int
    end: int  # offset just past the blank line


@dataclass(frozen=True)
class _BadHeaders:
    reason: str
    resync_from: int


def _could_be_header_line(partial: bytes) -> bool:
    """Whether an unfinished line can still become a valid header line."""
    name, colon, value = partial.partition(b":")
    if not colon:
        name = name.rstrip(b"\r")
        return not name or _FIELD_NAME.fullmatch(name) is not None
    if _FIELD_NAME.fullmatch(name) is None:
        return False
    # A JSON string holding "Content-Length: 5" must not look like a header on its way.
    return name.lower() != b"content-length" or _LENGTH_PREFIX.fullmatch(value) is not None


def _content_length(line: bytes, known: int | None, max_body: int) -> int | None:
    """The Content-Length after reading header `line` (None while none was seen)."""
    name, colon, value = line.partition(b":")
    if not colon or _FIELD_NAME.fullmatch(name) is None:
        raise _HeaderError(_NOT_A_HEADER)
    if name.lower() != b"content-length":
        return known
    match = _LENGTH_VALUE.fullmatch(value)
    if match is None:
        raise _HeaderError("Content-Length is not a non-negative decimal number")
    digits = match.group(1).lstrip(b"0") or b"0"
    if len(digits) > len(str(max_body)) or int(digits) > max_body:
        shown = digits.decode() if len(digits) <= 20 else f"{digits[:20].decode()}..."
        raise _HeaderError(f"Content-Length {shown} exceeds the {max_body}-byte limit")
    if known is not None and known != int(digits):
        raise _HeaderError("conflicting Content-Length headers")
    return int(digits)


def _line_end(buf: bytearray, pos: int, block_end: int) -> int | None:
    """Where the header line at `pos` ends (its LF), or None while it is still arriving.

    Raises _HeaderError as soon as the line cannot be a header, so that garbage costs
    a short peek rather than a scan to the end of the header block.
    """
    head = bytes(buf[pos:pos + _LINE_PEEK])
    newline = head.find(b"\n")
    if newline >= 0:
        return pos + newline
    if not _could_be_header_line(head):
        raise _HeaderError(_NOT_A_HEADER)
    newline = buf.find(b"\n", pos, block_end)
    if newline < 0 and len(buf) >= block_end:
        raise _HeaderError("too long")
    return None if newline < 0 else newline


def _parse_header_block(
    buf: bytearray, start: int, max_header: int, max_body: int
) -> _HeaderBlock | _BadHeaders | None:
    """The header block at `start`, an error, or None while it is still incomplete."""
    pos, length, block_end = start, None, start + max_header
    while True:
        try:
            newline = _line_end(buf, pos, block_end)
            if newline is None:
                return None
            if newline >= block_end:
                raise _HeaderError("too long")
            line = bytes(buf[pos:newline]).rstrip(b"\r")
            if not line:
                if length is None:
                    return _BadHeaders("missing Content-Length header", newline + 1)
                return _HeaderBlock(length, newline + 1)
            length = _content_length(line, length, max_body)
        except _HeaderError as error:
            # Resume at the offending line (it may start the next message), past it if it
            # is the first: no line is parsed more than twice.
            reason = str(error)
            if reason == "too long":
                reason = f"header block longer than {max_header} bytes"
            return _BadHeaders(reason, max(pos, start + 1))
        pos = newline + 1


class FrameReader:
    """Sans-IO LSP framing: `feed` bytes, get bodies and framing errors back, in order.

    After an error it skips to the next `Content-Length:`, keeping only a short tail, so
    memory stays within max_body_bytes + max_header_bytes + one fed chunk. A body that
    holds a complete header block means its Content-Length lied long: raw CR/LF and
    `Content-Length:` outside a string never occur in JSON, so the body ends there.
    """

    def __init__(self, max_body_bytes: int = MAX_BODY_BYTES,
                 max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self._buf = bytearray()
        self._mode = "header"  # "header", "body" or "resync"
        self._in_garbage = False  # an error was reported and no body came since
        self._body_length = 0
        self._scanned = 0  # how far the body was searched for a header block

    def feed(self, data: bytes) -> list[Frame]:
        """Take the next bytes of the stream; return the frames they complete."""
        self._buf += data
        frames: list[Frame] = []
        while self._step(frames):
            pass
        return frames

    def buffered(self) -> int:
        """How many bytes are held back (for tests of the memory bound)."""
        return len(self._buf)

    def _step(self, frames: list[Frame]) -> bool:
        if self._mode == "resync":
            return self._resync()
        if self._mode == "header":
            return self._read_headers(frames)
        return self._read_body(frames)

    def _resync(self) -> bool:
        match = _HEADER_START.search(self._buf)
        if match is None:
            del self._buf[: max(0, len(self._buf) - len(_MARKER) + 1)]
            return False
        del self._buf[: match.start()]
        self._mode = "header"
        return True

    def _read_headers(self, frames: list[Frame]) -> bool:
        # Blank lines between messages are harmless: some clients end a body with one.
        blanks = _BLANKS.match(self._buf)
        del self._buf[: blanks.end() if blanks else 0]
        if not self._buf:
            return False
        block = _parse_header_block(self._buf, 0, self.max_header_bytes, self.max_body_bytes)
        if block is None:
            return False
        if isinstance(block, _BadHeaders):
            if not self._in_garbage:
                frames.append(FramingError(block.reason))
            self._in_garbage = True
            del self._buf[: block.resync_from]
            self._mode = "resync"
            return True
        del self._buf[: block.end]
        self._mode, self._body_length, self._scanned = "body", block.content_length, 0
        return True

    def _read_body(self, frames: list[Frame]) -> bool:
        next_header = self._header_inside_body()
        if next_header is not None:
            return self._emit_body(frames, next_header)
        if len(self._buf) < self._body_length or self._header_may_be_arriving():
            return False
        return self._emit_body(frames, self._body_length)

    def _emit_body(self, frames: list[Frame], length: int) -> bool:
        frames.append(bytes(self._buf[:length]))
        del self._buf[:length]
        self._mode, self._in_garbage = "header", False
        return True

    def _header_inside_body(self) -> int | None:
        """Where a complete header block starts inside the announced body, if one does."""
        pos = self._scanned
        while (match := _INNER_HEADER.search(self._buf, pos)) and match.start() < self._body_length:
            block = _parse_header_block(self._buf, match.start(), self.max_header_bytes,
                                        self.max_body_bytes)
            if isinstance(block, _HeaderBlock):
                return match.start()
            pos = match.start() + 1
        # A match may still grow out of the last bytes: search those again next time.
        self._scanned = max(self._scanned,
                            min(self._body_length, len(self._buf) - _INNER_HEADER_MAX))
        return None

    def _header_may_be_arriving(self) -> bool:
        """Whether the announced body ends with what may become a header block."""
        first = max(0, len(self._buf) - _INNER_HEADER_MAX)
        endpos = min(len(self._buf), self._body_length + len(_MARKER) - 1)
        for match in _HEADER_START.finditer(self._buf, first, endpos):
            if _parse_header_block(self._buf, match.start(), _INNER_HEADER_MAX,
                                   self.max_body_bytes) is None:
                return True
        return self._marker_may_start_at_end()

    def _marker_may_start_at_end(self) -> bool:
        """Whether the buffer ends, inside the body, with the start of `Content-Length:`."""
        first = max(0, len(self._buf) - len(_MARKER) + 1)
        tail = bytes(self._buf[first:]).lower()
        return any(_MARKER.startswith(tail[offset:])
                   for offset in range(min(len(tail), self._body_length - first)))


# -- Validation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorReply:
    """A JSON-RPC error response to send: code, one-line message, request id (or None)."""

    code: int
    message: str
    id: MessageId | None = None

    def to_json(self) -> dict[str, Any]:
        """The response object, ready for json.dumps."""
        return {"jsonrpc": "2.0", "id": self.id,
                "error": {"code": self.code, "message": self.message}}

    def to_bytes(self) -> bytes:
        """The framed response; Content-Length counts UTF-8 bytes."""
        body = json.dumps(self.to_json()).encode("utf-8")
        return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def _one_line(text: object, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _is_id(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def usable_id(message: object) -> MessageId | None:
    """The message's id when it is an integer or a string, else None."""
    candidate = message.get("id") if isinstance(message, dict) else None
    if isinstance(candidate, bool):
        return None
    return candidate if isinstance(candidate, (int, str)) else None


def decode_message(body: bytes) -> dict[str, Any] | ErrorReply:
    """The JSON-RPC object in `body`, or the error reply it earns."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return ErrorReply(PARSE_ERROR, f"Parse error: invalid UTF-8 at byte {error.start}")
    try:
        value = json.loads(text)
    except RecursionError:
        return ErrorReply(PARSE_ERROR, "Parse error: JSON nested too deeply")
    except ValueError as error:
        return ErrorReply(PARSE_ERROR, f"Parse error: {_one_line(error)}")
    if isinstance(value, list):
        return ErrorReply(INVALID_REQUEST, "Invalid request: batches are not supported "
                                           "(LSP sends one message per frame)")
    if not isinstance(value, dict):
        return ErrorReply(INVALID_REQUEST, "Invalid request: a message must be a JSON object")
    return _check_envelope(value)


def _check_envelope(message: dict[str, Any]) -> dict[str, Any] | ErrorReply:
    reason = _envelope_problem(message)
    if reason is None:
        return message
    return ErrorReply(INVALID_REQUEST, f"Invalid request: {reason}", usable_id(message))


def _envelope_problem(message: dict[str, Any]) -> str | None:
    if message.get("jsonrpc") != "2.0":
        return '"jsonrpc" must be "2.0"'
    is_request = "method" in message
    if is_request and not isinstance(message["method"], str):
        return '"method" must be a string'
    # An error response may carry a null id (the request's id could not be read).
    null_id_ok = not is_request and "error" in message
    if "id" in message and not _is_id(message["id"]) and not (
            null_id_ok and message["id"] is None):
        return '"id" must be an integer or a string'
    if not is_request and ("id" not in message or not {"result", "error"} & message.keys()):
        return 'need a "method", or an "id" with a "result" or an "error"'
    return None


def _structure_problem(error: Exception) -> str:
    """One line naming what did not fit, from pygls's wrapped cattrs error."""
    cause = error.__cause__ or error
    if isinstance(cause, cattrs.BaseValidationError):
        details = cattrs.transform_error(cause)
        return _one_line("; ".join(details[:3]) or cause)
    return _one_line(cause)


def to_pygls_message(protocol: JsonRPCProtocol, message: dict[str, Any]) -> Any:
    """pygls's typed message for `message`; an ErrorReply for a request with bad params;
    None for a notification with bad params (logged, dropped)."""
    if "method" in message and "params" not in message:
        # JSON-RPC lets params be omitted; pygls's fallback message types require the field.
        message = {**message, "params": None}
    try:
        return protocol.structure_message(message)
    except Exception as error:
        log.debug("structuring %r failed", message.get("method"), exc_info=True)
        return _unstructurable(message, _structure_problem(error))


def _unstructurable(message: dict[str, Any], problem: str) -> Any:
    method, msg_id = message.get("method"), usable_id(message)
    if method is not None and msg_id is not None:
        return ErrorReply(INVALID_PARAMS, f"Invalid params for {method}: {problem}", msg_id)
    if method is not None:
        log.warning("dropped notification %s: invalid params: %s", method, problem)
        return None
    log.warning("response %r does not fit its request: %s", msg_id, problem)
    # Fail the request that waits for this response rather than leave it waiting forever.
    return ResponseErrorMessage(id=msg_id, error=ResponseError(
        code=INVALID_PARAMS, message=f"invalid response: {problem}"))


# -- The connection loop -------------------------------------------------------------------


@dataclass
class _Session:
    """What one connection has done: the TCP server reads it once the loop ends."""

    auth_token: str | None = None
    handshake_deadline: float | None = None  # loop time by which `initialize` must come
    authenticated: bool = False
    initialized: bool = False  # an initialize request reached pygls

    def admitted(self) -> bool:
        """Whether messages may reach pygls (no token is needed, or it was given)."""
        return self.auth_token is None or self.authenticated


def exit_received(protocol: object) -> bool:
    """Whether the client sent `exit` (the protocol's `exit_code` is set)."""
    return getattr(protocol, "exit_code", None) is not None


def exit_code_of(protocol: object) -> int:
    """The process exit code: `exit`'s code, else 0 after `shutdown`, else 1."""
    code = getattr(protocol, "exit_code", None)
    if isinstance(code, int):
        return code
    shutdown = getattr(protocol, "shutdown_received", None)
    if shutdown is None:
        shutdown = getattr(protocol, "_shutdown", False)
    return 0 if shutdown else 1


def _record_exit(protocol: object, stop: SystemExit) -> None:
    """pygls's stock `exit` handler calls sys.exit: keep its code instead of dying."""
    if getattr(protocol, "exit_code", None) is None:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        setattr(protocol, "exit_code", code)  # noqa: B010 - the attribute may not exist


def send_error(protocol: JsonRPCProtocol, reply: ErrorReply) -> bool:
    """Write `reply` through pygls's writer; False once the client is gone."""
    log.info("error reply %s to id %r: %s", reply.code, reply.id, reply.message)
    try:
        protocol._send_data(reply.to_json())
    except (ConnectionError, OSError) as error:
        log.info("client connection lost: %s", _one_line(error))
        return False
    return True


def _authenticate(session: _Session, message: dict[str, Any] | ErrorReply
                  ) -> dict[str, Any] | ErrorReply:
    """Pass only an `initialize` request with the right authToken, the token removed."""
    msg_id = message.id if isinstance(message, ErrorReply) else usable_id(message)
    refused = ErrorReply(INVALID_REQUEST, AUTH_REQUIRED, msg_id)
    if isinstance(message, ErrorReply) or message.get("method") != "initialize":
        return refused
    params = message.get("params")
    options = params.get("initializationOptions") if isinstance(params, dict) else None
    token = options.get("authToken") if isinstance(options, dict) else None
    expected = (session.auth_token or "").encode("utf-8", "surrogatepass")
    if (not isinstance(options, dict) or not isinstance(token, str) or "id" not in message
            or not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), expected)):
        return refused
    del options["authToken"]
    session.authenticated = True
    return message


def _validate(frame: Frame, session: _Session) -> dict[str, Any] | ErrorReply:
    if isinstance(frame, FramingError):
        message: dict[str, Any] | ErrorReply = ErrorReply(
            PARSE_ERROR, f"Parse error: bad framing: {frame.reason}")
    else:
        message = decode_message(frame)
    if not session.admitted():
        message = _authenticate(session, message)
    return message


def _dispatch(protocol: JsonRPCProtocol, message: Any) -> bool:
    """Hand `message` to pygls; False when the connection should end."""
    try:
        protocol.handle_message(message)
    except SystemExit as stop:
        _record_exit(protocol, stop)
        return False
    except ConnectionError as error:
        log.info("client connection lost: %s", _one_line(error))
        return False
    except Exception as error:
        log.error("handling %s failed: %s", getattr(message, "method", "a message"),
                  _one_line(error))
        log.debug("traceback", exc_info=True)
    return True


def _handle_frame(protocol: JsonRPCProtocol, session: _Session, frame: Frame) -> bool:
    """Validate, then answer or dispatch one frame; False when the connection should end."""
    message = _validate(frame, session)
    if isinstance(message, ErrorReply):
        return send_error(protocol, message) and session.admitted()
    typed = to_pygls_message(protocol, message)
    if isinstance(typed, ErrorReply):
        return send_error(protocol, typed)
    if typed is None:
        return True
    if message.get("method") == "initialize" and "id" in message:
        session.initialized = True
    return _dispatch(protocol, typed)


async def _read_chunk(reader: asyncio.StreamReader, session: _Session, max_chunk: int) -> bytes:
    """The next chunk, b"" at EOF or when the handshake deadline passes."""
    try:
        if session.initialized or session.handshake_deadline is None:
            return await reader.read(max_chunk)
        remaining = session.handshake_deadline - asyncio.get_running_loop().time()
        return await asyncio.wait_for(reader.read(max_chunk), max(remaining, 0.0))
    except (TimeoutError, asyncio.TimeoutError):  # noqa: UP041 - distinct before 3.11
        log.warning("client sent no initialize request in time; closing the connection")
    except ConnectionError as error:
        log.info("client connection lost: %s", _one_line(error))
    return b""


async def _drain(protocol: JsonRPCProtocol) -> bool:
    """Wait while a socket writer's buffer is full; False once the client is gone."""
    drain = getattr(protocol.writer, "drain", None)
    if drain is None:
        return True
    try:
        await drain()
    except ConnectionError:
        return False
    return True


async def _serve_connection(reader: asyncio.StreamReader, protocol: JsonRPCProtocol,
                            session: _Session, max_chunk: int) -> None:
    frames = FrameReader()
    while not exit_received(protocol):
        chunk = await _read_chunk(reader, session, max_chunk)
        if not chunk:
            return
        for frame in frames.feed(chunk):
            if not _handle_frame(protocol, session, frame) or exit_received(protocol):
                return
        if not await _drain(protocol):
            return


async def run_connection(reader: asyncio.StreamReader, protocol: JsonRPCProtocol, *,
                         max_chunk: int = CHUNK_BYTES, auth_token: str | None = None) -> None:
    """Serve one client until EOF or `exit`: frame, validate, answer errors, dispatch."""
    await _serve_connection(reader, protocol, _Session(auth_token), max_chunk)


# -- stdio ---------------------------------------------------------------------------------


class _PumpTransport(asyncio.ReadTransport):
    """Flow control between the stdin thread and the StreamReader it feeds."""

    def __init__(self) -> None:
        super().__init__()
        self.may_read = threading.Event()
        self.may_read.set()

    def pause_reading(self) -> None:
        self.may_read.clear()

    def resume_reading(self) -> None:
        self.may_read.set()

    def is_reading(self) -> bool:
        return self.may_read.is_set()


def _read_fd(fd: int) -> bytes:
    """One chunk from `fd` (a pipe, file or tty, blocking or not); b"" at EOF or error."""
    while True:
        try:
            return os.read(fd, CHUNK_BYTES)
        except BlockingIOError:
            select.select([fd], [], [])
        except OSError as error:
            log.info("stdin closed: %s", _one_line(error))
            return b""


def _wait_unless_closed(event: threading.Event, loop: asyncio.AbstractEventLoop) -> bool:
    while not event.wait(0.2):
        if loop.is_closed():
            return False
    return True


def _deliver(reader: asyncio.StreamReader, chunk: bytes, delivered: threading.Event) -> None:
    if chunk:
        reader.feed_data(chunk)
    else:
        reader.feed_eof()
    delivered.set()


def _pump_fd(fd: int, loop: asyncio.AbstractEventLoop, reader: asyncio.StreamReader,
             transport: _PumpTransport) -> None:
    """Copy `fd` into `reader` from a thread, one chunk in flight at a time."""
    while _wait_unless_closed(transport.may_read, loop):
        chunk = _read_fd(fd)
        delivered = threading.Event()
        try:
            loop.call_soon_threadsafe(_deliver, reader, chunk, delivered)
        except RuntimeError:  # the loop has closed
            return
        if not chunk or not _wait_unless_closed(delivered, loop):
            return


async def _serve_stdio(protocol: JsonRPCProtocol, stdin_fd: int) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK_BYTES)
    transport = _PumpTransport()
    reader.set_transport(transport)
    threading.Thread(target=_pump_fd, args=(stdin_fd, loop, reader, transport),
                     name="flashls-stdin", daemon=True).start()
    await run_connection(reader, protocol)


class ClientWriter(StdoutWriter):
    """pygls's stdout writer, except that once the client has closed the pipe (an editor
    that quits while an answer is on its way) replies are dropped with one log line:
    pygls logs every BrokenPipeError with its traceback and raises it again."""

    def __init__(self, stdout: BinaryIO) -> None:
        super().__init__(stdout)
        self.gone = False

    def write(self, data: bytes) -> None:
        """Write and flush, unless the client is gone."""
        if self.gone:
            return
        try:
            super().write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.gone = True
            log.info("the client closed its end of the pipe; replies are dropped")


def run_stdio(server: JsonRPCServer, stdin_fd: int, stdout: BinaryIO) -> int:
    """Serve one client over stdin/stdout; return the process exit code."""
    protocol = server.protocol
    protocol.set_writer(ClientWriter(stdout))
    try:
        asyncio.run(_serve_stdio(protocol, stdin_fd))
    except SystemExit as stop:
        _record_exit(protocol, stop)
    except (KeyboardInterrupt, BrokenPipeError) as error:
        log.info("stopping: %s", type(error).__name__)
    finally:
        server.shutdown()  # type: ignore[no-untyped-call]
    return exit_code_of(protocol)


# -- TCP -----------------------------------------------------------------------------------


def _announce(address: str) -> None:
    print(f"flashls: listening on {address}", file=sys.stderr, flush=True)


def _format_address(sockname: Any) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


class _OneClientAtATime:
    """The TCP connection handler: one client at a time; `finished` says stop serving."""

    def __init__(self, protocol: JsonRPCProtocol, auth_token: str | None,
                 handshake_timeout_s: float | None) -> None:
        self.protocol = protocol
        self.auth_token = auth_token
        self.handshake_timeout_s = handshake_timeout_s
        self.busy = False
        self.finished = asyncio.Event()

    def _new_session(self) -> _Session:
        deadline = None
        if self.handshake_timeout_s is not None:
            deadline = asyncio.get_running_loop().time() + self.handshake_timeout_s
        return _Session(self.auth_token, deadline)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if self.busy or self.finished.is_set():
            log.warning("refused client %s: another client is connected", peer)
            await _close(writer)
            return
        self.busy = True
        session = self._new_session()
        log.info("client %s connected", peer)
        try:
            self.protocol.set_writer(writer)
            await _serve_connection(reader, self.protocol, session, CHUNK_BYTES)
        except Exception as error:
            log.error("connection from %s failed: %s", peer, _one_line(error))
            log.debug("traceback", exc_info=True)
        finally:
            await _close(writer)
            self._client_left(session, peer)

    def _client_left(self, session: _Session, peer: object) -> None:
        if session.initialized or exit_received(self.protocol):
            log.info("client %s left; stopping", peer)
            self.finished.set()
        else:
            log.info("client %s left before initialize; still listening", peer)
            self.busy = False


async def serve_tcp(server: JsonRPCServer, host: str, port: int, *,
                    auth_token: str | None = None,
                    handshake_timeout_s: float | None = HANDSHAKE_TIMEOUT_S,
                    announce: Callable[[str], None] | None = None) -> None:
    """Serve one client at a time on host:port until an initialized client leaves or exits.

    Each listening address goes to `announce`, by default a line on stderr."""
    handler = _OneClientAtATime(server.protocol, auth_token, handshake_timeout_s)
    listener = await asyncio.start_server(handler, host, port, limit=CHUNK_BYTES)
    for sock in listener.sockets:
        (announce or _announce)(_format_address(sock.getsockname()))
    async with listener:
        await handler.finished.wait()


def run_tcp(server: JsonRPCServer, host: str, port: int, *, auth_token: str | None,
            handshake_timeout_s: float | None = HANDSHAKE_TIMEOUT_S) -> int:
    """Serve over TCP (see serve_tcp); return the process exit code, 2 if it cannot listen."""
    protocol = server.protocol
    try:
        asyncio.run(serve_tcp(server, host, port, auth_token=auth_token,
                              handshake_timeout_s=handshake_timeout_s))
    except SystemExit as stop:
        _record_exit(protocol, stop)
    except KeyboardInterrupt:
        log.info("stopping: KeyboardInterrupt")
    except OSError as error:
        print(f"flashls: cannot listen on {host}:{port}: {error.strerror or error}",
              file=sys.stderr)
        return 2
    finally:
        server.shutdown()  # type: ignore[no-untyped-call]
    return exit_code_of(protocol)


# -- Tokens --------------------------------------------------------------------------------


def new_token() -> str:
    """A fresh random token for TCP clients."""
    return secrets.token_urlsafe(24)


def read_token(token_file: str | None = None,
               environ: Mapping[str, str] | None = None) -> str | None:
    """The token from `token_file` (its first line), else from $FLASHLS_TCP_TOKEN, else None.

    Raises OSError when the file cannot be read, ValueError when the token is empty.
    """
    env = os.environ if environ is None else environ
    if token_file is not None:
        with open(token_file, encoding="utf-8") as handle:
            token, where = handle.readline().strip(), token_file
    elif TOKEN_ENV in env:
        token, where = env[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    else:
        return None
    if not token:
        raise ValueError(f"the TCP token in {where} is empty")
    return token


def ensure_token(token_file: str | None = None,
                 environ: Mapping[str, str] | None = None) -> str:
    """read_token's token, or a new one printed to stderr for the user to give the client."""
    token = read_token(token_file, environ)
    if token is None:
        token = new_token()
        print(f"flashls: TCP auth token (send as initializationOptions.authToken): {token}",
              file=sys.stderr, flush=True)
    return token
