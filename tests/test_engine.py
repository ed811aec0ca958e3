"""The llama.cpp engine on the real default model: FIM output, cancellation, KV reuse, healing.

Model numerics differ between CPUs (AVX2 and AVX-512 kernels flip near-ties), so these tests
assert what holds everywhere: the suggestion parses in place, tokens agree where the model
is sure, and the counts of evaluated tokens; never the model's exact text.
"""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path

import pytest

from flashls.engine.base import CancelToken, GenerationRequest, NameConstraint, RepoContext
from flashls.engine.llama import LlamaEngine
from flashls.settings import Settings

pytestmark = pytest.mark.model

PREFIX = '''import os


def list_python_files(root):
    """Return the paths of the .py files under root."""
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            if name.endswith(".py"):
                found.append(os.path.'''
SUFFIX = '''
    return found


def count_lines(path):
    with open(path) as handle:
        return sum(1 for _ in handle)
'''

# After `shapes.`, names the model would not guess: without a name constraint it writes
# what a rectangle's module usually has (`area`, `width * ...`), never these.
SHAPES_PREFIX = "import shapes\n\n\ndef report(width, height):\n    area = shapes."
SHAPES_SUFFIX = "\n    return area\n"
SHAPES_NAMES = NameConstraint("", ("zq_area_v2", "zq_perimeter_v2"))


def never_stop(text: str) -> int | None:
    return None


# Top-two logit margin above which the first token must not depend on the CPU's kernels.
SURE_MARGIN = 2.0


def first_line(text: str) -> int | None:
    newline = text.find("\n")
    return None if newline < 0 else newline


def assert_parses_in_place(prefix: str, text: str) -> None:
    """The suggestion is one non-empty line that, typed at the cursor, leaves valid Python
    without writing the suffix's next line again."""
    assert text.strip() and "\n" not in text, repr(text)
    assert "return found" not in text, repr(text)
    ast.parse(prefix + text + SUFFIX)


@pytest.fixture(scope="module")
def engine(model_path: Path) -> LlamaEngine:
    engine = LlamaEngine(Settings(model=str(model_path), n_threads=2))
    engine.load()
    return engine


def test_fills_the_middle_from_prefix_and_suffix(engine: LlamaEngine) -> None:
    result = engine.generate(GenerationRequest(PREFIX, SUFFIX, 24, first_line), CancelToken())
    assert "qwen" in engine.describe()
    assert_parses_in_place(PREFIX, result.text)


def test_cancel_stops_within_one_token(engine: LlamaEngine) -> None:
    cancel = CancelToken()
    seen: list[str] = []

    def cancel_after_three(text: str) -> None:
        seen.append(text)
        if len(seen) == 3:
            cancel.cancel()

    result = engine.generate(GenerationRequest(PREFIX, SUFFIX, 64, never_stop,
                                               on_token=cancel_after_three), cancel)
    assert result.finish == "cancelled"
    assert result.timings.generated_tokens <= 4
    assert len(seen) <= 4


class CancelledOnRead(CancelToken):
    """Cancelled from its `reads`-th look on: the abort callback looks at every graph node,
    so with a count a few looks in, a decode is stopped midway, whatever the CPU's speed.
    With `finish_chunk` it is cancelled as a warm-up whose chunk is wanted: the abort
    callback is never told to stop (and does not count as a look)."""

    def __init__(self, reads: int, finish_chunk: bool = False) -> None:
        super().__init__()
        self._left = reads
        self._finish_chunk = finish_chunk

    def _looked(self) -> bool:
        self._left -= 1
        return self._left < 0

    @property
    def cancelled(self) -> bool:
        return self._looked() or super().cancelled

    @property
    def aborting(self) -> bool:
        return (not self._finish_chunk and self._looked()) or super().aborting


def test_a_cancel_stops_a_prompt_chunk_midway_and_the_cache_stays_sound(
        engine: LlamaEngine) -> None:
    long_prefix = PREFIX.replace("import os", "import os\n" + "\n".join(
        f"CONSTANT_{index} = {index}" for index in range(30)))
    request = GenerationRequest(long_prefix, SUFFIX, 16, first_line)
    # Looked at once before the first chunk, then by the abort callback during it.
    evaluated = engine.prefill(request, CancelledOnRead(5))
    assert evaluated == 0  # the first chunk was stopped, not finished and then stopped
    # Nothing of the aborted chunk (64 tokens) is taken for cached: all but the few
    # tokens this prompt shares with the previous test's are evaluated.
    result = engine.generate(request, CancelToken())
    assert result.timings.prompt_tokens - 8 <= result.timings.evaluated_tokens
    assert result.timings.prompt_tokens > 2 * 64
    assert result.finish in ("stop", "eos", "length")
    assert_parses_in_place(long_prefix, result.text)


def test_a_cancel_that_finishes_its_chunk_keeps_the_chunk_and_stops_there(
        engine: LlamaEngine) -> None:
    """A warm-up cancelled by a request whose prompt starts as its own finishes the chunk
    it is evaluating (the request needs those tokens) and starts no other."""
    long_prefix = PREFIX.replace("import os", "import os\n" + "\n".join(
        f"LIMIT_{index} = {index * 3}" for index in range(30)))
    request = GenerationRequest(long_prefix, SUFFIX, 16, first_line)
    # Looked at on entry and before the first chunk; cancelled at the look before the
    # second, while the first was being evaluated.
    assert engine.prefill(request, CancelledOnRead(2, finish_chunk=True)) == 64
    result = engine.generate(request, CancelToken())
    assert result.timings.prompt_tokens > 2 * 64
    assert result.timings.evaluated_tokens <= result.timings.prompt_tokens - 64 + 8


def test_alternatives_start_with_other_tokens_and_leave_the_cache_sound(
        engine: LlamaEngine) -> None:
    request = GenerationRequest(PREFIX, SUFFIX, 16, first_line)
    best = engine.generate(request, CancelToken())
    others = engine.alternatives(request, 2, CancelToken())
    assert len(others) == 2
    texts = [best.text, *(other.text for other in others)]
    # Each starts with another first token, so the three texts differ.
    assert len(set(texts)) == 3
    for other in others:
        assert other.finish in ("stop", "eos", "length") and other.timings.generated_tokens >= 1
    # At a cold place whose full prompt cannot be evaluated before the deadline (here one
    # already past, so that no CPU is fast enough): none.
    cold = GenerationRequest("# another file\n" + PREFIX, SUFFIX, 16, first_line)
    assert engine.alternatives(cold, 2, CancelToken(time.monotonic() - 1)) == []
    # The prompt stays cached: typing after it evaluates only the edit and the markers.
    typed = engine.generate(GenerationRequest(PREFIX + "j", SUFFIX, 4, first_line),
                            CancelToken())
    assert typed.timings.evaluated_tokens <= 6


def test_reuse_evaluates_only_the_edit_and_keeps_sure_tokens(engine: LlamaEngine,
                                                             model_path: Path) -> None:
    at_cursor = LlamaEngine(Settings(model=str(model_path), n_threads=2,
                                     typed_into_middle=False))
    at_cursor.generate(GenerationRequest(PREFIX, SUFFIX, 4, first_line), CancelToken())
    typed = GenerationRequest(PREFIX + "jo", SUFFIX, 16, first_line)
    reused = at_cursor.generate(typed, CancelToken())
    fresh_engine = LlamaEngine(Settings(model=str(model_path), n_threads=2,
                                        reuse_kv_prefix=False))
    fresh = fresh_engine.generate(typed, CancelToken())
    # The re-tokenized end of the prefix, the suffix marker and the middle marker: the
    # suffix's cells are shifted into place, not evaluated again.
    assert reused.timings.evaluated_tokens <= 6
    assert fresh.timings.evaluated_tokens == fresh.timings.prompt_tokens
    assert reused.timings.prompt_tokens == fresh.timings.prompt_tokens
    assert_parses_in_place(typed.prefix, reused.text)
    assert_parses_in_place(typed.prefix, fresh.text)
    # Reuse moves logits a little (other batch splits), as another CPU would: only a first
    # token the fresh engine is sure of must come out the same.
    (best, best_logit), (_, runner_up_logit) = fresh_engine.first_token_candidates(typed)
    if best_logit - runner_up_logit >= SURE_MARGIN:
        assert fresh.text.startswith(best), (best, fresh.text)
        assert reused.text.startswith(best), (best, reused.text)


def test_typing_on_a_line_puts_the_typed_text_after_the_middle_marker(
        engine: LlamaEngine, model_path: Path) -> None:
    line_start = PREFIX[:-len("found.append(os.path.")]
    line = "found.append(os.path.jo"
    at_cursor = LlamaEngine(Settings(model=str(model_path), n_threads=2,
                                     typed_into_middle=False))
    evaluated: dict[LlamaEngine, list[int]] = {engine: [], at_cursor: []}
    results = {}
    for each in evaluated:
        each.prefill(GenerationRequest(line_start, SUFFIX, 2, first_line), CancelToken())
        for count in range(1, len(line) + 1):
            request = GenerationRequest(line_start + line[:count], SUFFIX,
                                        16 if count == len(line) else 2, first_line)
            results[each] = each.generate(request, CancelToken())
            evaluated[each].append(results[each].timings.evaluated_tokens)
    # A keystroke costs the typed text's new tokens (one, or two where a token splits),
    # not the prompt's last tokens and both markers.
    assert max(evaluated[engine]) <= 3, evaluated[engine]
    assert sum(evaluated[engine]) <= 0.6 * sum(evaluated[at_cursor]), evaluated
    assert_parses_in_place(line_start + line, results[engine].text)
    # A line break ends the line: the prompt ends at the cursor again, with the whole
    # typed line evaluated into its head.
    broken = line_start + "found.append(name)\n" + line_start.rsplit("\n", 1)[1]
    result = engine.generate(GenerationRequest(broken, SUFFIX, 2, first_line), CancelToken())
    assert result.timings.evaluated_tokens >= 6
    at_cursor.close()


def test_token_healing_completes_a_half_typed_word(engine: LlamaEngine) -> None:
    prefix = PREFIX[:-len("os.path.")] + "os.path.jo"
    result = engine.generate(GenerationRequest(prefix, SUFFIX, 16, first_line), CancelToken())
    # It finishes the identifier being typed rather than starting a new word after "jo".
    assert result.text[:1].isalnum() or result.text[:1] == "_", repr(result.text)
    assert_parses_in_place(prefix, result.text)


def test_token_healing_finishes_a_name_the_file_already_uses(engine: LlamaEngine) -> None:
    # Unhealed, the prompt ends on the token "hand" and the model went on with "er)": a name
    # nothing defines. Healed, the word becomes `handle`, bound by the `with` line (its first
    # token wins by a margin of about 6, far above what CPUs disagree on).
    before, _, after = SUFFIX.partition("handle)")
    prefix = PREFIX + "join(directory, name))" + before + "hand"
    result = engine.generate(GenerationRequest(prefix, after, 16, first_line), CancelToken())
    word = "hand" + re.findall(r"^\w*", result.text)[0]
    assert word in re.findall(r"\w+", prefix[:-len("hand")]), (word, result.text)
    ast.parse(prefix + result.text + after)


def test_deadline_returns_what_was_generated(engine: LlamaEngine) -> None:
    cancel = CancelToken()

    def expire(text: str) -> None:
        cancel.deadline = 0.0  # passes as the first token is shown: one token, then stop

    # (A deadline already past before the prompt is evaluated answers with nothing and
    # resumes later: tests/test_engine_deadline.py.)
    result = engine.generate(GenerationRequest(PREFIX, SUFFIX, 64, never_stop,
                                               on_token=expire), cancel)
    assert result.finish == "deadline"
    assert result.timings.generated_tokens == 1 and result.text


def test_prefill_leaves_only_the_markers_to_evaluate(engine: LlamaEngine) -> None:
    request = GenerationRequest(PREFIX + "  # warm", SUFFIX, 8, first_line)
    assert engine.prefill(request, CancelToken()) > 0
    result = engine.generate(request, CancelToken())
    assert result.timings.evaluated_tokens <= 2  # the suffix and middle markers


def test_returning_to_a_file_restores_its_prompt(engine: LlamaEngine,
                                                 model_path: Path) -> None:
    """A prompt displaced by another file's is saved and restored on return: the return
    evaluates only what was typed, and writes what a fresh engine is sure of."""
    # Prompts of a few chunks, as real ones are (a saved prompt must be worth a copy).
    helpers = "".join(f"def helper_{index}(value):\n    return value * {index}\n\n\n"
                      for index in range(12))
    prefix = PREFIX.replace("import os\n", "import os\n\n\n" + helpers, 1)
    other = GenerationRequest(helpers + "import json\n\n\ndef load(path):\n    with open("
                              "path) as handle:\n        return json.", "\n", 8, first_line)
    engine.generate(GenerationRequest(prefix, SUFFIX, 4, first_line), CancelToken())
    engine.generate(other, CancelToken())
    back = GenerationRequest(prefix + "jo", SUFFIX, 16, first_line)
    returned = engine.generate(back, CancelToken())
    assert returned.timings.evaluated_tokens <= 6
    assert_parses_in_place(back.prefix, returned.text)
    fresh_engine = LlamaEngine(Settings(model=str(model_path), n_threads=2, snapshot_mb=0,
                                        reuse_kv_prefix=False))
    (best, best_logit), (_, runner_up_logit) = fresh_engine.first_token_candidates(back)
    if best_logit - runner_up_logit >= SURE_MARGIN:
        assert returned.text.startswith(best), (best, returned.text)
    fresh_engine.close()


def _cold_place(name: str, body: str) -> tuple[str, tuple[str, str]]:
    """A prefix whose prompt takes seconds to evaluate here (PREFIX after 40 functions,
    about 800 tokens; `name` and `body` make it one no other test has cached), and its
    short window."""
    functions = "".join(f"def {name}_{index}(value):\n    return {body.format(index=index)}"
                        "\n\n\n" for index in range(40))
    return functions + PREFIX, (PREFIX[-160:], SUFFIX[:40])


def test_a_cold_place_answers_from_its_short_window_then_the_full_one(
        engine: LlamaEngine) -> None:
    """A prompt that cannot be evaluated before the deadline is answered from the short
    window; once the full one is evaluated ahead (the warm-up the server queues), the next
    keystroke is answered from the full window and evaluates only what was typed."""
    prefix, short = _cold_place("helper", "value * {index} + {index}")
    cold = GenerationRequest(prefix, SUFFIX, 16, first_line, short=short)
    answer = engine.generate(cold, CancelToken(time.monotonic() + 1.0))
    assert answer.timings.short_window
    assert answer.timings.prompt_tokens < 120  # the short window's prompt, not 800 tokens
    assert engine.prompt_rate > 0
    assert engine.prefill(cold, CancelToken()) > 500  # the full window, evaluated ahead
    typed = GenerationRequest(prefix + "jo", SUFFIX, 16, first_line,
                              short=(short[0] + "jo", short[1]))
    warm = engine.generate(typed, CancelToken(time.monotonic() + 1.5))
    assert not warm.timings.short_window
    assert warm.timings.evaluated_tokens <= 6
    assert_parses_in_place(typed.prefix, warm.text)
    # Without a deadline nothing is cut, so the full window is always used.
    assert not engine.generate(cold, CancelToken()).timings.short_window


class _CancelledAtCheck(CancelToken):
    """Turns cancelled at its `checks`-th look: a warm-up the next keystroke interrupts
    between two prompt chunks."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self._left = checks

    @property
    def cancelled(self) -> bool:
        self._left -= 1
        return self._left < 0


def test_typing_after_a_warm_up_cut_in_the_full_window_goes_on_from_the_short_one(
        engine: LlamaEngine) -> None:
    """After a short-window answer the full window is warmed up, displacing the short
    one's prompt; a keystroke that interrupts it brings that prompt back from the snapshots
    and evaluates only what was typed, as when nothing ran in between."""
    prefix, short = _cold_place("scale", "value * {index} - {index}")
    cold = GenerationRequest(prefix, SUFFIX, 16, first_line, short=short)
    assert engine.generate(cold, CancelToken(time.monotonic() + 1.0)).timings.short_window
    evaluated = engine.prefill(cold, _CancelledAtCheck(8))
    assert 64 <= evaluated < 600, evaluated  # cut after some chunks of the full window
    typed = GenerationRequest(prefix + "jo", SUFFIX, 16, first_line,
                              short=(short[0] + "jo", short[1]))
    answer = engine.generate(typed, CancelToken(time.monotonic() + 1.0))
    assert answer.timings.short_window
    assert answer.timings.evaluated_tokens <= 2, answer.timings
    assert_parses_in_place(typed.prefix, answer.text)


def test_a_warm_up_evaluates_the_medium_window_next_and_typing_goes_on_from_it(
        engine: LlamaEngine) -> None:
    """At a cold place the short window answers first; the warm-up after it evaluates the
    medium window before the full one, and the next keystroke is answered from the medium
    window (more of the file before the cursor) for only what was typed."""
    prefix, short = _cold_place("offset", "value + {index} * {index}")
    medium = (prefix[-640:], SUFFIX[:40])
    cold = GenerationRequest(prefix, SUFFIX, 16, first_line, short=short, medium=medium)
    first = engine.generate(cold, CancelToken(time.monotonic() + 1.0))
    assert first.timings.short_window and first.timings.prompt_tokens < 100  # the short one
    evaluated = engine.prefill(cold, _CancelledAtCheck(12))
    assert 150 <= evaluated < 700, evaluated  # the medium window, then part of the full one
    typed = GenerationRequest(prefix + "jo", SUFFIX, 16, first_line,
                              short=(short[0] + "jo", short[1]),
                              medium=(medium[0] + "jo", medium[1]))
    answer = engine.generate(typed, CancelToken(time.monotonic() + 1.0))
    assert answer.timings.short_window  # not the full window
    assert answer.timings.prompt_tokens > 150  # the medium one
    assert answer.timings.evaluated_tokens <= 2, answer.timings
    assert_parses_in_place(typed.prefix, answer.text)


def test_moving_the_cursor_over_a_suffix_token_reuses_the_suffix(engine: LlamaEngine) -> None:
    """Warmed with the cursor before `)` (Neovim's normal-mode cursor), asked after it: the
    suffix now starts inside what was the token `)\\n`, and the rest of its cells are
    shifted into place instead of evaluating the 40-odd suffix tokens again."""
    before = PREFIX + "join(directory, name"
    engine.prefill(GenerationRequest(before, ")" + SUFFIX, 8, first_line), CancelToken())
    moved = GenerationRequest(before + ")", SUFFIX, 8, first_line)
    result = engine.generate(moved, CancelToken())
    assert result.timings.evaluated_tokens <= 8, result.timings
    assert result.timings.prompt_tokens > 60
    fresh = LlamaEngine(Settings(model=engine.model_path.as_posix(), n_threads=2,
                                 reuse_kv_prefix=False, snapshot_mb=0))
    (best, best_logit), (_, runner_up) = fresh.first_token_candidates(moved)
    if best_logit - runner_up >= SURE_MARGIN:
        assert result.text.startswith(best.split("\n")[0]), (best, result.text)  # cut at line end
    fresh.close()


def test_other_files_go_first_and_stay_cached_while_typing(engine: LlamaEngine) -> None:
    repo = RepoContext("shop", (("shop/hashing.py", 'def checksum(data: bytes) -> str:\n'
                                 '    """The hex digest of `data`."""'),), "shop/store.py")
    prefix = "from .hashing import checksum\n\n\ndef store(data):\n    digest = "
    plain = engine.generate(GenerationRequest(prefix, "\n", 4, never_stop), CancelToken())
    with_repo = engine.generate(GenerationRequest(prefix, "\n", 4, never_stop, repo=repo),
                                CancelToken())
    assert with_repo.timings.prompt_tokens > plain.timings.prompt_tokens + 20
    typed = engine.generate(GenerationRequest(prefix + "c", "\n", 4, never_stop, repo=repo),
                            CancelToken())
    assert typed.timings.evaluated_tokens <= 4  # the edit; the other files stay cached
    # Other files that the context cannot hold with the current file are left out.
    huge = RepoContext("shop", (("shop/big.py", "x = 1\n" * 2000),), "shop/store.py")
    dropped = engine.generate(GenerationRequest(prefix, "\n", 4, never_stop, repo=huge),
                              CancelToken())
    assert dropped.timings.prompt_tokens == plain.timings.prompt_tokens


def test_a_name_constraint_keeps_the_name_after_module_dot_to_the_module_s(
        engine: LlamaEngine) -> None:
    names, prefix = SHAPES_NAMES, SHAPES_PREFIX
    request = GenerationRequest(prefix, SHAPES_SUFFIX, 12, never_stop, names=names)
    result = engine.generate(request, CancelToken())
    assert result.text.startswith(names.names), result.text
    others = engine.alternatives(request, 2, CancelToken())
    assert others and all(other.text.startswith(names.names) for other in others)
    # Half-typed: the typed part counts, and what follows the name is free.
    typed = engine.generate(GenerationRequest(
        prefix + "zq_p", SHAPES_SUFFIX, 12, never_stop,
        names=NameConstraint("zq_p", ("zq_perimeter_v2",))), CancelToken())
    assert typed.text.startswith("erimeter_v2"), typed.text
    # A whole name the model would go on writing (`zq` -> `zq_area...`) is ended there.
    short = engine.generate(GenerationRequest(prefix, SHAPES_SUFFIX, 12, never_stop,
                                              names=NameConstraint("", ("zq",))), CancelToken())
    assert short.text.startswith("zq") and not re.match(r"\w", short.text[2:]), short.text


# After `math.` the model is sure to write `sqrt`; the name a constraint allows that
# starts with it goes on with text no model would write, and two others do not.
MATH_PREFIX = "import math\n\n\ndef hypot(a, b):\n    return math."
MATH_NAMES = NameConstraint("", ("hypot", "pow", "sqrt_zq_qq_v9"))


def test_name_lookahead_keeps_the_likeliest_whole_name_not_the_first_token_s(
        engine: LlamaEngine, model_path: Path) -> None:
    unconstrained = GenerationRequest(MATH_PREFIX, "\n", 12, never_stop)
    (best, best_logit), (_, second_logit) = engine.first_token_candidates(unconstrained)
    assert best == "sqrt" and best_logit - second_logit > SURE_MARGIN
    request = GenerationRequest(MATH_PREFIX, "\n", 12, never_stop, names=MATH_NAMES)
    # Token by token, the constraint holds the model's first token to its only name.
    plain = LlamaEngine(Settings(model=str(model_path), n_threads=2, name_lookahead=0))
    try:
        assert plain.generate(request, CancelToken()).text.startswith("sqrt_zq_qq_v9")
    finally:
        plain.close()
    assert Settings().name_lookahead > 1  # the default `engine` looks ahead
    chosen = engine.generate(request, CancelToken())
    assert chosen.text.startswith(("hypot", "pow")), chosen.text
    # The candidates written ahead left the cache holding the prompt alone: the same
    # request again evaluates only the markers and writes one of those names again.
    again = engine.generate(request, CancelToken())
    assert again.timings.evaluated_tokens <= 6
    assert again.text.startswith(("hypot", "pow")), again.text
    # The alternatives include the first token's name (the usual answer is not it).
    others = engine.alternatives(request, 2, CancelToken())
    assert any(other.text.startswith("sqrt_zq_qq_v9") for other in others), others
