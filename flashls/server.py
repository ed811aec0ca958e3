"""What the editor sees: a pygls server whose handlers call the completion pipeline.

Handlers stay thin: read the document, call `CompletionService`, wrap the answer in
lsprotocol types. Errors become an empty answer plus one message to the user.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import ipaddress
import logging
import os
import sys
from typing import Any

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from flashls import __version__, settings
from flashls.context import identifier_before, language_of_path
from flashls.context.languages import indexed_extensions
from flashls.documents import (
    Change,
    DocumentError,
    DocumentStore,
    Position,
    Range,
    column_units,
)
from flashls.engine.base import Engine, EngineBusy, EngineError
from flashls.logs import set_log_level
from flashls.protocol import FlashProtocol, strict_converter
from flashls.service import (
    Completion,
    CompletionRequest,
    CompletionService,
    Rejected,
    indexes_workspace,
)

log = logging.getLogger(__name__)

STATUS_NOTIFICATION = "flashls/status"
# A request answering the server's copy of a document as a digest (see `document_digest`).
DIGEST_REQUEST = "flashls/documentDigest"
# The editor's notification of where the user looks: the document in front and where its
# cursor rests (GitHub Copilot's language server has the same method, without position).
FOCUS_NOTIFICATION = "textDocument/didFocus"
# The editor integrations' word that the user yanked or selected text:
# {"textDocument": {"uri"}, "text"}.
YANK_NOTIFICATION = "flashls/didYank"
# Sent when a suggestion cut by the time budget has been finished in the background while
# the document stayed as it was: the editor asks again and shows all of it from the cache.
FINISHED_NOTIFICATION = "flashls/suggestionFinished"
# LSP's uinteger: a position past it is no position (lsprotocol refuses to make one).
UINTEGER_MAX = 2**31 - 1
# Settings that need a new engine (a reload of the model) when they change.
ENGINE_SETTINGS = ("model", "fim_format", "n_threads", "n_gpu_layers", "n_ctx",
                   "reuse_kv_prefix", "reuse_suffix", "typed_into_middle", "snapshot_mb",
                   "token_healing",
                   "engine", "endpoint", "api_key_env", "api_key_file", "remote_model",
                   "remote_timeout_ms")


def make_engine(kind: str, config: settings.Settings) -> Engine:
    """The engine for `flashls serve --engine KIND`: `fake`, else the `engine` setting's."""
    if kind == "fake":
        from flashls.engine.fake import FakeEngine

        return FakeEngine()
    if config.engine != "local":
        from flashls.engine.remote import RemoteEngine

        return RemoteEngine(config)
    from flashls.engine.llama import LlamaEngine

    return LlamaEngine(config)


class FlashServer(LanguageServer):
    """The language server: its documents, settings, completion service, what it told the
    user. The document store is the only source of text: pygls's workspace is not fed."""

    def __init__(self, config: settings.Settings, engine_kind: str = "llama") -> None:
        super().__init__("flashls", __version__, protocol_cls=FlashProtocol,
                         converter_factory=strict_converter)
        self.config = config
        # Start-up settings (CLI flags, environment); client settings are laid over them,
        # so a setting the user removes in the editor falls back to these.
        self.base_config = config
        self._client_settings: dict[str, Any] = {}
        self.engine_kind = engine_kind
        self.documents = DocumentStore()
        self.service: CompletionService | None = None
        self._reported: set[str] = set()
        self._warm_timers: dict[str, asyncio.TimerHandle] = {}
        # Document URI -> (version, line, character) of the last suggestionFinished sent
        # for it, until the editor's re-ask there arrives or the document changes.
        self._told_finished: dict[str, tuple[int, int, int]] = {}
        self.workspace_roots: list[str] = []  # folder URIs, from `initialize` on
        self._watching_files = False  # registered for workspace/didChangeWatchedFiles
        # The error that began the engine's outage, until it answers again (None: it works).
        self._outage: str | None = None

    def ensure_service(self) -> CompletionService:
        """The completion service, created on first use with the current settings."""
        if self.service is None:
            self.service = CompletionService(self.config, make_engine(self.engine_kind,
                                                                      self.config))
            self.service.on_finished = self._finished
            self.service.on_engine_failed = self.engine_failed
            self.service.on_engine_answered = self.engine_answered
            self.service.on_notice = lambda message: self.tell(types.MessageType.Warning,
                                                               message)
            self.service.open_workspace(self.workspace_roots)
        return self.service

    def _finished(self, request: CompletionRequest) -> None:
        """Tell the editor a cut suggestion is complete, if its document did not change."""
        document = self.documents.get(request.uri)
        if document is None or document.lf_view() != request.text:
            return
        self._told_finished[request.uri] = (document.version, request.line,
                                            request.character)
        self.protocol.notify(FINISHED_NOTIFICATION, {
            "textDocument": {"uri": request.uri, "version": document.version},
            "position": {"line": request.line, "character": request.character}})

    def asks_again(self, uri: str, position: types.Position) -> bool:
        """Whether a request is the editor's answer to suggestionFinished: at the position
        it named, the document unchanged since. VS Code can only ask again through its
        "trigger inline suggestion" command, which arrives as an explicit request; such a
        re-ask wants the finished suggestion at once, not `candidates` alternatives."""
        told = self._told_finished.pop(uri, None)
        document = self.documents.get(uri)
        return (told is not None and document is not None
                and told == (document.version, position.line, position.character))

    def offers_completion_items(self, params: types.InitializeParams) -> bool:
        """Whether to advertise `completionProvider`: not to editors that show inline
        completions, which would then show each suggestion twice."""
        mode = self.config.completion_fallback
        if mode != "auto":
            return mode == "always"
        text_document = params.capabilities.text_document
        return text_document is None or text_document.inline_completion is None

    def apply_settings(self, raw: Any, origin: str) -> None:
        """Lay the client's settings from `origin` over the start-up ones; tell the user
        about invalid values; reload the engine when a model setting changed."""
        self._client_settings[origin] = raw
        merged = self.base_config
        for source, values in self._client_settings.items():
            merged, problems = settings.merge(merged, values)
            for problem in problems if source == origin else ():
                self.tell(types.MessageType.Warning, f"flashls ({origin}): {problem}")
        changed = [spec.name for spec in dataclasses.fields(merged)
                   if getattr(merged, spec.name) != getattr(self.config, spec.name)]
        self.config = merged
        if "log_level" in changed:
            set_log_level(merged.log_level)
        if "context_sources" in changed and origin != "initializationOptions":
            self.watch_files()  # (not before `initialize` is answered)
        if self.service is None:
            return
        if any(name in ENGINE_SETTINGS for name in changed):
            log.info("engine settings changed (%s): reloading", ", ".join(changed))
            self.cancel_warm_ups()
            self.service.replace_engine(make_engine(self.engine_kind, merged), merged)
            self.preload()
        else:
            self.service.update_settings(merged)

    def watch_files(self) -> None:
        """Ask the client to report source files created, changed or deleted on disk,
        once, when a source that reads the workspace is on and the client can be asked."""
        capabilities = self.client_capabilities.workspace
        watched = capabilities.did_change_watched_files if capabilities else None
        if (self._watching_files or watched is None or not watched.dynamic_registration
                or not indexes_workspace(self.config)):
            return
        self._watching_files = True
        pattern = "**/*.{" + ",".join(indexed_extensions()) + "}"
        options = types.DidChangeWatchedFilesRegistrationOptions(
            watchers=[types.FileSystemWatcher(glob_pattern=pattern)])
        registration = types.Registration(id="flashls-watched-files",
                                          method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                                          register_options=options)
        future = self.client_register_capability(
            types.RegistrationParams(registrations=[registration]))
        future.add_done_callback(self._registered)

    def _registered(self, future: Any) -> None:
        if future.exception() is not None:  # the index then only follows the editor
            log.warning("registering for watched files failed: %s", future.exception())

    def change_workspace(self, added: list[str], removed: list[str]) -> None:
        """Workspace folders the editor added and removed."""
        self.workspace_roots = [root for root in self.workspace_roots if root not in removed]
        self.workspace_roots += [root for root in added if root not in self.workspace_roots]
        if self.service is not None:
            self.service.change_workspace(added, removed)

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
            self.status("ready", "the model loads on first use")
            return
        self.status("loading", f"loading {service.worker.engine.describe()}")
        future = service.worker.load()
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda done: loop.call_soon_threadsafe(self._loaded, done))

    def _loaded(self, future: Any) -> None:
        if future.cancelled():  # the worker stopped first (an engine reload, an exit)
            return
        error = future.exception()
        if error is None:
            engine = self.ensure_service().worker.engine
            self.status("ready", f"ready: {engine.describe()}")
        else:
            self.engine_failed(error)

    def _request(self, uri: str, position: types.Position) -> CompletionRequest | None:
        """The request for a cursor in an open, in-sync document; None otherwise (an
        unopened URI is never read from disk)."""
        document = self.documents.get(uri)
        if document is None or not document.in_sync:
            return None
        return CompletionRequest(
            uri=uri, language_id=document.language_id or language_of_path(uri),
            text=document.lf_view(), line=position.line, character=position.character,
            position_encoding=self.position_encoding())

    def word_before(self, uri: str, position: types.Position) -> str:
        """The identifier characters just before a cursor (a completion item replaces them)."""
        request = self._request(uri, position)
        if request is None:
            return ""
        return identifier_before(request.text, request.line, request.character,
                                 request.position_encoding)

    def position_encoding(self) -> str:
        """The negotiated position encoding's name ("utf-16" unless the client chose)."""
        negotiated = self.workspace.position_encoding
        return str(getattr(negotiated, "value", negotiated) or "utf-16")

    def schedule_warm_up(self, uri: str, position: types.Position, at_once: bool = False
                         ) -> None:
        """After `warm_up_ms` without edits or requests (`at_once`: on the next turn of
        the loop), evaluate the prompt at `position`."""
        self.cancel_warm_up(uri)
        if self.config.warm_up_ms and self.config.enable:
            delay = 0.0 if at_once else self.config.warm_up_ms / 1000
            self._warm_timers[uri] = asyncio.get_running_loop().call_later(
                delay, self._warm_up, uri, position)

    def cancel_warm_ups(self) -> None:
        """Drop every pending warm-up: the user works somewhere now (a request, a focus),
        and a warm-up planned after an edit elsewhere would only take the model from it."""
        for uri in list(self._warm_timers):
            self.cancel_warm_up(uri)

    def cancel_warm_up(self, uri: str) -> None:
        """Drop a pending warm-up (a request or a newer edit came first)."""
        timer = self._warm_timers.pop(uri, None)
        if timer is not None:
            timer.cancel()

    def _warm_up(self, uri: str, position: types.Position) -> None:
        self._warm_timers.pop(uri, None)
        request = self._request(uri, position)
        future = None if request is None else self.ensure_service().prefill(request)
        if future is None:
            return
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda done: loop.call_soon_threadsafe(
            self._warmed, uri, done))

    def _warmed(self, uri: str, done: Any) -> None:
        # During an outage the status bar keeps the error until a suggestion comes.
        if not done.cancelled() and done.exception() is None and self._outage is None:
            self.status("warm", f"evaluated {done.result().value} prompt tokens", uri=uri)

    async def alternatives(self, uri: str, position: types.Position, first: str) -> list[str]:
        """Other suggestions than `first` at a cursor (`candidates`), or none."""
        request = self._request(uri, position)
        if request is None or self.service is None:
            return []
        try:
            return await self.service.alternatives(request, first)
        except (Rejected, EngineError) as error:
            log.debug("no alternatives for %s: %s", uri, error)
            return []

    def engine_failed(self, error: Exception) -> None:
        """Keep the status bar on the engine's error, and tell the user once an outage:
        in a dialog, or only in the log for a busy server (that passes by itself)."""
        message = str(error)
        self.status("error", message)
        if self._outage is not None:
            log.debug("the engine still fails: %s", message)
            return
        self._outage = message
        busy = isinstance(error, EngineBusy)
        log.log(logging.WARNING if busy else logging.ERROR, message)
        if busy:
            self.window_log_message(types.LogMessageParams(type=types.MessageType.Warning,
                                                           message=message))
        else:
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Error,
                                                             message=message))

    def engine_answered(self) -> None:
        """After an outage, say once in the log (not a dialog) that the engine answers."""
        if self._outage is None:
            return
        self._outage = None
        message = f"flashls: {self.ensure_service().worker.engine.describe()} answers again"
        log.info(message)
        self.window_log_message(types.LogMessageParams(type=types.MessageType.Info,
                                                       message=message))
        self.status("ready", message)

    async def suggest(self, uri: str, position: types.Position) -> Completion | None:
        """The pipeline's answer for a cursor, or None when there is nothing to show."""
        self.cancel_warm_ups()
        request = self._request(uri, position)
        if not self.config.enable or request is None:
            return None
        try:
            completion = await self.ensure_service().complete(request)
        except Rejected as reason:
            log.debug("no completion for %s: %s", uri, reason)
            return None
        except EngineError as error:
            self.engine_failed(error)
            return None
        if self._outage is None:  # else the status bar keeps the error until it answers
            self.status("ready", completion.finish, completion.timings.get("total_ms"),
                        uri=uri, line=position.line, character=position.character,
                        source=completion.source, timings=completion.timings)
        log.debug("completion %r %s", completion.text, completion.timings)
        return completion if completion.text else None


server = FlashServer(settings.Settings())


@server.feature(types.INITIALIZE)
def initialize(ls: FlashServer, params: types.InitializeParams) -> None:
    """Settings from `initializationOptions`; the workspace folders, for other files'
    definitions."""
    ls.apply_settings(params.initialization_options, "initializationOptions")
    folders = [folder.uri for folder in params.workspace_folders or []]
    ls.workspace_roots = folders or ([params.root_uri] if params.root_uri else [])
    if ls.service is not None:
        ls.service.open_workspace(ls.workspace_roots)


@server.feature(types.INITIALIZED)
async def initialized(ls: FlashServer, params: types.InitializedParams) -> None:
    """Settings from `workspace/configuration`, then start loading the model."""
    await pull_configuration(ls)
    ls.watch_files()
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
    except Exception as error:  # a timeout or a client's bad answer is no crash
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


@server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
def did_change_workspace_folders(ls: FlashServer,
                                 params: types.DidChangeWorkspaceFoldersParams) -> None:
    """Folders added to or removed from the workspace: index them, or forget them."""
    ls.change_workspace([folder.uri for folder in params.event.added or []],
                        [folder.uri for folder in params.event.removed or []])


@server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
def did_change_watched_files(ls: FlashServer,
                             params: types.DidChangeWatchedFilesParams) -> None:
    """Files changed on disk (a checkout, a generator, another editor): their definitions
    are read again in the background; open documents keep the editor's text."""
    if ls.service is None:
        return
    for change in params.changes:
        ls.service.file_changed(change.uri, change.type == types.FileChangeType.Deleted)


def _reparse(ls: FlashServer, uri: str) -> None:
    document = ls.documents.get(uri)
    if document is not None and document.in_sync:
        ls.ensure_service().document_changed(uri, document.language_id, document.lf_view())


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: FlashServer, params: types.DidOpenTextDocumentParams) -> None:
    """Keep the opened document and parse it."""
    item = params.text_document
    ls.documents.open(item.uri, item.language_id or language_of_path(item.uri), item.version,
                      item.text)
    _reparse(ls, item.uri)
    ls.ensure_service().document_opened(item.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: FlashServer, params: types.DidChangeTextDocumentParams) -> None:
    """Apply the edits (all or none), reparse, plan a warm-up where the typing ended."""
    uri = params.text_document.uri
    try:
        cursor = ls.documents.change(uri, params.text_document.version,
                                     [_change(change) for change in params.content_changes],
                                     ls.position_encoding())
    except DocumentError as error:
        # Not applied: the server's copy would no longer match the editor's. No
        # suggestions for it until the editor sends the whole text again.
        log.warning("edit of %s rejected: %s", uri, error)
        ls.cancel_warm_up(uri)
        return
    _reparse(ls, uri)
    if cursor is not None and any(isinstance(change, types.TextDocumentContentChangePartial)
                                  for change in params.content_changes):
        ls.schedule_warm_up(uri, types.Position(line=cursor.line, character=cursor.character))


def _change(change: types.TextDocumentContentChangeEvent) -> Change:
    if isinstance(change, types.TextDocumentContentChangePartial):
        start, end = change.range.start, change.range.end
        return Change(Range(Position(start.line, start.character),
                            Position(end.line, end.character)), change.text)
    return Change(None, change.text)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: FlashServer, params: types.DidSaveTextDocumentParams) -> None:
    """Nothing to do: the text is known from `didChange`. Handled so that an editor that
    saves (eglot sends it whatever the server asks) gets no "unknown method" warning."""


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: FlashServer, params: types.DidCloseTextDocumentParams) -> None:
    """Forget the closed document, its trees and its cached suggestions."""
    ls.cancel_warm_up(params.text_document.uri)
    ls.documents.close(params.text_document.uri)
    ls.ensure_service().document_closed(params.text_document.uri)


@server.feature(DIGEST_REQUEST)
def document_digest(ls: FlashServer, params: Any) -> dict[str, Any] | None:
    """The server's copy of a document as a digest (tests and clients check sync with it;
    the text itself is never sent back)."""
    uri = _uri_of(params)
    document = None if uri is None else ls.documents.get(uri)
    if document is None:
        return None
    return {"version": document.version, "length": len(document.text), "inSync":
            document.in_sync, "sha256": hashlib.sha256(
                document.text.encode("utf-8", errors="surrogatepass")).hexdigest()}


@server.feature(FOCUS_NOTIFICATION)
def did_focus(ls: FlashServer, params: Any) -> None:
    """Warm the place the user looks at, at once and at background priority: the reading
    time before the first keystroke evaluates the prompt there. (Clients send it once the
    cursor has rested, so it needs no idle time of its own.)"""
    uri = _uri_of(params)
    position = _position_of(params)
    if uri is not None and position is not None:
        ls.cancel_warm_ups()
        ls.schedule_warm_up(uri, position, at_once=True)


@server.feature(YANK_NOTIFICATION)
def did_yank(ls: FlashServer, params: Any) -> None:
    """Keep yanked or selected text as context for the `recent` source (the Neovim
    plugin reports yanks, the VS Code extension selections)."""
    uri = _uri_of(params)
    text = getattr(params, "text", None)
    if uri is not None and isinstance(text, str):
        ls.ensure_service().yanked(uri, text)


def _position_of(params: Any) -> types.Position | None:
    """`params.position` of an unstructured notification, if it is a valid position."""
    position = getattr(params, "position", None)
    line, character = getattr(position, "line", None), getattr(position, "character", None)
    if (type(line) is int and type(character) is int and 0 <= line <= UINTEGER_MAX
            and 0 <= character <= UINTEGER_MAX):
        return types.Position(line=line, character=character)
    return None


def _uri_of(params: Any) -> str | None:
    """`params.textDocument.uri` of a request pygls left unstructured (a custom method)."""
    text_document = getattr(params, "textDocument", None)
    uri = getattr(text_document, "uri", None)
    return uri if isinstance(uri, str) else None


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: FlashServer, params: types.InlineCompletionParams
                            ) -> list[types.InlineCompletionItem]:
    """Ghost text at the cursor; asked for explicitly, with `candidates` alternatives
    (not when the editor asks again because a suggestion was finished)."""
    explicit = (params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
                and not ls.asks_again(params.text_document.uri, params.position))
    completion = await ls.suggest(params.text_document.uri, params.position)
    if completion is None:
        return []
    texts = [completion.text]
    if explicit:
        others = await ls.alternatives(params.text_document.uri, params.position, texts[0])
        texts = [text for text in texts if text] + others or texts
    here = types.Range(start=params.position, end=params.position)
    return [types.InlineCompletionItem(insert_text=text, range=here) for text in texts]


@server.feature(types.TEXT_DOCUMENT_COMPLETION,
                types.CompletionOptions(trigger_characters=[".", "(", ",", " "]))
async def completion(ls: FlashServer, params: types.CompletionParams) -> types.CompletionList:
    """The same suggestion as a completion item, for clients without inline completion."""
    suggestion = None
    if ls.config.completion_fallback != "never":
        suggestion = await ls.suggest(params.text_document.uri, params.position)
    if suggestion is None:
        return types.CompletionList(is_incomplete=True, items=[])
    word = ls.word_before(params.text_document.uri, params.position)
    start = types.Position(line=params.position.line, character=params.position.character
                           - column_units(word, ls.position_encoding()))
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
          allow_remote: bool = False, token: str | None = None) -> int:
    """Run the server until the client exits or disconnects; the process's exit code.

    Over TCP one client is served; `token` (required with `allow_remote`) must come in
    `initialize`'s `initializationOptions.authToken`."""
    from flashls import transport

    server.config = server.base_config = config
    server.engine_kind = engine_kind
    try:
        if tcp:
            host, _, port = tcp.rpartition(":")
            if not allow_remote and not _loopback(host):
                print(f"flashls: refusing to listen on {host}: not a loopback address "
                      f"(pass --allow-remote to insist)", file=sys.stderr)
                return 2
            return transport.run_tcp(server, host.strip("[]"), int(port), auth_token=token)
        # Anything a library prints to fd 1 would corrupt JSON-RPC: give the protocol its
        # own copy of stdout and point fd 1 at stderr.
        protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        return transport.run_stdio(server, sys.stdin.fileno(), protocol_out)
    finally:
        if server.service is not None:
            server.service.close()
