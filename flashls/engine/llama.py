"""The local engine: one long-lived llama.cpp context, greedy fill-in-the-middle decoding.

It keeps the tokens whose KV cells are cached and evaluates only where a new prompt
departs from them; it checks its cancel token between prompt chunks and between tokens.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

# llama_cpp before numpy, in the order llama-cpp-python itself imports them. A CUDA build whose
# libggml-cuda.so carries its own copy of libstdc++ (seen with CUDA 13.0 on an H200
# machine: no libstdc++.so.6 among its NEEDED libraries) crashed in llama.cpp's model
# loader when numpy had loaded the system libstdc++ first.
import llama_cpp
import numpy as np

from flashls.engine.base import (
    SHORT_WINDOW_RATIO,
    CancelToken,
    EngineError,
    GenerationRequest,
    GenerationResult,
    RepoContext,
    Timings,
)
from flashls.engine.kv import Cancelled, KvLayout, Memory
from flashls.engine.llama_log import LLAMA_LOG
from flashls.engine.names import NameRule, word_length
from flashls.fim import FimFormat, UnknownFormat, detect_format, format_named
from flashls.models import ModelUnavailable, check_model_file, resolve_model_path
from flashls.settings import PROMPT_MARKER_TOKENS, Settings

log = logging.getLogger(__name__)

# The llama-cpp-python releases checked to have the private parts this engine swaps and
# reads (`Llama._ctx`, `._batch`, `._model`, `_internals.LlamaContext`, the context
# parameters' `kv_unified`): pinned in pyproject.toml, checked when this module loads.
LLAMA_CPP_OLDEST = "0.3.16"
LLAMA_CPP_NEWEST = "0.3.36"


def _release(version: str) -> tuple[int, ...]:
    """`0.3.36` (any suffix aside) as (0, 3, 36); () for what is no such version."""
    parts = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    return tuple(int(part) for part in parts.groups()) if parts else ()


def llama_cpp_problem(found: str) -> str | None:
    """Why llama-cpp-python `found` cannot run this engine, or None when it can."""
    oldest, newest = LLAMA_CPP_OLDEST, LLAMA_CPP_NEWEST
    if _release(oldest) <= _release(found) <= _release(newest):
        return None
    return (f"flashls needs llama-cpp-python {oldest} to {newest} (its engine uses "
            f"llama-cpp-python's private internals); found {found}. Install one in that "
            f"range: pip install 'llama-cpp-python>={oldest},<={newest}', or run "
            f"scripts/install.sh, which builds {newest} for this CPU")


if (_problem := llama_cpp_problem(llama_cpp.__version__)) is not None:
    raise ImportError(_problem)

# Prompt tokens decoded per llama_decode call: small enough that a cancel is noticed
# within ~0.3 s on 2 cores, large enough to keep the matrix kernels efficient.
PROMPT_CHUNK = 64
# With layers on a GPU, where each decode costs about 10 ms whatever its size (an H200
# evaluated these 64-token chunks at 5,600-8,600 tokens/s, llama-bench's 1,300-token
# prompt at 45,700) and the abort callback still stops one within a graph node. Also the
# batch size llama.cpp is given (a decode holds at most that many tokens).
GPU_PROMPT_CHUNK = 512
# Tail tokens evaluated again after an edit although their cells could be shifted. With
# none, the stale suffix marker makes the model ignore what was just typed (first token
# agreed with full re-evaluation 0 times in 40 keystrokes); re-running the marker alone
# brought that to 37 of 40 at 3 tokens a keystroke (json/encoder.py, 0.5B model).
SUFFIX_REFRESH_TOKENS = 1
# Prompt tokens a second assumed until the engine has measured its own (a slow 2-core
# AVX2 machine evaluates about 100), and how much of a deadline is left for generating.
INITIAL_PROMPT_RATE = 100.0
# With a request's `names`: how many of the likeliest tokens are checked besides those
# the rule lists (end tokens, and what may follow a whole name besides the likeliest).
RULE_NEAR_TOP = 64
# The most tokens `name_lookahead` writes of one candidate name (with the one ending it).
MAX_NAME_TOKENS = 12
# Typed text put after the middle marker (`typed_into_middle`) at most: past it, or at a
# line break, the prompt ends at the cursor again (an edit of about as many tokens).
MAX_TYPED_TOKENS = 32
GENERATION_RESERVE_S = 0.3
MAX_CHUNK_LOOKAHEAD_S = 0.35
# At a cold place the medium window answers instead of the short one when it costs at most
# this many tokens more (about a keystroke's: it was evaluated ahead, the short one not).
WINDOW_SLACK_TOKENS = 4
DECODE_ABORTED = 2  # llama_decode's status when the abort callback stopped it


def _log_softmax(logits: np.ndarray[Any, np.dtype[np.float32]]
                 ) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Log-probabilities of the next token from its logits."""
    shifted = logits.astype(np.float64) - float(np.max(logits))
    return shifted - float(np.log(np.sum(np.exp(shifted))))


def default_thread_count() -> int:
    """Physical cores, roughly: hyper-threads slow llama.cpp's decoding down."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    return available // 2 if available >= 8 else available


@dataclass
class _Decoding:
    """A generation in progress: enough to go on with it later (see `resume`)."""

    request: GenerationRequest
    healed: bytes
    output: bytearray = field(default_factory=bytearray)
    steps: int = 0
    pending: int | None = None  # sampled, shown, not yet decoded into the cache
    # The prompt (head, tail) when the deadline came before it was all evaluated.
    unevaluated: tuple[list[int], list[int]] | None = None
    short_window: bool = False  # the request's short window, not its full one
    first: int | None = None  # the first token to take instead of the likeliest
    # The request's `names` as a check of tokens, while it applies (None after).
    rule: NameRule | None = None
    # Tokens chosen ahead (the rest of a name `name_lookahead` picked), taken in order.
    forced: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.request.names is not None:
            self.rule = NameRule(self.request.names)


@dataclass(frozen=True)
class _Anchor:
    """The request whose whole prompt the cache, or a snapshot, holds (`head + tail`,
    `healed` taken back from the prefix): a later request at the same place, with text
    typed after its cursor and nothing else changed, is continued from it with the typed
    text after the middle marker (`typed_into_middle`)."""

    request: GenerationRequest
    head: list[int]
    tail: list[int]
    healed: bytes


class _AbortHook:
    """llama.cpp's abort callback for one context: a decode stops within one graph node
    (milliseconds, not the rest of a prompt chunk) once the running job's cancel token is
    set, so a warm-up or a superseded generation never holds up the next request (unless
    it was cancelled with `finish_chunk`: the chunk's tokens are wanted).

    The callback only reads a flag (no lock), on the model thread, between graph nodes."""

    def __init__(self) -> None:
        self.token: CancelToken | None = None
        self.callback = llama_cpp.ggml_abort_callback(self._aborted)  # kept alive here

    def _aborted(self, _data: Any) -> bool:
        token = self.token
        return token is not None and token.aborting

    @contextlib.contextmanager
    def watching(self, token: CancelToken) -> Iterator[None]:
        """Abort decodes while `token` is cancelled, for the duration of the block."""
        self.token = token
        try:
            # An abort makes llama.cpp log errors: asked for, so not errors here.
            with LLAMA_LOG.failures_expected_while(lambda: token.cancelled):
                yield
        finally:
            self.token = None


class LlamaEngine:
    """A GGUF model run in-process by llama-cpp-python."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._llm: Any = None
        self._vocabulary_lock = threading.Lock()  # `count_tokens` against `close`
        self._format: FimFormat | None = None
        self._kv: KvLayout | None = None
        self._suspended: _Decoding | None = None
        # Valid only while the cache or one of its snapshots holds its prompt (`recall`).
        self._anchor: _Anchor | None = None
        self._abort: _AbortHook | None = None
        self._stop_ids: frozenset[int] = frozenset()
        self._markers: tuple[int, int, int] = (0, 0, 0)
        self._repo_markers: tuple[int, int] = (-1, -1)  # repository name, file separator
        self._repo_ids: tuple[RepoContext | None, list[int]] = (None, [])  # the last one
        self._pieces: list[bytes] = []
        self._sorted_pieces: list[bytes] = []
        self._sorted_ids: list[int] = []
        self._ends_word: np.ndarray[Any, np.dtype[np.bool_]] = np.zeros(0, dtype=bool)
        self._chunk = PROMPT_CHUNK if settings.n_gpu_layers == 0 else GPU_PROMPT_CHUNK
        self.model_path = resolve_model_path(settings.model)
        # Measured prompt evaluation speed (tokens/s), a moving average over prompts.
        self.prompt_rate = INITIAL_PROMPT_RATE

    def describe(self) -> str:
        """Model file and prompt format."""
        fmt = self._format.name if self._format else "not loaded"
        return f"{self.model_path.name} ({fmt})"

    def load(self) -> None:
        """Open the model file; raises EngineError naming the file and the fix."""
        if self._llm is not None:
            return
        try:
            check_model_file(self.model_path)
        except ModelUnavailable as error:
            raise EngineError(str(error)) from error
        started = time.monotonic()
        threads = self._settings.n_threads or default_thread_count()
        LLAMA_LOG.install()
        try:
            llm = llama_cpp.Llama(
                model_path=str(self.model_path), n_ctx=self._settings.n_ctx,
                n_batch=GPU_PROMPT_CHUNK, n_threads=threads, n_threads_batch=threads,
                n_gpu_layers=self._settings.n_gpu_layers, logits_all=False, verbose=False)
        except (ValueError, RuntimeError, OSError) as error:
            raise EngineError(
                f"llama.cpp could not load {self.model_path}: {error}. The file may be "
                f"corrupt: run `flashls models install --force` or point `flashls.model` at "
                f"another GGUF file.") from error
        self._format = self._choose_format(llm)
        self._markers = tuple(self._single_token(llm, marker)  # type: ignore[assignment]
                              for marker in self._format.sentinels())
        stops = {self._single_token(llm, marker) for marker in self._format.stop_markers}
        stops.update(self._markers)
        repo, file = (self._single_token(llm, marker) if marker else -1
                      for marker in (self._format.repo_marker, self._format.file_marker))
        # Without a file separator there is no repository layout: other files stay out.
        self._repo_markers = (repo, file) if file >= 0 else (-1, -1)
        self._stop_ids = frozenset(token for token in stops if token >= 0)
        self._llm = llm
        self._kv = self._two_sequence_cache(llm)
        self._index_pieces()
        log.info("loaded %s in %.1f s (%d threads)", self.describe(),
                 time.monotonic() - started, threads)

    @staticmethod
    def _single_token(llm: Any, marker: str) -> int:
        tokens = llm.tokenize(marker.encode(), add_bos=False, special=True)
        return int(tokens[0]) if len(tokens) == 1 else -1

    def _choose_format(self, llm: Any) -> FimFormat:
        try:
            if self._settings.fim_format != "auto":
                return format_named(self._settings.fim_format)
            return detect_format(llm.metadata,
                                 lambda marker: self._single_token(llm, marker) >= 0)
        except UnknownFormat as error:
            raise EngineError(str(error)) from error

    def _two_sequence_cache(self, llm: Any) -> KvLayout:
        """Swap in a context with two sequences over one unified KV buffer (see engine.kv)."""
        import ctypes

        from llama_cpp import _internals

        params = llm.context_params
        params.n_seq_max = 2
        params.kv_unified = True
        single = llm._ctx
        llm._ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        single.close()
        memory = llm._ctx.memory

        def save() -> bytes:
            size = llama_cpp.llama_state_seq_get_size(llm._ctx.ctx, 0)
            buffer = (ctypes.c_uint8 * size)()
            written = llama_cpp.llama_state_seq_get_data(llm._ctx.ctx, buffer, size, 0)
            return ctypes.string_at(buffer, written)  # one copy (slicing makes int lists)

        def load(state: bytes) -> None:
            buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
            if not llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, buffer, len(state), 0):
                raise RuntimeError("llama.cpp could not restore a saved prompt")

        self._abort = _AbortHook()
        llama_cpp.llama_set_abort_callback(llm._ctx.ctx, self._abort.callback, None)

        def decode(tokens: list[int], position: int, sequence: int) -> None:
            llm._batch.set_batch(batch=tokens, n_past=position, logits_all=False)
            for index in range(len(tokens)):
                llm._batch.batch.seq_id[index][0] = sequence
            status = llama_cpp.llama_decode(llm._ctx.ctx, llm._batch.batch)
            if status == DECODE_ABORTED:  # llama.cpp removed the call's cells
                raise Cancelled
            if status != 0:
                raise RuntimeError(f"llama_decode returned {status}")

        return KvLayout(Memory(
            decode=decode,
            remove=lambda sequence, start, end: llama_cpp.llama_memory_seq_rm(
                memory, sequence, start, end),
            shift=lambda start, end, delta: llama_cpp.llama_memory_seq_add(
                memory, 0, start, end, delta),
            copy=lambda source, target, start, end: llama_cpp.llama_memory_seq_cp(
                memory, source, target, start, end),
            can_shift=bool(llama_cpp.llama_memory_can_shift(memory)), save=save, load=load),
            self._chunk, reuse_prefix=self._settings.reuse_kv_prefix,
            reuse_suffix=self._settings.reuse_suffix,
            refresh_tokens=SUFFIX_REFRESH_TOKENS,
            snapshot_bytes=self._settings.snapshot_mb * 1024 * 1024,
            capacity=self._settings.n_ctx)

    def _index_pieces(self) -> None:
        """Every token's text, and the texts sorted so token healing can bisect them."""
        import ctypes

        buffer = ctypes.create_string_buffer(256)
        vocab = self._llm._model.vocab
        self._pieces = []
        for token in range(self._llm.n_vocab()):
            length = llama_cpp.llama_token_to_piece(vocab, token, buffer, 256, 0, False)
            self._pieces.append(buffer.raw[:max(length, 0)])
        ordered = sorted((piece, token) for token, piece in enumerate(self._pieces)
                         if token not in self._stop_ids and not self._is_end(token))
        self._sorted_pieces = [piece for piece, _ in ordered]
        self._sorted_ids = [token for _, token in ordered]
        # Tokens whose text starts with a byte no identifier has (`(`, ` `, `\n`, `):`).
        self._ends_word = np.array([bool(piece) and word_length(piece[:1]) == 0
                                    for piece in self._pieces])

    def _is_end(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._llm._model.vocab, token))

    def _tokenize(self, text: str) -> list[int]:
        if not text:
            return []
        encoded = text.encode("utf-8", errors="replace")
        return list(self._llm.tokenize(encoded, add_bos=False, special=False))

    def _prompt(self, request: GenerationRequest) -> tuple[list[int], list[int], bytes]:
        """Prompt head (up to the cursor), tail (after it), and the prefix's last token's
        text, taken back for token healing."""
        assert self._format is not None
        fmt = self._format
        prefix_ids = self._tokenize(fmt.prefix_spacing + request.prefix)
        suffix_ids = self._tokenize(request.suffix)
        healed = self._take_back(prefix_ids)
        room = self._settings.n_ctx - request.max_tokens - PROMPT_MARKER_TOKENS
        if len(prefix_ids) + len(suffix_ids) > room:
            suffix_ids = suffix_ids[:max(room // 4, room - len(prefix_ids))]
            prefix_ids = prefix_ids[max(len(prefix_ids) - (room - len(suffix_ids)), 0):]
        repo_ids = self._repo_tokens(request)
        if len(repo_ids) > room - len(prefix_ids) - len(suffix_ids):
            repo_ids = []  # the current file comes first; the other files do not fit
        start, hole, middle = self._markers
        bos = [self._llm.token_bos()] if self._llm._model.add_bos_token() else []
        bos += repo_ids
        if fmt.order == "spm":
            return [*bos, hole, *suffix_ids, start, *prefix_ids], [middle], healed
        return [*bos, start, *prefix_ids], [hole, *suffix_ids, middle], healed

    def _take_back(self, tokens: list[int]) -> bytes:
        """Token healing: take the last of `tokens` off when it is part of a word (not
        whitespace, no line break) and return its text, which the first generated token
        must start with; b"" when it stays."""
        if self._settings.token_healing and tokens:
            piece = self._pieces[tokens[-1]]
            if piece.strip() and b"\n" not in piece:
                tokens.pop()
                return piece
        return b""

    def _repo_tokens(self, request: GenerationRequest) -> list[int]:
        """The repository part that goes before the prefix marker, or nothing."""
        repo, (repo_marker, file_marker) = request.repo, self._repo_markers
        if repo is None or not repo.files or file_marker < 0:
            return []
        if self._repo_ids[0] == repo:  # the same while the user types: tokenized once
            return self._repo_ids[1]
        ids = [repo_marker, *self._tokenize(repo.name + "\n")] if repo_marker >= 0 else []
        for path, text in repo.files:
            ids += [file_marker, *self._tokenize(f"{path}\n{text}\n")]
        ids += [file_marker, *self._tokenize(repo.path + "\n")]
        self._repo_ids = (repo, ids)
        return ids

    def _logits(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        pointer = llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self._llm.n_vocab(),))

    def _first_token(self, decoding: _Decoding, cancel: CancelToken) -> tuple[int, bytes]:
        healed, rule = decoding.healed, decoding.rule
        width = max(self._settings.name_lookahead, 1) if rule is not None else 1
        ranked = self._ranked_first_tokens(healed, width, rule)
        if not ranked:  # no token fits the rule (its names cannot be tokenized)
            decoding.rule = None
            ranked = self._ranked_first_tokens(healed, 1)
        elif len(ranked) > 1:
            assert rule is not None
            first, *decoding.forced = self._likeliest_name(rule, healed, ranked, cancel)
            return first, self._pieces[first][len(healed):]
        return ranked[0], self._pieces[ranked[0]][len(healed):]

    def _likeliest_name(self, rule: NameRule, healed: bytes, ranked: list[int],
                        cancel: CancelToken) -> list[int]:
        """Of the names that start with each of the `ranked` first tokens (likeliest
        first; the cache holds the prompt alone), each written on greedily under `rule`
        up to and with the token that ends it: the tokens of the likeliest. A candidate
        is dropped once it falls below the best so far, and the search ends at the
        deadline (with the first candidate, written so far, if it is the only one). The
        cache holds the prompt alone again after. Raises Cancelled (the cache as before)."""
        assert self._kv is not None
        best: list[int] = []
        best_score = -np.inf
        scores = _log_softmax(self._logits())
        base = self._kv.generated  # typed text's cells, kept
        for token in ranked:
            path, score = [token], float(scores[token])
            output = bytearray(self._pieces[token][len(healed):])
            cut = False
            try:
                while score > best_score and len(path) < MAX_NAME_TOKENS:
                    if cancel.expired():
                        cut = True
                        break
                    word = rule.word(bytes(output))
                    if word is None or path[-1] in self._stop_ids or self._is_end(path[-1]):
                        break  # the name ended (with this token)
                    self._kv.append_generated(path[-1])
                    step = self._logits()
                    following = self._ruled_token(rule, word, step)
                    if following is None:
                        break
                    score += float(_log_softmax(step)[following])
                    path.append(following)
                    output += self._pieces[following]
            except RuntimeError as error:
                self._forget_cache()
                raise EngineError(f"llama.cpp failed while generating: {error}") from error
            finally:
                if self._kv.generated > base:  # zero after `_forget_cache` too
                    self._kv.drop_generated(base)
            if cut:  # a later candidate, cut short, would be overrated
                return best or path
            if score > best_score:
                best, best_score = path, score
        return best

    def _fits(self, rule: NameRule, word: bytes, token: int, healed: bytes = b"") -> bool:
        """Whether `token` (its text after the `healed` bytes) may follow `word`."""
        if token in self._stop_ids or self._is_end(token):
            return rule.allows_end(word)
        return rule.allows(word, self._pieces[token][len(healed):])

    def _allowed(self, rule: NameRule, word: bytes, logits: np.ndarray[Any, np.dtype[np.float32]],
                 pool: np.ndarray[Any, np.dtype[np.int64]] | None, healed: bytes,
                 count: int) -> list[int]:
        """The `count` likeliest tokens that `rule` allows after `word`, best first, among
        `pool` (all tokens when None; their texts start with `healed`)."""
        found = rule.tokens(word, healed, self._sorted_pieces, self._sorted_ids)
        found.update(token for token in self._likeliest(logits, pool, RULE_NEAR_TOP)
                     if self._fits(rule, word, token, healed))
        if rule.allows_end(word):  # a whole name: the likeliest token that ends it too
            ender = self._likeliest_ender(logits, pool, healed)
            if ender is not None:
                found.add(ender)
        return sorted(found, key=lambda token: -float(logits[token]))[:count]

    def _likeliest_ender(self, logits: np.ndarray[Any, np.dtype[np.float32]],
                         pool: np.ndarray[Any, np.dtype[np.int64]] | None,
                         healed: bytes) -> int | None:
        """The likeliest token (of `pool`, all when None) whose text after `healed`
        starts with a byte no identifier has; None when there is none."""
        if pool is None:
            token = int(np.argmax(np.where(self._ends_word, logits, -np.inf)))
            return token if self._ends_word[token] else None
        enders = [int(token) for token in pool
                  if word_length(self._pieces[token][len(healed):len(healed) + 1]) == 0
                  and len(self._pieces[token]) > len(healed)]
        return max(enders, key=lambda token: float(logits[token]), default=None)

    def _likeliest(self, logits: np.ndarray[Any, np.dtype[np.float32]],
                   pool: np.ndarray[Any, np.dtype[np.int64]] | None,
                   count: int) -> list[int]:
        """The `count` likeliest tokens of `pool` (all tokens when None), best first."""
        scores = logits if pool is None else logits[pool]
        if count == 1:  # the first of the likeliest, as argmax picks it (and faster)
            best = int(np.argmax(scores))
            return [best if pool is None else int(pool[best])]
        count = min(count, len(scores))
        top = np.argpartition(-scores, count - 1)[:count] if count < len(scores) \
            else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [int(token) for token in (top if pool is None else pool[top])]

    def _healing_candidates(self, healed: bytes) -> list[int]:
        """Tokens whose text starts with `healed` (the taken-back last prompt token)."""
        low = bisect.bisect_left(self._sorted_pieces, healed)
        high = bisect.bisect_left(self._sorted_pieces, healed[:-1] + bytes([healed[-1] + 1])) \
            if healed[-1] < 255 else len(self._sorted_pieces)
        return self._sorted_ids[low:high]

    def _watching(self, cancel: CancelToken) -> contextlib.AbstractContextManager[None]:
        assert self._abort is not None  # set by load
        return self._abort.watching(cancel)

    def generate(self, request: GenerationRequest, cancel: CancelToken) -> GenerationResult:
        """Greedy fill-in-the-middle generation for one request."""
        self.load()
        with self._watching(cancel):
            return self._generate(request, cancel)

    def _generate(self, request: GenerationRequest, cancel: CancelToken) -> GenerationResult:
        original = request
        self._suspended = None  # the cache is about to change under it
        timings = Timings()
        started = time.perf_counter()
        # Typing on from the cached prompt needs neither the window chosen nor the prompt
        # tokenized: the anchor is the full window, or the short one where it still answers.
        typed = self._typed_after_anchor(request)
        if typed is None:
            request, (head, tail, healed) = self._window(request, cancel.deadline)
            typed = None if request is original else self._typed_after_anchor(request)
        timings.short_window = request is not original
        timings.tokenize_ms = (time.perf_counter() - started) * 1000
        if typed is not None:
            return self._generate_typed(request, typed, timings, started, cancel)
        timings.prompt_tokens = len(head) + len(tail)
        assert self._kv is not None
        decoding = _Decoding(request, healed, short_window=timings.short_window)
        try:
            # The deadline is checked between prompt chunks too: a cold prompt answers
            # "nothing yet" in time and finishes in its continuation (`resume`).
            # Do not start a chunk that would end past the deadline (capped: a rate measured
            # under load must not stop every prompt before its first chunk).
            chunk_s = min(self._chunk / self.prompt_rate, MAX_CHUNK_LOOKAHEAD_S)
            timings.evaluated_tokens = self._evaluate_prompt(
                head, tail, lambda: cancel.cancelled or cancel.expired(ahead_s=chunk_s))
            self._anchor = _Anchor(request, head, tail, healed)
        except Cancelled:
            timings.prompt_ms = (time.perf_counter() - started) * 1000 - timings.tokenize_ms
            timings.evaluated_tokens = self._kv.evaluated
            if cancel.cancelled:
                return GenerationResult("", "cancelled", timings)
            decoding.unevaluated = (head, tail)
            self._suspended = decoding
            return GenerationResult("", "deadline", timings)
        return self._generate_after_prompt(decoding, timings, started, cancel)

    def _generate_after_prompt(self, decoding: _Decoding, timings: Timings, started: float,
                               cancel: CancelToken) -> GenerationResult:
        """Generate `decoding`'s tokens, its prompt now cached; `timings` get the prompt's
        time since `started` (less tokenizing) and the generation's."""
        prompt_done = time.perf_counter()
        timings.prompt_ms = (prompt_done - started) * 1000 - timings.tokenize_ms
        text, finish = self._decode_tokens(decoding, cancel)
        timings.generated_tokens = decoding.steps
        timings.generate_ms = (time.perf_counter() - prompt_done) * 1000
        return GenerationResult(text, finish, timings)

    def _generate_typed(self, request: GenerationRequest, typed: tuple[list[int], bytes],
                        timings: Timings, started: float,
                        cancel: CancelToken) -> GenerationResult:
        """Generate for `request` from the anchor's prompt with `typed` (its tokens, and
        the bytes taken back from them for healing) after the middle marker."""
        assert self._kv is not None
        tokens, healed = typed
        timings.prompt_tokens = len(self._kv.head) + len(self._kv.tail) + len(tokens)
        decoding = _Decoding(request, healed, short_window=timings.short_window)
        try:
            timings.evaluated_tokens = self._kv.extend_middle(tokens)
        except Cancelled:
            return GenerationResult("", "cancelled", timings)
        except RuntimeError as error:
            self._forget_cache()
            raise EngineError(f"llama.cpp failed to evaluate the prompt: {error}") from error
        return self._generate_after_prompt(decoding, timings, started, cancel)

    def _typed_after_anchor(self, request: GenerationRequest) -> tuple[list[int], bytes] | None:
        """With `typed_into_middle`, where `request` differs from the anchor's only by text
        typed after its cursor on the same line: that text's tokens to put after the middle
        marker (the anchor's healed bytes first), and the bytes taken back from their last
        token for healing. None where the prompt is to end at the cursor."""
        anchor, kv = self._anchor, self._kv
        if (not self._settings.typed_into_middle or anchor is None or kv is None
                or request.names is not None or request.suffix != anchor.request.suffix
                or request.repo != anchor.request.repo
                or not request.prefix.startswith(anchor.request.prefix)):
            return None
        typed = request.prefix[len(anchor.request.prefix):]
        if not typed or "\n" in typed:
            return None
        tokens = list(self._llm.tokenize(anchor.healed + typed.encode("utf-8", errors="replace"),
                                         add_bos=False, special=False))
        healed = self._take_back(tokens)
        room = self._settings.n_ctx - len(anchor.head) - len(anchor.tail) - request.max_tokens
        # Last: a warm-up of the full window may have displaced the anchor's prompt into
        # the snapshots, and bringing it back is a copy (the warm-up's cells are saved).
        if len(tokens) > min(MAX_TYPED_TOKENS, room) or not kv.recall(anchor.head, anchor.tail):
            return None
        return tokens, healed

    def prefill(self, request: GenerationRequest, cancel: CancelToken) -> int:
        """Evaluate `request`'s prompt into the cache without generating; tokens evaluated.
        With a short window, that one first (the next keystroke can be answered from it
        soon), then the medium one, then the full one; the smaller ones stay among the
        snapshots."""
        self.load()
        with self._watching(cancel):
            return self._prefill(request, cancel)

    def _prefill(self, request: GenerationRequest, cancel: CancelToken) -> int:
        self._suspended = None
        parts = ([request.shortened()] if request.short is not None else []) + (
            [request.at_medium()] if request.medium is not None else []) + [request]
        evaluated = 0
        for part in parts:
            head, tail, healed = self._prompt(part)
            try:
                evaluated += self._evaluate_prompt(head, tail, lambda: cancel.cancelled)
                self._anchor = _Anchor(part, head, tail, healed)
            except Cancelled:
                assert self._kv is not None
                return evaluated + self._kv.evaluated
        return evaluated

    def _window(self, request: GenerationRequest, deadline: float | None
                ) -> tuple[GenerationRequest, tuple[list[int], list[int], bytes]]:
        """The request to answer and its prompt: the full window, unless what it still
        needs evaluated cannot be done before `deadline` at the measured rate and the
        short window needs at most a SHORT_WINDOW_RATIO-th as much (a cold place). There
        the medium window answers instead of the short one once it costs about as little
        (a warm-up evaluated it)."""
        prompt = self._prompt(request)
        if request.short is None or deadline is None:
            return request, prompt
        kv = self._kv
        assert kv is not None
        full_cost = kv.cost(prompt[0], prompt[1])
        seconds = deadline - time.monotonic() - GENERATION_RESERVE_S
        if full_cost <= self.prompt_rate * seconds:
            return request, prompt
        short = request.shortened()
        short_prompt = self._prompt(short)
        short_cost = kv.cost(short_prompt[0], short_prompt[1])
        if SHORT_WINDOW_RATIO * short_cost > full_cost:
            return request, prompt  # not worth the context it loses (a short file)
        if request.medium is not None:
            medium = request.at_medium()
            medium_prompt = self._prompt(medium)
            if kv.cost(medium_prompt[0], medium_prompt[1]) <= short_cost + WINDOW_SLACK_TOKENS:
                return medium, medium_prompt
        return short, short_prompt

    def _measure(self, tokens: int, milliseconds: float) -> None:
        """Fold a prompt evaluation's speed into `prompt_rate` (only runs long enough to
        say something: tiny ones are dominated by per-call overhead). The bound stays
        PROMPT_CHUNK with larger GPU chunks: there prompts of 64 to 511 tokens are common
        and say enough, and without them the rate would stay at INITIAL_PROMPT_RATE (a
        CPU's) until the first prompt of 512 tokens."""
        if tokens >= PROMPT_CHUNK and milliseconds > 0:
            rate = tokens / (milliseconds / 1000)
            self.prompt_rate = 0.7 * self.prompt_rate + 0.3 * rate

    def _evaluate_prompt(self, head: list[int], tail: list[int],
                         stop: Callable[[], bool]) -> int:
        """Bring the KV cache to `head + tail`; tokens evaluated. Raises Cancelled when
        `stop` turns true between chunks, EngineError when llama.cpp fails. Every prompt
        evaluation passes here, so here its speed is folded into `prompt_rate`."""
        kv = self._kv
        assert kv is not None
        started = time.perf_counter()
        try:
            return kv.prepare(head, tail, stop)
        except RuntimeError as error:
            self._forget_cache()
            raise EngineError(f"llama.cpp failed to evaluate the prompt: {error}") from error
        finally:
            self._measure(kv.evaluated, (time.perf_counter() - started) * 1000)

    def resume(self, cancel: CancelToken) -> GenerationResult | None:
        """Go on with the last generation if its deadline cut it and nothing ran since."""
        if self._abort is None:
            return None  # not loaded: nothing was cut
        with self._watching(cancel):
            return self._resume(cancel)

    def _resume(self, cancel: CancelToken) -> GenerationResult | None:
        decoding, self._suspended = self._suspended, None
        if decoding is None:
            return None
        started = time.perf_counter()
        timings = Timings(short_window=decoding.short_window)
        if decoding.unevaluated is not None:
            head, tail = decoding.unevaluated
            timings.prompt_tokens = len(head) + len(tail)
            try:
                timings.evaluated_tokens = self._evaluate_prompt(
                    head, tail, lambda: cancel.cancelled)
            except Cancelled:
                return GenerationResult("", "cancelled", timings)
            self._anchor = _Anchor(decoding.request, head, tail, decoding.healed)
            decoding.unevaluated = None
        prompt_done = time.perf_counter()
        timings.prompt_ms = (prompt_done - started) * 1000
        already = decoding.steps
        text, finish = self._decode_tokens(decoding, cancel)
        timings.generate_ms = (time.perf_counter() - prompt_done) * 1000
        timings.generated_tokens = decoding.steps - already
        return GenerationResult(text, finish, timings)

    def _next_token(self, decoding: _Decoding, cancel: CancelToken) -> tuple[int, bytes]:
        if decoding.steps == 0 and decoding.first is not None:
            return decoding.first, self._pieces[decoding.first][len(decoding.healed):]
        if decoding.steps == 0:
            return self._first_token(decoding, cancel)
        assert self._kv is not None and decoding.pending is not None
        try:
            self._kv.append_generated(decoding.pending)
        except RuntimeError as error:
            self._forget_cache()
            raise EngineError(f"llama.cpp failed while generating: {error}") from error
        if decoding.forced:
            chosen = decoding.forced.pop(0)
            return chosen, self._pieces[chosen]
        logits = self._logits()
        rule = decoding.rule
        word = None if rule is None else rule.word(bytes(decoding.output))
        token = None if rule is None or word is None else self._ruled_token(rule, word, logits)
        if token is None:  # past the name, or no token fits (it cannot be tokenized)
            decoding.rule = None
            token = int(np.argmax(logits))
        return token, self._pieces[token]

    def _ruled_token(self, rule: NameRule, word: bytes,
                     logits: np.ndarray[Any, np.dtype[np.float32]]) -> int | None:
        """The likeliest token if `rule` lets it follow `word`, else the likeliest one it
        lets; None when it lets none."""
        token = int(np.argmax(logits))
        if self._fits(rule, word, token):
            return token
        fitting = self._allowed(rule, word, logits, None, b"", 1)
        return fitting[0] if fitting else None

    def _decode_tokens(self, decoding: _Decoding, cancel: CancelToken) -> tuple[str, str]:
        request = decoding.request
        text = decoding.output.decode("utf-8", errors="ignore")
        while decoding.steps < request.max_tokens:
            try:
                token, piece = self._next_token(decoding, cancel)
            except Cancelled:  # aborted while decoding the last token: nothing to resume
                return text, "cancelled"
            if token in self._stop_ids or self._is_end(token):
                return text, "eos"
            decoding.output += piece
            decoding.steps += 1
            decoding.pending = token
            text = decoding.output.decode("utf-8", errors="ignore")
            if request.on_token is not None:
                request.on_token(text)
            cut = request.stop(text)
            if cut is not None:
                return text[:cut], "stop"
            if cancel.cancelled:
                return text, "cancelled"
            if cancel.expired():
                self._suspended = decoding
                return text, "deadline"
        return text, "length"

    def alternatives(self, request: GenerationRequest, count: int,
                     cancel: CancelToken) -> list[GenerationResult]:
        """Other suggestions for `request`'s full window: one greedy continuation for each
        of the `count` likeliest first tokens after the best (end markers skipped; with
        `name_lookahead` under a name rule, of the `count + 1` likeliest). None
        when the full prompt is not cached enough to be evaluated before the deadline."""
        self.load()
        with self._watching(cancel):
            return self._alternatives(replace(request, short=None, medium=None), count,
                                      cancel)

    def _alternatives(self, request: GenerationRequest, count: int,
                      cancel: CancelToken) -> list[GenerationResult]:
        self._suspended = None
        head, tail, healed = self._prompt(request)

        def stop() -> bool:
            return cancel.cancelled

        results: list[GenerationResult] = []
        assert self._kv is not None
        seconds = None if cancel.deadline is None else cancel.deadline - time.monotonic()
        if seconds is not None and self._kv.cost(head, tail) > self.prompt_rate * seconds:
            return results  # a cold place: the full prompt would outlast the deadline
        try:
            self._evaluate_prompt(head, tail, stop)
            self._anchor = _Anchor(request, head, tail, healed)
            rule = None if request.names is None else NameRule(request.names)
            # With `name_lookahead`, the usual answer may start with another token than
            # the likeliest: keep that one too (the caller drops the usual answer's text).
            skip = 0 if rule is not None and self._settings.name_lookahead > 1 else 1
            ranked = [token for token in self._ranked_first_tokens(healed, count + 8, rule)[skip:]
                      if token not in self._stop_ids and not self._is_end(token)][:count + 1 - skip]
            for token in ranked:
                if results:  # drop the cells the previous one generated
                    self._evaluate_prompt(head, tail, stop)
                started = time.perf_counter()
                decoding = _Decoding(request, healed, first=token)
                text, finish = self._decode_tokens(decoding, cancel)
                results.append(GenerationResult(text, finish, Timings(
                    generate_ms=(time.perf_counter() - started) * 1000,
                    prompt_tokens=len(head) + len(tail), generated_tokens=decoding.steps)))
                if finish in ("cancelled", "deadline"):
                    break
        except Cancelled:
            pass
        self._suspended = None  # an alternative cut by the deadline is not continued
        return results

    def first_token_candidates(self, request: GenerationRequest,
                               count: int = 2) -> list[tuple[str, float]]:
        """The `count` likeliest first tokens for `request` as generation would choose
        among them (token healing applied), with their logits, best first.

        Model numerics differ between CPUs, so tests and benchmarks compare two engines'
        first tokens only where the top-two margin is large."""
        self.prefill(request, CancelToken())
        _, _, healed = self._prompt(request)
        logits = self._logits()
        return [(self._pieces[token][len(healed):].decode("utf-8", errors="replace"),
                 float(logits[token])) for token in self._ranked_first_tokens(healed, count)]

    def _ranked_first_tokens(self, healed: bytes, count: int,
                             rule: NameRule | None = None) -> list[int]:
        """The `count` likeliest first tokens at the cached prompt's end, best first,
        among those token healing allows (all of them when it allows none) and, with a
        `rule`, those it allows (maybe none)."""
        logits = self._logits()
        candidates = self._healing_candidates(healed) if healed else []
        pool = np.array(candidates, dtype=np.int64) if candidates else None
        if rule is None:
            return self._likeliest(logits, pool, count)
        word = rule.word(b"")
        assert word is not None
        return self._allowed(rule, word, logits, pool, healed if candidates else b"", count)

    def count_tokens(self, text: str) -> int | None:
        """Tokens of `text`; None before the model is loaded. Called from the event loop
        while a decode may run on the model thread: llama.cpp's tokenizer only reads the
        vocabulary, and `close` waits for a count in progress."""
        with self._vocabulary_lock:
            return None if self._llm is None else len(self._tokenize(text))

    def close(self) -> None:
        """Free the model and its context now (an engine reload), not at garbage collection."""
        with self._vocabulary_lock:
            llm, self._llm = self._llm, None
        self._kv, self._suspended = None, None
        self._pieces, self._sorted_pieces, self._sorted_ids = [], [], []
        self._ends_word = np.zeros(0, dtype=bool)
        if llm is not None:
            llm.close()  # the model's exit stack frees the two-sequence context first

    def _forget_cache(self) -> None:
        if self._kv is not None:
            self._kv.forget()
