"""Remote engines against small inference servers started here, one per wire format:
llama-server's /infill (server-sent events), an OpenAI-compatible /v1/completions (SSE
ending with [DONE]) and Ollama's /api/generate (newline-delimited JSON)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from flashls.engine.base import (
    CancelToken,
    EngineError,
    GenerationRequest,
    NameConstraint,
    RepoContext,
    Timings,
)
from flashls.engine.names import names_grammar
from flashls.engine.remote import RemoteEngine
from flashls.engine.remote.connection import ServerBusy, retry_after, server_message
from flashls.engine.remote.window import ServerPrompts
from flashls.fim import format_named
from flashls.service import CompletionRequest, CompletionService
from flashls.settings import Settings, merge
from tests.http_servers import EMPTY_200, HANG, HEALTHY, FaultyLlamaServer, LoopbackServer

KINDS = ("llama-server", "openai", "ollama")
PIECES = ("total", " = a", " + b", "\n", "return", " total\n")
WHOLE = "".join(PIECES)
MODEL = "coder"
KEY_VARIABLE = "FLASHLS_TEST_REMOTE_KEY"


@dataclass
class Behaviour:
    """What a fake server does with a generation request."""

    pieces: tuple[str, ...] = PIECES
    piece_s: float = 0.0  # pause before each piece
    silent_s: float = 0.0  # pause before the reply's headers (evaluating the prompt)
    status: int = 200  # an error status answers every POST with `error_body`
    error_body: dict[str, Any] = field(default_factory=dict)
    key: str | None = None  # the API key the server requires
    models: tuple[str, ...] = (MODEL,)
    owner: str = "vllm"  # `owned_by` in /v1/models
    # What llama-server's /props names: a file whose name tells no FIM format gets /infill.
    model_path: str = "/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    total_slots: int = 1  # llama-server's /props
    retry_after: str | None = None  # a Retry-After header on error replies


class FakeServer(LoopbackServer):
    """An inference server on 127.0.0.1 speaking one kind's streaming format; it records
    requests, counts the pieces it wrote, and notices a client that went away."""

    def __init__(self, kind: str, behaviour: Behaviour) -> None:
        self.kind = kind
        self.behaviour = behaviour
        self.posts: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.sent = 0  # pieces written in the last reply
        self.disconnected = threading.Event()
        self.sent_at_disconnect: int | None = None
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        server.daemon_threads = True
        self._serve(server)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/health" and fake.refuse(self):  # llama-server's is public
                    return
                listing: dict[str, Any] = {
                    "/health": {"status": "ok"},
                    "/props": {"model_path": fake.behaviour.model_path,
                               "total_slots": fake.behaviour.total_slots},
                    "/v1/models": {"data": [{"id": name, "owned_by": fake.behaviour.owner}
                                            for name in fake.behaviour.models]},
                    "/api/tags": {"models": [{"name": f"{name}:latest"}
                                             for name in fake.behaviour.models]}}
                fake.send_json(self, 200 if self.path in listing else 404,
                               listing.get(self.path, {"error": "no such path"}))

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.posts.append((self.path, dict(self.headers), body))
                if fake.refuse(self):
                    return
                if fake.behaviour.status != 200:
                    fake.send_json(self, fake.behaviour.status, fake.behaviour.error_body,
                                   fake.behaviour.retry_after)
                    return
                fake.stream(self, body)

        return Handler

    def refuse(self, handler: BaseHTTPRequestHandler) -> bool:
        """Answer 401 when the server wants a key and did not get it."""
        key = self.behaviour.key
        if key is None or handler.headers.get("Authorization") == f"Bearer {key}":
            return False
        self.send_json(handler, 401, {"error": {"code": 401, "message": "Invalid API Key",
                                                "type": "authentication_error"}})
        return True

    @staticmethod
    def send_json(handler: BaseHTTPRequestHandler, status: int, payload: Any,
                  retry_after: str | None = None) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        if retry_after is not None:
            handler.send_header("Retry-After", retry_after)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def stream(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        """The reply, chunked, one event a chunk; stops when the client is gone."""
        self.sent = 0
        connection = handler.connection
        deadline = time.monotonic() + self.behaviour.silent_s
        while time.monotonic() < deadline:  # "evaluating the prompt"
            time.sleep(0.01)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/x-ndjson" if self.kind == "ollama"
                            else "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for index, event in enumerate(self.events(body)):
            if _gone(connection, self.behaviour.piece_s if index else 0):
                self.sent_at_disconnect = self.sent
                self.disconnected.set()
                return
            try:
                data = event.encode()
                handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                handler.wfile.flush()
            except OSError:
                self.sent_at_disconnect = self.sent
                self.disconnected.set()
                return
            self.sent += 1
        handler.wfile.write(b"0\r\n\r\n")

    def events(self, body: dict[str, Any]) -> Iterator[str]:
        """The kind's wire format: pieces, then the final event(s) with counts."""
        generating = body.get("n_predict", 1) != 0
        pieces = self.behaviour.pieces if generating else ()
        if self.kind == "llama-server" and body.get("n_cmpl", 1) > 1:
            # Completion i says each piece i+1 times; their events interleave.
            for piece in pieces:
                for index in range(body["n_cmpl"]):
                    yield _sse({"index": index, "content": piece * (index + 1), "stop": False})
            for index in range(body["n_cmpl"]):
                yield _sse({"index": index, "content": "", "stop": True, "stop_type": "eos"})
        elif self.kind == "llama-server":
            for piece in pieces:
                yield _sse({"content": piece, "stop": False})
            yield _sse({"content": "", "stop": True, "stop_type": "eos",
                        "tokens_evaluated": 15, "truncated": False, "tokens_cached": 14,
                        "timings": {"cache_n": 5, "prompt_n": 10, "prompt_ms": 12.0,
                                    "predicted_n": len(pieces), "predicted_ms": 30.0}})
        elif self.kind == "openai":
            for piece in pieces:
                yield _sse({"choices": [{"index": 0, "text": piece, "finish_reason": None}]})
            yield _sse({"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
            yield _sse({"choices": [], "usage": {"prompt_tokens": 15,
                                                 "completion_tokens": len(pieces)}})
            yield "data: [DONE]\n\n"
        else:
            for piece in pieces:
                yield json.dumps({"model": MODEL, "response": piece, "done": False}) + "\n"
            yield json.dumps({"model": MODEL, "response": "", "done": True,
                              "done_reason": "stop", "prompt_eval_count": 15,
                              "eval_count": len(pieces)}) + "\n"


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _gone(connection: socket.socket, pause_s: float) -> bool:
    """Whether the client closed its side, watched for during a pause before the next
    piece (llama-server polls its socket the same way while it generates)."""
    deadline = time.monotonic() + pause_s
    while True:
        readable, _, _ = select.select([connection], [], [], 0.005)
        if readable:
            try:
                return connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True
        if time.monotonic() >= deadline:
            return False


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def start(kind: str, **behaviour: Any) -> FakeServer:
        server = FakeServer(kind, Behaviour(**behaviour))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def engine_for(server: FakeServer, **overrides: Any) -> RemoteEngine:
    config, problems = merge(Settings(), {"engine": server.kind, "endpoint": server.endpoint,
                                          "remote_model": MODEL, **overrides})
    assert problems == []
    return RemoteEngine(config)


def request(stop: Callable[[str], int | None] = lambda text: None,
            seen: list[str] | None = None, max_tokens: int = 32) -> GenerationRequest:
    return GenerationRequest(prefix="def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))\n",
                             max_tokens=max_tokens, stop=stop,
                             on_token=None if seen is None else seen.append)


@pytest.mark.parametrize("kind", KINDS)
def test_text_streams_in_and_timings_come_from_the_server(
        kind: str, serve: Callable[..., FakeServer]) -> None:
    server = serve(kind)
    engine = engine_for(server)
    seen: list[str] = []
    result = engine.generate(request(seen=seen), CancelToken())
    engine.close()
    assert (result.text, result.finish) == (WHOLE, "eos")
    assert seen[-1] == WHOLE and len(seen) == len(PIECES)
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(seen))
    assert result.timings.generated_tokens == len(PIECES)
    assert result.timings.prompt_tokens == 15
    assert result.timings.evaluated_tokens == (10 if kind == "llama-server" else 15)


def test_llama_server_is_sent_prefix_and_suffix_for_a_model_flashls_cannot_name(
        serve: Callable[..., FakeServer]) -> None:
    server = serve("llama-server", model_path="/models/mystery-coder.gguf")
    engine = engine_for(server)
    engine.generate(request(max_tokens=7), CancelToken())
    evaluated = engine.prefill(request(), CancelToken())
    engine.close()
    (path, _, body), (warm_path, _, warm) = server.posts
    assert path == warm_path == "/infill"
    assert body["input_prefix"] == "def add(a, b):\n    "
    assert body["input_suffix"] == "\n\nprint(add(1, 2))\n"
    assert (body["cache_prompt"], body["stream"], body["n_predict"]) == (True, True, 7)
    assert (warm["n_predict"], warm["cache_prompt"]) == (0, True)
    assert evaluated == 10


@pytest.mark.parametrize("endpoint_tail", ["", "/v1"])
def test_openai_is_sent_a_fim_prompt_built_here(
        endpoint_tail: str, serve: Callable[..., FakeServer]) -> None:
    server = serve("openai")
    engine = engine_for(server, endpoint=server.endpoint + endpoint_tail, fimFormat="starcoder")
    engine.generate(request(max_tokens=9), CancelToken())
    assert engine.prefill(request(), CancelToken()) == 0  # no prompt-only request
    engine.close()
    [(path, _, body)] = server.posts
    starcoder = format_named("starcoder")
    assert path == "/v1/completions"
    assert body["prompt"] == starcoder.render("def add(a, b):\n",
                                              "\n\nprint(add(1, 2))\n") + "    "
    assert body["prompt"].startswith("<fim_prefix>") and body["prompt"].endswith("<fim_middle>    ")
    assert (body["stream"], body["max_tokens"], body["model"]) == (True, 9, MODEL)
    assert "suffix" not in body and "<|endoftext|>" in body["stop"]


@pytest.mark.parametrize(("owner", "grammar"), [("me", True), ("llamacpp", True),
                                               ("vllm", False), ("openai", False)])
def test_openai_servers_that_take_a_grammar_get_the_name_constraint_as_one(
        owner: str, grammar: bool, serve: Callable[..., FakeServer]) -> None:
    server = serve("openai", owner=owner)
    engine = engine_for(server)
    names = NameConstraint("", ("zq_area", "zq_perimeter"))
    engine.generate(dataclasses.replace(request(), names=names), CancelToken())
    engine.generate(request(), CancelToken())  # no constraint here: no grammar
    engine.close()
    [(_, _, constrained), (_, _, free)] = server.posts
    assert constrained.get("grammar") == (names_grammar(names) if grammar else None)
    assert "grammar" not in free


def test_ollama_is_sent_a_raw_prompt_in_the_default_format(
        serve: Callable[..., FakeServer]) -> None:
    server = serve("ollama")
    engine = engine_for(server)
    engine.generate(request(max_tokens=5), CancelToken())
    engine.close()
    [(path, _, body)] = server.posts
    assert path == "/api/generate"
    assert (body["raw"], body["stream"], body["model"]) == (True, True, MODEL)
    assert body["prompt"] == format_named("qwen").render("def add(a, b):\n",
                                                         "\n\nprint(add(1, 2))\n") + "    "
    assert body["options"]["num_predict"] == 5 and "suffix" not in body


@pytest.mark.parametrize("kind", KINDS)
def test_the_stop_rule_cuts_and_closes_the_reply(
        kind: str, serve: Callable[..., FakeServer]) -> None:
    server = serve(kind, piece_s=0.03)
    engine = engine_for(server)
    result = engine.generate(request(stop=lambda text: text.find("\n") if "\n" in text
                                     else None), CancelToken())
    assert (result.text, result.finish) == ("total = a + b", "stop")
    assert server.disconnected.wait(2)
    assert server.sent_at_disconnect is not None and server.sent_at_disconnect < len(PIECES)
    engine.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_cancel_closes_the_connection_within_one_piece(
        kind: str, serve: Callable[..., FakeServer]) -> None:
    server = serve(kind, pieces=tuple(f"t{index} " for index in range(10)), piece_s=0.3)
    engine = engine_for(server)
    cancel = CancelToken()
    seen: list[str] = []

    def cancel_at_the_third(text: str) -> None:
        seen.append(text)
        if len(seen) == 3:
            cancel.cancel()

    result = engine.generate(GenerationRequest("x = ", "", 64, lambda text: None,
                                               on_token=cancel_at_the_third), cancel)
    assert result.finish == "cancelled" and result.text == "t0 t1 t2 "
    assert server.disconnected.wait(2), "the server never saw the client go"
    # Seen while it paused before the fourth piece: not one piece more was generated.
    assert server.sent_at_disconnect == 3
    assert engine.resume(CancelToken()) is None
    engine.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_deadline_returns_what_came_and_resume_reads_the_rest(
        kind: str, serve: Callable[..., FakeServer]) -> None:
    server = serve(kind, piece_s=0.08)
    engine = engine_for(server)
    engine.load()
    cut = engine.generate(request(), CancelToken(time.monotonic() + 0.2))
    assert cut.finish == "deadline" and WHOLE.startswith(cut.text) and cut.text != WHOLE
    rest = engine.resume(CancelToken())
    assert rest is not None and (rest.text, rest.finish) == (WHOLE, "eos")
    assert len(server.posts) == 1  # the same reply, read on
    assert cut.timings.generated_tokens + rest.timings.generated_tokens == len(PIECES)
    engine.close()


def test_a_deadline_while_the_server_evaluates_the_prompt_answers_in_time(
        serve: Callable[..., FakeServer]) -> None:
    server = serve("llama-server", silent_s=0.6)
    engine = engine_for(server)
    engine.load()
    cut = engine.generate(request(), CancelToken(time.monotonic() + 0.1))
    assert (cut.text, cut.finish, server.sent) == ("", "deadline", 0)  # still silent
    rest = engine.resume(CancelToken())
    assert rest is not None and (rest.text, rest.finish) == (WHOLE, "eos")
    assert rest.timings.prompt_ms > 0 and rest.timings.generated_tokens == len(PIECES)
    engine.close()


def test_a_new_generation_abandons_the_reply_a_deadline_left_open(
        serve: Callable[..., FakeServer]) -> None:
    server = serve("openai", piece_s=0.05, pieces=tuple(f"p{index}" for index in range(30)))
    engine = engine_for(server)
    engine.load()
    engine.generate(request(), CancelToken(time.monotonic() + 0.1))
    assert server.disconnected.wait(0.01) is False
    engine.prefill(request(), CancelToken())  # ran since: the cut reply is not resumed
    assert engine.resume(CancelToken()) is None
    assert server.disconnected.wait(2)
    engine.close()


def test_a_rejected_key_is_one_line_without_the_key(
        serve: Callable[..., FakeServer], monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve("llama-server", key="s3cret-right")
    monkeypatch.setenv(KEY_VARIABLE, "s3cret-wrong")
    engine = engine_for(server, apiKeyEnv=KEY_VARIABLE)
    with pytest.raises(EngineError) as refused:
        engine.generate(request(), CancelToken())
    message = str(refused.value)
    assert server.posts == []  # refused at /props, before any prompt was sent
    assert "API key" in message and "401" in message and server.endpoint in message
    assert "s3cret" not in message and "\n" not in message

    monkeypatch.setenv(KEY_VARIABLE, "s3cret-right")
    accepted = engine_for(server, apiKeyEnv=KEY_VARIABLE)
    assert accepted.generate(request(), CancelToken()).text == WHOLE
    assert "s3cret" not in accepted.describe()
    assert server.posts[-1][1]["Authorization"] == "Bearer s3cret-right"
    accepted.close()


def test_a_key_file_is_read_and_a_missing_variable_is_named(
        serve: Callable[..., FakeServer], tmp_path: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve("ollama", key="from-a-file")
    (tmp_path / "key").write_text("from-a-file\n")
    engine = engine_for(server, apiKeyFile=str(tmp_path / "key"))
    assert engine.generate(request(), CancelToken()).text == WHOLE
    engine.close()
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    with pytest.raises(EngineError, match=KEY_VARIABLE):
        engine_for(server, apiKeyEnv=KEY_VARIABLE).load()


def test_a_refused_connection_names_the_endpoint() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    engine = RemoteEngine(Settings(engine="llama-server", endpoint=endpoint))
    with pytest.raises(EngineError) as failed:
        engine.generate(request(), CancelToken())
    message = str(failed.value)
    assert endpoint in message and "refused" in message and "\n" not in message


def test_a_model_without_fim_tokens_is_told_plainly(serve: Callable[..., FakeServer]) -> None:
    server = serve("llama-server", status=501, error_body={"error": {
        "code": 501, "type": "not_supported_error", "message": "Infill is not supported by "
        "this model: prefix token is missing. suffix token is missing. "}})
    engine = engine_for(server)
    with pytest.raises(EngineError) as failed:
        engine.generate(request(), CancelToken())
    message = str(failed.value)
    assert "fill-in-the-middle" in message and "Infill is not supported" in message
    assert "\n" not in message and len(message) < 400
    engine.close()


def test_an_unknown_model_is_named(serve: Callable[..., FakeServer]) -> None:
    server = serve("ollama", models=("starcoder2",))
    with pytest.raises(EngineError, match="ollama pull coder"):
        engine_for(server).load()
    vllm = serve("openai", status=404, error_body={
        "object": "error", "message": "The model `coder` does not exist.",
        "type": "NotFoundError", "code": 404}, models=())
    with pytest.raises(EngineError, match="remote_model") as failed:
        engine_for(vllm).generate(request(), CancelToken())
    assert "does not exist" in str(failed.value)


def test_a_key_a_header_cannot_carry_is_refused_before_sending(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_VARIABLE, "two words")
    engine = RemoteEngine(Settings(engine="openai", endpoint="http://127.0.0.1:9",
                                   api_key_env=KEY_VARIABLE))
    with pytest.raises(EngineError, match="cannot carry") as refused:
        engine.load()
    assert "two words" not in str(refused.value)


def test_the_engine_setting_picks_the_remote_engine() -> None:
    from flashls.engine.fake import FakeEngine
    from flashls.server import ENGINE_SETTINGS, make_engine

    remote, _ = merge(Settings(), {"engine": "ollama", "endpoint": "http://h:11434",
                                   "remoteModel": MODEL})
    assert isinstance(make_engine("llama", remote), RemoteEngine)
    assert isinstance(make_engine("fake", remote), FakeEngine)  # `--engine fake` still wins
    assert {"engine", "endpoint", "remote_model", "api_key_env"} <= set(ENGINE_SETTINGS)


def test_remote_settings_are_checked_together() -> None:
    merged, problems = merge(Settings(), {"engine": "llama-server"})
    assert merged.engine == "local" and "needs `endpoint`" in problems[0]
    merged, problems = merge(Settings(), {"engine": "ollama", "endpoint": "http://h:11434"})
    assert merged.engine == "local" and "remote_model" in problems[0]
    merged, problems = merge(Settings(), {"endpoint": "gpu-box:8080"})
    assert merged.endpoint == "" and "not an http" in problems[0]
    merged, problems = merge(Settings(), {"engine": "openai", "endpoint": "https://h/v1"})
    assert (merged.engine, problems) == ("openai", [])


async def test_the_pipeline_post_processes_a_remote_suggestion(
        serve: Callable[..., FakeServer]) -> None:
    server = serve("llama-server", pieces=(" b", "\n", "\n", "print(add(1, 2))\n"))
    config, _ = merge(Settings(), {"engine": "llama-server", "endpoint": server.endpoint})
    pipeline = CompletionService(config, RemoteEngine(config))
    text = "def add(a, b):\n    return a +\n"
    pipeline.document_changed("file:///w/add.py", "python", text)
    completion = await pipeline.complete(CompletionRequest("file:///w/add.py", "python", text,
                                                           1, len("    return a +")))
    pipeline.close()
    assert (completion.source, completion.text) == ("model", " b")  # one line, cleaned
    assert server.posts[0][2]["prompt"].endswith("<|fim_middle|>    return a +")


async def test_a_cut_remote_suggestion_is_finished_in_the_background(
        serve: Callable[..., FakeServer]) -> None:
    server = serve("ollama", pieces=("_do", "ne(", "1)", "\n"), piece_s=0.25)
    config, _ = merge(Settings(), {"engine": "ollama", "endpoint": server.endpoint,
                                   "remoteModel": MODEL, "timeBudgetMs": 400,
                                   "partialAnswerMs": 0})
    pipeline = CompletionService(config, RemoteEngine(config))
    finished = threading.Event()
    pipeline.on_finished = lambda _: finished.set()
    line = "total = comp"

    def typed(extra: str) -> CompletionRequest:
        return CompletionRequest("file:///w/a.py", "python", line + extra + "\n", 0,
                                 len(line + extra))

    first = await pipeline.complete(typed(""))
    assert first.finish == "deadline" and "_done(1)".startswith(first.text)
    deadline = time.monotonic() + 5
    while not finished.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    along = await pipeline.complete(typed("_do"))
    pipeline.close()
    assert (along.source, along.text) == ("cache", "ne(1)")
    assert len(server.posts) == 1  # the cut reply was read on, not asked again



REPO = RepoContext("shop", (("shop/hashing.py", "def checksum(data): ..."),), "shop/store.py")


def test_llama_server_is_sent_a_prompt_whose_end_is_all_a_keystroke_changes(
        serve: Callable[..., FakeServer]) -> None:
    server = serve("llama-server")
    engine = engine_for(server)
    engine.generate(request(max_tokens=7), CancelToken())
    typed = dataclasses.replace(request(), prefix="def add(a, b):\n    return")
    engine.prefill(typed, CancelToken())
    engine.close()
    (path, _, body), (warm_path, _, warm) = server.posts
    assert path == warm_path == "/completion"
    qwen = format_named("qwen")
    assert body["prompt"] == qwen.render("def add(a, b):\n", "\n\nprint(add(1, 2))\n") + "    "
    assert warm["prompt"] == body["prompt"] + "return"  # the suffix's cells stay cached
    assert (body["cache_prompt"], body["stream"], body["n_predict"]) == (True, True, 7)
    assert (warm["n_predict"], "<|endoftext|>" in body["stop"]) == (0, True)
    assert "qwen" in engine.describe()


@pytest.mark.parametrize("kind", ["llama-server", "openai"])
def test_other_files_reach_the_server_in_its_own_layout(
        kind: str, serve: Callable[..., FakeServer]) -> None:
    server = serve(kind, model_path="/models/mystery.gguf")
    engine = engine_for(server)
    engine.generate(dataclasses.replace(request(), repo=REPO), CancelToken())
    engine.close()
    body = server.posts[-1][2]
    if kind == "llama-server":  # the server lays them out with the model's own tokens
        assert body["input_extra"] == [{"filename": "shop/hashing.py",
                                        "text": "def checksum(data): ..."}]
        return
    assert body["prompt"] == (
        "<|repo_name|>shop\n<|file_sep|>shop/hashing.py\ndef checksum(data): ...\n"
        "<|file_sep|>shop/store.py\n"
        + format_named("qwen").render("def add(a, b):\n", "\n\nprint(add(1, 2))\n") + "    ")


def test_formats_without_a_repository_layout_leave_other_files_out() -> None:
    assert format_named("codellama").render_repo("shop", REPO.files, REPO.path) == ""
    assert format_named("starcoder").render_repo("shop", REPO.files, "a.py").startswith(
        "<repo_name>shop\n<file_sep>shop/hashing.py\n")


def test_llama_server_alternatives_are_sampled_completions_read_together(
        serve: Callable[..., FakeServer]) -> None:
    server = serve("llama-server", total_slots=4, pieces=("ab", "c", "\nd"))
    engine = engine_for(server)
    results = engine.alternatives(
        request(stop=lambda text: text.index("\n") if "\n" in text else None), 2,
        CancelToken())
    path, _, body = server.posts[-1]
    assert (path, body["n_cmpl"], body["temperature"]) == ("/completion", 3, 0.8)  # one more
    assert [(r.text, r.finish) for r in results] == [
        ("abc", "stop"), ("ababcc", "stop"), ("abababccc", "stop")]  # each cut by the rule


def test_a_one_slot_llama_server_is_not_asked_for_alternatives(
        serve: Callable[..., FakeServer]) -> None:
    server = serve("llama-server", total_slots=1)
    assert engine_for(server).alternatives(request(), 2, CancelToken()) == []
    assert server.posts == []  # its other completions would wait for a slot forever
    openai = serve("openai")
    assert engine_for(openai).alternatives(request(), 2, CancelToken()) == []


def test_llama_server_is_sent_the_names_as_a_grammar(serve: Callable[..., FakeServer]) -> None:
    server = serve("llama-server")
    engine = engine_for(server)
    engine.generate(dataclasses.replace(request(), names=NameConstraint(
        "all", ("all", "all_tasks"))), CancelToken())
    engine.generate(request(), CancelToken())
    engine.close()
    (_, _, constrained), (_, _, plain) = server.posts
    assert constrained["grammar"] == ('root ::= ("_tasks")? tail\n'
                                      'tail ::= ([^a-zA-Z0-9_] .*)?\n')
    assert "grammar" not in plain
    assert names_grammar(NameConstraint("", ("a\\b", 'c"d'))).startswith(
        'root ::= ("a\\\\b" | "c\\"d") tail')


def test_a_cold_place_is_answered_and_warmed_from_the_short_window_until_the_full_fits(
        serve: Callable[..., FakeServer]) -> None:
    """At a place the server has not seen, a prompt of thousands of tokens cannot be
    evaluated within the budget: the short window is sent, and warmed (a slot caches one
    prompt: a full one begun would displace it). A server measured fast enough gets the
    full window, warmed and asked."""
    server = serve("llama-server", pieces=("1",))
    engine = engine_for(server)
    prefix = "".join(f"value_{index} = {index}\n" for index in range(2000)) + "total = "
    suffix = "\nprint(total)\n"
    cold = dataclasses.replace(request(), prefix=prefix, suffix=suffix,
                               short=(prefix[-200:], suffix))

    def budget() -> CancelToken:
        return CancelToken(time.monotonic() + 1.5)

    first = engine.generate(cold, budget())
    assert first.timings.short_window and first.text == "1"
    engine.prefill(cold, CancelToken())
    for _ in range(20):  # a GPU server: 5,000 tokens in 100 ms
        engine._prompts.evaluated("z", Timings(prompt_ms=100, evaluated_tokens=5000))
    engine.prefill(cold, CancelToken())
    again = engine.generate(cold, budget())
    engine.close()
    assert not again.timings.short_window
    sent = [body["prompt"] for _, _, body in server.posts]
    assert "value_0 = 0" not in sent[0] and "value_1999 = 1999" in sent[0]
    assert sent[1] == sent[0]  # the short window warmed
    assert "value_0 = 0" in sent[2] and sent[3] == sent[2]


def test_a_fast_server_gets_the_full_window_once_its_rate_is_measured() -> None:
    prompts = ServerPrompts()
    full, short = "x" * 35_000, "y" * 700  # about 10,000 and 200 tokens
    assert prompts.cold(full, short, 1.5)  # at a CPU's 100 tokens/s: 100 s
    for _ in range(20):  # a GPU server: 5,000 tokens in 100 ms
        prompts.evaluated("z", Timings(prompt_ms=100, evaluated_tokens=5000))
    assert not prompts.cold(full, short, 1.5)
    assert not ServerPrompts().cold(full, "y" * 30_000, 1.5)  # the short one saves too little
    # A third of the full cost: the full window's answer, a few times later, is the one to
    # finish (SHORT_WINDOW_RATIO).
    assert not ServerPrompts().cold(full, "y" * 12_000, 1.5)


def test_an_html_error_page_is_one_plain_line() -> None:
    page = (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title>"
            b"<script>track()</script></head><body><h1>Bad Gateway</h1></body></html>")
    assert server_message(page) == "502 Bad Gateway"
    untitled = b"<html><body><script>var x = 1;</script><p>upstream &amp; down</p></body></html>"
    assert server_message(untitled) == "upstream & down"


def test_a_server_streaming_past_max_tokens_is_cut_off(
        serve: Callable[..., FakeServer]) -> None:
    server = serve("llama-server", pieces=("a",) * 400, piece_s=0.001)
    engine = engine_for(server)
    result = engine.generate(request(max_tokens=7), CancelToken())
    engine.close()
    assert (result.text, result.finish) == ("a" * 7, "length")
    assert server.disconnected.wait(5)


def test_a_busy_server_is_not_asked_again_before_its_retry_after(
        serve: Callable[..., FakeServer]) -> None:
    server = serve("llama-server", status=429, retry_after="1",
                   error_body={"error": {"message": "too many requests"}})
    engine = engine_for(server)
    with pytest.raises(ServerBusy, match=r"429.*asking again after 1 s"):
        engine.generate(request(), CancelToken())
    for _ in range(5):  # keystrokes meanwhile: nothing is sent
        with pytest.raises(ServerBusy):
            engine.generate(request(), CancelToken())
    assert len(server.posts) == 1
    server.behaviour.status = 200
    time.sleep(1.1)
    assert engine.generate(request(), CancelToken()).text == WHOLE
    engine.close()
    assert len(server.posts) == 2


def test_retry_after_takes_seconds_or_a_date_within_bounds() -> None:
    assert (retry_after(None), retry_after("3"), retry_after("100000")) == (1.0, 3.0, 60.0)
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after("soon") == 1.0


def test_replies_abandoned_before_their_headers_free_their_connections_at_once() -> None:
    """A server that hangs is sent a request at each keystroke; each is abandoned at the
    next. Their connections close at once (not at `remote_timeout_ms`), so when the server
    answers again the next request does not wait behind a full pool of hung ones."""
    stand_in = FaultyLlamaServer()
    engine = RemoteEngine(Settings(engine="llama-server", endpoint=stand_in.endpoint))
    engine.load()
    stand_in.fault = HANG
    for _ in range(12):  # more than the pool's 8 connections
        cut = engine.generate(request(), CancelToken(time.monotonic() + 0.1))
        assert (cut.text, cut.finish) == ("", "deadline")
    deadline = time.monotonic() + 2
    while stand_in.held > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stand_in.held == 1  # the server saw each client go but the last (left to read on)
    stand_in.fault = HEALTHY
    answer = engine.generate(request(), CancelToken(time.monotonic() + 1.5))
    engine.close()
    stand_in.close()
    assert answer.text == "".join(stand_in.pieces)


def test_a_server_silent_across_requests_fails_at_remote_timeout_ms() -> None:
    """No single request waits `remote_timeout_ms`, but together they have: the server is
    not answering, and the call says so instead of answering nothing again."""
    stand_in = FaultyLlamaServer()
    engine = RemoteEngine(Settings(engine="llama-server", endpoint=stand_in.endpoint,
                                   remote_timeout_ms=600))
    engine.load()
    stand_in.fault = HANG
    for _ in range(2):
        assert engine.generate(request(), CancelToken(time.monotonic() + 0.2)).text == ""
    with pytest.raises(EngineError, match=r"sent nothing for 0.6 s \(`remote_timeout_ms`\)"):
        for _ in range(3):
            engine.generate(request(), CancelToken(time.monotonic() + 0.2))
    stand_in.fault = HEALTHY
    assert engine.generate(request(), CancelToken(time.monotonic() + 1.5)).text
    assert engine.generate(request(), CancelToken(time.monotonic() + 0.2)).finish != "deadline"
    engine.close()
    stand_in.close()


@pytest.mark.parametrize("body", [b"", b'data: {"content": "total", "stop": false}\n\n'])
def test_a_reply_that_ends_before_its_last_event_is_an_error(body: bytes) -> None:
    stand_in = FaultyLlamaServer()
    engine = RemoteEngine(Settings(engine="llama-server", endpoint=stand_in.endpoint))
    engine.load()
    stand_in.fault = EMPTY_200
    stand_in.empty_body = body
    with pytest.raises(EngineError, match="ended a reply before its last event") as failed:
        engine.generate(request(), CancelToken())
    engine.close()
    stand_in.close()
    assert "\n" not in str(failed.value)
