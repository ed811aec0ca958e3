"""flashls.transport: framing, message validation, and the stdio and TCP connection loops."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types
from pygls.lsp.server import LanguageServer

from flashls import transport
from flashls.transport import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    MAX_BODY_BYTES,
    PARSE_ERROR,
    ClientWriter,
    ErrorReply,
    FrameReader,
    FramingError,
    decode_message,
    run_connection,
    to_pygls_message,
)

TIMEOUT_S = 3.0
GOOD = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"capabilities":{}}}'


def framed(body: bytes | dict[str, Any]) -> bytes:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def request(msg_id: int | str, method: str, params: Any = None) -> dict[str, Any]:
    message = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    return message if params is None else {**message, "params": params}


def notification(method: str, params: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def byte_by_byte(data: bytes) -> list[transport.Frame]:
    reader, frames = FrameReader(), []
    for index in range(len(data)):
        frames += reader.feed(data[index:index + 1])
    return frames


def is_error(frame: transport.Frame) -> bool:
    return isinstance(frame, FramingError)


# -- FrameReader ---------------------------------------------------------------------------


def test_whole_and_byte_by_byte_feeds_give_the_same_bodies() -> None:
    data = framed(GOOD) + framed(b"{}") + framed(GOOD)
    assert FrameReader().feed(data) == [GOOD, b"{}", GOOD]
    assert byte_by_byte(data) == [GOOD, b"{}", GOOD]


def test_lf_only_headers_any_case_and_content_type_are_accepted() -> None:
    data = (b"content-LENGTH: %d\nContent-Type: application/vscode-jsonrpc; charset=utf-8\n\n%s"
            % (len(GOOD), GOOD))
    assert FrameReader().feed(data) == [GOOD]
    assert byte_by_byte(data + framed(GOOD)) == [GOOD, GOOD]


def test_blank_lines_between_messages_are_skipped() -> None:
    assert FrameReader().feed(framed(GOOD) + b"\r\n\n" + framed(GOOD)) == [GOOD, GOOD]


def test_huge_content_length_is_an_error_and_the_body_is_not_buffered() -> None:
    reader = FrameReader()
    frames = reader.feed(b"Content-Length: 99999999999999\r\n\r\n")
    assert len(frames) == 1 and is_error(frames[0])
    assert "exceeds" in frames[0].reason  # type: ignore[union-attr]
    for _ in range(64):  # 4 MiB of the announced body
        assert reader.feed(b"x" * 65536) == []
        assert reader.buffered() < 64
    assert reader.feed(framed(GOOD)) == [GOOD]


def test_content_length_of_many_digits_is_refused_without_converting_it() -> None:
    frames = FrameReader().feed(b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n" + framed(GOOD))
    assert is_error(frames[0]) and frames[1:] == [GOOD]


def test_a_length_just_over_the_limit_is_refused() -> None:
    frames = FrameReader(max_body_bytes=100).feed(b"Content-Length: 101\r\n\r\n" + b"x" * 101)
    assert len(frames) == 1 and is_error(frames[0])
    assert FrameReader().feed(b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1))[0] == \
        FramingError(f"Content-Length {MAX_BODY_BYTES + 1} exceeds the {MAX_BODY_BYTES}-byte limit")


def test_huge_header_line_is_one_error_and_memory_stays_bounded() -> None:
    reader = FrameReader()
    frames: list[transport.Frame] = []
    reader.feed(b"X-Padding: ")
    for _ in range(100):  # 6.4 MB of one header line
        frames += reader.feed(b"a" * 65536)
        assert reader.buffered() <= transport.MAX_HEADER_BYTES + 65536
    frames += reader.feed(b"\r\n\r\n" + framed(GOOD))
    assert [is_error(frame) for frame in frames] == [True, False]
    assert frames[1] == GOOD


def test_body_without_header_is_one_error_then_the_next_message_comes_out() -> None:
    data = GOOD + framed(GOOD)
    for frames in (FrameReader().feed(data), byte_by_byte(data)):
        assert [is_error(frame) for frame in frames] == [True, False]
        assert frames[1] == GOOD


def test_garbage_between_messages_is_one_error_per_run() -> None:
    data = framed(GOOD) + b"hello\r\nworld: {}\r\n" + b"\x00\xff" * 100 + framed(GOOD) + b"}}"
    frames = FrameReader().feed(data + framed(GOOD))
    assert [is_error(frame) for frame in frames] == [False, True, False, True, False]


def test_garbage_made_of_header_lines_is_one_error() -> None:
    garbage = b"content-length:" * 1000 + b"content-length: 5\n" * 1000 + b"X: 1\n" * 3000
    for data in (garbage + framed(GOOD), garbage + b"\n\n" + framed(GOOD)):
        frames = FrameReader().feed(data)
        assert [is_error(frame) for frame in frames] == [True, False]
        assert frames[1] == GOOD


def test_missing_or_malformed_content_length_is_an_error() -> None:
    for header in (b"Content-Type: x\r\n\r\n", b"Content-Length: -5\r\n\r\n",
                   b"Content-Length: 0x10\r\n\r\n",
                   b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n"):
        frames = FrameReader().feed(header + framed(GOOD))
        assert is_error(frames[0]), header
        assert frames[-1] == GOOD, header


def test_short_lying_length_gives_a_bad_body_then_the_next_message() -> None:
    data = b"Content-Length: 10\r\n\r\n" + GOOD + framed(GOOD)
    for frames in (FrameReader().feed(data), byte_by_byte(data)):
        assert frames[0] == GOOD[:10]
        assert is_error(frames[1])
        assert frames[2:] == [GOOD]


@pytest.mark.parametrize("excess", [1, 2, 14, 15, 40, 100_000])
def test_long_lying_length_ends_the_body_at_the_next_header(excess: int) -> None:
    data = b"Content-Length: %d\r\n\r\n" % (len(GOOD) + excess) + GOOD + framed(GOOD)
    for frames in (FrameReader().feed(data), byte_by_byte(data)):
        assert frames == [GOOD, GOOD]


def test_long_lie_before_lf_only_header_is_caught_too() -> None:
    data = (b"Content-Length: 500\r\n\r\n" + GOOD
            + b"content-length: %d\nX-Other: 1\n\n%s" % (len(GOOD), GOOD))
    assert byte_by_byte(data) == [GOOD, GOOD]


def test_a_body_quoting_a_header_is_not_split() -> None:
    body = json.dumps(notification("x", {"text": "Content-Length: 12 then more"})).encode()
    tricky = json.dumps(notification("x", {"text": "Content-Length: 12"})).encode()
    data = framed(body) + framed(tricky)
    assert FrameReader().feed(data) == [body, tricky]
    assert byte_by_byte(data) == [body, tricky]


def test_a_complete_body_is_delivered_without_waiting_for_more() -> None:
    reader = FrameReader()
    assert reader.feed(framed(GOOD)) == [GOOD]
    assert reader.buffered() == 0


# -- Validation ----------------------------------------------------------------------------


def test_invalid_utf8_and_malformed_json_are_parse_errors() -> None:
    for body in (b'{"jsonrpc": "2.0", "id": 1, "method": "\xff"}', b'{"jsonrpc": ', b"",
                 b"[" * 100_000, b"1" * 5000):
        reply = decode_message(body)
        assert isinstance(reply, ErrorReply) and reply.code == PARSE_ERROR, body[:20]
        assert reply.id is None and "\n" not in reply.message


def test_batches_are_invalid_requests() -> None:
    reply = decode_message(json.dumps([request(1, "initialize")]).encode())
    assert reply == ErrorReply(INVALID_REQUEST, reply.message, None)  # type: ignore[union-attr]
    assert "batch" in reply.message  # type: ignore[union-attr]


@pytest.mark.parametrize(("message", "expected_id"), [
    (5, None),
    ("text", None),
    ({"jsonrpc": "1.0", "id": 3, "method": "x"}, 3),
    ({"id": "a", "method": "x"}, "a"),
    ({"jsonrpc": "2.0", "id": 4, "method": 7}, 4),
    ({"jsonrpc": "2.0", "id": 1.5, "method": "x"}, None),
    ({"jsonrpc": "2.0", "id": True, "method": "x"}, None),
    ({"jsonrpc": "2.0", "id": None, "method": "x"}, None),
    ({"jsonrpc": "2.0", "id": {"a": 1}, "method": "x"}, None),
    ({"jsonrpc": "2.0", "params": {}}, None),
    ({"jsonrpc": "2.0", "id": 9}, 9),
])
def test_wrong_envelopes_are_invalid_requests(message: Any, expected_id: Any) -> None:
    reply = decode_message(json.dumps(message).encode())
    assert isinstance(reply, ErrorReply)
    assert (reply.code, reply.id) == (INVALID_REQUEST, expected_id)


def test_good_messages_and_responses_pass() -> None:
    for message in (request(1, "initialize", {}), request("x", "a/b"), notification("n"),
                    {"jsonrpc": "2.0", "id": 2, "result": None},
                    {"jsonrpc": "2.0", "id": None, "error": {"code": 1, "message": "m"}}):
        assert decode_message(json.dumps(message).encode()) == message


def test_error_reply_bytes_count_utf8_bytes() -> None:
    data = ErrorReply(INVALID_REQUEST, "naïve ünïcode", 1).to_bytes()
    assert FrameReader().feed(data) == [data.split(b"\r\n\r\n", 1)[1]]


def make_server() -> LanguageServer:
    server = LanguageServer("test-transport", "0")

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(params: types.HoverParams) -> types.Hover:
        return types.Hover(contents=f"line {params.position.line}")

    @server.feature("test/fail")
    def fail(params: Any) -> None:
        raise RuntimeError("boom")

    return server


def test_wrongly_typed_params_of_a_request_are_invalid_params() -> None:
    protocol = make_server().protocol
    reply = to_pygls_message(protocol, request(7, types.TEXT_DOCUMENT_HOVER,
                                               {"textDocument": 5, "position": {}}))
    assert isinstance(reply, ErrorReply)
    assert (reply.code, reply.id) == (INVALID_PARAMS, 7)
    assert "\n" not in reply.message and "textDocument/hover" in reply.message


def test_wrongly_typed_params_of_a_notification_are_dropped() -> None:
    protocol = make_server().protocol
    assert to_pygls_message(protocol, notification(types.TEXT_DOCUMENT_DID_OPEN, 3)) is None
    typed = to_pygls_message(protocol, request(1, types.TEXT_DOCUMENT_HOVER, {
        "textDocument": {"uri": "file:///a"}, "position": {"line": 1, "character": 0}}))
    assert isinstance(typed, types.HoverRequest)


# -- run_connection ------------------------------------------------------------------------


class CaptureWriter:
    """A pygls writer that keeps what was written."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True

    def replies(self) -> list[dict[str, Any]]:
        frames = FrameReader().feed(bytes(self.data))
        assert all(isinstance(frame, bytes) for frame in frames)
        return [json.loads(frame) for frame in frames if isinstance(frame, bytes)]


async def serve_bytes(data: bytes, server: LanguageServer | None = None,
                      auth_token: str | None = None) -> tuple[LanguageServer, CaptureWriter]:
    server = server or make_server()
    writer = CaptureWriter()
    server.protocol.set_writer(writer)
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    await asyncio.wait_for(run_connection(reader, server.protocol, max_chunk=7,
                                          auth_token=auth_token), TIMEOUT_S)
    return server, writer


def errors_by_id(replies: list[dict[str, Any]]) -> list[tuple[Any, int | None]]:
    return [(reply["id"], reply.get("error", {}).get("code")) for reply in replies]


HOVER = {"textDocument": {"uri": "file:///a.py"}, "position": {"line": 3, "character": 0}}


async def test_every_bad_input_gets_an_answer_and_later_requests_still_work() -> None:
    data = b"".join([
        framed(request(1, "initialize", {"capabilities": {}})),
        framed(b'{"jsonrpc": "2.0", "id": 2, "method": '),
        b"Content-Length: 99999999999999\r\n\r\n",
        framed(b"\xff\xfe"),
        framed(json.dumps([request(3, "x")]).encode()),
        framed(request(4, types.TEXT_DOCUMENT_HOVER, {"textDocument": 5})),
        framed(notification(types.TEXT_DOCUMENT_DID_OPEN, {"textDocument": 1})),
        framed(request(5, "test/fail")),
        b"Content-Length: 400\r\n\r\n" + json.dumps(request(6, "x")).encode(),
        framed(request(7, types.TEXT_DOCUMENT_HOVER, HOVER)),
    ])
    _, writer = await serve_bytes(data)
    replies = writer.replies()
    assert errors_by_id(replies) == [
        (1, None), (None, PARSE_ERROR), (None, PARSE_ERROR), (None, PARSE_ERROR),
        (None, INVALID_REQUEST), (4, INVALID_PARAMS), (5, -32603), (6, -32601), (7, None)]
    assert replies[-1]["result"]["contents"] == "line 3"
    assert all("\n" not in reply.get("error", {}).get("message", "") for reply in replies)


async def test_shutdown_then_exit_ends_the_loop_with_code_zero() -> None:
    data = b"".join(framed(message) for message in (
        request(1, "initialize", {"capabilities": {}}), request(2, "shutdown"),
        notification("exit"), request(3, types.TEXT_DOCUMENT_HOVER, HOVER)))
    server, writer = await serve_bytes(data)
    assert [reply["id"] for reply in writer.replies()] == [1, 2]
    assert transport.exit_code_of(server.protocol) == 0


async def test_eof_without_shutdown_is_exit_code_one() -> None:
    server, _ = await serve_bytes(framed(request(1, "initialize", {"capabilities": {}})))
    assert transport.exit_code_of(server.protocol) == 1


class StubProtocol:
    """Records messages; `exit` sets exit_code as flashls's protocol does."""

    def __init__(self) -> None:
        self.handled: list[Any] = []
        self.exit_code: int | None = None
        self.writer = CaptureWriter()

    def structure_message(self, data: dict[str, Any]) -> dict[str, Any]:
        return data

    def handle_message(self, message: dict[str, Any]) -> None:
        self.handled.append(message["method"])
        if message["method"] == "raise":
            raise ValueError("handler bug")
        if message["method"] == "exit":
            self.exit_code = 0

    def _send_data(self, data: Any) -> None:
        body = json.dumps(data).encode()
        self.writer.write(framed(body))


async def test_loop_survives_a_raising_handler_and_stops_at_exit_code() -> None:
    stub = StubProtocol()
    reader = asyncio.StreamReader()
    reader.feed_data(b"".join(framed(notification(method)) for method in
                              ("raise", "a", "exit", "after")))
    await asyncio.wait_for(run_connection(reader, stub), TIMEOUT_S)  # type: ignore[arg-type]
    assert stub.handled == ["raise", "a", "exit"]


def initialize_with(token: Any) -> dict[str, Any]:
    return request(1, "initialize", {"capabilities": {},
                                     "initializationOptions": {"authToken": token, "x": 1}})


async def test_right_token_is_admitted_and_removed_before_pygls() -> None:
    server = make_server()
    seen: list[Any] = []

    @server.feature(types.INITIALIZE)
    def initialize(params: types.InitializeParams) -> None:
        seen.append(params.initialization_options)

    data = framed(initialize_with("sesame")) + framed(request(2, types.TEXT_DOCUMENT_HOVER, HOVER))
    _, writer = await serve_bytes(data, server, auth_token="sesame")
    assert errors_by_id(writer.replies()) == [(1, None), (2, None)]
    assert seen == [{"x": 1}]


@pytest.mark.parametrize("first", [
    framed(initialize_with("wrong")), framed(initialize_with(None)), framed(initialize_with(5)),
    framed(initialize_with("sésame\udcff")), framed(request(1, "initialize", {"capabilities": {}})),
    framed(request(1, types.TEXT_DOCUMENT_HOVER, HOVER)), framed(b"{oops"),
    b"GET / HTTP/1.1\r\n\r\n",
])
async def test_anything_but_initialize_with_the_token_is_refused(first: bytes) -> None:
    data = first + framed(initialize_with("sesame")) + framed(request(2, "shutdown"))
    _, writer = await serve_bytes(data, auth_token="sesame")
    replies = writer.replies()
    assert len(replies) == 1
    assert replies[0]["error"] == {"code": INVALID_REQUEST, "message": "authentication required"}


# -- run_stdio -----------------------------------------------------------------------------


class KeptBytesIO(io.BytesIO):
    """stdout that survives pygls's exit handler closing it."""

    def close(self) -> None:
        pass


def test_run_stdio_over_a_pipe_with_a_large_message(tmp_path: Path) -> None:
    big = request(2, "unknown/method", {"pad": "x" * 1_000_000})
    data = b"".join(framed(message) for message in (
        request(1, "initialize", {"capabilities": {}}), big, request(3, "shutdown"),
        notification("exit")))
    read_fd, write_fd = os.pipe()
    feeder = threading.Thread(target=lambda: (os.write(write_fd, data), os.close(write_fd)))
    feeder.start()
    stdout = KeptBytesIO()
    try:
        assert transport.run_stdio(make_server(), read_fd, stdout) == 0
    finally:
        feeder.join(TIMEOUT_S)
        os.close(read_fd)
    replies = [json.loads(frame) for frame in FrameReader().feed(stdout.getvalue())]
    assert errors_by_id(replies) == [(1, None), (2, -32601), (3, None)]


def test_run_stdio_from_a_file_returns_one_at_eof(tmp_path: Path) -> None:
    path = tmp_path / "stdin"
    path.write_bytes(framed(request(1, "initialize", {"capabilities": {}})) + b"{junk")
    stdout = KeptBytesIO()
    with path.open("rb") as stdin:
        assert transport.run_stdio(make_server(), stdin.fileno(), stdout) == 1
    replies = [json.loads(frame) for frame in FrameReader().feed(stdout.getvalue())]
    assert errors_by_id(replies) == [(1, None), (None, PARSE_ERROR)]


# -- TCP -----------------------------------------------------------------------------------


class Client:
    """A raw TCP LSP client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.frames = reader, writer, FrameReader()
        self.pending: list[transport.Frame] = []

    @classmethod
    async def connect(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, message: dict[str, Any]) -> None:
        self.writer.write(framed(message))
        await self.writer.drain()

    async def receive(self) -> dict[str, Any] | None:
        """The next message, or None at EOF."""
        while not self.pending:
            try:
                chunk = await asyncio.wait_for(self.reader.read(65536), TIMEOUT_S)
            except ConnectionResetError:  # refused while our request was unread
                return None
            if not chunk:
                return None
            self.pending += self.frames.feed(chunk)
        frame = self.pending.pop(0)
        assert isinstance(frame, bytes)
        return json.loads(frame)  # type: ignore[no-any-return]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def start_tcp(auth_token: str | None = None, handshake_timeout_s: float = TIMEOUT_S
                    ) -> tuple[asyncio.Task[None], int]:
    addresses: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(transport.serve_tcp(
        make_server(), "127.0.0.1", 0, auth_token=auth_token,
        handshake_timeout_s=handshake_timeout_s, announce=addresses.put_nowait))
    address = await asyncio.wait_for(addresses.get(), TIMEOUT_S)
    return task, int(address.rpartition(":")[2])


async def test_tcp_refuses_a_second_client_and_stops_when_the_first_leaves() -> None:
    server, port = await start_tcp()
    first = await Client.connect(port)
    await first.send(request(1, "initialize", {"capabilities": {}}))
    assert (await first.receive() or {}).get("id") == 1
    second = await Client.connect(port)
    await second.send(request(1, "initialize", {"capabilities": {}}))
    assert await second.receive() is None
    await second.close()
    await first.send(request(2, types.TEXT_DOCUMENT_HOVER, HOVER))
    assert (await first.receive() or {}).get("id") == 2
    await first.close()
    await asyncio.wait_for(server, TIMEOUT_S)


async def test_tcp_connect_and_close_before_initialize_keeps_serving() -> None:
    server, port = await start_tcp()
    scanner = await Client.connect(port)
    await scanner.close()
    await asyncio.sleep(0.05)
    assert not server.done()
    client = await Client.connect(port)
    await client.send(request(1, "initialize", {"capabilities": {}}))
    assert (await client.receive() or {}).get("id") == 1
    await client.close()
    await asyncio.wait_for(server, TIMEOUT_S)


async def test_tcp_wrong_token_is_refused_and_the_server_keeps_serving() -> None:
    server, port = await start_tcp(auth_token="sesame")
    intruder = await Client.connect(port)
    await intruder.send(initialize_with("guess"))
    reply = await intruder.receive()
    assert reply is not None and reply["error"]["message"] == "authentication required"
    assert await intruder.receive() is None
    await intruder.close()
    client = await Client.connect(port)
    await client.send(initialize_with("sesame"))
    assert "result" in (await client.receive() or {})
    await client.close()
    await asyncio.wait_for(server, TIMEOUT_S)


async def test_tcp_client_silent_past_the_handshake_timeout_is_dropped() -> None:
    server, port = await start_tcp(handshake_timeout_s=0.1)
    idle = await Client.connect(port)
    assert await idle.receive() is None
    await idle.close()
    client = await Client.connect(port)
    await client.send(request(1, "initialize", {"capabilities": {}}))
    assert (await client.receive() or {}).get("id") == 1
    await client.close()
    await asyncio.wait_for(server, TIMEOUT_S)


def test_run_tcp_announces_its_port_and_returns_the_exit_code(
        capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(transport.run_tcp(
        make_server(), "127.0.0.1", 0, auth_token=None)), daemon=True)
    # Reading capfd while the thread writes can lose the line (pytest reads, then
    # truncates its capture file), so the port comes from a queue and the printed line
    # is checked once the thread has written it.
    announced: queue.Queue[str] = queue.Queue()
    announce = transport._announce
    monkeypatch.setattr(transport, "_announce",
                        lambda address: (announce(address), announced.put(address)))
    thread.start()
    address = announced.get(timeout=10 * TIMEOUT_S)
    assert f"flashls: listening on {address}\n" in capfd.readouterr().err
    port = int(address.rpartition(":")[2])

    async def session() -> None:
        client = await Client.connect(port)
        for message in (request(1, "initialize", {"capabilities": {}}), request(2, "shutdown")):
            await client.send(message)
            assert (await client.receive() or {}).get("id") == message["id"]
        await client.send(notification("exit"))
        assert await client.receive() is None
        await client.close()

    asyncio.run(session())
    thread.join(TIMEOUT_S)
    assert result == [0]


def test_tokens_come_from_the_file_then_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\nignored\n")
    env = {transport.TOKEN_ENV: " from-env "}
    assert transport.read_token(str(token_file), env) == "from-file"
    assert transport.read_token(None, env) == "from-env"
    assert transport.read_token(None, {}) is None
    with pytest.raises(ValueError, match="empty"):
        transport.read_token(None, {transport.TOKEN_ENV: ""})
    assert len(transport.new_token()) >= 32
    assert transport.new_token() != transport.new_token()


def test_replies_to_a_client_that_closed_the_pipe_are_dropped_quietly(
        caplog: pytest.LogCaptureFixture) -> None:
    """An editor quitting while an answer is on its way: no traceback per reply."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    with os.fdopen(write_fd, "wb") as stdout, caplog.at_level(logging.INFO):
        writer = ClientWriter(stdout)
        for _ in range(3):
            writer.write(b"Content-Length: 2\r\n\r\n{}")
        assert writer.gone
        assert [record.levelno for record in caplog.records] == [logging.INFO]
        with contextlib.suppress(BrokenPipeError):
            stdout.close()
