"""A seeded, time-bounded fuzzer that drives `flashls serve --engine fake` with raw bytes:
hostile frames, messages, URIs and settings, then edit streams checked against a reference
model. `run()` returns the totals; by hand: `python -m tests.fuzz_lsp --seed 1 --edits 20000`.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import hashlib
import itertools
import json
import os
import random
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

SERVE_FAKE = (sys.executable, "-m", "flashls", "serve", "--engine", "fake")
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# RequestCancelled, ContentModified, ServerCancelled: fair answers to a cancelled or
# superseded completion request.
CANCELLED_CODES = (-32800, -32801, -32802)
DIGEST = "flashls/documentDigest"
INLINE = "textDocument/inlineCompletion"
COMPLETION = "textDocument/completion"
SHOW_MESSAGE = "window/showMessage"
# A server that reads /dev/zero must fail, not take the machine down with it.
SERVER_ADDRESS_SPACE = 4 << 30
MUST_BE_ZERO = ("crashes", "hangs", "divergences", "wrong_answers")
EXAMPLES_KEPT = 15
MAX_RESTARTS = 40
FINAL_RESERVE_S = 8.0  # kept free at the end for the last digests, shutdown and exit


# --- the reference document model: LSP's line rules and UTF-16 columns, written plainly ---

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def utf16_units(text: str) -> int:
    """Length of `text` in UTF-16 code units (an astral character counts two)."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def line_starts(text: str) -> list[int]:
    """Offsets where lines begin; only \\n, \\r\\n and \\r end a line."""
    return [0, *(match.end() for match in _LINE_BREAK.finditer(text))]


def position_of(text: str, offset: int) -> dict[str, int]:
    """The LSP position (UTF-16 column) of a string offset that is not inside a CRLF."""
    starts = line_starts(text)
    line = bisect.bisect_right(starts, offset) - 1
    return {"line": line, "character": utf16_units(text[starts[line]:offset])}


def offset_of(text: str, position: dict[str, int]) -> int:
    """The string offset of an LSP position; a column past its line's end clamps to it."""
    starts = line_starts(text)
    line = position["line"]
    if line >= len(starts):
        return len(text)
    end = starts[line + 1] if line + 1 < len(starts) else len(text)
    offset, units = starts[line], 0
    for char in text[starts[line]:end].rstrip("\r\n"):
        if units >= position["character"]:
            break
        units += 2 if ord(char) > 0xFFFF else 1
        offset += 1
    return offset


def apply_change(text: str, change: dict[str, Any]) -> str:
    """`text` after one `TextDocumentContentChangeEvent`, as the LSP specification reads."""
    if "range" not in change:
        return str(change["text"])
    start = offset_of(text, change["range"]["start"])
    end = offset_of(text, change["range"]["end"])
    return text[:start] + change["text"] + text[end:]


def sha256_of(text: str) -> str:
    """The digest the server reports: sha256 of the UTF-8 bytes (lone surrogates passed)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class RefDocument:
    """Our copy of one open document and what the server's digest of it must say.

    `version` is the last version the server accepted; `sent_version` the highest sent,
    so a rejected change never makes a later valid one look stale. `in_sync` is None
    after a malformed change whose effect on the flag the contract leaves open."""

    uri: str
    language: str
    text: str
    version: int = 1
    sent_version: int = 1
    in_sync: bool | None = True

    def next_version(self) -> int:
        """A version greater than any sent so far."""
        self.sent_version += 1
        return self.sent_version

    def item(self) -> dict[str, Any]:
        """The `TextDocumentItem` that opens this document as it is now."""
        return {"uri": self.uri, "languageId": self.language, "version": self.version,
                "text": self.text}


# --- input generators ---

CODE_LINES = (
    "import os", "from typing import Any", "def area(width, height):",
    "    return width * height", "class Shape:", "    '''A shape.'''",
    "\tvalue = compute(1, 2)", "name = 'café 😀 𝔘'", "# ünïcödé: e\u0301 a\u0308\u0323 中文",
    "if x:", "    print(x.attr)", "", "    ", "items = [1, 2, 3]", "total = sum(items)",
    "s = \"tab\\there\"", "async def main():", "    await asyncio.sleep(0)")
ODD_CHARACTERS = (
    "\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\t", "\r", "\r\n",
    "😀", "𝔘", "👩\u200d💻", "e\u0301", "a\u0308\u0323", "\u200b", "\ufeff", "中", "ß")
LINE_ENDINGS = ("\n",) * 5 + ("\r\n",) * 3 + ("\r",)
WORDS = ("x", "foo", "bar.baz(", ")", ":", " = ", "  ", "return ", "self.", "'", '"', "#")
MAX_DOCUMENT_CHARS = 6000


def random_line(rng: random.Random, odd_share: float) -> str:
    """A line of code, sometimes with odd characters spliced in."""
    line = rng.choice(CODE_LINES)
    while rng.random() < odd_share:
        cut = rng.randint(0, len(line))
        line = line[:cut] + rng.choice(ODD_CHARACTERS) + line[cut:]
    return line


def random_text(rng: random.Random, lines: int, odd_share: float = 0.3) -> str:
    """A document of `lines` lines with mixed line endings and odd characters."""
    return "".join(random_line(rng, odd_share) + rng.choice(LINE_ENDINGS)
                   for _ in range(lines))


def random_insert(rng: random.Random) -> str:
    """Text to type or paste: words, odd characters, line endings, whole lines."""
    pools = (WORDS, ODD_CHARACTERS, LINE_ENDINGS, CODE_LINES)
    return "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(1, 4)))


def random_offset(rng: random.Random, text: str) -> int:
    """An offset that is a valid LSP position: never between the \\r and \\n of a CRLF."""
    offset = rng.randint(0, len(text))
    if 0 < offset < len(text) and text[offset - 1:offset + 1] == "\r\n":
        offset -= 1
    return offset


def random_change(rng: random.Random, text: str) -> tuple[dict[str, Any], str]:
    """A valid incremental change for `text` (insert, delete or replace) and the result."""
    start = random_offset(rng, text)
    shrink = len(text) > MAX_DOCUMENT_CHARS
    kind = rng.choices(("insert", "delete", "replace"), (1, 3, 1) if shrink else (5, 2, 2))[0]
    end = start
    if kind != "insert":
        end = min(len(text), start + rng.randint(1, 400 if shrink else 30))
        if 0 < end < len(text) and text[end - 1:end + 1] == "\r\n":
            end += 1
    new_text = "" if kind == "delete" else random_insert(rng)
    change = {"range": {"start": position_of(text, start), "end": position_of(text, end)},
              "text": new_text}
    result = text[:start] + new_text + text[end:]
    if apply_change(text, change) != result:  # the two halves of the model disagree
        raise AssertionError(f"reference model bug on {text!r} with {change!r}")
    return change, result


def random_garbage(rng: random.Random) -> bytes:
    """Bytes that cannot be a header line (no colon), ended as a line so a probe follows."""
    body = bytes(rng.choice([b for b in range(256) if b != ord(":")])
                 for _ in range(rng.randint(8, 300)))
    return b"\x00garbage" + body + b"\r\n"


def frame(body: bytes) -> bytes:
    """A well-formed LSP frame around `body`."""
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def encode(message: Any) -> bytes:
    """JSON as editors send it: UTF-8, non-ASCII characters unescaped."""
    return json.dumps(message, ensure_ascii=False).encode("utf-8")


def request_body(request_id: Any, method: Any, params: Any = None) -> bytes:
    """A JSON-RPC request's bytes (params left out when None)."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return encode(message)


# --- the raw client ---


class RawServer:
    """One server process spoken to in raw bytes; a reader thread collects its frames.

    Writes never block for long (the pipe is non-blocking and each write has a stall
    timeout), and every wait is bounded, so a deaf server costs a timeout, never a hang."""

    def __init__(self, command: Iterable[str], env: dict[str, str], stderr_path: Path) -> None:
        self._stderr = stderr_path.open("wb")
        self.stderr_path = stderr_path
        self.process = subprocess.Popen(list(command), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        _limit_address_space(self.process.pid)
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin = self.process.stdin.fileno()
        os.set_blocking(self._stdin, False)
        self.messages: list[dict[str, Any]] = []
        self.replies: dict[int | str, dict[str, Any]] = {}
        self.output_problems: list[str] = []  # what the server wrote that is not JSON-RPC
        self.eof = False
        self._server_requests: list[dict[str, Any]] = []
        self._condition = threading.Condition()
        self._ids = itertools.count(1)
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout.fileno(),),
                                        daemon=True, name="fuzz-reader")
        self._reader.start()

    def next_id(self) -> int:
        """A fresh request id."""
        return next(self._ids)

    def write(self, chunks: bytes | Iterable[bytes], stall_s: float) -> bool:
        """Write everything unless the server exits or reads nothing for `stall_s` seconds."""
        for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
            view = memoryview(chunk)
            while view:
                _, ready, _ = select.select([], [self._stdin], [], stall_s)
                if not ready:
                    return False
                try:
                    view = view[os.write(self._stdin, view[:1 << 20]):]
                except BlockingIOError:
                    continue
                except OSError:  # broken pipe: the server is gone
                    return False
        return True

    def send(self, message: dict[str, Any], stall_s: float) -> bool:
        """Frame and write one message."""
        return self.write(frame(encode(message)), stall_s)

    def mark(self) -> int:
        """A bookmark in the arrival order of the server's messages."""
        with self._condition:
            return len(self.messages)

    def since(self, mark: int) -> list[dict[str, Any]]:
        """The messages that arrived after `mark`."""
        with self._condition:
            return self.messages[mark:]

    def wait_reply(self, request_id: int | str, timeout: float) -> dict[str, Any] | None:
        """The response to `request_id`, or None when it does not come in `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._condition:
                reply = self.replies.get(request_id)
                asked, self._server_requests = self._server_requests, []
                remaining = deadline - time.monotonic()
                if reply is None and not self.eof and remaining > 0 and not asked:
                    self._condition.wait(min(remaining, 0.25))
            if reply is not None:
                return reply
            self._answer(asked)
            if self.eof or remaining <= 0:
                return self.replies.get(request_id)

    def settle(self, seconds: float) -> None:
        """Let late notifications arrive (and answer what the server asks meanwhile)."""
        self.wait_reply("never sent", seconds)

    def exited(self) -> bool:
        """Whether the process has ended (or closed its stdout)."""
        return self.process.poll() is not None or self.eof

    def stats(self) -> tuple[float, int]:
        """(RSS in MB, thread count) from /proc; zeros where there is no /proc."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0.0, 0
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss_kb = int(fields.get("VmRSS", "0 kB").split()[0])
        return round(rss_kb / 1024, 1), int(fields.get("Threads", "0"))

    def stderr_tail(self) -> str:
        """The last line the server wrote to stderr, for a crash's description."""
        self._stderr.flush()
        lines = self.stderr_path.read_bytes()[-4000:].decode("utf-8", "replace").splitlines()
        return lines[-1][:200] if lines else ""

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None when the process is still running after `timeout`."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """End the process and the reader; safe to call twice."""
        if self.process.poll() is None:
            self.process.kill()
        self.wait_exit(10)
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        self._reader.join(5)
        self._stderr.close()

    def _answer(self, asked: list[dict[str, Any]]) -> None:
        """Answer requests the server sent us, as a minimal editor would."""
        for request in asked:
            items = (request.get("params") or {}).get("items") or []
            result = [None] * len(items) if request.get("method") == "workspace/configuration" \
                else None
            self.send({"jsonrpc": "2.0", "id": request["id"], "result": result}, 2.0)

    def _read(self, fd: int) -> None:
        buffer = bytearray()
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            buffer += chunk
            while self._take_frame(buffer):
                pass
        with self._condition:
            self.eof = True
            self._condition.notify_all()

    def _take_frame(self, buffer: bytearray) -> bool:
        """Move one complete frame from `buffer` into `messages`; False when none is complete."""
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        headers = bytes(buffer[:end]).decode("ascii", "replace").split("\r\n")
        lengths = [value.strip() for name, _, value in (h.partition(":") for h in headers)
                   if name.strip().lower() == "content-length"]
        if len(lengths) != 1 or not lengths[0].isdigit():
            self.output_problems.append(f"server wrote a bad frame header {headers!r:.120}")
            del buffer[:end + 4]
            return True
        start, stop = end + 4, end + 4 + int(lengths[0])
        if len(buffer) < stop:
            return False
        body = bytes(buffer[start:stop])
        del buffer[:stop]
        try:
            message = json.loads(body.decode("utf-8"))
        except ValueError:
            self.output_problems.append(f"server wrote a body that is not JSON: {body!r:.120}")
            return True
        self._deliver(message)
        return True

    def _deliver(self, message: Any) -> None:
        if not isinstance(message, dict):
            self.output_problems.append(f"server wrote a non-object message: {message!r:.120}")
            return
        with self._condition:
            self.messages.append(message)
            if "method" in message and "id" in message:
                self._server_requests.append(message)
            elif "method" not in message and isinstance(message.get("id"), int | str):
                self.replies[message["id"]] = message
            self._condition.notify_all()


def _limit_address_space(pid: int) -> None:
    """Cap the server's address space where the platform allows it."""
    try:
        import resource

        resource.prlimit(pid, resource.RLIMIT_AS, (SERVER_ADDRESS_SPACE, SERVER_ADDRESS_SPACE))
    except (ImportError, AttributeError, OSError, ValueError):
        pass


# --- totals ---


@dataclass
class Totals:
    """What a run counts; `failures` keeps the first few descriptions of each breach."""

    inputs_tried: int = 0
    edits: int = 0
    requests: int = 0
    crashes: int = 0
    hangs: int = 0
    divergences: int = 0
    wrong_answers: int = 0
    restarts: int = 0
    show_messages: int = 0
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    all_failures: list[str] = field(default_factory=list)

    def count(self, kind: str, description: str) -> None:
        """One more of `kind` (crashes, hangs, divergences, wrong_answers)."""
        setattr(self, kind, getattr(self, kind) + 1)
        line = f"{kind}: {description}"[:400]
        if len(self.failures) < EXAMPLES_KEPT:
            self.failures.append(line)
        if len(self.all_failures) < 5000:
            self.all_failures.append(line)


class CaseLost(Exception):
    """The server crashed or went deaf during a case; it has been restarted."""


class Abort(Exception):
    """The run cannot go on (no working server, or out of time)."""


def _error(message: dict[str, Any]) -> dict[str, Any] | None:
    error = message.get("error")
    return error if isinstance(error, dict) else None


def _code(message: dict[str, Any] | None) -> int | None:
    error = _error(message) if message is not None else None
    return error.get("code") if error is not None else None


def _brief(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=True)[:160]


def _is_empty_result(result: Any) -> bool:
    if result is None or result == []:
        return True
    return isinstance(result, dict) and result.get("items") == []


# --- the fuzzer ---


class Fuzzer:
    """One run: a server (restarted when it dies or goes deaf), the reference documents,
    and the totals. Cases raise `CaseLost` after a restart so the next case starts clean."""

    def __init__(self, seed: int, time_limit_s: float, *, huge_header_mb: int = 1,
                 probe_timeout_s: float = 5.0, request_timeout_s: float = 10.0,
                 command: Iterable[str] = SERVE_FAKE) -> None:
        self.rng = random.Random(seed)
        self.started = time.monotonic()
        self.deadline = self.started + time_limit_s
        self.huge_header_mb = huge_header_mb
        self.probe_timeout = probe_timeout_s
        self.request_timeout = request_timeout_s
        self.command = tuple(command)
        self.totals = Totals()
        self._tmp = tempfile.TemporaryDirectory(prefix="flashls-fuzz-")
        self.tmp = Path(self._tmp.name)
        self._servers = itertools.count()
        self.documents = self._initial_documents()
        self.stream_uris = [uri for uri in self.documents if "/stream" in uri]
        self.server: RawServer | None = None
        self.audited = 0
        self.pending: list[tuple[int, str, bool]] = []  # (id, method, cancelled)

    def _initial_documents(self) -> dict[str, RefDocument]:
        documents = [RefDocument(f"file:///fuzz/stream{index}.py", "python",
                                 random_text(self.rng, self.rng.randint(5, 40)))
                     for index in range(3)]
        documents += [
            RefDocument("file:///fuzz/stream-notes.txt", "plaintext",
                        random_text(self.rng, 20, odd_share=0.8)),
            RefDocument("file:///fuzz/probe.py", "python", "probe = 1\n"),
            RefDocument("file:///fuzz/empty.py", "python", ""),
            RefDocument("file:///fuzz/abc.py", "python", "abc\n"),
        ]
        return {document.uri: document for document in documents}

    def close(self) -> None:
        """End the server, if one runs, and remove the temporary files."""
        if self.server is not None:
            self.server.kill()
            self.server = None
        self._tmp.cleanup()

    # time

    def left(self) -> float:
        """Seconds until the run's deadline."""
        return self.deadline - time.monotonic()

    def bounded(self, timeout: float) -> float:
        """`timeout`, shortened near the deadline so the run ends on time."""
        return max(0.5, min(timeout, self.left() + FINAL_RESERVE_S / 2))

    # the server's life

    @property
    def live(self) -> RawServer:
        """The current server (there is always one while cases run)."""
        if self.server is None:
            raise Abort("no server")
        return self.server

    def spawn(self) -> RawServer:
        """A new server process (not yet initialized)."""
        env = {**os.environ, "MALLOC_ARENA_MAX": "2", "PYTHONUNBUFFERED": "1"}
        return RawServer(self.command, env, self.tmp / f"stderr-{next(self._servers)}.log")

    def handshake(self, server: RawServer) -> bool:
        """`initialize` then `initialized`; False when the server does not answer properly."""
        request_id = server.next_id()
        self.totals.requests += 1
        params = {"processId": os.getpid(), "rootUri": None, "capabilities": {
            "general": {"positionEncodings": ["utf-16"]}}}
        if not server.send({"jsonrpc": "2.0", "id": request_id, "method": "initialize",
                            "params": params}, self.probe_timeout):
            return False
        reply = server.wait_reply(request_id, self.bounded(30.0))
        if reply is None or "capabilities" not in (reply.get("result") or {}):
            return False
        return server.send({"jsonrpc": "2.0", "method": "initialized", "params": {}},
                           self.probe_timeout)

    def start(self) -> None:
        """Start a server, initialize it and open every reference document."""
        server = self.spawn()
        self.server, self.audited, self.pending = server, 0, []
        if not self.handshake(server):
            self.lost("initialize")
        for document in self.documents.values():
            document.in_sync = True
            self.notify("textDocument/didOpen", {"textDocument": document.item()})

    def restart(self) -> None:
        """Replace a dead or deaf server; give up after too many restarts or near the end."""
        if self.server is not None:
            self.audit()
            self.server.kill()
            self.server = None
        self.totals.restarts += 1
        if self.totals.restarts > MAX_RESTARTS or self.left() < FINAL_RESERVE_S:
            raise Abort("too many restarts or out of time")
        self.start()

    def lost(self, what: str) -> NoReturn:
        """Count a crash (the process ended) or a hang (it did not answer), then restart."""
        server = self.live
        if server.exited():
            code = server.wait_exit(2)
            self.totals.count("crashes", f"server exited with {code} during {what}; "
                                         f"stderr: {server.stderr_tail()}")
        else:
            self.totals.count("hangs", f"no answer in time during {what}")
        self.restart()
        raise CaseLost(what)

    # messages

    def notify(self, method: str, params: Any) -> None:
        """Send a notification."""
        if not self.live.send({"jsonrpc": "2.0", "method": method, "params": params},
                              self.probe_timeout):
            self.lost(f"sending {method}")

    def send_request(self, method: str, params: Any) -> int:
        """Send a request without waiting; its id."""
        request_id = self.live.next_id()
        self.totals.requests += 1
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        if not self.live.send(message, self.probe_timeout):
            self.lost(f"sending {method}")
        return request_id

    def wait(self, request_id: int, timeout: float, what: str) -> dict[str, Any]:
        """The reply to `request_id`; a crash or hang (and `CaseLost`) when none comes."""
        reply = self.live.wait_reply(request_id, self.bounded(timeout))
        if reply is None:
            self.lost(what)
        self.audit()
        return reply

    def call(self, method: str, params: Any, what: str = "",
             timeout: float | None = None) -> dict[str, Any]:
        """Send a request and wait for its reply."""
        request_id = self.send_request(method, params)
        return self.wait(request_id, timeout or self.request_timeout, what or method)

    def probe_message(self) -> tuple[int, bytes]:
        """A framed digest request for the probe document: the liveness check."""
        request_id = self.live.next_id()
        self.totals.requests += 1
        params = {"textDocument": {"uri": "file:///fuzz/probe.py"}}
        return request_id, frame(request_body(request_id, DIGEST, params))

    def bad_input(self, name: str, payload: bytes | Iterable[bytes]) -> list[dict[str, Any]]:
        """Send `payload` and then a probe, which must be answered within the probe timeout;
        what the server sent in between."""
        self.totals.inputs_tried += 1
        server = self.live
        mark = server.mark()
        probe_id, probe = self.probe_message()
        chunks = [payload] if isinstance(payload, bytes) else payload
        if not server.write(itertools.chain(chunks, [probe]), self.probe_timeout):
            self.lost(f"writing {name} (the server stopped reading)")
        probe_reply = self.wait(probe_id, self.probe_timeout, f"the probe after {name}")
        return [message for message in server.since(mark) if message is not probe_reply]

    def wrong(self, description: str) -> None:
        """Count a contract breach."""
        self.totals.count("wrong_answers", description)

    def audit(self) -> None:
        """Checks that hold for every message: well-formed output, one-line error messages."""
        server = self.live
        messages = server.since(self.audited)
        self.audited += len(messages)
        while server.output_problems:
            self.wrong(server.output_problems.pop(0))
        for message in messages:
            if message.get("method") == SHOW_MESSAGE:
                self.totals.show_messages += 1
            error = _error(message)
            if error is None:
                continue
            text, data = error.get("message"), json.dumps(error.get("data"))
            if not isinstance(text, str) or "\n" in text or "Traceback" in text:
                self.wrong(f"error message is not one line: {_brief(message)}")
            elif "traceback" in data.lower():
                self.wrong(f"error.data carries a traceback: {_brief(message)}")

    # expectations

    def expect_null_error(self, name: str, window: list[dict[str, Any]],
                          codes: tuple[int, ...]) -> None:
        """Some reply in `window` must be an error with id null and one of `codes`."""
        if not any(m.get("id", "absent") is None and _code(m) in codes for m in window):
            got = [_brief(m) for m in window if "method" not in m][:3]
            self.wrong(f"{name}: no error reply with id null and code {codes}; got {got}")

    def expect_error(self, name: str, request_id: int, codes: tuple[int, ...],
                     window: list[dict[str, Any]] | None = None) -> None:
        """The request must be answered with an error of one of `codes` (or, where `window`
        is given, an error with id null and one of `codes` may stand for it)."""
        reply = self.live.replies.get(request_id)
        if reply is None and window is not None and any(
                m.get("id", "absent") is None and _code(m) in codes for m in window):
            return
        if reply is None:
            reply = self.live.wait_reply(request_id, self.bounded(self.probe_timeout))
        if reply is not None and _code(reply) in codes:
            return
        self.wrong(f"{name}: expected error {codes}, got "
                   f"{_brief(reply) if reply else 'no reply'}")

    def expect_answer(self, name: str, request_id: int, *, allow: tuple[int, ...] = (),
                      empty: bool = False) -> dict[str, Any]:
        """The request must get a result (empty where `empty`), or an error in `allow`."""
        reply = self.wait(request_id, self.probe_timeout, name)
        error_code = _code(reply)
        if error_code is not None and error_code not in allow:
            self.wrong(f"{name}: answered with an error: {_brief(reply)}")
        elif error_code is None and empty and not _is_empty_result(reply.get("result")):
            self.wrong(f"{name}: expected an empty answer, got {_brief(reply)}")
        if "root:" in json.dumps(reply):
            self.wrong(f"{name}: the answer carries file contents: {_brief(reply)}")
        return reply

    def expect_no_reply(self, name: str, window: list[dict[str, Any]]) -> None:
        """A notification must not be answered: no response in `window`."""
        responses = [m for m in window if "method" not in m]
        if responses:
            self.wrong(f"{name}: a notification was answered: {_brief(responses[0])}")

    # digests

    def digest(self, uri: str, what: str) -> dict[str, Any]:
        """The server's `flashls/documentDigest` reply for `uri`."""
        return self.call(DIGEST, {"textDocument": {"uri": uri}}, what, self.probe_timeout)

    def check_digest(self, document: RefDocument, what: str, *,
                     check_version: bool = True) -> bool:
        """Compare the server's digest with the reference; count a divergence if they differ."""
        reply = self.digest(document.uri, f"the digest of {document.uri} {what}")
        result = reply.get("result")
        if not isinstance(result, dict):
            self.totals.count("divergences", f"{what}: no digest for {document.uri}: "
                                             f"{_brief(reply)}")
            return False
        problems = []
        if result.get("sha256") != sha256_of(document.text):
            problems.append("text differs")
        lengths = {len(document.text), utf16_units(document.text),
                   len(document.text.encode("utf-8", "surrogatepass"))}
        if result.get("length") not in lengths:
            problems.append(f"length {result.get('length')} not in {sorted(lengths)}")
        if check_version and result.get("version") != document.version:
            problems.append(f"version {result.get('version')} != {document.version}")
        if document.in_sync is not None and result.get("inSync") is not document.in_sync:
            problems.append(f"inSync {result.get('inSync')} != {document.in_sync}")
        if problems:
            self.totals.count("divergences", f"{what}: {document.uri}: {', '.join(problems)} "
                                             f"(reference {len(document.text)} chars)")
        return not problems

    def check_all_digests(self, what: str) -> None:
        """Every open document's digest against the reference."""
        for document in self.documents.values():
            self.check_digest(document, what)

    # changes

    def change(self, document: RefDocument, changes: list[dict[str, Any]],
               version: int | None = None) -> None:
        """Send a didChange (version: the next one unless given)."""
        self.notify("textDocument/didChange", {
            "textDocument": {"uri": document.uri,
                             "version": document.next_version() if version is None else version},
            "contentChanges": changes})

    def apply_valid(self, document: RefDocument, changes: list[dict[str, Any]],
                    text: str) -> None:
        """Send valid changes whose result is `text`, and record them in the reference."""
        self.change(document, changes)
        document.text, document.version = text, document.sent_version
        self.totals.edits += len(changes)

    def resync(self, document: RefDocument) -> None:
        """A full-text change: afterwards the server must hold our text and be in sync."""
        text = document.text
        if self.rng.random() < 0.5:
            _, text = random_change(self.rng, text)
        self.apply_valid(document, [{"text": text}], text)
        document.in_sync = True


def run_exit_without_shutdown(fuzzer: Fuzzer) -> None:
    """`exit` without `shutdown` must end the server with exit code 1."""
    server = fuzzer.spawn()
    try:
        if not fuzzer.handshake(server):
            kind = "crashes" if server.exited() else "hangs"
            fuzzer.totals.count(kind, "initialize (exit-without-shutdown case)")
            return
        server.send({"jsonrpc": "2.0", "method": "exit"}, fuzzer.probe_timeout)
        code = server.wait_exit(5.0)
        if code is None:
            fuzzer.totals.count("hangs", "`exit` without `shutdown`: the server did not exit")
        elif code != 1:
            fuzzer.wrong(f"`exit` without `shutdown` gave exit code {code}, not 1")
    finally:
        server.kill()


# --- the bad-input cases: each sends something hostile, then checks the server is still fine ---

Case = tuple[str, Callable[[], None]]
PROBE_PARAMS = {"textDocument": {"uri": "file:///fuzz/probe.py"}}
VICTIM_URI = "file:///fuzz/stream0.py"


def _null_error_case(fuzzer: Fuzzer, name: str, make_payload: Callable[[], bytes],
                     codes: tuple[int, ...] = (PARSE_ERROR,)) -> Case:
    """A case whose input carries no usable id: an error with id null must come back."""
    def case() -> None:
        fuzzer.expect_null_error(name, fuzzer.bad_input(name, make_payload()), codes)
    return name, case


def _bad_request_case(fuzzer: Fuzzer, name: str, make_message: Callable[[int], Any],
                      codes: tuple[int, ...], null_id_too: bool = False) -> Case:
    """A request with an id that must be refused with one of `codes` (or, where
    `null_id_too`, with an error whose id is null)."""
    def case() -> None:
        request_id = fuzzer.live.next_id()
        window = fuzzer.bad_input(name, frame(encode(make_message(request_id))))
        fuzzer.expect_error(name, request_id, codes, window if null_id_too else None)
    return name, case


def _answered_case(fuzzer: Fuzzer, name: str, method: str, params: Any, *,
                   allow: tuple[int, ...] = (), empty: bool = False) -> Case:
    """A request that must be answered quickly (empty where `empty`; errors only in `allow`)."""
    def case() -> None:
        request_id = fuzzer.live.next_id()
        fuzzer.bad_input(name, frame(request_body(request_id, method, params)))
        fuzzer.expect_answer(name, request_id, allow=allow, empty=empty)
    return name, case


def framing_cases(fuzzer: Fuzzer) -> list[Case]:
    """Broken headers and bodies; the server must answer -32700 and re-synchronise."""
    probe_body = lambda: request_body(fuzzer.live.next_id(), DIGEST, PROBE_PARAMS)  # noqa: E731
    cases = [_null_error_case(fuzzer, "Content-Length: 99999999999999",
                              lambda: b"Content-Length: 99999999999999\r\n\r\n")]
    for value in ("-5", "abc", "12abc", "", "0x10", "1e3", "0"):
        cases.append(_null_error_case(fuzzer, f"Content-Length: {value!r}",
                                      lambda value=value: f"Content-Length: {value}\r\n\r\n"
                                      .encode()))
    cases += [
        _null_error_case(fuzzer, "a header block without Content-Length",
                         lambda: b"Content-Type: application/vscode-jsonrpc\r\n\r\n"),
        _null_error_case(fuzzer, "Content-Length shorter than the body",
                         lambda: b"Content-Length: 10\r\n\r\n" + probe_body()),
        _null_error_case(fuzzer, "a body without a header", lambda: probe_body() + b"\r\n"),
        ("Content-Length longer than the body", lambda: _long_length(fuzzer)),
        ("LF-only header lines", lambda: _lf_only(fuzzer)),
        (f"a {fuzzer.huge_header_mb} MB header line", lambda: _huge_header(fuzzer)),
    ]
    cases += [_null_error_case(fuzzer, f"garbage bytes #{index}",
                               lambda: random_garbage(fuzzer.rng)) for index in range(4)]
    return cases


def _long_length(fuzzer: Fuzzer) -> None:
    """A Content-Length past the body's end: the good message after it must be answered
    (the short body itself may be answered or refused with -32700)."""
    name = "Content-Length longer than the body"
    short_id, good_id = fuzzer.live.next_id(), fuzzer.live.next_id()
    fuzzer.totals.requests += 1
    good = frame(request_body(good_id, DIGEST, PROBE_PARAMS))
    body = request_body(short_id, DIGEST, PROBE_PARAMS)
    declared = len(body) + good.index(b"\r\n\r\n") + 4 + 10  # reaches into the good body
    window = fuzzer.bad_input(name, b"Content-Length: %d\r\n\r\n" % declared + body + good)
    _answered_or_refused(fuzzer, name, short_id, window)
    if fuzzer.live.wait_reply(good_id, fuzzer.bounded(fuzzer.probe_timeout)) is None:
        fuzzer.wrong(f"{name}: the good message after it was never answered")


def _answered_or_refused(fuzzer: Fuzzer, name: str, request_id: int,
                         window: list[dict[str, Any]]) -> None:
    """Either the request was answered or a -32700 with id null came back."""
    if request_id not in fuzzer.live.replies and not any(
            m.get("id", "absent") is None and _code(m) == PARSE_ERROR for m in window):
        fuzzer.wrong(f"{name}: neither answered nor refused with -32700")


def _lf_only(fuzzer: Fuzzer) -> None:
    request_id = fuzzer.live.next_id()
    body = request_body(request_id, DIGEST, PROBE_PARAMS)
    name = "LF-only header lines"
    window = fuzzer.bad_input(name, b"Content-Length: %d\n\n" % len(body) + body)
    _answered_or_refused(fuzzer, name, request_id, window)


def _huge_header(fuzzer: Fuzzer) -> None:
    request_id = fuzzer.live.next_id()
    name = f"a {fuzzer.huge_header_mb} MB header line"
    message = frame(request_body(request_id, DIGEST, PROBE_PARAMS))
    padding = (b"a" * (1 << 20) for _ in range(fuzzer.huge_header_mb))
    window = fuzzer.bad_input(name, itertools.chain([b"X-Fuzz-Padding: "], padding,
                                                    [b"\r\n", message]))
    _answered_or_refused(fuzzer, name, request_id, window)


def body_cases(fuzzer: Fuzzer) -> list[Case]:
    """Well-framed bodies that are not UTF-8, not JSON, or not a JSON-RPC message."""
    def digest_bytes(inside_uri: bytes) -> bytes:
        return (b'{"jsonrpc":"2.0","id":%d,"method":"flashls/documentDigest","params":'
                b'{"textDocument":{"uri":"file:///fuzz/probe.py%s"}}}'
                % (fuzzer.live.next_id(), inside_uri))
    cases = [_null_error_case(fuzzer, f"invalid UTF-8 {raw!r} in a body",
                              lambda raw=raw: frame(digest_bytes(raw)))
             for raw in (b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80")]
    malformed = (b'{"jsonrpc": "2.0", "id": 1, "method":', b'{"jsonrpc": "2.0",}',
                 b"{'jsonrpc': '2.0'}", b'{"jsonrpc":"2.0","method":"$/x"} trailing',
                 b'{"jsonrpc":"2.0","method":"$/x","params":{"a":"\x01"}}', b"   ")
    cases += [_null_error_case(fuzzer, f"malformed JSON {raw[:24]!r}",
                               lambda raw=raw: frame(raw)) for raw in malformed]
    either = (PARSE_ERROR, INVALID_REQUEST)
    cases += [
        _null_error_case(fuzzer, "100000 nested arrays",
                         lambda: frame(b"[" * 100000 + b"]" * 100000), either),
        _null_error_case(fuzzer, "100000 nested objects",
                         lambda: frame(b'{"a":' * 100000 + b"1" + b"}" * 100000), either),
    ]
    not_messages: list[Any] = [[], [1, 2], "hello", 42, None, True, 3.5, ""]
    cases += [_null_error_case(fuzzer, f"the JSON {value!r} as a message",
                               lambda value=value: frame(encode(value)), (INVALID_REQUEST,))
              for value in not_messages]
    cases.append(_null_error_case(
        fuzzer, "a batch array", lambda: frame(b"[" + request_body(
            fuzzer.live.next_id(), DIGEST, PROBE_PARAMS) + b"]"), (INVALID_REQUEST,)))
    return cases + envelope_cases(fuzzer)


def envelope_cases(fuzzer: Fuzzer) -> list[Case]:
    """JSON objects whose JSON-RPC envelope is wrong: version, method or id."""
    def message(request_id: int, **fields: Any) -> dict[str, Any]:
        base = {"jsonrpc": "2.0", "id": request_id, "method": DIGEST, "params": PROBE_PARAMS}
        return {key: value for key, value in {**base, **fields}.items() if value != "DROP"}
    variants: dict[str, dict[str, Any]] = {
        "jsonrpc missing": {"jsonrpc": "DROP"}, 'jsonrpc "1.0"': {"jsonrpc": "1.0"},
        "jsonrpc 2.0 as a number": {"jsonrpc": 2.0}, "method a number": {"method": 42},
        "method null": {"method": None}, "method a list": {"method": ["x"]},
        "method an object": {"method": {}}}
    cases = [_bad_request_case(fuzzer, name, lambda request_id, fields=fields: message(
        request_id, **fields), (INVALID_REQUEST,), null_id_too=True)
        for name, fields in variants.items()]
    for name, bad_id in (("id an object", {"a": 1}), ("id a list", [1]), ("id true", True)):
        cases.append(_null_error_case(fuzzer, name, lambda bad_id=bad_id: frame(encode(
            {"jsonrpc": "2.0", "id": bad_id, "method": DIGEST, "params": PROBE_PARAMS})),
            (INVALID_REQUEST,)))
    return cases


def completion_params(method: str, uri: str, line: Any, character: Any) -> dict[str, Any]:
    """Params of an inline or ordinary completion request."""
    params: dict[str, Any] = {"textDocument": {"uri": uri},
                              "position": {"line": line, "character": character}}
    if method == INLINE:
        params["context"] = {"triggerKind": 2}
    return params


def params_cases(fuzzer: Fuzzer) -> list[Case]:
    """Completion requests whose params have the wrong shape: -32602 with their id."""
    cases: list[Case] = []
    for method in (INLINE, COMPLETION):
        good = completion_params(method, VICTIM_URI, 0, 0)
        variants: dict[str, Any] = {
            "line as a string": {**good, "position": {"line": "0", "character": 0}},
            "character null": {**good, "position": {"line": 0, "character": None}},
            "position a list": {**good, "position": [0, 0]},
            "position missing": {k: v for k, v in good.items() if k != "position"},
            "textDocument missing": {k: v for k, v in good.items() if k != "textDocument"},
            "uri a number": {**good, "textDocument": {"uri": 5}}}
        for name, params in variants.items():
            cases.append(_bad_request_case(
                fuzzer, f"{method}: {name}",
                lambda request_id, m=method, p=params: {"jsonrpc": "2.0", "id": request_id,
                                                        "method": m, "params": p},
                (INVALID_PARAMS,)))
        for name, params in (("params a string", "x"), ("params a list", [1, 2]),
                             ("params missing", "DROP")):
            cases.append(_bad_request_case(
                fuzzer, f"{method}: {name}",
                lambda request_id, m=method, p=params: {k: v for k, v in {
                    "jsonrpc": "2.0", "id": request_id, "method": m, "params": p}.items()
                    if v != "DROP"}, (INVALID_PARAMS, INVALID_REQUEST)))
        for name, line in (("line -1", -1), ("line 2**53", 2 ** 53)):
            cases.append(_answered_case(fuzzer, f"{method}: {name}", method,
                                        completion_params(method, VICTIM_URI, line, 0),
                                        allow=(INVALID_PARAMS,)))
    return cases


def notification_cases(fuzzer: Fuzzer) -> list[Case]:
    """Malformed didOpen/didChange, unknown methods and odd cancellations."""
    bad_open_uri = "file:///fuzz/bad-open.py"
    item = {"uri": bad_open_uri, "languageId": "python", "version": 1, "text": "x = 1\n"}
    opens: dict[str, Any] = {
        "text a number": {"textDocument": {**item, "text": 5}},
        "version a string": {"textDocument": {**item, "version": "1"}},
        "uri a number": {"textDocument": {**item, "uri": 5}},
        "textDocument missing": {}, "params a string": "x", "params null": None}
    cases = [(f"didOpen: {name}", lambda name=name, params=params: _bad_open(
        fuzzer, f"didOpen: {name}", params, bad_open_uri)) for name, params in opens.items()]
    cases += [_silent_case(fuzzer, f"didClose: {name}", "textDocument/didClose", params)
              for name, params in (("a never-opened document", {"textDocument": {
                  "uri": bad_open_uri}}), ("uri a number", {"textDocument": {"uri": 5}}),
                                   ("params a list", [1]))]
    cases += [(f"didChange: {name}", lambda name=name, make=make: _bad_change(fuzzer, name, make))
              for name, make in _bad_changes().items()]
    for method in ("flashls/noSuchMethod", "textDocument/hover"):  # hover: not served
        cases.append(_bad_request_case(
            fuzzer, f"unknown request {method}",
            lambda request_id, m=method: {"jsonrpc": "2.0", "id": request_id, "method": m,
                                          "params": completion_params(m, VICTIM_URI, 0, 0)},
            (METHOD_NOT_FOUND,)))
    for method in ("flashls/noSuchNotification", "$/noSuchThing", "textDocument/didSave"):
        cases.append(_silent_case(fuzzer, f"unknown notification {method}", method,
                                  PROBE_PARAMS, quiet=True))
    for params in ({"id": 999999}, {"id": "nope"}, {"id": None}, {}, None):
        cases.append(_silent_case(fuzzer, f"$/cancelRequest {params!r}", "$/cancelRequest",
                                  params, quiet=True))
    return cases


def _silent_case(fuzzer: Fuzzer, name: str, method: str, params: Any,
                 quiet: bool = False) -> Case:
    """A notification the server must survive (and, where `quiet`, not answer at all)."""
    def case() -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        window = fuzzer.bad_input(name, frame(encode(message)))
        if quiet:
            fuzzer.expect_no_reply(name, window)
    return name, case


def _bad_open(fuzzer: Fuzzer, name: str, params: Any, uri: str) -> None:
    """A malformed didOpen must not open anything."""
    fuzzer.bad_input(name, frame(encode({"jsonrpc": "2.0", "method": "textDocument/didOpen",
                                         "params": params})))
    reply = fuzzer.digest(uri, f"the digest after {name}")
    if reply.get("result") is not None:
        fuzzer.wrong(f"{name}: the document was opened anyway: {_brief(reply)}")
        fuzzer.notify("textDocument/didClose", {"textDocument": {"uri": uri}})


def _bad_changes() -> dict[str, Callable[[RefDocument], dict[str, Any]]]:
    """Wrong-typed didChange params for a document, by name."""
    def params(document: RefDocument, changes: Any, version: Any = None) -> dict[str, Any]:
        return {"textDocument": {"uri": document.uri,
                                 "version": document.next_version() if version is None
                                 else version}, "contentChanges": changes}
    span = {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 1}}
    return {
        "contentChanges a string": lambda d: params(d, "abc"),
        "contentChanges an object": lambda d: params(d, {"text": "x"}),
        "contentChanges [5]": lambda d: params(d, [5]),
        "line as a string": lambda d: params(d, [{"range": {**span, "start": {
            "line": "0", "character": 0}}, "text": "x"}]),
        "range end missing": lambda d: params(d, [{"range": {"start": span["start"]},
                                                   "text": "x"}]),
        "text a number": lambda d: params(d, [{"range": span, "text": 5}]),
        "version a string": lambda d: params(d, [{"range": span, "text": "x"}],
                                             str(d.next_version())),
        "textDocument missing": lambda d: {"contentChanges": [{"text": "x"}]},
    }


def _bad_change(fuzzer: Fuzzer, name: str,
                make: Callable[[RefDocument], dict[str, Any]]) -> None:
    """A malformed didChange must leave the text alone; a full-text change then resyncs."""
    document = fuzzer.documents[VICTIM_URI]
    message = {"jsonrpc": "2.0", "method": "textDocument/didChange", "params": make(document)}
    fuzzer.bad_input(f"didChange: {name}", frame(encode(message)))
    document.in_sync = None
    fuzzer.check_digest(document, f"after didChange with {name}", check_version=False)
    fuzzer.resync(document)
    fuzzer.check_digest(document, f"after the full-text change that follows {name}")


def uri_cases(fuzzer: Fuzzer) -> list[Case]:
    """Requests for documents never opened, some of them files no server should read:
    the answer must be empty, quick, and carry no file contents."""
    fifo, directory = fuzzer.tmp / "fifo.py", fuzzer.tmp / "directory.py"
    with contextlib.suppress(OSError, AttributeError):
        os.mkfifo(fifo)
    directory.mkdir(exist_ok=True)
    uris = ["file:///etc/passwd", "file:///dev/zero", "file:///dev/stdin", fifo.as_uri(),
            directory.as_uri(), (fuzzer.tmp / "missing.py").as_uri(), "untitled:Untitled-1",
            "not a uri", ""]
    cases: list[Case] = []
    for uri in uris:
        for method in (INLINE, COMPLETION):
            cases.append(_answered_case(fuzzer, f"{method} on never-opened {uri!r}", method,
                                        completion_params(method, uri, 0, 0), empty=True))
        cases.append((f"digest of never-opened {uri!r}", lambda uri=uri: _no_digest(fuzzer, uri)))
    return cases


def _no_digest(fuzzer: Fuzzer, uri: str) -> None:
    fuzzer.totals.inputs_tried += 1
    reply = fuzzer.digest(uri, f"the digest of never-opened {uri!r}")
    if "result" not in reply or reply["result"] is not None:
        fuzzer.wrong(f"digest of never-opened {uri!r} is not null: {_brief(reply)}")


def position_cases(fuzzer: Fuzzer) -> list[Case]:
    """Completion at the edges of documents: valid ones answered, past-the-end ones not
    an internal error."""
    empty, abc = "file:///fuzz/empty.py", "file:///fuzz/abc.py"
    cases: list[Case] = []
    for method in (INLINE, COMPLETION):
        for uri, line, character in ((empty, 0, 0), (abc, 1, 0), (abc, 0, 3), (abc, 0, 0)):
            cases.append(_answered_case(fuzzer, f"{method} at {uri} {line}:{character}", method,
                                        completion_params(method, uri, line, character)))
        for uri, line, character in ((abc, 5, 0), (abc, 0, 99), (abc, 1, 7), (empty, 3, 3)):
            cases.append(_answered_case(
                fuzzer, f"{method} past the end of {uri} at {line}:{character}", method,
                completion_params(method, uri, line, character), allow=(INVALID_PARAMS,)))
    return cases


def _second_initialize(fuzzer: Fuzzer) -> None:
    """A second `initialize` is refused and the open documents stay open."""
    fuzzer.totals.inputs_tried += 1
    reply = fuzzer.call("initialize", {"processId": None, "rootUri": None, "capabilities": {}},
                        "a second initialize", fuzzer.probe_timeout)
    if _code(reply) is None:
        fuzzer.wrong(f"a second initialize was accepted: {_brief(reply)}")
    fuzzer.check_all_digests("after a second initialize")


SETTINGS_RESTORED = {"enable": True, "model": "", "maxTokens": 48, "nCtx": 2048,
                     "timeBudgetMs": 1500, "multiline": "auto", "prefixBudgetTokens": 1024,
                     "nThreads": 0}


def settings_cases(fuzzer: Fuzzer) -> list[Case]:
    """`workspace/didChangeConfiguration` with nulls, wrong types, floods and conflicts."""
    bad_values: dict[str, Any] = {
        "null settings": {"flashls": {"enable": None, "model": None}},
        "wrong-typed settings": {"flashls": {
            "maxTokens": "lots", "enable": "maybe", "nCtx": [1], "timeBudgetMs": {"a": 1},
            "multiline": 3, "prefixBudgetTokens": -5, "nThreads": 1e30}},
        "settings a string": "flashls", "settings null": None, "settings a list": [1, 2],
        "flashls section null": {"flashls": None}, "flashls section a list": {"flashls": [1]}}
    cases = [(name, lambda name=name, value=value: _settings(fuzzer, name, value))
             for name, value in bad_values.items()]
    return [*cases, ("10000 unknown settings", lambda: _flood(fuzzer)),
            ("nCtx 512 with maxTokens 2048", lambda: _conflict(fuzzer))]


def _configure(fuzzer: Fuzzer, name: str, value: Any) -> None:
    fuzzer.bad_input(name, frame(encode({"jsonrpc": "2.0",
                                         "method": "workspace/didChangeConfiguration",
                                         "params": {"settings": value}})))


def _settings(fuzzer: Fuzzer, name: str, value: Any) -> None:
    """Bad settings change nothing a user would lose: completion still answers."""
    _configure(fuzzer, name, value)
    request_id = fuzzer.send_request(INLINE, completion_params(INLINE, VICTIM_URI, 0, 0))
    fuzzer.expect_answer(f"completion after {name}", request_id)
    _restore_settings(fuzzer)


def _restore_settings(fuzzer: Fuzzer) -> None:
    fuzzer.notify("workspace/didChangeConfiguration", {"settings": {"flashls":
                                                                    SETTINGS_RESTORED}})


def _shown_since(fuzzer: Fuzzer, mark: int) -> int:
    fuzzer.live.settle(0.3)
    return sum(1 for m in fuzzer.live.since(mark) if m.get("method") == SHOW_MESSAGE)


def _flood(fuzzer: Fuzzer) -> None:
    """10000 unknown keys: a handful of messages to the user, not thousands."""
    mark = fuzzer.live.mark()
    flood = {f"unknownSetting{index}": index for index in range(10000)}
    _configure(fuzzer, "10000 unknown settings", {"flashls": flood})
    shown = _shown_since(fuzzer, mark)
    if shown > 5:
        fuzzer.wrong(f"10000 unknown settings: {shown} window/showMessage notifications")


def _conflict(fuzzer: Fuzzer) -> None:
    """maxTokens cannot fit in nCtx: refused, and the user is told."""
    mark = fuzzer.live.mark()
    _configure(fuzzer, "nCtx 512 with maxTokens 2048",
               {"flashls": {"nCtx": 512, "maxTokens": 2048}})
    if _shown_since(fuzzer, mark) == 0:
        fuzzer.wrong("nCtx 512 with maxTokens 2048: accepted without a window/showMessage")
    _restore_settings(fuzzer)


def all_cases(fuzzer: Fuzzer) -> list[Case]:
    """Every bad-input case, in a fixed order (the dangerous files come late)."""
    return [*framing_cases(fuzzer), *body_cases(fuzzer), *params_cases(fuzzer),
            *notification_cases(fuzzer), *position_cases(fuzzer),
            ("a second initialize", lambda: _second_initialize(fuzzer)),
            *settings_cases(fuzzer), *uri_cases(fuzzer)]


def interleaved_cases(fuzzer: Fuzzer) -> list[Case]:
    """The cheap cases, thrown in between batches of edits."""
    cases = [*framing_cases(fuzzer), *body_cases(fuzzer), *params_cases(fuzzer),
             *notification_cases(fuzzer), *position_cases(fuzzer)]
    return [case for case in cases if "MB" not in case[0]]


def run_cases(fuzzer: Fuzzer, cases: list[Case], budget_end: float) -> None:
    """Run each case; one that loses the server moves on to the next on a fresh one."""
    for name, case in cases:
        if time.monotonic() > budget_end:
            fuzzer.totals.skipped.append(name)
            continue
        with contextlib.suppress(CaseLost):
            case()


# --- random edit streams against the reference model ---


def request_completion(fuzzer: Fuzzer) -> None:
    """A completion request at a random valid position; some get cancelled."""
    rng = fuzzer.rng
    document = fuzzer.documents[rng.choice(fuzzer.stream_uris)]
    position = position_of(document.text, random_offset(rng, document.text))
    method = INLINE if rng.random() < 0.85 else COMPLETION
    params = completion_params(method, document.uri, position["line"], position["character"])
    fuzzer.pending.append((fuzzer.send_request(method, params), method, False))
    if rng.random() < 0.3:
        index = rng.randrange(len(fuzzer.pending))
        request_id, method, _ = fuzzer.pending[index]
        fuzzer.notify("$/cancelRequest", {"id": request_id})
        fuzzer.pending[index] = (request_id, method, True)


def collect_pending(fuzzer: Fuzzer) -> None:
    """Every completion request sent must be answered in time, with a well-formed answer."""
    while fuzzer.pending:
        request_id, method, cancelled = fuzzer.pending[0]
        reply = fuzzer.wait(request_id, fuzzer.request_timeout,
                            f"{method}{' (cancelled)' if cancelled else ''}")
        fuzzer.pending.pop(0)
        if _code(reply) is not None:
            if _code(reply) not in CANCELLED_CODES:
                fuzzer.wrong(f"{method} at a valid position: {_brief(reply)}")
            continue
        result = reply.get("result")
        items = result.get("items") if isinstance(result, dict) else result
        if result is not None and not (isinstance(items, list) and all(
                isinstance(item, dict) for item in items)):
            fuzzer.wrong(f"{method}: malformed result {_brief(reply)}")


def multi_change(fuzzer: Fuzzer, document: RefDocument) -> None:
    """One notification with several changes, each against the text the previous one left."""
    changes, text = [], document.text
    for _ in range(fuzzer.rng.randint(2, 5)):
        if fuzzer.rng.random() < 0.1:
            text = random_text(fuzzer.rng, fuzzer.rng.randint(0, 8))
            changes.append({"text": text})
        else:
            change, text = random_change(fuzzer.rng, text)
            changes.append(change)
    fuzzer.apply_valid(document, changes, text)


def invalid_change(fuzzer: Fuzzer, document: RefDocument) -> None:
    """A reversed range, a range past the end or a stale version: rejected, text unchanged,
    inSync false; then a full-text change restores both."""
    rng, text = fuzzer.rng, document.text
    kind = rng.choice(("reversed range", "range past the end", "stale version"))
    version: int | None = None
    if kind == "reversed range" and len(text) >= 2:
        first, second = sorted(random_offset(rng, text) for _ in range(2))
        if first == second:
            first, second = 0, len(text)
        change = {"range": {"start": position_of(text, second), "end": position_of(text, first)},
                  "text": random_insert(rng)}
    elif kind == "range past the end":
        change = {"range": {"start": position_of(text, random_offset(rng, text)),
                            "end": {"line": len(line_starts(text)) + rng.randint(1, 5),
                                    "character": rng.randint(0, 5)}}, "text": "x"}
    else:
        kind = "stale version"
        change, _ = random_change(rng, text)
        version = document.version - rng.randint(0, 2)
    fuzzer.totals.inputs_tried += 1
    fuzzer.change(document, [change], version)
    document.in_sync = False
    fuzzer.check_digest(document, f"after a change with a {kind}", check_version=False)
    fuzzer.resync(document)


def reopen(fuzzer: Fuzzer, document: RefDocument) -> None:
    """Close a document (its digest must then be null) and open it again with new text."""
    fuzzer.notify("textDocument/didClose", {"textDocument": {"uri": document.uri}})
    reply = fuzzer.digest(document.uri, f"the digest of {document.uri} after didClose")
    if reply.get("result") is not None:
        fuzzer.totals.count("divergences", f"{document.uri} is still open after didClose: "
                                           f"{_brief(reply)}")
    document.text = random_text(fuzzer.rng, fuzzer.rng.randint(0, 30))
    document.version = document.next_version()
    document.in_sync = True
    fuzzer.notify("textDocument/didOpen", {"textDocument": document.item()})


def edit_batch(fuzzer: Fuzzer, size: int) -> None:
    """`size` random edits with completions interleaved, then answers and digests checked."""
    rng = fuzzer.rng
    for _ in range(size):
        document = fuzzer.documents[rng.choice(fuzzer.stream_uris)]
        roll = rng.random()
        if roll < 0.005:
            reopen(fuzzer, document)
        elif roll < 0.025:
            invalid_change(fuzzer, document)
        elif roll < 0.05:
            fuzzer.resync(document)
        elif roll < 0.2:
            multi_change(fuzzer, document)
        else:
            change, text = random_change(rng, document.text)
            fuzzer.apply_valid(document, [change], text)
        if rng.random() < 0.15:
            request_completion(fuzzer)
    collect_pending(fuzzer)


def edit_stream(fuzzer: Fuzzer, edits: int, interleaved: list[Case]) -> None:
    """Batches of edits until `edits` are applied or time runs short; a bad input now and
    then between batches; every stream document's digest after each batch."""
    while fuzzer.totals.edits < edits and fuzzer.left() > FINAL_RESERVE_S:
        with contextlib.suppress(CaseLost):
            edit_batch(fuzzer, min(50, edits - fuzzer.totals.edits))
            if interleaved and fuzzer.rng.random() < 0.3:
                fuzzer.rng.choice(interleaved)[1]()
            for uri in fuzzer.stream_uris:
                fuzzer.check_digest(fuzzer.documents[uri], "after a batch of edits")


# --- the run ---


def warm_up(fuzzer: Fuzzer) -> tuple[float, int]:
    """One completion so the worker threads exist, then the server's (RSS MB, threads)."""
    with contextlib.suppress(CaseLost):
        request_id = fuzzer.send_request(INLINE, completion_params(INLINE, VICTIM_URI, 0, 0))
        fuzzer.wait(request_id, fuzzer.request_timeout, "the first completion")
        fuzzer.live.settle(0.5)
    return fuzzer.live.stats()


def finish(fuzzer: Fuzzer) -> tuple[float, int]:
    """Last digests, the server's (RSS MB, threads), then `shutdown` and `exit` (code 0)."""
    with contextlib.suppress(CaseLost):
        collect_pending(fuzzer)
        fuzzer.check_all_digests("at the end")
    fuzzer.live.settle(0.5)
    stats = fuzzer.live.stats()
    try:
        reply = fuzzer.call("shutdown", None, "shutdown", 5.0)
    except CaseLost:
        return stats
    if _code(reply) is not None or reply.get("result") is not None:
        fuzzer.wrong(f"shutdown: {_brief(reply)}")
    server = fuzzer.live
    server.send({"jsonrpc": "2.0", "method": "exit"}, 2.0)
    code = server.wait_exit(5.0)
    if code is None:
        fuzzer.totals.count("hangs", "the server did not exit after shutdown and exit")
    elif code != 0:
        fuzzer.wrong(f"exit after shutdown gave exit code {code}, not 0")
    server.kill()
    fuzzer.server = None
    return stats


def run(seed: int, edits: int, time_limit_s: float, *, huge_header_mb: int = 1,
        probe_timeout_s: float = 5.0, request_timeout_s: float = 10.0,
        command: Iterable[str] = SERVE_FAKE, all_failures: bool = False) -> dict[str, Any]:
    """Fuzz one server for at most about `time_limit_s` seconds; the totals (with every
    breach's description under `all_failures` if asked, else the first few)."""
    fuzzer = Fuzzer(seed, time_limit_s, huge_header_mb=huge_header_mb,
                    probe_timeout_s=probe_timeout_s, request_timeout_s=request_timeout_s,
                    command=command)
    before = after = (0.0, 0)
    phases: dict[str, float] = {}
    clock = time.monotonic()

    def phase(name: str) -> None:
        nonlocal clock
        phases[name] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()
    try:
        run_exit_without_shutdown(fuzzer)
        with contextlib.suppress(CaseLost):
            fuzzer.start()
        before = warm_up(fuzzer)
        phase("start")
        run_cases(fuzzer, all_cases(fuzzer), fuzzer.started + 0.45 * time_limit_s)
        phase("cases")
        edit_stream(fuzzer, edits, interleaved_cases(fuzzer))
        phase("edits")
        after = finish(fuzzer)
        phase("finish")
    except Abort as reason:
        fuzzer.totals.skipped.append(f"the rest of the run ({reason})")
    finally:
        fuzzer.close()
    totals = dict(vars(fuzzer.totals))
    if not all_failures:
        del totals["all_failures"]
    totals.update(seed=seed, rss_mb_before=before[0], rss_mb_after=after[0],
                  threads_before=before[1], threads_after=after[1], phase_s=phases,
                  duration_s=round(time.monotonic() - fuzzer.started, 1))
    return totals


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.fuzz_lsp`: a longer run by hand; exit code 1 on any breach."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--edits", type=int, default=20000)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds")
    parser.add_argument("--huge-header-mb", type=int, default=200,
                        help="size of the oversized header line")
    parser.add_argument("--probe-timeout", type=float, default=5.0, help="seconds")
    arguments = parser.parse_args(argv)
    totals = run(arguments.seed, arguments.edits, arguments.time_limit,
                 huge_header_mb=arguments.huge_header_mb,
                 probe_timeout_s=arguments.probe_timeout, all_failures=True)
    print(json.dumps(totals, indent=2, ensure_ascii=True))
    return 1 if any(totals[name] for name in MUST_BE_ZERO) else 0


if __name__ == "__main__":
    sys.exit(main())
