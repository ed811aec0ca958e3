"""Replaying one typing trace against a running server, and what each request yielded.

`replay_sync` waits for every answer; `replay_human` types on a fixed clock and cancels
what the user has typed past, as an editor does. Each answer is paired with the server's
`flashls/status` for it (source, timings, tokens). Statistics live in `report.py`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from flashls.bench.client import REQUEST_CANCELLED, LspClient, PendingRequest, Response, as_int
from flashls.bench.trace import Keystroke, Position, Trace, utf16_to_index

INLINE_COMPLETION = "textDocument/inlineCompletion"
STATUS_NOTIFICATION = "flashls/status"  # flashls.server's; not imported, to keep pygls out
TRIGGER_AUTOMATIC = 2
SUGGESTION_CHARS_KEPT = 200


@dataclass(frozen=True)
class RequestRecord:
    """One inline completion request: when it was answered and whether the answer was right."""

    variant: str
    site: int
    path: str
    line: int
    keystroke: int  # characters of the line typed when the request was sent
    version: int
    outcome: str  # answered | late | cancelled | timeout | error
    latency_ms: float | None  # None unless the answer came while its version was current
    suggestion: str | None  # first line of the first item; None without an answer
    rest: str  # what was left to type on the line: the ideal suggestion
    hit: bool  # suggestion == rest (rest non-empty)
    partial_hit: bool  # suggestion is a shorter, non-empty prefix of rest
    stale_shown: bool  # a non-empty answer that arrived after the document moved on
    repetition: int = 0  # which pass over the traces (`--repeat`)
    response_ms: float | None = None  # request written -> response read, late answers too
    source: str | None = None  # "model" or "cache", from the server's flashls/status
    finish: str | None = None  # why it ended: "stop", "deadline", "cache", "continued", ...
    timings: dict[str, float] | None = None  # the status's timings, as the server sent them
    evaluated_tokens: int | None = None  # prompt tokens the engine had to evaluate
    generated_tokens: int | None = None
    jsonrpc_ms: float | None = None  # response_ms - server total_ms: transport, pygls, JSON


@dataclass(frozen=True)
class SitePass:
    """One pass over one site: the trace, which server variant, which site, which repetition."""

    variant: str
    site: int
    trace: Trace
    repetition: int = 0


class StatusBoard:
    """`flashls/status` notifications of answered completions, by cursor, until claimed.

    The server sends one just before each completion response; `claim` pairs a response with
    the latest one for its cursor that arrived before it.
    """

    def __init__(self) -> None:
        self._by_cursor: dict[tuple[str, int, int], list[tuple[int, dict[str, Any]]]] = {}

    def receive(self, params: Any, sequence: int) -> None:
        """Keep a status that names a cursor; load and error statuses name none."""
        if not isinstance(params, dict) or not isinstance(params.get("uri"), str):
            return
        key = (params["uri"], params.get("line", -1), params.get("character", -1))
        self._by_cursor.setdefault(key, []).append((sequence, params))

    def claim(self, uri: str, cursor: Position, before: int) -> dict[str, Any] | None:
        """The latest status for the cursor that arrived before message `before`."""
        key = (uri, cursor.line, cursor.character)
        entries = self._by_cursor.pop(key, [])
        earlier = [params for sequence, params in entries if sequence < before]
        later = [(sequence, params) for sequence, params in entries if sequence >= before]
        if later:
            self._by_cursor[key] = later
        return earlier[-1] if earlier else None


def server_fields(status: dict[str, Any] | None, response_ms: float) -> dict[str, Any]:
    """The record fields that come from the server's status for one answered request."""
    fields: dict[str, Any] = {"response_ms": response_ms}
    if status is None:
        return fields
    raw = status.get("timings")
    timings = {name: float(value) for name, value in raw.items()
               if isinstance(value, int | float)} if isinstance(raw, dict) else {}
    total = timings.get("total_ms")
    fields.update(
        source=status.get("source"), finish=status.get("message"), timings=timings,
        evaluated_tokens=as_int(timings.get("evaluated_tokens")),
        generated_tokens=as_int(timings.get("generated_tokens")),
        jsonrpc_ms=response_ms - total if total is not None else None)
    return fields


def did_open_params(trace: Trace) -> dict[str, Any]:
    """`textDocument/didOpen` for the trace's starting text."""
    return {"textDocument": {"uri": trace.uri, "languageId": trace.language_id, "version": 1,
                             "text": trace.open_text}}


def did_change_params(trace: Trace, keystroke: Keystroke) -> dict[str, Any]:
    """An incremental `textDocument/didChange` inserting one character."""
    where = keystroke.insert_at.to_lsp()
    return {"textDocument": {"uri": trace.uri, "version": keystroke.version},
            "contentChanges": [{"range": {"start": where, "end": where},
                                "text": keystroke.text}]}


def inline_completion_params(trace: Trace, keystroke: Keystroke) -> dict[str, Any]:
    """`textDocument/inlineCompletion` at the cursor, triggered automatically by typing."""
    return inline_completion_at(trace, keystroke.cursor.to_lsp())


def inline_completion_at(trace: Trace, position: dict[str, int]) -> dict[str, Any]:
    """`textDocument/inlineCompletion` at an LSP position, triggered automatically."""
    return {"textDocument": {"uri": trace.uri}, "position": position,
            "context": {"triggerKind": TRIGGER_AUTOMATIC}}


def suggestion_first_line(result: Any, trace: Trace, keystroke: Keystroke) -> str:
    """What the editor would show after the cursor on this line; "" when nothing."""
    line_before_cursor = trace.site.indent + trace.site.body[: keystroke.typed]
    text = shown_text(result, line_before_cursor, keystroke.cursor.line)
    return text.split("\n", 1)[0].rstrip("\r")


def shown_text(result: Any, line_before_cursor: str, cursor_line: int) -> str:
    """The first inline item's text as shown after the cursor; "" when there is none.

    An item whose range starts before the cursor on its line repeats what is typed there;
    that part is dropped.
    """
    texts = shown_texts(result, line_before_cursor, cursor_line)
    return texts[0] if texts else ""


def shown_texts(result: Any, line_before_cursor: str, cursor_line: int) -> list[str]:
    """Every inline item's text as `shown_text` reads the first (the editor cycles
    through them); items that are not items are skipped."""
    items = result.get("items") if isinstance(result, dict) else result
    if not isinstance(items, list):
        return []
    return [text for item in items if isinstance(item, dict)
            and (text := _item_text(item, line_before_cursor, cursor_line)) is not None]


def _item_text(item: dict[str, Any], line_before_cursor: str, cursor_line: int) -> str | None:
    text = item.get("insertText", "")
    if isinstance(text, dict):  # a snippet StringValue
        text = text.get("value", "")
    if not isinstance(text, str):
        return None
    replaced = item.get("range")
    start = replaced.get("start", {}) if isinstance(replaced, dict) else {}
    if start.get("line") != cursor_line:
        return text
    begin = utf16_to_index(line_before_cursor, int(start.get("character", 0)))
    typed_part = line_before_cursor[begin:]
    return text[len(typed_part):] if text.startswith(typed_part) else text


def make_record(site_pass: SitePass, keystroke: Keystroke, outcome: str,
                latency_ms: float | None, suggestion: str | None, stale_shown: bool = False,
                **server: Any) -> RequestRecord:
    """A record, with the hit and partial-hit verdicts worked out from the suggestion.

    `server` holds the fields that `server_fields` derives from the server's status.
    """
    rest = keystroke.rest
    shown = suggestion if latency_ms is not None else None
    hit = bool(rest) and shown == rest
    partial = bool(rest) and bool(shown) and shown != rest and rest.startswith(shown or "")
    site = site_pass.trace.site
    return RequestRecord(
        variant=site_pass.variant, site=site_pass.site, path=site.path, line=site.line,
        keystroke=keystroke.typed, version=keystroke.version, outcome=outcome,
        latency_ms=latency_ms, suggestion=_clip(suggestion), rest=rest, hit=hit,
        partial_hit=partial, stale_shown=stale_shown, repetition=site_pass.repetition,
        **server)


def _clip(text: str | None) -> str | None:
    return text if text is None else text[:SUGGESTION_CHARS_KEPT]


def _outcome(response: Response | None) -> str:
    if response is None:
        return "timeout"
    error = response.error
    if error is None:
        return "answered"
    return "cancelled" if error.get("code") == REQUEST_CANCELLED else "error"


async def open_document(client: LspClient, trace: Trace) -> None:
    """Open the trace's document."""
    await client.notify("textDocument/didOpen", did_open_params(trace))


async def close_document(client: LspClient, trace: Trace) -> None:
    """Close the trace's document, so the next site starts clean."""
    await client.notify("textDocument/didClose", {"textDocument": {"uri": trace.uri}})


async def prime_site(client: LspClient, trace: Trace, timeout_s: float) -> None:
    """One untimed completion at the cursor before the first keystroke, as for a user who
    has been working at this place: the typing that follows meets a warm model."""
    pending = await client.send_request(INLINE_COMPLETION, inline_completion_at(
        trace, trace.keystrokes[0].insert_at.to_lsp()))
    if await client.wait(pending, timeout_s) is None:
        await client.cancel(pending.request_id)


async def start_site(client: LspClient, trace: Trace, prime: bool, timeout_s: float) -> None:
    """Open the site's document and, with `prime`, warm the model at its cursor."""
    await open_document(client, trace)
    if prime and trace.keystrokes:
        await prime_site(client, trace, timeout_s)


async def replay_sync(client: LspClient, board: StatusBoard, site_pass: SitePass,
                      timeout_s: float, prime: bool = False) -> list[RequestRecord]:
    """Type the trace, waiting for each answer before the next keystroke."""
    trace = site_pass.trace
    await start_site(client, trace, prime, timeout_s)
    records = []
    for keystroke in trace.keystrokes:
        await client.notify("textDocument/didChange", did_change_params(trace, keystroke))
        pending = await client.send_request(INLINE_COMPLETION,
                                            inline_completion_params(trace, keystroke))
        response = await client.wait(pending, timeout_s)
        if response is None:
            await client.cancel(pending.request_id)
        records.append(_sync_record(board, site_pass, keystroke, pending, response))
    await close_document(client, trace)
    return records


def _sync_record(board: StatusBoard, site_pass: SitePass, keystroke: Keystroke,
                 pending: PendingRequest, response: Response | None) -> RequestRecord:
    outcome = _outcome(response)
    if response is None or outcome != "answered":
        return make_record(site_pass, keystroke, outcome, None, None)
    latency_ms = (response.arrived_at - pending.sent_at) * 1000
    suggestion = suggestion_first_line(response.result, site_pass.trace, keystroke)
    return make_record(site_pass, keystroke, outcome, latency_ms, suggestion,
                       **_answer_fields(board, site_pass.trace, keystroke, pending, response))


def _answer_fields(board: StatusBoard, trace: Trace, keystroke: Keystroke,
                   pending: PendingRequest, response: Response) -> dict[str, Any]:
    status = board.claim(trace.uri, keystroke.cursor, response.sequence)
    return server_fields(status, (response.arrived_at - pending.sent_at) * 1000)


async def replay_human(client: LspClient, board: StatusBoard, site_pass: SitePass,
                       interval_s: float, timeout_s: float,
                       prime: bool = False) -> list[RequestRecord]:
    """Type on a fixed clock; a keystroke cancels the request it makes out of date."""
    trace = site_pass.trace
    await start_site(client, trace, prime, timeout_s)
    pending: list[PendingRequest] = []
    typed_at: list[float] = []
    start = time.perf_counter()
    for index, keystroke in enumerate(trace.keystrokes):
        await asyncio.sleep(max(0.0, start + index * interval_s - time.perf_counter()))
        if pending and not pending[-1].future.done():
            await client.cancel(pending[-1].request_id)
        typed_at.append(time.perf_counter())
        await client.notify("textDocument/didChange", did_change_params(trace, keystroke))
        pending.append(await client.send_request(INLINE_COMPLETION,
                                                 inline_completion_params(trace, keystroke)))
    responses = await _wait_all(client, pending, timeout_s)
    await close_document(client, trace)
    superseded_at = [*typed_at[1:], float("inf")]
    return [_human_record(board, site_pass, keystroke, request, response, typed, moved_on)
            for keystroke, request, response, typed, moved_on
            in zip(trace.keystrokes, pending, responses, typed_at, superseded_at, strict=True)]


async def _wait_all(client: LspClient, pending: list[PendingRequest],
                    timeout_s: float) -> list[Response | None]:
    """Every response that comes within one shared deadline (cancelled ones included)."""
    deadline = time.perf_counter() + timeout_s
    return [await client.wait(request, max(0.0, deadline - time.perf_counter()))
            for request in pending]


def _human_record(board: StatusBoard, site_pass: SitePass, keystroke: Keystroke,
                  pending: PendingRequest, response: Response | None, typed_at: float,
                  superseded_at: float) -> RequestRecord:
    """Fresh if the answer came before the next keystroke; a late non-empty one is stale.

    A fresh answer's latency runs from the keystroke itself (before its `didChange` is
    written) to the answer: how long the typist waits to see the suggestion for what is typed.
    """
    outcome = _outcome(response)
    if response is None or outcome != "answered":
        return make_record(site_pass, keystroke, outcome, None, None)
    suggestion = suggestion_first_line(response.result, site_pass.trace, keystroke)
    server = _answer_fields(board, site_pass.trace, keystroke, pending, response)
    if response.arrived_at >= superseded_at:
        return make_record(site_pass, keystroke, "late", None, suggestion,
                           stale_shown=bool(suggestion), **server)
    latency_ms = (response.arrived_at - typed_at) * 1000
    return make_record(site_pass, keystroke, outcome, latency_ms, suggestion, **server)
