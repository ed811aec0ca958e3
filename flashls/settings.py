"""The one settings schema, and its faces: editor options, environment, CLI flags, docs.

Every setting has a default, a bound and a description here; nothing else declares one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cattrs

SECTION = "flashls"
ENV_PREFIX = "FLASHLS_"
# Unknown keys named in the one message about them (a client may send thousands).
UNKNOWN_LISTED = 5
# Cells for the FIM markers and the beginning-of-text token around the two budgets.
PROMPT_MARKER_TOKENS = 8
# The settings whose sum must fit `n_ctx`.
CONTEXT_FIELDS = ("n_ctx", "prefix_budget_tokens", "suffix_budget_tokens", "max_tokens")
# Values the `--engine` flag takes besides the setting's: `llama`, the local engine's
# older name, and `fake`, the deterministic stand-in engine for protocol tests.
ENGINE_SWITCHES = ("llama", "fake")


def _setting(
    default: Any,
    description: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    choices: tuple[str, ...] = (),
    scope: str | None = None,
    listed: bool = False,
) -> Any:
    """A schema field; `scope` is VS Code's (`machine`: user settings only, never a
    workspace's, which could otherwise send the code or a secret to a server it names);
    a `listed` string is comma-separated, and a list of strings is taken as one."""
    metadata = {"description": description, "minimum": minimum, "maximum": maximum,
                "choices": choices, "scope": scope, "listed": listed}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Everything a user can tune; defaults suit the 0.5B default model on 2 CPU cores."""

    enable: bool = _setting(True, "Offer completions at all.")
    model: str = _setting(
        "", "Path to a GGUF file, or a model name from `flashls models list`; "
        "empty picks the default model.")
    engine: str = _setting(
        "local", "Where suggestions are computed: `local` runs the model in this process; "
        "`llama-server` (llama.cpp's server, `/infill`), `openai` (an OpenAI-compatible "
        "server such as vLLM or `python -m llama_cpp.server`, `/v1/completions`) and "
        "`ollama` ask the server at `endpoint`.",
        choices=("local", "llama-server", "openai", "ollama"))
    endpoint: str = _setting(
        "", "Base URL of the inference server for a remote `engine`, e.g. "
        "`http://gpu-box:8080` (`openai` also takes one ending in `/v1`).", scope="machine")
    api_key_env: str = _setting(
        "", "Name of the environment variable holding the remote server's API key (sent "
        "as `Authorization: Bearer`); empty sends none unless `api_key_file` is set.",
        scope="machine")
    api_key_file: str = _setting(
        "", "Path of a file holding the remote server's API key, used when `api_key_env` "
        "is empty. The key itself is never a setting, so it is not synced or logged.",
        scope="machine")
    remote_model: str = _setting(
        "", "Model name sent to an `openai` or `ollama` server (required for `ollama`, "
        "e.g. `qwen2.5-coder:1.5b-base`); `llama-server` answers with the model it loaded.")
    remote_timeout_ms: int = _setting(
        30000, "Longest wait for a remote server's next bytes (its first ones come after it "
        "has evaluated the prompt) before the request fails.", minimum=100, maximum=600000)
    fim_format: str = _setting(
        "auto", "Fill-in-the-middle prompt format; `auto` reads it from the GGUF's metadata "
        "(`openai` and `ollama` engines, which are sent the prompt as text: `qwen`).",
        choices=("auto", "qwen", "starcoder", "deepseek", "codellama", "codegemma",
                 "codestral"))
    n_threads: int = _setting(
        0, "CPU threads for the model; 0 uses the physical core count.", minimum=0,
        maximum=512)
    n_gpu_layers: int = _setting(
        0, "Layers to offload to a GPU (Metal, CUDA builds); -1 offloads all.", minimum=-1,
        maximum=1000)
    n_ctx: int = _setting(
        4096, "Model context size in tokens; the prompt budgets plus `max_tokens` (and 8 "
        "for the prompt's markers) must fit, or the values that would overflow it are "
        "refused.", minimum=512, maximum=131072)
    preload_model: bool = _setting(
        True, "Load the model when the server starts (and after a model setting changes) "
        "instead of on the first request.")
    prefix_budget_tokens: int = _setting(
        1536, "Most tokens of text before the cursor put into the prompt, counted with the "
        "model's tokenizer (the local engine) or estimated at 3.2 characters a token.",
        minimum=16, maximum=65536)
    suffix_budget_tokens: int = _setting(
        512, "Most tokens of text after the cursor put into the prompt, counted as "
        "`prefix_budget_tokens`.", minimum=0, maximum=65536)
    cold_window_tokens: int = _setting(
        112, "At a place whose prompt cannot be evaluated within `time_budget_ms`, answer "
        "first from this many tokens before the cursor and the rest of its line, then "
        "evaluate the full window in the background for the next keystrokes; 0 turns this "
        "off.", minimum=0, maximum=65536)
    medium_window_tokens: int = _setting(
        256, "At such a place the local engine evaluates next, before the full window, this "
        "many tokens before the cursor and the rest of its line, and answers from them once "
        "they are evaluated; at most `cold_window_tokens` turns this off.", minimum=0,
        maximum=65536)
    context_sources: str = _setting(
        "none", "Context from other files, put before the current file in the prompt (in "
        "the model's repository layout, for models that have one): `definitions` of the "
        "names the file imports, found in open files and the workspace; `usages`: lines of "
        "other files that use those names, the most like the code around the cursor "
        "first; `recent`: where you last edited or rested in other open files and what "
        "you last yanked or selected; `ring`: "
        "llama.vim's ring buffer of chunks of the files you entered; `none`.",
        choices=("none", "definitions", "usages", "recent", "ring", "definitions,usages",
                 "definitions,recent"))
    context_budget_tokens: int = _setting(
        384, "Most tokens of context from other files; it is left out of a prompt that "
        "`n_ctx` cannot hold with it.", minimum=0, maximum=65536)
    constrain_names: bool = _setting(
        True, "After `module.` where the module is a Python file of the workspace, keep the "
        "name a suggestion writes to those the module has (its definitions, imports and "
        "submodules), as the workspace index knows them; needs `definitions` or `usages` "
        "in `context_sources`; followed by the local engine, `llama-server` (as a grammar) "
        "and, through `openai`, by llama_cpp.server and llama-server (not vLLM or Ollama).")
    name_lookahead: int = _setting(
        4, "Where `constrain_names` applies, the local engine writes out the name after "
        "each of this many likeliest first tokens and keeps the likeliest whole name "
        "(with the token that ends it) instead of the likeliest first token; 0 or 1 keeps "
        "the first token's choice.", minimum=0, maximum=16)
    index_max_files: int = _setting(
        20000, "Most workspace files read for definitions (in the background, honouring "
        ".gitignore); 0 reads none, leaving the open files.", minimum=0, maximum=10_000_000)
    max_tokens: int = _setting(
        48, "Most tokens generated for one suggestion.", minimum=1, maximum=2048)
    max_lines: int = _setting(
        8, "Most lines in a multi-line suggestion.", minimum=1, maximum=500)
    multiline: str = _setting(
        "auto", "`auto`: several lines only on an empty line after a block opener; "
        "`always`; `never`.", choices=("auto", "always", "never"))
    candidates: int = _setting(
        3, "Suggestions offered when the editor asks explicitly (trigger kind Invoked: "
        "VS Code's Trigger Inline Suggestion, and Alt+] / Alt+[ to cycle): the usual one "
        "first, then greedy continuations of the next likeliest first tokens, each "
        "costing one more generation (with `llama-server`: sampled completions of one "
        "request, `n_cmpl`, when it has several slots); 1 offers one.", minimum=1, maximum=5)
    time_budget_ms: int = _setting(
        1500, "Wall-clock limit for one suggestion; when it runs out, what was generated "
        "so far is shown.", minimum=20, maximum=600000)
    partial_answer_ms: int = _setting(
        100, "When a generation has run this long, answer with the whole words it has so "
        "far and let it go on (the next keystroke that types along it gets more, and the "
        "editor is told to ask again when it ends): a suggestion shows between fast "
        "keystrokes; 0 waits for the whole suggestion.",
        minimum=0, maximum=600000)
    progressive: bool = _setting(
        True, "After a suggestion is cut by the time budget, keep generating it in the "
        "background; a keystroke that types along it is answered from it (at once when it "
        "is ready, else within the keystroke's own budget) instead of asking the model again.")
    warm_up_ms: int = _setting(
        300, "Idle time after an edit before the prompt at the edit is evaluated in the "
        "background, so the next request finds it ready (where the editor says the cursor "
        "rests, textDocument/didFocus, it is evaluated at once); 0 turns warm-up off.", minimum=0,
        maximum=60000)
    reuse_kv_prefix: bool = _setting(
        True, "Keep the model's cache of the last prompt and evaluate only what changed.")
    reuse_suffix: bool = _setting(
        True, "After an edit, shift the cached text after the cursor into place instead of "
        "evaluating it again (much faster; its cache is slightly stale).")
    typed_into_middle: bool = _setting(
        True, "While you type on a line, keep the prompt evaluated where the typing began "
        "and put the typed text after it as the start of the answer: a keystroke the "
        "suggestion did not foresee costs one or two tokens before the new suggestion "
        "starts, instead of the prompt's end evaluated again.")
    snapshot_mb: int = _setting(
        256, "Host memory for saved prompts (about 12 KB a token for the default model): "
        "going back to a file or place evaluated earlier restores its prompt instead of "
        "evaluating it again; 0 turns this off.", minimum=0, maximum=65536)
    token_healing: bool = _setting(
        True, "Re-generate the half-typed last token so partial words complete naturally.")
    speculative_cache: bool = _setting(
        True, "Answer typing that matches a shown suggestion from memory, without the model.")
    cache_entries: int = _setting(
        512, "Most suggestions kept in the speculative cache.", minimum=1, maximum=100000)
    exclude_files: str = _setting(
        "", "Files never sent to any engine, added to the built-in list of secret files "
        "(`.env*`, `*.pem`, `*.key`, `id_rsa*`, `*secret*`, `*credential*`, `.git/`, "
        "`.npmrc`, `.pypirc`, `*.kdbx`, ...) and to each workspace folder's "
        "`.flashlsignore` file (gitignore syntax, read again when it changes): "
        "comma-separated gitignore patterns, relative to the workspace folder; no "
        "suggestion is offered in them and no context source takes text from them. "
        "`!pattern` takes a file back.", listed=True)
    disabled_languages: str = _setting(
        "", "Languages where no suggestion is offered, by the id the editor gives a "
        "document (LSP `languageId`: VS Code's language ids, Neovim's filetypes), "
        "comma-separated, e.g. `markdown,plaintext`; unlike `exclude_files`, their files "
        "still serve as context for other files. Taking a language out of the list turns "
        "its suggestions back on.", listed=True)
    disabled_files: str = _setting(
        "", "Files where no suggestion is offered: comma-separated gitignore patterns, "
        "relative to the workspace folder, e.g. `docs/,*.lock`; unlike `exclude_files`, "
        "their text still serves as context for other files.", listed=True)
    max_file_bytes: int = _setting(
        2_000_000, "Documents larger than this get no completions.", minimum=1024,
        maximum=1_000_000_000)
    log_level: str = _setting(
        "info", "Logging level for stderr or the log file.",
        choices=("debug", "info", "warning", "error"))
    completion_fallback: str = _setting(
        "auto", "Also offer the suggestion as a `textDocument/completion` item: `auto` only "
        "to editors without inline completion (so none shows it twice), `always`, `never`. "
        "Whether the server advertises it is decided at start-up.",
        choices=("auto", "always", "never"))


_converter = cattrs.Converter()


def setting_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The schema's fields, in declaration order."""
    return dataclasses.fields(Settings)


def _coerce(spec: dataclasses.Field[Any], value: Any) -> Any:
    """One value structured to its field's type and checked against its bounds."""
    kind = _field_type(spec)
    if value is None:
        raise ValueError("expected a value, got null")
    if spec.metadata["listed"] and isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise ValueError(f"expected a list of strings, got {value!r}")
        value = ",".join(value)
    if kind is str and not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    if kind is bool and not isinstance(value, (bool, str)):
        raise ValueError(f"expected a boolean, got {value!r}")
    if kind is bool and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"expected a boolean, got {value!r}")
        return lowered in ("1", "true", "yes", "on")
    if kind is int and isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected an integer, got {value!r}")
    coerced: Any = _converter.structure(value, kind)
    meta = spec.metadata
    if meta["choices"] and coerced not in meta["choices"]:
        raise ValueError(f"expected one of {', '.join(meta['choices'])}, got {value!r}")
    if meta["minimum"] is not None and coerced < meta["minimum"]:
        raise ValueError(f"must be at least {meta['minimum']}, got {value!r}")
    if meta["maximum"] is not None and coerced > meta["maximum"]:
        raise ValueError(f"must be at most {meta['maximum']}, got {value!r}")
    return coerced


def _field_type(spec: dataclasses.Field[Any]) -> type:
    names = {"bool": bool, "int": int, "str": str}
    if isinstance(spec.type, str):
        return names[spec.type]
    assert isinstance(spec.type, type)
    return spec.type


def _camel_to_snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def merge(base: Settings, raw: Mapping[str, Any] | None) -> tuple[Settings, list[str]]:
    """`base` overlaid with the valid entries of `raw`; invalid ones are reported, not applied."""
    if not raw:
        return base, []
    if not isinstance(raw, Mapping):
        return base, [f"settings must be an object, got {type(raw).__name__}; using defaults"]
    if isinstance(raw.get(SECTION), Mapping):
        raw = raw[SECTION]
    known = {spec.name: spec for spec in setting_fields()}
    changes: dict[str, Any] = {}
    problems: list[str] = []
    unknown: list[str] = []
    for key, value in raw.items():
        name = _camel_to_snake(str(key))
        spec = known.get(name)
        if spec is None:
            unknown.append(repr(key))
            continue
        try:
            changes[name] = _coerce(spec, value)
        except (ValueError, TypeError, cattrs.errors.BaseValidationError) as error:
            problems.append(f"setting {key!r}: {error}; keeping {getattr(base, name)!r}")
    if unknown:
        listed = ", ".join(unknown[:UNKNOWN_LISTED]) + (", ..." if len(unknown) >
                                                         UNKNOWN_LISTED else "")
        problems.append(f"{len(unknown)} unknown setting(s) ignored: {listed}")
    merged, misfit = _fit_context(base, dataclasses.replace(base, **changes))
    merged, unreachable = _check_remote(base, merged)
    return merged, problems + misfit + unreachable


def prompt_room_needed(config: Settings) -> int:
    """Context cells one suggestion needs: both prompt budgets, the markers, the output."""
    return (config.prefix_budget_tokens + config.suffix_budget_tokens + PROMPT_MARKER_TOKENS
            + config.max_tokens)


def _fit_context(base: Settings, merged: Settings) -> tuple[Settings, list[str]]:
    """`merged`, unless its budgets outgrow `n_ctx`: then the fields that changed among
    them keep their `base` values (a prompt that does not fit would lose its ends)."""
    if prompt_room_needed(merged) <= merged.n_ctx:
        return merged, []
    changed = {name: getattr(base, name) for name in CONTEXT_FIELDS
               if getattr(merged, name) != getattr(base, name)}
    fallback = dataclasses.replace(merged, **changed)
    if prompt_room_needed(fallback) > fallback.n_ctx:  # `base` itself did not fit
        fallback = dataclasses.replace(merged, **{name: getattr(Settings(), name)
                                                  for name in CONTEXT_FIELDS})
    return fallback, [
        f"n_ctx {merged.n_ctx} cannot hold prefix_budget_tokens + suffix_budget_tokens + "
        f"max_tokens ({merged.prefix_budget_tokens} + {merged.suffix_budget_tokens} + "
        f"{merged.max_tokens}, plus {PROMPT_MARKER_TOKENS} for the prompt's markers); "
        f"keeping " + ", ".join(f"{name} {getattr(fallback, name)!r}"
                                for name in CONTEXT_FIELDS)]


def _is_http_url(text: str) -> bool:
    parts = urllib.parse.urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _missing_for_engine(config: Settings) -> str:
    """The setting a remote `engine` still needs, or ""."""
    if config.engine != "local" and not config.endpoint:
        return "endpoint"
    if config.engine == "ollama" and not config.remote_model:
        return "remote_model"
    return ""


def _check_remote(base: Settings, merged: Settings) -> tuple[Settings, list[str]]:
    """`merged`, unless its remote engine cannot be reached as set: an `endpoint` that is
    no http(s) URL keeps `base`'s; a remote `engine` without an endpoint (or `ollama`
    without `remote_model`) keeps `base`'s engine and those fields (or `local`)."""
    problems: list[str] = []
    if merged.endpoint and not _is_http_url(merged.endpoint):
        problems.append(f"endpoint {merged.endpoint!r} is not an http:// or https:// URL; "
                        f"keeping {base.endpoint!r}")
        merged = dataclasses.replace(merged, endpoint=base.endpoint)
    missing = _missing_for_engine(merged)
    if missing:
        fallback = dataclasses.replace(merged, engine=base.engine, endpoint=base.endpoint,
                                       remote_model=base.remote_model)
        if _missing_for_engine(fallback):  # `base` itself was not usable
            fallback = dataclasses.replace(fallback, engine="local")
        what = "URL" if missing == "endpoint" else "model name"
        problems.append(f"engine {merged.engine!r} needs `{missing}` (the server's {what}); "
                        f"keeping engine {fallback.engine!r}")
        merged = fallback
    return merged, problems


def _environment_values(environ: Mapping[str, str] | None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {spec.name: environ[ENV_PREFIX + spec.name.upper()] for spec in setting_fields()
            if ENV_PREFIX + spec.name.upper() in environ}


def from_environment(environ: Mapping[str, str] | None = None) -> tuple[Settings, list[str]]:
    """Defaults overlaid with `FLASHLS_<NAME>` environment variables."""
    return merge(Settings(), _environment_values(environ))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--flag` per setting; unset flags stay None so they do not override anything."""
    group = parser.add_argument_group("settings (also FLASHLS_<NAME> variables)")
    for spec in setting_fields():
        flag = "--" + spec.name.replace("_", "-")
        help_text = f"{spec.metadata['description']} (default: {spec.default!r})"
        choices = spec.metadata["choices"]
        if spec.name == "engine":
            choices += ENGINE_SWITCHES
            help_text += "; here also `llama` (= local) and `fake` (a stand-in for tests)"
        if _field_type(spec) is bool:
            group.add_argument(flag, dest=spec.name, default=None,
                               action=argparse.BooleanOptionalAction, help=help_text)
        else:
            group.add_argument(flag, dest=spec.name, default=None, help=help_text,
                               choices=choices or None)


def engine_switch(arguments: argparse.Namespace) -> str:
    """The engine kind a command line picks: `fake` (`--engine fake`), else `llama`, whose
    engine then follows the `engine` setting."""
    return "fake" if getattr(arguments, "engine", None) == "fake" else "llama"


def from_arguments(arguments: argparse.Namespace) -> tuple[Settings, list[str]]:
    """Environment settings overlaid with the CLI flags that were given, checked as one
    layer (`FLASHLS_ENGINE` may name a server whose `--endpoint` is a flag)."""
    given = {spec.name: getattr(arguments, spec.name) for spec in setting_fields()
             if getattr(arguments, spec.name, None) is not None}
    if given.get("engine") in ENGINE_SWITCHES:
        given["engine"] = "local"  # `llama` is the local engine; `fake` replaces it
    return merge(Settings(), {**_environment_values(None), **given})


def _json_type(spec: dataclasses.Field[Any]) -> str:
    return {bool: "boolean", int: "integer", str: "string"}[_field_type(spec)]


def vscode_configuration() -> dict[str, Any]:
    """The `contributes.configuration` block of the VS Code extension."""
    properties: dict[str, Any] = {}
    for spec in setting_fields():
        entry: dict[str, Any] = {"type": _json_type(spec), "default": spec.default,
                                 "description": spec.metadata["description"]}
        if spec.metadata["choices"]:
            entry["enum"] = list(spec.metadata["choices"])
        if spec.metadata["minimum"] is not None:
            entry["minimum"] = spec.metadata["minimum"]
        if spec.metadata["maximum"] is not None:
            entry["maximum"] = spec.metadata["maximum"]
        if spec.metadata["scope"] is not None:
            entry["scope"] = spec.metadata["scope"]
        properties[f"{SECTION}.{spec.name}"] = entry
    return {"type": "object", "title": "flashls", "properties": properties}


def markdown_table(names: Iterable[str] | None = None) -> str:
    """The settings table of docs/settings.md (tests/test_settings.py checks the copy)."""
    rows = ["| setting | type | default | description |", "| --- | --- | --- | --- |"]
    wanted = set(names) if names is not None else None
    for spec in setting_fields():
        if wanted is not None and spec.name not in wanted:
            continue
        rows.append(f"| `{spec.name}` | {_json_type(spec)} | `{spec.default!r}` | "
                    f"{spec.metadata['description']} |")
    return "\n".join(rows)
