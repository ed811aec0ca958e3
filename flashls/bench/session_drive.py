"""Driving one editing session against a running server on a fixed clock, as an editor
would: the profile's actions from `session_editor`, sent at their times, with every
request, keystroke and `flashls/status` logged for `session_metrics`.

Answers are never waited for while typing: they land in the background and are read at
the end; a request still pending when the user moves on is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from flashls.bench.client import REQUEST_CANCELLED, LspClient, PendingRequest, Response, as_int
from flashls.bench.replay import (
    INLINE_COMPLETION,
    STATUS_NOTIFICATION,
    StatusBoard,
    shown_text,
)
from flashls.bench.session_editor import (
    DELETE,
    END,
    FOCUS,
    NEOVIM_DEBOUNCE_MS,
    PASTE,
    REQUEST,
    TYPE,
    Action,
    Timing,
    cancels_on_keystroke,
    end_time,
    schedule,
)
from flashls.bench.session_metrics import RequestLog, VisitLog
from flashls.bench.session_plan import (
    SessionPlan,
    Visit,
    delete_change,
    did_open_params,
    paste_change,
    type_change,
)
from flashls.bench.trace import Position

DID_FOCUS = "textDocument/didFocus"
DID_CHANGE = "textDocument/didChange"
# flashls.server's FINISHED_NOTIFICATION; not imported, to keep pygls out of the bench.
FINISHED_NOTIFICATION = "flashls/suggestionFinished"
TRIGGER_INVOKED = 1
TRIGGER_AUTOMATIC = 2
RSS_SAMPLE_S = 0.1
SUGGESTION_CHARS_KEPT = 400


@dataclass
class _Sent:
    """A request on the wire and what is needed to read its answer."""

    pending: PendingRequest
    visit: Visit
    typed: int
    uri: str
    cursor: Position
    sent_ms: float
    cancelled_ms: float | None = None


@dataclass
class SessionLog:
    """Everything one run of the plan produced; times in ms from the session's start."""

    requests: list[RequestLog] = field(default_factory=list)
    visits: list[VisitLog] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    rss_samples_mb: list[float | None] = field(default_factory=list)
    notifications: dict[str, int] = field(default_factory=dict)  # sent, by method
    finished: int = 0  # flashls/suggestionFinished received
    reasks: int = 0  # requests sent because of one (the cursor was still where it named)


class SessionDriver:
    """Plays a session plan against one server through one editor profile."""

    def __init__(self, client: LspClient, plan: SessionPlan, editor: str, focus: bool,
                 timing: Timing, timeout_s: float) -> None:
        self.client, self.plan, self.editor, self.focus = client, plan, editor, focus
        self.timing, self.timeout_s = timing, timeout_s
        self.log = SessionLog()
        self._board = StatusBoard()
        self._sent: list[_Sent] = []
        self._versions = {file.uri: 1 for file in plan.files}
        self._origin = time.perf_counter()
        # Where the cursor is while the user is at a place: (visit, typed, uri, cursor).
        self._here: tuple[Visit, int, str, Position] | None = None
        self._reasking: set[asyncio.Task[None]] = set()
        client.subscribe(STATUS_NOTIFICATION, self._status)
        client.subscribe(FINISHED_NOTIFICATION, self._finished)

    def _now_ms(self) -> float:
        return (time.perf_counter() - self._origin) * 1000

    def _status(self, params: Any, sequence: int) -> None:
        self._board.receive(params, sequence)
        if isinstance(params, dict):
            self.log.statuses.append({"at_ms": self._now_ms(), **params})

    def _finished(self, params: Any, _sequence: int) -> None:
        """A suggestion cut short is whole now: ask again if the cursor is still where it
        names, as each editor does (`_reask`)."""
        self.log.finished += 1
        if self._here is None or not isinstance(params, dict):
            return
        visit, typed, uri, cursor = self._here
        document = params.get("textDocument") or {}
        position = params.get("position") or {}
        if (document.get("uri") != uri or document.get("version") != self._versions[uri]
                or position != cursor.to_lsp()):
            return
        task = asyncio.get_running_loop().create_task(
            self._reask(visit, typed, uri, cursor, self._versions[uri]))
        self._reasking.add(task)
        task.add_done_callback(self._reasking.discard)

    async def _reask(self, visit: Visit, typed: int, uri: str, cursor: Position,
                     version: int) -> None:
        """VS Code runs its trigger command and the flashls Neovim plugin's live mode asks
        at once, both explicitly; Neovim's own inline completion asks through its
        CursorMovedI autocmd, after its debounce, if nothing changed meanwhile."""
        trigger = TRIGGER_INVOKED
        if self.editor == "neovim":
            await asyncio.sleep(NEOVIM_DEBOUNCE_MS / 1000)
            trigger = TRIGGER_AUTOMATIC
        here = self._here
        if (here is None or here[0] is not visit or here[1] != typed
                or self._versions[uri] != version):
            return
        self.log.reasks += 1
        await self._cancel_pending()
        await self._request(visit, typed, uri, cursor, trigger)

    async def run(self) -> SessionLog:
        """Open every file, visit every place on the clock, then collect the answers."""
        self.log.rss_samples_mb.append(self.client.rss_mb())
        sampler = asyncio.create_task(self._sample_rss())
        try:
            for file in self.plan.files:
                await self._notify("textDocument/didOpen", did_open_params(file))
            self._origin = time.perf_counter()
            landing = 0.0
            for visit in self.plan.visits:
                await self._visit(visit, landing)
                landing = max(landing + end_time(visit, self.timing), self._now_ms())
            await self._collect()
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        self.log.rss_samples_mb.append(self.client.rss_mb())
        return self.log

    async def _sample_rss(self) -> None:
        while True:
            await asyncio.sleep(RSS_SAMPLE_S)
            self.log.rss_samples_mb.append(self.client.rss_mb())

    async def _notify(self, method: str, params: Any) -> None:
        self.log.notifications[method] = self.log.notifications.get(method, 0) + 1
        await self.client.notify(method, params)

    async def _visit(self, visit: Visit, landing_ms: float) -> None:
        keystrokes: list[float] = []
        end_ms = landing_ms
        for action in schedule(visit, self.timing, self.editor, self.focus):
            await asyncio.sleep(max(0.0, (landing_ms + action.at_ms - self._now_ms()) / 1000))
            if action.kind == TYPE:
                keystrokes.append(self._now_ms())
            if action.kind == END:
                end_ms = self._now_ms()
            await self._act(visit, action)
        self.log.visits.append(VisitLog(visit.index, visit.is_return, visit.removed,
                                        tuple(keystrokes), end_ms))

    async def _act(self, visit: Visit, action: Action) -> None:
        uri = self.plan.uri(visit)
        cursor = Position(visit.line, visit.column(max(action.typed, 0)))
        self._here = None if action.kind in (END, PASTE) else (visit, action.typed, uri, cursor)
        if action.kind == FOCUS:
            await self._notify(DID_FOCUS, {"textDocument": {"uri": uri},
                                           "position": cursor.to_lsp()})
        elif action.kind in (DELETE, TYPE, PASTE):
            if action.kind == TYPE and cancels_on_keystroke(self.editor):
                await self._cancel_pending()
            await self._change(visit, action)
        elif action.kind == REQUEST:
            await self._cancel_pending()
            await self._request(visit, action.typed, uri, cursor)
        elif action.kind == END:
            await self._cancel_pending()

    async def _change(self, visit: Visit, action: Action) -> None:
        """The didChange of a deletion, a keystroke or the paste (none if nothing is left)."""
        change = (delete_change(visit) if action.kind == DELETE
                  else type_change(visit, action.typed) if action.kind == TYPE
                  else paste_change(visit))
        if change is None:
            return
        uri = self.plan.uri(visit)
        self._versions[uri] += 1
        await self._notify(DID_CHANGE, {
            "textDocument": {"uri": uri, "version": self._versions[uri]},
            "contentChanges": [change]})

    async def _request(self, visit: Visit, typed: int, uri: str, cursor: Position,
                       trigger: int = TRIGGER_AUTOMATIC) -> None:
        params = {"textDocument": {"uri": uri}, "position": cursor.to_lsp(),
                  "context": {"triggerKind": trigger}}
        sent_ms = self._now_ms()
        pending = await self.client.send_request(INLINE_COMPLETION, params)
        self._sent.append(_Sent(pending, visit, typed, uri, cursor, sent_ms))

    async def _cancel_pending(self) -> None:
        """`$/cancelRequest` for every request still waiting for its answer."""
        for sent in self._sent:
            if sent.cancelled_ms is None and not sent.pending.future.done():
                sent.cancelled_ms = self._now_ms()
                await self.client.cancel(sent.pending.request_id)

    async def _collect(self) -> None:
        """Wait (each until its own timeout) for the answers still out, then log them all,
        pairing answers with their statuses in the order the answers arrived."""
        for task in list(self._reasking):  # the user has left: re-asks still due do not go
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sent in self._sent:
            remaining = sent.pending.sent_at + self.timeout_s - time.perf_counter()
            await self.client.wait(sent.pending, max(0.0, remaining))
        responses = [(sent, _response(sent.pending)) for sent in self._sent]
        ordered = sorted(responses, key=lambda pair: pair[1].sequence if pair[1] else 0)
        logs = {id(sent): self._request_log(sent, response) for sent, response in ordered}
        self.log.requests = [logs[id(sent)] for sent in self._sent]

    def _request_log(self, sent: _Sent, response: Response | None) -> RequestLog:
        base: dict[str, Any] = {"visit": sent.visit.index, "typed": sent.typed,
                                "sent_ms": sent.sent_ms, "cancelled_ms": sent.cancelled_ms}
        arrived_ms = (None if response is None
                      else (response.arrived_at - self._origin) * 1000)
        outcome = _outcome(response, arrived_ms, sent.sent_ms, self.timeout_s)
        if response is None or outcome != "answered":
            return RequestLog(outcome=outcome, arrived_ms=arrived_ms, **base)
        status = self._board.claim(sent.uri, sent.cursor, response.sequence)
        timings = status.get("timings") if status else None
        timings = timings if isinstance(timings, dict) else {}
        return RequestLog(
            outcome=outcome, arrived_ms=arrived_ms,
            suggestion=suggestion_text(response.result, sent.visit.text_before_cursor(
                max(sent.typed, 0)), sent.cursor)[:SUGGESTION_CHARS_KEPT],
            source=status.get("source") if status else None,
            finish=status.get("message") if status else None,
            evaluated_tokens=as_int(timings.get("evaluated_tokens")),
            prompt_tokens=as_int(timings.get("prompt_tokens")),
            prompt_ms=_float(timings.get("prompt_ms")), **base)


def _response(pending: PendingRequest) -> Response | None:
    future = pending.future
    if not future.done() or future.cancelled() or future.exception() is not None:
        return None
    return future.result()


def _outcome(response: Response | None, arrived_ms: float | None, sent_ms: float,
             timeout_s: float) -> str:
    if response is None or arrived_ms is None or arrived_ms - sent_ms > timeout_s * 1000:
        return "timeout"
    error = response.error
    if error is None:
        return "answered"
    return "cancelled" if error.get("code") == REQUEST_CANCELLED else "error"


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def suggestion_text(result: Any, line_before_cursor: str, cursor: Position) -> str:
    """The first item's text as shown after the cursor; "" when there is none."""
    return shown_text(result, line_before_cursor, cursor.line)
