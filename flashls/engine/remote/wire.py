"""What each kind of inference server is sent and how its streamed replies read.

- `llama-server`: `POST /completion` with a FIM prompt built here when the model's format
  is known, else `POST /infill` with the prefix and suffix (the server builds the prompt
  from the model's own tokens); server-sent events without `[DONE]`.
- `openai`: `POST /v1/completions` with a FIM prompt built here (vLLM rejects `suffix`,
  llama_cpp.server ignores it), server-sent events ending with `data: [DONE]`.
- `ollama`: `POST /api/generate` with `raw: true` and a FIM prompt built here
  (`suffix` works only for models whose template has one), newline-delimited JSON.
All three are streamed: closing the connection is what cancels a generation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Protocol

import httpx
from httpx_sse import EventSource

from flashls.engine.base import EngineError, GenerationRequest
from flashls.engine.names import names_grammar
from flashls.fim import FORMATS, FimFormat, format_named
from flashls.settings import Settings

# Ollama unloads an idle model after 5 minutes; reloading costs seconds at the next
# keystroke, so completions ask it to keep the model this long after each request.
OLLAMA_KEEP_ALIVE = "30m"
# Sampling temperature of llama-server's alternatives (greedy ones would all be the same).
ALTERNATIVE_TEMPERATURE = 0.8


@dataclass
class Chunk:
    """What one event of a reply says: new text, and at the end why it ended and what the
    server counted (None: not said)."""

    text: str = ""
    final: bool = False  # the reply's last event: nothing but the body's end follows
    index: int = 0  # which completion of a request for several (llama-server's `n_cmpl`)
    finish: str | None = None  # "eos" or "length"
    prompt_tokens: int | None = None
    evaluated_tokens: int | None = None
    generated_tokens: int | None = None


def raw_prompt(fim: FimFormat, request: GenerationRequest) -> str:
    """A FIM prompt as text, after the other files in the format's repository layout.

    The typed part of the cursor's line goes after the middle marker, as the start of the
    middle, instead of at the end of the prefix: then a keystroke changes only the
    prompt's end, and the server's prompt cache (llama-server's slot, vLLM's prefix
    blocks) keeps the suffix, which it would otherwise evaluate again at every keystroke.
    Suffix-first formats end with the prefix anyway."""
    repo = request.repo
    head = "" if repo is None else fim.render_repo(repo.name, repo.files, repo.path)
    if fim.order == "spm":
        return head + fim.render(request.prefix, request.suffix)
    line_start = request.prefix.rfind("\n") + 1
    return (head + fim.render(request.prefix[:line_start], request.suffix)
            + request.prefix[line_start:])


class WireFormat(Protocol):
    """One kind of server's requests and replies."""

    kind: str

    def generate(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """The path and body of a streamed generation for `request`."""

    def prefill(self, request: GenerationRequest) -> tuple[str, dict[str, Any]] | None:
        """The path and body that evaluate `request`'s prompt only, if the server can."""

    def alternatives(self, request: GenerationRequest,
                     count: int) -> tuple[str, dict[str, Any]] | None:
        """The path and body of up to `count` sampled completions in one streamed reply
        (events tell theirs by `Chunk.index`), if the server can."""

    def events(self, response: httpx.Response) -> Iterator[dict[str, Any]]:
        """The reply's events as JSON objects, until its end marker."""

    def read(self, event: dict[str, Any]) -> Chunk:
        """One event's meaning; raises EngineError for an error event."""

    def probe(self) -> str:
        """The path a GET checks the server at (reachable, key accepted, model known)."""

    def check_probe(self, reply: Any) -> str | None:
        """What is wrong with the server according to the probe's reply, or None."""

    def explain(self, status: int, message: str) -> str | None:
        """A kind-specific reading of an error status, or None for the generic one."""


def _sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for event in EventSource(response).iter_sse():
        if event.data == "[DONE]":
            return
        if event.data:
            yield _json_object(event.data)


def _json_object(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except ValueError as error:
        raise EngineError(f"the server sent an event that is not JSON: {text[:80]!r}") from error
    if not isinstance(parsed, dict):
        raise EngineError(f"the server sent an event that is not a JSON object: {text[:80]!r}")
    return parsed


def _error_in(event: dict[str, Any]) -> None:
    """Raise the error a streamed event carries (a failure after the reply began)."""
    error = event.get("error")
    if error is None and event.get("object") == "error":  # vLLM's error object
        error = event
    if error is not None:
        message = error.get("message", error) if isinstance(error, dict) else error
        raise EngineError(f"the server failed while generating: {message}")


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _llama_timings(event: dict[str, Any], chunk: Chunk) -> None:
    """Counts from llama-server's final event (its /infill and its OpenAI endpoint):
    `prompt_n` evaluated, `cache_n` reused from the slot, `predicted_n` generated."""
    timings = event.get("timings")
    if not isinstance(timings, dict):
        return
    evaluated, cached = _count(timings.get("prompt_n")), _count(timings.get("cache_n"))
    total = _count(event.get("tokens_evaluated"))
    if total is None and evaluated is not None:
        total = evaluated + (cached or 0)
    chunk.evaluated_tokens = evaluated if evaluated is not None else chunk.evaluated_tokens
    chunk.prompt_tokens = total if total is not None else chunk.prompt_tokens
    generated = _count(timings.get("predicted_n"))
    chunk.generated_tokens = generated if generated is not None else chunk.generated_tokens


class LlamaServerWire:
    """llama.cpp's llama-server; a prompt-only request (`n_predict: 0`) warms its slot.

    With a model whose FIM format flashls knows (`fim_format`, or told by the model file's
    name in `/props`), `/completion` is sent the prompt built by `raw_prompt`: llama-server's
    `/infill` appends its `prompt` field to the prefix, before the suffix, so every
    keystroke there evaluates the suffix again (up to a quarter of its batch, 512 tokens by
    default), and `--cache-reuse` cannot help, as it skips cached chunks that follow
    removed text, not inserted text. Other models get `/infill`, which knows their tokens.
    """

    kind = "llama-server"

    def __init__(self, settings: Settings) -> None:
        self._model = settings.remote_model  # only a router-mode server reads it
        self._fim_setting = settings.fim_format
        self.fim: FimFormat | None = None  # known after the probe: `/completion` is used
        self.slots = 1  # the server's `total_slots`, known after the probe

    def _body(self, request: GenerationRequest, n_predict: int) -> tuple[str, dict[str, Any]]:
        common: dict[str, Any] = {"n_predict": n_predict, "cache_prompt": True,
                                  "stream": True, "temperature": 0.0}
        if self._model:
            common["model"] = self._model
        if request.names is not None:
            common["grammar"] = names_grammar(request.names)
        if self.fim is not None:
            return "/completion", {"prompt": raw_prompt(self.fim, request),
                                   "stop": list(self.fim.stop_markers), **common}
        extra = [] if request.repo is None else [
            {"filename": path, "text": text} for path, text in request.repo.files]
        return "/infill", {"input_prefix": request.prefix, "input_suffix": request.suffix,
                           "input_extra": extra, "prompt": "", **common}

    def generate(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """Greedy, like the local engine, so typed-along answers agree with asked ones."""
        return self._body(request, request.max_tokens)

    def prefill(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """The same prompt with nothing to generate: the slot keeps it cached."""
        return self._body(request, 0)

    def alternatives(self, request: GenerationRequest,
                     count: int) -> tuple[str, dict[str, Any]] | None:
        """Sampled completions in one request (`n_cmpl`: the prompt is evaluated once,
        each completion takes a slot), as many as the server has slots; None with one
        slot, where the other completions would wait for a slot that never frees."""
        count = min(count, self.slots)
        if count < 2:
            return None
        path, body = self._body(request, request.max_tokens)
        return path, {**body, "n_cmpl": count, "temperature": ALTERNATIVE_TEMPERATURE}

    def events(self, response: httpx.Response) -> Iterator[dict[str, Any]]:
        """Server-sent events; the last one has `stop: true`."""
        return _sse_events(response)

    def read(self, event: dict[str, Any]) -> Chunk:
        """`content` per token; `stop_type` (older servers: `stopped_limit`) and `timings`
        at the end."""
        _error_in(event)
        index = event.get("index")
        chunk = Chunk(text=str(event.get("content") or ""), final=bool(event.get("stop")),
                      index=index if isinstance(index, int) else 0)
        if chunk.final:
            limited = event.get("stop_type") == "limit" or bool(event.get("stopped_limit"))
            chunk.finish = "length" if limited else "eos"
            _llama_timings(event, chunk)
        return chunk

    def probe(self) -> str:
        """`/props` (503 while the server loads its model) names the model file."""
        return "/props"

    def check_probe(self, reply: Any) -> str | None:
        """Nothing is wrong with a server that answers; its model file's name (or the
        `fim_format` setting) tells the prompt format, when it can."""
        if self._fim_setting != "auto":
            self.fim = format_named(self._fim_setting)
        else:
            path = reply.get("model_path") if isinstance(reply, dict) else None
            slots = reply.get("total_slots") if isinstance(reply, dict) else None
            self.slots = slots if isinstance(slots, int) and slots > 0 else 1
            name = PurePath(str(path or "")).name.lower()
            self.fim = next((fmt for fmt in FORMATS.values() if fmt.name in name), None)
        if self.fim is not None and self.fim.order == "spm":
            self.fim = None  # its prefix ends the prompt already; /infill knows its tokens
        return None

    def explain(self, status: int, message: str) -> str | None:
        """501 (or the message) means the loaded model has no fill-in-the-middle tokens."""
        if status == 501 or "infill is not supported" in message.lower():
            return ("its model has no fill-in-the-middle tokens, so /infill cannot work; "
                    "load a FIM code model (e.g. Qwen2.5-Coder) there, or use engine "
                    "`openai` with `fim_format`")
        if status == 503:
            return "the server is not ready (still loading its model?)"
        return None


def _openai_path(endpoint: str, resource: str) -> str:
    """`/v1/<resource>`, or `/<resource>` when the endpoint already ends with /v1."""
    base = httpx.URL(endpoint).path.rstrip("/")
    return f"/{resource}" if base.endswith("/v1") else f"/v1/{resource}"


# What `/v1/models` says owns the models (`owned_by`) on OpenAI-compatible servers that
# take llama.cpp's GBNF `grammar` with a completion: llama-cpp-python's server ("me") and
# llama-server ("llamacpp"). Others get none: vLLM ("vllm") names its grammars otherwise,
# and the OpenAI API refuses fields it does not know.
GRAMMAR_OWNERS = frozenset({"me", "llamacpp"})


class OpenAIWire:
    """An OpenAI-compatible completions server (vLLM, llama_cpp.server, llama-server's
    `/v1/completions`): the FIM prompt is built here and sent as `prompt`."""

    kind = "openai"

    def __init__(self, settings: Settings, fim: FimFormat) -> None:
        self._model = settings.remote_model
        self._fim = fim
        self._endpoint = settings.endpoint
        self._grammar = False  # whether the server takes a `grammar` (known from the probe)

    def generate(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """Greedy; stopped at the format's end markers (the server also stops at the
        model's end-of-text token)."""
        body: dict[str, Any] = {
            "prompt": raw_prompt(self._fim, request),
            "max_tokens": request.max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}, "stop": list(self._fim.stop_markers)}
        if self._model:
            body["model"] = self._model
        if request.names is not None and self._grammar:
            body["grammar"] = names_grammar(request.names)
        return _openai_path(self._endpoint, "completions"), body

    def prefill(self, request: GenerationRequest) -> None:
        """No prompt-only request here: vLLM caches prefixes itself, and a one-token
        generation to warm it would cost a generation."""
        return None

    def alternatives(self, request: GenerationRequest, count: int) -> None:
        """Not asked for (the OpenAI API's `n` is not used yet)."""
        return None

    def events(self, response: httpx.Response) -> Iterator[dict[str, Any]]:
        """Server-sent events until `data: [DONE]`."""
        return _sse_events(response)

    def read(self, event: dict[str, Any]) -> Chunk:
        """`choices[0].text`; `finish_reason` on the last choice; `usage` (asked for with
        `stream_options`) or llama-server's `timings` on the last event."""
        _error_in(event)
        chunk = Chunk()
        choices = event.get("choices") or []
        if choices and isinstance(choices[0], dict):
            chunk.text = str(choices[0].get("text") or "")
            reason = choices[0].get("finish_reason")
            if reason:
                chunk.finish = "length" if reason == "length" else "eos"
        usage = event.get("usage")
        if isinstance(usage, dict):
            chunk.prompt_tokens = _count(usage.get("prompt_tokens"))
            chunk.generated_tokens = _count(usage.get("completion_tokens"))
            details = usage.get("prompt_tokens_details")
            cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else None
            if chunk.prompt_tokens is not None:
                chunk.evaluated_tokens = chunk.prompt_tokens - (cached or 0)
        _llama_timings(event, chunk)
        return chunk

    def probe(self) -> str:
        """The model list (it needs the key on vLLM and llama_cpp.server)."""
        return _openai_path(self._endpoint, "models")

    def check_probe(self, reply: Any) -> str | None:
        """`remote_model`, when set, must be among the served models; their owner tells
        whether the server takes a `grammar`."""
        data = reply.get("data") if isinstance(reply, dict) else None
        models = [model for model in data or [] if isinstance(model, dict)]
        owners = {str(model.get("owned_by")) for model in models}
        self._grammar = bool(owners) and owners <= GRAMMAR_OWNERS
        served = [str(model.get("id")) for model in models]
        if self._model and served and self._model not in served:
            return (f"serves no model {self._model!r} (it serves {', '.join(served[:5])}); "
                    f"check `remote_model`")
        return None

    def explain(self, status: int, message: str) -> str | None:
        """Nothing kind-specific."""
        return None


class OllamaWire:
    """Ollama's native API: `raw: true` and a FIM prompt built here."""

    kind = "ollama"

    def __init__(self, settings: Settings, fim: FimFormat) -> None:
        self._model = settings.remote_model
        self._fim = fim

    def generate(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """Greedy, stopped at the format's end markers, the model kept loaded."""
        return "/api/generate", {
            "model": self._model, "prompt": raw_prompt(self._fim, request),
            "raw": True, "stream": True, "keep_alive": OLLAMA_KEEP_ALIVE,
            "options": {"num_predict": request.max_tokens, "temperature": 0.0,
                        "stop": list(self._fim.stop_markers)}}

    def prefill(self, request: GenerationRequest) -> None:
        """Ollama has no prompt-only request; it keeps the last prompt's cache itself."""
        return None

    def alternatives(self, request: GenerationRequest, count: int) -> None:
        """Ollama's API gives one completion a request."""
        return None

    def events(self, response: httpx.Response) -> Iterator[dict[str, Any]]:
        """One JSON object a line; the last one has `done: true`."""
        for line in response.iter_lines():
            if line.strip():
                yield _json_object(line)

    def read(self, event: dict[str, Any]) -> Chunk:
        """`response` per token; `done_reason` and the eval counts at the end."""
        _error_in(event)
        chunk = Chunk(text=str(event.get("response") or ""), final=bool(event.get("done")))
        if chunk.final:
            chunk.finish = "length" if event.get("done_reason") == "length" else "eos"
            chunk.prompt_tokens = chunk.evaluated_tokens = _count(event.get("prompt_eval_count"))
            chunk.generated_tokens = _count(event.get("eval_count"))
        return chunk

    def probe(self) -> str:
        """The local model list."""
        return "/api/tags"

    def check_probe(self, reply: Any) -> str | None:
        """`remote_model` must have been pulled (`name:latest` when it has no tag)."""
        models = reply.get("models") if isinstance(reply, dict) else None
        names = {str(model.get("name")) for model in models or [] if isinstance(model, dict)}
        wanted = self._model if ":" in self._model else f"{self._model}:latest"
        if names and wanted not in names and self._model not in names:
            return (f"has no model {self._model!r}; run `ollama pull {self._model}` there or "
                    f"check `remote_model`")
        return None

    def explain(self, status: int, message: str) -> str | None:
        """Ollama answers 404 for a model it has not pulled."""
        if status == 404 and "model" in message.lower():
            return f"has no model {self._model!r}; run `ollama pull {self._model}` there"
        return None
