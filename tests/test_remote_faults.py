"""Remote faults end to end: `flashls serve --engine llama-server` in front of a stand-in
that misbehaves on purpose (`tests.http_servers.FaultyLlamaServer`), driven as an editor
drives it: a keystroke, a request, the previous request cancelled.

Each case types on a healthy server, then through the fault, then after it clears, and
checks what a user would notice: no request goes unanswered past its budget, suggestions
come back soon after the fault clears, the user is told once that the server stopped
answering and once that it is back (never a dialog a keystroke, never markup), threads and
descriptors stay flat, and stderr holds no asyncio complaint. One line of figures a case is
printed for the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from flashls.bench.client import LspClient, PendingRequest, Response
from tests import http_servers
from tests.conftest import SERVE
from tests.http_servers import FaultyLlamaServer, free_port

TIME_BUDGET_MS = 500
REMOTE_TIMEOUT_MS = 2000
KEY_S = 0.12  # between keystrokes
# An answer later than its budget by more than this is a hang (the machine is shared).
LATE_S = 1.0
# How soon after a fault clears a suggestion must show again: the back-off's Retry-After
# (1 s), a budget, and the time a keystroke takes to reach a new generation.
RECOVERY_S = 3.0
THREAD_MARGIN, FD_MARGIN = 3, 6
LINE = "x = "
SUGGESTION = "_zz + 1"
ASYNCIO_COMPLAINTS = ("exception was never retrieved", "Task was destroyed",
                      "Task exception was never retrieved", "Traceback")
MARKUP = re.compile(r"<\s*/?\s*[a-zA-Z!][^>]*>")


@dataclass
class Answer:
    """One keystroke's request and what came back."""

    sent_at: float
    response: Response | None

    @property
    def seconds(self) -> float:
        return float("inf") if self.response is None else self.response.arrived_at - self.sent_at

    @property
    def text(self) -> str:
        result = None if self.response is None else self.response.result
        items = result.get("items", []) if isinstance(result, dict) else result or []
        return "".join(str(item.get("insertText", "")) for item in items)


@dataclass
class Told:
    """A notification the editor received, and when."""

    method: str
    params: Any
    at: float

    @property
    def message(self) -> str:
        if not isinstance(self.params, dict):
            return ""
        value = self.params.get("message", self.params.get("value", ""))
        return str(value.get("message", value) if isinstance(value, dict) else value)


@dataclass
class Editor:
    """A flashls process and the editor's side of it: one document typed into."""

    client: LspClient
    told: list[Told] = field(default_factory=list)
    column: int = len(LINE)
    version: int = 1
    uri: str = "file:///work/faults/app.py"

    @classmethod
    async def start(cls, endpoint: str) -> Editor:
        client = await LspClient.start([
            *SERVE, "--engine", "llama-server", "--endpoint", endpoint,
            "--time-budget-ms", str(TIME_BUDGET_MS),
            "--remote-timeout-ms", str(REMOTE_TIMEOUT_MS)])
        editor = cls(client)
        for method in ("window/showMessage", "window/logMessage", "flashls/status",
                       "$/progress"):
            client.subscribe(method, editor._keep(method))
        await client.request("initialize", {"processId": os.getpid(), "rootUri": None,
                                            "capabilities": {}}, 10)
        await client.notify("initialized", {})
        await client.notify("textDocument/didOpen", {"textDocument": {
            "uri": editor.uri, "languageId": "python", "version": 1, "text": LINE + "\n"}})
        return editor

    def _keep(self, method: str) -> Callable[[Any, int], None]:
        def keep(params: Any, sequence: int) -> None:
            self.told.append(Told(method, params, time.perf_counter()))

        return keep

    async def wait_for_status(self, state: str, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(t.method == "flashls/status" and t.params.get("state") == state
                      for t in self.told):
            assert time.monotonic() < deadline, f"no status {state!r}: {self.told}"
            await asyncio.sleep(0.02)

    async def type(self, keys: int) -> list[Answer]:
        """Type `keys` letters, a request at each, cancelling the one before if it is
        still unanswered; the answers once all came (or their wait ran out)."""
        sent: list[tuple[float, PendingRequest]] = []
        for index in range(keys):
            letter = "abcdefghijklmnopqrstuvwxy"[(self.column + index) % 25]
            self.version += 1
            await self.client.notify("textDocument/didChange", {
                "textDocument": {"uri": self.uri, "version": self.version},
                "contentChanges": [{"range": {
                    "start": {"line": 0, "character": self.column},
                    "end": {"line": 0, "character": self.column}}, "text": letter}]})
            self.column += 1
            if sent and not sent[-1][1].future.done():
                await self.client.cancel(sent[-1][1].request_id)
            pending = await self.client.send_request("textDocument/inlineCompletion", {
                "textDocument": {"uri": self.uri},
                "position": {"line": 0, "character": self.column},
                "context": {"triggerKind": 2}})
            sent.append((pending.sent_at, pending))
            await asyncio.sleep(KEY_S)
        wait_s = TIME_BUDGET_MS / 1000 + LATE_S + 2
        return [Answer(at, await self.client.wait(pending, wait_s)) for at, pending in sent]

    def resources(self) -> tuple[int, int]:
        """The server's threads and open file descriptors."""
        pid = self.client.pid
        return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))

    async def settled_resources(self, ceiling: tuple[int, int]) -> tuple[int, int]:
        """Threads and descriptors once replies still being closed are done (a reader
        waits at most `remote_timeout_ms`), or at the end of that wait."""
        deadline = time.monotonic() + REMOTE_TIMEOUT_MS / 1000 + 1
        counts = self.resources()
        while time.monotonic() < deadline and (counts[0] > ceiling[0] or counts[1] > ceiling[1]):
            await asyncio.sleep(0.1)
            counts = self.resources()
        return counts

    async def close_with_a_request_in_flight(self) -> str:
        """Shut down while a request runs; the server's whole stderr."""
        await self.type(1)  # answered: the next one is in flight at `shutdown`
        self.version += 1
        await self.client.send_request("textDocument/inlineCompletion", {
            "textDocument": {"uri": self.uri}, "position": {"line": 0, "character": 0},
            "context": {"triggerKind": 2}})
        try:
            await self.client.request("shutdown", None, 10)
            await self.client.notify("exit", None)
            status = await self.client.exited(10)
        finally:
            stderr = self.client.stderr_tail(10**7)
            await self.client.kill()
        assert status == 0, stderr[-2000:]
        return stderr


@dataclass(frozen=True)
class Case:
    """A fault, how long it is typed through, and what the user must be told."""

    name: str
    fault: str
    outage: bool  # the user is told it stopped answering, then that it is back
    keys: int = 25  # typed while the fault lasts
    idle_s: float = 0.0  # a pause in the middle of it (the user reads)
    at_start: bool = False  # the fault is there before flashls starts; typing begins at once


DOWN = "down"  # nothing listens at the endpoint until the fault clears

CASES = [
    Case("hang", http_servers.HANG, outage=True, idle_s=REMOTE_TIMEOUT_MS / 1000 + 0.5),
    Case("hang from the start", http_servers.HANG, outage=True, at_start=True),
    Case("wedged connection", http_servers.WEDGE, outage=False, keys=0),
    Case("stall mid-stream", http_servers.STALL, outage=False,
         idle_s=REMOTE_TIMEOUT_MS / 1000 + 0.5),
    Case("close mid-stream", http_servers.CLOSE, outage=True),
    Case("500", http_servers.ERROR_500, outage=True),
    Case("429 Retry-After", http_servers.BUSY_429, outage=True),
    Case("502 HTML", http_servers.HTML_502, outage=True),
    Case("empty 200", http_servers.EMPTY_200, outage=True),
    Case("endless stream", http_servers.ENDLESS, outage=False),
    Case("down at start", DOWN, outage=True, at_start=True),
]


@contextlib.asynccontextmanager
async def stand_in_and_editor(case: Case) -> AsyncIterator[
        tuple[Callable[[], FaultyLlamaServer], Editor]]:
    """The stand-in (started now, or when the first value is called if the case is
    DOWN) and an editor whose server uses it."""
    port = free_port()
    servers: list[FaultyLlamaServer] = []

    def up() -> FaultyLlamaServer:
        if not servers:
            servers.append(FaultyLlamaServer(port))
        return servers[0]

    if case.fault != DOWN:
        up().fault = case.fault if case.at_start else http_servers.HEALTHY
    editor = await Editor.start(f"http://127.0.0.1:{port}")
    try:
        yield up, editor
    finally:
        await editor.client.kill()
        for server in servers:
            server.close()


@dataclass
class Outcome:
    """What one case measured."""

    answers: list[Answer]  # every request's, in order
    recovery_s: float  # from the fault clearing to the first suggestion shown
    told: list[Told]  # from the fault on
    told_after_s: float  # from the fault to the first word that the server stopped
    before: tuple[int, int]  # threads and descriptors before the fault
    after: tuple[int, int]  # and after it cleared
    posts: int  # requests the stand-in was sent
    stderr: str

    @property
    def dialogs(self) -> list[str]:
        return [t.message for t in self.told if t.method == "window/showMessage"]

    @property
    def logs(self) -> list[str]:
        return [t.message for t in self.told if t.method == "window/logMessage"]

    @property
    def stopped(self) -> list[Told]:
        """What told the user the server stopped answering: a dialog, or a log message
        for a busy server."""
        return [t for t in self.told if t.method == "window/showMessage" or (
            t.method == "window/logMessage" and "answers again" not in t.message)]

    @property
    def back(self) -> list[Told]:
        return [t for t in self.told
                if t.method == "window/logMessage" and "answers again" in t.message]

    @property
    def states(self) -> list[str]:
        """The status bar's states, each time it changed."""
        states: list[str] = []
        for t in self.told:
            if t.method == "flashls/status" and (not states or states[-1] != t.params["state"]):
                states.append(t.params["state"])
        return states

    def summary(self, name: str) -> str:
        told = "".join(f"\n[fault]   told: {message}" for message in self.dialogs + self.logs)
        return (f"[fault] {name}: {len(self.answers)} requests, slowest answer "
                f"{max(a.seconds for a in self.answers):.2f} s, told it stopped after "
                f"{self.told_after_s:.2f} s, first suggestion {self.recovery_s:.2f} s after "
                f"the fault cleared, dialogs {len(self.dialogs)}, log messages "
                f"{len(self.logs)}, status {'>'.join(self.states)}, threads "
                f"{self.before[0]}->{self.after[0]}, fds {self.before[1]}->{self.after[1]}, "
                f"posts {self.posts}{told}")


async def _run(case: Case) -> Outcome:
    """Type before the fault (unless it is there from the start), through it, after it."""
    async with stand_in_and_editor(case) as (up, editor):
        healthy: list[Answer] = []
        if not case.at_start:
            await editor.wait_for_status("ready")
            healthy = await editor.type(8)
            assert any(answer.text == SUGGESTION for answer in healthy)
            up().fault = case.fault
        before, since, began = editor.resources(), len(editor.told), time.perf_counter()
        during = await editor.type(case.keys // 2)
        await asyncio.sleep(case.idle_s)
        during += await editor.type(case.keys - case.keys // 2)
        server = up()
        if case.fault != http_servers.WEDGE:  # a wedge takes one request only
            server.fault = http_servers.HEALTHY
        cleared = time.perf_counter()
        after_fault = await editor.type(20)
        after = await editor.settled_resources((before[0] + THREAD_MARGIN,
                                                before[1] + FD_MARGIN))
        told = editor.told[since:]
        stderr = await editor.close_with_a_request_in_flight()
    shown = [a.response.arrived_at - cleared for a in after_fault
             if a.response is not None and a.text]
    outcome = Outcome(healthy + during + after_fault, shown[0] if shown else float("inf"),
                      told, float("nan"), before, after, server.posts, stderr)
    if outcome.stopped:
        outcome.told_after_s = outcome.stopped[0].at - began
    return outcome


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_a_remote_fault_is_survived_and_told_once(
        case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    outcome = await _run(case)
    with capsys.disabled():
        print("\n" + outcome.summary(case.name))

    limit = TIME_BUDGET_MS / 1000 + LATE_S
    assert [a.seconds for a in outcome.answers if a.seconds > limit] == [], "a request hung"
    assert outcome.recovery_s <= RECOVERY_S
    assert not any(MARKUP.search(message) for message in outcome.dialogs + outcome.logs)
    (threads, fds), (threads_after, fds_after) = outcome.before, outcome.after
    assert threads_after <= threads + THREAD_MARGIN and fds_after <= fds + FD_MARGIN
    assert not [line for line in outcome.stderr.splitlines() if any(
        complaint in line for complaint in ASYNCIO_COMPLAINTS)], outcome.stderr[-3000:]
    stopped, back = outcome.stopped, outcome.back
    if case.outage:
        assert len(stopped) == 1, f"told {len(stopped)} times that it stopped: {stopped}"
        assert "error" in outcome.states and len(back) == 1
        assert stopped[0].at < back[0].at
    else:  # it may stop answering for a while (a stall the user waits through)
        assert len(stopped) <= 1 and len(back) == len(stopped)
    assert outcome.states[-1] == "ready"
