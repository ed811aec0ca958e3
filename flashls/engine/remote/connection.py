"""The HTTP side of a remote engine: one pooled client, its API key, and the one-line
errors a user sees when the server cannot be reached or refuses a request.

What is sent and how replies are read is each server's wire format (`wire`).
"""

from __future__ import annotations

import email.utils
import html
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from flashls.engine.base import EngineBusy, EngineError
from flashls.settings import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.0
# The start-up check's longest wait: servers answer it at once, even while busy, and a
# hung check holds the engine's one thread (requests wait behind it).
PROBE_TIMEOUT_S = 5.0
# Connect errors (refused, name not resolved) are retried this often, after these pauses:
# a server restarting behind a load balancer comes back within a second.
RETRY_PAUSES_S = (0.2, 0.5)
# How much of a server's error message a one-line error quotes.
MESSAGE_CHARS = 160
# Statuses that ask the client to wait (Retry-After), the wait without one, and the most
# a server may ask for.
BUSY_STATUSES = (429, 503)
DEFAULT_RETRY_S = 1.0
MAX_RETRY_S = 60.0


class ServerBusy(EngineBusy):
    """The server answered 429 or 503: ask again after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def retry_after(value: str | None) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), bounded."""
    if not value:
        return DEFAULT_RETRY_S
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return DEFAULT_RETRY_S
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_S)

# What an API key may hold to travel in an `Authorization: Bearer` header.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
# httpx's `trace` request extension: told of each step of a request (httpcore's events).
Trace = Callable[[str, dict[str, Any]], None]
# Another engine's HTTP errors would name the wrong fix; each wire format can explain the
# statuses that mean something for its kind (llama-server's 501: a model without FIM).
Explain = Callable[[int, str], "str | None"]


def read_api_key(settings: Settings) -> str | None:
    """The API key named by `api_key_env` or stored in `api_key_file`, or None when neither
    is set; raises EngineError when the one that is set holds no usable key."""
    if settings.api_key_env:
        where = f"the environment variable {settings.api_key_env} (`api_key_env`)"
        value = os.environ.get(settings.api_key_env, "").strip()
    elif settings.api_key_file:
        path = Path(settings.api_key_file).expanduser()
        where = f"{path} (`api_key_file`)"
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise EngineError(f"cannot read {where}: {error.strerror or error}") from error
    else:
        return None
    if not value:
        raise EngineError(f"{where} holds no API key (unset or empty)")
    if not _HEADER_SAFE.fullmatch(value):
        raise EngineError(f"the API key in {where} has characters an HTTP header cannot "
                          f"carry (spaces, line breaks or non-ASCII)")
    return value


def server_message(body: bytes) -> str:
    """The human part of an error reply, on one line and shortened: llama-server and
    OpenAI-style `{"error": {"message"}}`, Ollama's `{"error": "..."}`, FastAPI's
    `{"detail"}`, vLLM's `{"message"}`, else the text itself."""
    text = body.decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        found = parsed.get("error", parsed.get("detail", parsed.get("message")))
        if isinstance(found, dict):
            found = found.get("message", found)
        if found is not None:
            text = found if isinstance(found, str) else json.dumps(found)
    elif _MARKUP.search(text):
        text = plain_text(text)
    return shorten(text)


_MARKUP = re.compile(r"<(!doctype|html|head|body|title|div|p|h1|script)\b", re.IGNORECASE)


def plain_text(page: str) -> str:
    """An HTML error page (a proxy's 502) as its words: the title if it has one, else the
    text without scripts, styles and tags."""
    title = re.search(r"<title[^>]*>(.*?)</title>", page, re.IGNORECASE | re.DOTALL)
    if title and title.group(1).strip():
        return html.unescape(title.group(1))
    page = re.sub(r"<(script|style)\b.*?</\1\s*>", " ", page, flags=re.IGNORECASE | re.DOTALL)
    return html.unescape(re.sub(r"<[^>]*>", " ", page))


def shorten(text: str) -> str:
    """`text` on one line, at most MESSAGE_CHARS characters."""
    line = re.sub(r"\s+", " ", text).strip()
    return line if len(line) <= MESSAGE_CHARS else line[:MESSAGE_CHARS - 3] + "..."


def _read_timeout(error: httpx.HTTPError, default: float) -> float:
    """The read timeout the failed request had (httpx keeps it in its extensions)."""
    try:
        return float(error.request.extensions["timeout"]["read"])
    except (RuntimeError, KeyError, TypeError, ValueError):
        return default


class Connection:
    """One server's base URL, reached through one `httpx.Client` (thread-safe: a reply
    left open for `resume` is read on while the next request is sent).

    Every request gets a connection of its own (none is kept alive for the next): a reply
    is abandoned by shutting its socket down, which `trace` hands over when it connects,
    and a kept-alive connection, reused without connecting, would hand over none."""

    def __init__(self, label: str, endpoint: str, api_key: str | None, read_timeout_s: float,
                 explain: Explain) -> None:
        self.label = label  # "llama-server at http://host:8080", for messages
        self._explain = explain
        self._secret = api_key  # kept only to take it out of a server's error message
        self._read_timeout_s = read_timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=endpoint, headers=headers,
            timeout=httpx.Timeout(read_timeout_s, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=0))

    def open(self, path: str, body: dict[str, Any],
             abandoned: Callable[[], bool] = lambda: False,
             trace: Trace | None = None) -> httpx.Response:
        """POST `body` and return the streamed reply once its headers are in (the caller
        reads and closes it); raises EngineError (connect errors are retried unless
        `abandoned` turned true meanwhile). `trace` is told of each step (httpcore's
        events: the connection made, the reply's headers in)."""
        request = self._client.build_request(
            "POST", path, json=body, extensions={} if trace is None else {"trace": trace})
        return self._send(request, abandoned)

    def get_json(self, path: str) -> Any:
        """GET `path` and parse its JSON body; raises EngineError."""
        timeout = httpx.Timeout(min(self._read_timeout_s, PROBE_TIMEOUT_S),
                                connect=CONNECT_TIMEOUT_S)
        response = self._send(self._client.build_request("GET", path, timeout=timeout),
                              lambda: False)
        try:
            return json.loads(response.read())
        except ValueError as error:
            raise EngineError(f"{self.label} answered {path} with something that is not "
                              f"JSON; is `engine` right for this server?") from error
        except httpx.HTTPError as error:
            raise self.transport_error(error) from error
        finally:
            response.close()

    def _send(self, request: httpx.Request, abandoned: Callable[[], bool]) -> httpx.Response:
        for pause in (*RETRY_PAUSES_S, None):
            try:
                response = self._client.send(request, stream=True)
                break
            except httpx.ConnectError as error:
                if pause is None or abandoned():
                    raise self.transport_error(error) from error
                log.debug("%s: %s; retrying in %.1f s", self.label, error, pause)
                time.sleep(pause)
            except httpx.HTTPError as error:
                raise self.transport_error(error) from error
        if response.status_code >= 400:
            try:
                body = response.read()
            except httpx.HTTPError:
                body = b""
            finally:
                response.close()
            message = self.status_error(response.status_code, response.reason_phrase,
                                        request.url.path, body)
            if response.status_code in BUSY_STATUSES:
                wait = retry_after(response.headers.get("Retry-After"))
                raise ServerBusy(f"{message}; asking again after {wait:g} s", wait)
            raise EngineError(message)
        return response

    def status_error(self, status: int, reason: str, path: str, body: bytes) -> str:
        """The one-line message for an error reply (never with the API key in it)."""
        message = server_message(body)
        if self._secret:
            message = message.replace(self._secret, "***")
        said = f": {message}" if message else ""
        explained = self._explain(status, message)
        if explained is not None:
            return f"{self.label}: {explained}{said}"
        if status in (401, 403):
            return (f"{self.label} refused the API key ({status}); set `api_key_env` or "
                    f"`api_key_file` to the server's key{said}")
        if status == 404:
            if "model" in message.lower():
                return f"{self.label} does not know the model (404){said}; check `remote_model`"
            return (f"{self.label} has no {path} (404); is `engine` right for this "
                    f"server?{said}")
        return f"{self.label} answered {status} {reason}{said}"

    def transport_error(self, error: httpx.HTTPError) -> EngineError:
        """The one-line EngineError for a request that got no reply."""
        if isinstance(error, httpx.ConnectError):
            cause = "connection refused" if "refused" in str(error).lower() else shorten(
                str(error) or type(error).__name__)
            return EngineError(f"cannot connect to {self.label}: {cause}; is the server "
                               f"running and `endpoint` right?")
        if isinstance(error, httpx.ConnectTimeout):
            return EngineError(f"cannot connect to {self.label}: no answer within "
                               f"{CONNECT_TIMEOUT_S:g} s")
        if isinstance(error, httpx.ReadTimeout):
            return self.silent(_read_timeout(error, self._read_timeout_s))
        return EngineError(f"{self.label}: the connection failed: "
                           f"{shorten(str(error) or type(error).__name__)}")

    def silent(self, seconds: float | None = None) -> EngineError:
        """The error for a server that has sent nothing for `seconds` (by default
        `remote_timeout_ms`)."""
        if seconds is not None and seconds != self._read_timeout_s:
            return EngineError(f"{self.label} sent nothing for {seconds:g} s")
        return EngineError(f"{self.label} sent nothing for {self._read_timeout_s:g} s "
                           f"(`remote_timeout_ms`)")

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()
