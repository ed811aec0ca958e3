"""LSP life-cycle rules that pygls 2.1 leaves out, in a subclass of its protocol.

- `initialize` is answered once; a second one is refused (it used to reset the workspace).
- Before `initialize`, requests get ServerNotInitialized; after `shutdown`, InvalidRequest.
  Both used to get no reply at all, so the client waited forever.
- `exit` records the exit code LSP asks for (0 after `shutdown`, else 1) instead of
  raising SystemExit inside a handler; the transport ends the loop and returns it.
- Document notifications reach flashls's own document store only: pygls's workspace,
  which splits lines where LSP does not and reads unopened files from disk, is not fed.
- Error replies carry one line; tracebacks go to the log.
- Params are structured strictly (`strict_converter`): a wrong-typed value is invalid
  params, not quietly converted.
- Futures pygls keeps for handled notifications are dropped (a per-keystroke leak).
- `completionProvider` is advertised only where the client lacks inline completion (or
  the `completion_fallback` setting says so), so no editor shows a suggestion twice.

This overrides pygls internals (`_send_handler_result`, the `lsp_*` built-ins, `msg_id`),
so the pygls version is pinned in pyproject.toml and checked when this module loads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from concurrent.futures import Future
from importlib.metadata import version
from typing import Any

import cattrs
from lsprotocol import types
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInternalError,
    JsonRpcInvalidRequest,
    JsonRpcRequestCancelled,
    JsonRpcServerNotInitialized,
)
from pygls.protocol import LanguageServerProtocol, default_converter, lsp_method

log = logging.getLogger(__name__)

PYGLS_SERIES = "2.1."
if not version("pygls").startswith(PYGLS_SERIES):
    raise ImportError(f"flashls needs pygls {PYGLS_SERIES}x (it overrides pygls internals); "
                      f"found pygls {version('pygls')}")

# Methods a client may send before `initialize` has been answered.
_BEFORE_INITIALIZE = frozenset({types.INITIALIZE, types.EXIT})

def one_line(error: BaseException) -> str:
    """An exception as one line for the client: its type and first line of message."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def strict_converter() -> cattrs.Converter:
    """pygls's converter, minus the coercions that let bad input through: a line `"0"`,
    a document text `5` or a version `"1"` were turned into valid-looking values.
    Integers are still accepted where lsprotocol wants a float (JSON has one number)."""
    converter: cattrs.Converter = default_converter()  # type: ignore[no-untyped-call]

    def exactly(kind: type) -> Callable[[Any, Any], Any]:
        accepted = (int, float) if kind is float else (kind,)

        def structure(value: Any, _: Any) -> Any:
            if type(value) not in accepted:  # `type`, not isinstance: True is no int
                raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
            return value
        return structure

    for kind in (int, float, str, bool):
        converter.register_structure_hook(kind, exactly(kind))
    return converter


class FlashProtocol(LanguageServerProtocol):
    """pygls's LanguageServerProtocol with LSP's life-cycle rules enforced.

    Invariants: `initialized` turns True once, when the first `initialize` is answered;
    `shutdown_received` turns True once; `exit_code` stays None until `exit` arrives."""

    def __init__(self, server: Any, converter: Any) -> None:
        super().__init__(server, converter)
        self.initialized = False
        self.shutdown_received = False
        self.exit_code: int | None = None

    def handle_message(self, message: Any) -> None:
        """Refuse requests outside the session's life (before initialize, after shutdown)."""
        method = getattr(message, "method", None)
        is_request = method is not None and getattr(message, "id", None) is not None
        if method is not None and not self.initialized and method not in _BEFORE_INITIALIZE:
            if is_request:
                self._refuse(message.id, JsonRpcServerNotInitialized(
                    f"{method}: the server is not initialized yet"))
            return
        if self.shutdown_received and method is not None and method != types.EXIT:
            if is_request:
                self._refuse(message.id, JsonRpcInvalidRequest(
                    f"{method}: the server is shutting down"))
            return
        super().handle_message(message)
        if not is_request:
            self.forget_finished_notifications()

    def forget_finished_notifications(self) -> None:
        """Drop the futures pygls 2.1 keeps for handled notifications.

        pygls stores a Future in `_request_futures` for every notification whose handler
        is a generator or coroutine (the document notifications are), under a fresh id,
        and only responses pop them: about 2.7 KB leaked per keystroke. Pending requests'
        futures are not done, so only those leftovers go."""
        futures = self._request_futures
        for key in [key for key, future in futures.items() if future.done()]:
            del futures[key]

    def _refuse(self, msg_id: Any, error: JsonRpcException) -> None:
        log.info("refused: %s", error.message)
        self._send_response(msg_id, error=error.to_response_error())

    def _send_handler_result(self, future: Future[Any], *, msg_id: Any) -> None:
        """Like pygls's, but an error reply says what went wrong in one line."""
        self._request_futures.pop(msg_id, None)
        if future.cancelled():
            error: JsonRpcException = JsonRpcRequestCancelled(f"request {msg_id} was cancelled")
        elif (raised := future.exception()) is None:
            self._send_response(msg_id, result=future.result())
            return
        elif isinstance(raised, JsonRpcException):
            error = raised
        else:
            log.error("request %s failed", msg_id, exc_info=raised)
            error = JsonRpcInternalError(one_line(raised))
        self._send_response(msg_id, error=error.to_response_error())

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams
                       ) -> Generator[Any, Any, types.InitializeResult]:
        """Answer the first `initialize`; refuse any later one."""
        if self.initialized:
            raise JsonRpcInvalidRequest("initialize was already answered; "
                                        "restart the server to start a new session")
        result: types.InitializeResult = yield from super().lsp_initialize(params)
        offers_items = getattr(self._server, "offers_completion_items", None)
        if offers_items is not None and not offers_items(params):
            result.capabilities.completion_provider = None
        self.initialized = True
        return result

    @lsp_method(types.SHUTDOWN)
    def lsp_shutdown(self, *args: Any) -> Generator[Any, Any, None]:
        """Stop taking requests; cancel the ones still running."""
        yield from super().lsp_shutdown(*args)
        self.shutdown_received = True

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args: Any) -> Generator[Any, Any, None]:
        """Record the exit code; the transport ends the session."""
        if (user_handler := self.fm.features.get(types.EXIT)) is not None:
            yield user_handler, args, None
        self.exit_code = 0 if self.shutdown_received else 1
        log.info("exit (code %d)", self.exit_code)

    def _user_only(self, method: str, params: Any) -> Generator[Any, Any, None]:
        if (user_handler := self.fm.features.get(method)) is not None:
            yield user_handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams
                                    ) -> Generator[Any, Any, None]:
        """Handed to flashls's document store only (see the module docstring)."""
        yield from self._user_only(types.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams
                                      ) -> Generator[Any, Any, None]:
        """Handed to flashls's document store only."""
        yield from self._user_only(types.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams
                                     ) -> Generator[Any, Any, None]:
        """Handed to flashls's document store only."""
        yield from self._user_only(types.TEXT_DOCUMENT_DID_CLOSE, params)


def exit_status(protocol: FlashProtocol) -> int:
    """The process's exit code when the stream ends: LSP's rule, also without `exit`."""
    if protocol.exit_code is not None:
        return protocol.exit_code
    return 0 if protocol.shutdown_received else 1

