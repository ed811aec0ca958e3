"""What the editor sees: a pygls server whose handlers call the completion pipeline.

Handlers stay thin: read the document, call `CompletionService`, wrap the answer in
lsprotocol types. Errors become an empty answer plus one message to the user.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import sys
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from flashls import __version__, settings
from flashls.context import column_units, language_of_path
from flashls.engine.base import Engine, EngineError
from flashls.service import Completion, CompletionRequest, CompletionService, Rejected

log = logging.getLogger(__name__)

STATUS_NOTIFICATION = "flashls/status"
# Settings that need a new engine (a reload of the model) when they change.
ENGINE_SETTINGS = ("model", "fim_format", "n_threads", "n_gpu_layers", "n_ctx",
                   "reuse_kv_prefix", "reuse_suffix", "token_healing")


def make_engine(kind: str, config: settings.Settings) -> Engine:
    """The engine for `flashls serve --engine KIND`."""
    if kind == "fake":
        from flashls.engine.fake import FakeEngine

        return FakeEngine()
    from flashls.engine.llama import LlamaEngine

    return LlamaEngine(config)


class FlashServer(LanguageServer):
    """The language server: its settings, its completion service, what it told the user."""

    def __init__(self, config: settings.Settings, engine_kind: str = "llama") -> None:
        super().__init__("flashls", __version__)
        self.config = config
        # Start-up settings (CLI flags, environment); client settings are laid over them,
        # so a setting the user removes in the editor falls back to these.
        self.base_config = config
        self._client_settings: dict[str, Any] = {}
        self.engine_kind = engine_kind
        self.service: CompletionService | None = None
        self._reported: set[str] = set()
        self._warm_timers: dict[str, asyncio.TimerHandle] = {}

    def ensure_service(self) -> CompletionService:
        """The completion service, created on first use with the current settings."""
        if self.service is None:
            self.service = CompletionService(self.config, make_engine(self.engine_kind,
                                                                      self.config))
        return self.service

    def apply_settings(self, raw: Any, origin: str) -> None:
        """Lay the client's settings from `origin` over the start-up ones; tell the user
        about invalid values."""
        self._client_settings[origin] = raw
        merged = self.base_config
        for source, values in self._client_settings.items():
            merged, problems = settings.merge(merged, values)
            for problem in problems if source == origin else ():
                self.tell(types.MessageType.Warning, f"flashls ({origin}): {problem}")
        changed = [spec.name for spec in dataclasses.fields(merged)
                   if getattr(merged, spec.name) != getattr(self.config, spec.name)]
        self.config = merged
        if self.service is None:
            return
        if any(name in ENGINE_SETTINGS for name in changed):
            log.info("engine settings changed (%s): reloading", ", ".join(changed))
            self.service.worker.stop()
            self.service = None
            self.preload()
        else:
            self.service.settings = merged

    def tell(self, kind: types.MessageType, message: str) -> None:
        """Show a message once per distinct text; log it always."""
        log.log(logging.ERROR if kind == types.MessageType.Error else logging.WARNING, message)
        if message in self._reported:
            return
        self._reported.add(message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=message))

    def status(self, state: str, message: str, latency_ms: float | None = None,
               **details: Any) -> None:
        """A `flashls/status` notification for status bars (and the benchmark's breakdown)."""
        payload: dict[str, Any] = {"state": state, "message": message, **details}
        if latency_ms is not None:
            payload["latencyMs"] = round(latency_ms, 1)
        self.protocol.notify(STATUS_NOTIFICATION, payload)

    def preload(self) -> None:
        """Load the model in the background so the first completion does not pay for it."""
        service = self.ensure_service()
        if not self.config.preload_model:
            return
        self.status("loading", f"loading {service.worker.engine.describe()}")
        future = service.worker.load()
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda done: loop.call_soon_threadsafe(self._loaded, done))

    def _loaded(self, future: Any) -> None:
        error = future.exception()
        if error is None:
            engine = self.ensure_service().worker.engine
            self.status("ready", f"ready: {engine.describe()}")
        else:
            self.status("error", str(error))
            self.tell(types.MessageType.Error, str(error))

    def _request(self, uri: str, position: types.Position) -> CompletionRequest:
        document = self.workspace.get_text_document(uri)
        return CompletionRequest(
            uri=uri, language_id=document.language_id or language_of_path(document.path),
            text=document.source, line=position.line, character=position.character,
            position_encoding=self.position_encoding())

    def position_encoding(self) -> str:
        """The negotiated position encoding's name ("utf-16" unless the client chose)."""
        negotiated = self.workspace.position_encoding
        return str(getattr(negotiated, "value", negotiated) or "utf-16")

    def schedule_warm_up(self, uri: str, position: types.Position) -> None:
        """After `warm_up_ms` without edits or requests, evaluate the prompt at `position`."""
        self.cancel_warm_up(uri)
        if self.config.warm_up_ms and self.config.enable:
            self._warm_timers[uri] = asyncio.get_running_loop().call_later(
                self.config.warm_up_ms / 1000, self._warm_up, uri, position)

    def cancel_warm_up(self, uri: str) -> None:
        """Drop a pending warm-up (a request or a newer edit came first)."""
        timer = self._warm_timers.pop(uri, None)
        if timer is not None:
            timer.cancel()

    def _warm_up(self, uri: str, position: types.Position) -> None:
        self._warm_timers.pop(uri, None)
        future = self.ensure_service().prefill(self._request(uri, position))
        if future is None:
            return
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda done: loop.call_soon_threadsafe(
            self._warmed, uri, done))

    def _warmed(self, uri: str, done: Any) -> None:
        if not done.cancelled() and done.exception() is None:
            self.status("warm", f"evaluated {done.result().value} prompt tokens", uri=uri)

    async def suggest(self, uri: str, position: types.Position) -> Completion | None:
        """The pipeline's answer for a cursor, or None when there is nothing to show."""
        self.cancel_warm_up(uri)
        if not self.config.enable:
            return None
        request = self._request(uri, position)
        try:
            completion = await self.ensure_service().complete(request)
        except Rejected as reason:
            log.debug("no completion for %s: %s", uri, reason)
            return None
        except EngineError as error:
            self.status("error", str(error))
            self.tell(types.MessageType.Error, str(error))
            return None
        self.status("ready", completion.finish, completion.timings.get("total_ms"), uri=uri,
                    line=position.line, character=position.character,
                    source=completion.source, timings=completion.timings)
        log.debug("completion %r %s", completion.text, completion.timings)
        return completion if completion.text else None


server = FlashServer(settings.Settings())


@server.feature(types.INITIALIZE)
def initialize(ls: FlashServer, params: types.InitializeParams) -> None:
    """Settings from `initializationOptions`."""
    ls.apply_settings(params.initialization_options, "initializationOptions")


@server.feature(types.INITIALIZED)
async def initialized(ls: FlashServer, params: types.InitializedParams) -> None:
    """Settings from `workspace/configuration`, then start loading the model."""
    await pull_configuration(ls)
    ls.preload()


async def pull_configuration(ls: FlashServer) -> None:
    """Ask the client for the `flashls` section, if it can answer."""
    capabilities = ls.client_capabilities.workspace
    if capabilities is None or not capabilities.configuration:
        return
    try:
        answers = await asyncio.wait_for(ls.workspace_configuration_async(
            types.ConfigurationParams(items=[types.ConfigurationItem(
                section=settings.SECTION)])), timeout=5)
    except (asyncio.TimeoutError, Exception) as error:  # a client's bad answer is no crash
        log.warning("workspace/configuration failed: %s", error)
        return
    if answers and isinstance(answers[0], dict):
        ls.apply_settings(answers[0], "workspace/configuration")


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def did_change_configuration(ls: FlashServer,
                                   params: types.DidChangeConfigurationParams) -> None:
    """Re-read settings: from the notification if it carries them, else by asking."""
    if isinstance(params.settings, dict) and params.settings.get(settings.SECTION):
        ls.apply_settings(params.settings, "workspace/configuration")
    else:
        await pull_configuration(ls)


def _forget_finished_notifications(ls: FlashServer) -> None:
    """Drop the futures pygls 2.1 keeps for handled notifications.

    pygls stores a Future in `_request_futures` for every notification whose handler is a
    generator or coroutine (its built-in didOpen/didChange/didClose are), under a fresh
    id, and only responses ever pop them: about 2.7 KB leaked per keystroke. Pending
    requests' futures are not done, so only those leftovers go."""
    futures = ls.protocol._request_futures
    for key in [key for key, future in futures.items() if future.done()]:
        del futures[key]


def _reparse(ls: FlashServer, uri: str) -> None:
    _forget_finished_notifications(ls)
    document = ls.workspace.get_text_document(uri)
    language = document.language_id or language_of_path(document.path)
    ls.ensure_service().document_changed(uri, language, document.source)


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: FlashServer, params: types.DidOpenTextDocumentParams) -> None:
    """Parse the opened document."""
    _reparse(ls, params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: FlashServer, params: types.DidChangeTextDocumentParams) -> None:
    """Reparse incrementally after pygls has applied the edits; plan a warm-up at the edit."""
    _reparse(ls, params.text_document.uri)
    last = params.content_changes[-1] if params.content_changes else None
    if isinstance(last, types.TextDocumentContentChangePartial):
        ls.schedule_warm_up(params.text_document.uri,
                            _end_of_insert(last, ls.position_encoding()))


def _end_of_insert(change: types.TextDocumentContentChangePartial,
                   encoding: str = "utf-16") -> types.Position:
    """Where the cursor most likely is after a change: just after the inserted text,
    in the columns of the negotiated position encoding."""
    lines = change.text.split("\n")
    start = change.range.start
    if len(lines) == 1:
        return types.Position(line=start.line,
                              character=start.character + column_units(change.text, encoding))
    return types.Position(line=start.line + len(lines) - 1,
                          character=column_units(lines[-1], encoding))


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: FlashServer, params: types.DidCloseTextDocumentParams) -> None:
    """Forget the closed document's trees and cached suggestions."""
    ls.cancel_warm_up(params.text_document.uri)
    ls.ensure_service().document_closed(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: FlashServer, params: types.InlineCompletionParams
                            ) -> list[types.InlineCompletionItem]:
    """Ghost text at the cursor."""
    completion = await ls.suggest(params.text_document.uri, params.position)
    if completion is None:
        return []
    here = types.Range(start=params.position, end=params.position)
    return [types.InlineCompletionItem(insert_text=completion.text, range=here)]


@server.feature(types.TEXT_DOCUMENT_COMPLETION,
                types.CompletionOptions(trigger_characters=[".", "(", ",", " "]))
async def completion(ls: FlashServer, params: types.CompletionParams) -> types.CompletionList:
    """The same suggestion as a completion item, for clients without inline completion."""
    suggestion = await ls.suggest(params.text_document.uri, params.position)
    if suggestion is None:
        return types.CompletionList(is_incomplete=True, items=[])
    document = ls.workspace.get_text_document(params.text_document.uri)
    cursor = document.position_codec.position_from_client_units(document.lines,
                                                                 params.position)
    head = document.lines[params.position.line][:cursor.character]
    word = head[len(head.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "0123456789_")):]
    start = document.position_codec.position_to_client_units(
        document.lines, types.Position(line=cursor.line, character=cursor.character - len(word)))
    new_text = word + suggestion.text
    item = types.CompletionItem(
        label=new_text.split("\n", 1)[0].strip()[:80] or new_text.strip()[:80],
        kind=types.CompletionItemKind.Snippet, detail="flashls", filter_text=new_text,
        insert_text_format=types.InsertTextFormat.PlainText, sort_text="0",
        text_edit=types.TextEdit(range=types.Range(start=start, end=params.position),
                                 new_text=new_text))
    return types.CompletionList(is_incomplete=True, items=[item])


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(config: settings.Settings, *, tcp: str | None = None, engine_kind: str = "llama",
          allow_remote: bool = False) -> int:
    """Run the server until the client disconnects."""
    server.config = server.base_config = config
    server.engine_kind = engine_kind
    if tcp:
        host, _, port = tcp.rpartition(":")
        if not allow_remote and not _loopback(host):
            print(f"flashls: refusing to listen on {host}: not a loopback address "
                  f"(pass --allow-remote to insist)", file=sys.stderr)
            return 2
        server.start_tcp(host, int(port))
        return 0
    # Anything a library prints to fd 1 would corrupt JSON-RPC: give the protocol its own
    # copy of stdout and point fd 1 at stderr.
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    server.start_io(sys.stdin.buffer, protocol_out)
    return 0
