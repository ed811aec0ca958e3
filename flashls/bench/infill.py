"""`flashls bench infill`: what reusing the KV cache costs in accuracy, on HumanEval infilling.

In-process engines fill the same rows: full re-evaluation, prefix reuse, prefix reuse with
the shifted (stale) suffix cells, and a cursor that walks right over the prefix's last
characters, so that the cached suffix starts a token or more off and is realigned
(`kv.TailReuse`). No server here: `latency.py` times JSON-RPC.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flashls.bench.harness import run_header
from flashls.bench.report import aligned, fixed, mean, percent, report_paths, write_json
from flashls.engine.base import (
    CancelToken,
    EngineError,
    GenerationRequest,
    GenerationResult,
    StopRule,
)
from flashls.settings import Settings

DATA_FILES = {
    "multiline": "HumanEval-MultiLineInfilling.jsonl.gz",
    "randomspan": "HumanEval-RandomSpanInfillingLight.jsonl.gz",
}
# OpenAI's human-eval-infilling data (MIT, see its LICENSE) ships inside the package.
PACKAGED_DATA_DIR = Path(__file__).parent / "data" / "humaneval-infilling"
DEFAULT_DATA_DIR = os.environ.get("FLASHLS_INFILL_DATA", str(PACKAGED_DATA_DIR))
TEST_TIMEOUT_S = 10.0
ANCHOR_CHARS = 12


class InfillError(RuntimeError):
    """A run that cannot give numbers; the message says why."""


@dataclass(frozen=True)
class Variant:
    """One way of keeping the KV cache between requests."""

    name: str
    reuse_kv_prefix: bool
    reuse_suffix: bool
    # The cursor arrives K characters early and moves right one character at a time (the
    # characters are already there, in the suffix) instead of typing them.
    walk: bool = False


VARIANTS = (
    Variant("full", reuse_kv_prefix=False, reuse_suffix=False),
    Variant("prefix", reuse_kv_prefix=True, reuse_suffix=False),
    Variant("shift", reuse_kv_prefix=True, reuse_suffix=True),
    Variant("walk", reuse_kv_prefix=True, reuse_suffix=True, walk=True),
)
REFERENCE = "full"


@dataclass(frozen=True)
class InfillConfig:
    """Which rows, which model, and how much to type and generate."""

    data: str = "multiline"
    data_dir: str = DEFAULT_DATA_DIR
    limit: int = 40
    seed: int = 0
    typed_chars: int = 8
    max_tokens: int = 128
    model: str = ""
    n_threads: int = 2
    run_tests: bool = True
    out_dir: str = "bench/results"
    variants: tuple[str, ...] = tuple(variant.name for variant in VARIANTS)


@dataclass
class Attempt:
    """One variant's answer to one row, and what producing it cost."""

    text: str
    finish: str
    generated_tokens: int
    prompt_tokens: int
    evaluated_tokens: int
    prompt_ms: float
    generate_ms: float
    # Tokens evaluated for each typed character, the final (real) request included.
    typing_evaluated: list[int] = field(default_factory=list)
    typing_ms: list[float] = field(default_factory=list)
    exact: bool = False
    first_line: bool = False
    agrees_with_full: bool = False
    passed: bool | None = None


# Text and measurement


def normalise(text: str) -> str:
    """Lines without trailing whitespace, leading and trailing blank lines dropped."""
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def first_line(text: str) -> str:
    """The first line of the normalised text."""
    return normalise(text).split("\n")[0]


def suffix_line(suffix: str) -> str:
    """The suffix's first non-empty line, stripped: where a generated middle should end."""
    return next((line.strip() for line in suffix.split("\n") if line.strip()), "")


def suffix_anchor(suffix: str, min_chars: int = ANCHOR_CHARS) -> str:
    """The suffix's opening, in whole lines, with at least `min_chars` non-space characters:
    a middle that ends mid-line (random spans) is over where the model writes this."""
    taken: list[str] = []
    for line in suffix.split("\n"):
        taken.append(line)
        if sum(not char.isspace() for char in "\n".join(taken)) >= min_chars:
            return "\n".join(taken)
    return ""


def suffix_line_stop(suffix: str) -> StopRule:
    """Cut before the first complete generated line that repeats the suffix's first line,
    or before the generated text reaches the suffix's opening verbatim."""
    target = suffix_line(suffix)
    anchor = suffix_anchor(suffix)

    def stop(text: str) -> int | None:
        cuts = [text.find(anchor)] if anchor else []
        start = 0
        while target and (end := text.find("\n", start)) >= 0:
            if text[start:end].strip() == target:
                cuts.append(start)
                break
            start = end + 1
        found = [cut for cut in cuts if cut >= 0]
        return min(found) if found else None

    return stop


def trim_repeated_suffix(text: str, suffix: str) -> str:
    """`text` cut before a last, unterminated line repeating the suffix's first line."""
    cut = suffix_line_stop(suffix)(text + "\n")
    return text if cut is None else text[:cut]


def program_with_tests(row: dict[str, Any], middle: str) -> str:
    """The row's function with `middle` filled in, followed by its tests."""
    return "".join((str(row["prompt"]), middle, str(row["suffix"]), "\n", str(row["test"]),
                    f"\ncheck({row['entry_point']})\n"))


def passes_tests(row: dict[str, Any], middle: str, timeout_s: float = TEST_TIMEOUT_S) -> bool:
    """Run the row's tests on `middle` in a fresh isolated interpreter in an empty folder."""
    with tempfile.TemporaryDirectory(prefix="flashls-infill-") as scratch:
        try:
            completed = subprocess.run(
                [sys.executable, "-I", "-c", program_with_tests(row, middle)], cwd=scratch,
                env={"PATH": os.defpath}, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout_s,
                check=False)
        except subprocess.TimeoutExpired:
            return False
    return completed.returncode == 0


def score(attempt: Attempt, row: dict[str, Any], reference: Attempt | None) -> None:
    """Fill in the text metrics of `attempt` against the canonical middle and `full`."""
    canonical = row["canonical_solution"]
    attempt.exact = normalise(attempt.text) == normalise(canonical)
    attempt.first_line = first_line(attempt.text) == first_line(canonical)
    attempt.agrees_with_full = reference is not None and attempt.text == reference.text


# Rows


def read_rows(data_dir: str, data: str) -> list[dict[str, Any]]:
    """Every row of one data set, in the file's order."""
    path = Path(data_dir) / DATA_FILES[data]
    if not path.is_file():
        raise InfillError(f"{path} not found: download it from "
                          "https://github.com/openai/human-eval-infilling (data/) and pass "
                          "its folder with --data-dir or FLASHLS_INFILL_DATA")
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


def load_rows(config: InfillConfig) -> list[dict[str, Any]]:
    """`config.limit` rows of the chosen data set, sampled with `config.seed`."""
    rows = read_rows(config.data_dir, config.data)
    return random.Random(config.seed).sample(rows, min(config.limit, len(rows)))


def typing_steps(prefix: str, typed_chars: int) -> list[str]:
    """The prefixes a typist passes: where they arrived, then one per typed character."""
    start = max(len(prefix) - typed_chars, 0)
    return [prefix[:end] for end in range(start, len(prefix) + 1)]


def cursor_steps(variant: Variant, prefix: str, suffix: str,
                 typed_chars: int) -> list[tuple[str, str]]:
    """(prefix, suffix) at each step before the real request, which is (prefix, suffix).

    Typing: the prefix grows and the suffix stays. Walking: the characters are already
    there, so what leaves the prefix's end is the start of the suffix."""
    if not variant.reuse_kv_prefix:
        return [(prefix, suffix)]
    return [(typed, prefix[len(typed):] + suffix if variant.walk else suffix)
            for typed in typing_steps(prefix, typed_chars)]


# Engines


def chosen_variants(config: InfillConfig) -> list[Variant]:
    """The variants to run, in their fixed order, `full` (the reference) always among them."""
    return [variant for variant in VARIANTS
            if variant.name in config.variants or variant.name == REFERENCE]


def load_engines(config: InfillConfig) -> dict[str, Any]:
    """One loaded LlamaEngine per variant; raises EngineError with a message for the user."""
    from flashls.engine.llama import LlamaEngine

    engines: dict[str, Any] = {}
    for variant in chosen_variants(config):
        engine = LlamaEngine(Settings(
            model=config.model, n_threads=config.n_threads,
            reuse_kv_prefix=variant.reuse_kv_prefix, reuse_suffix=variant.reuse_suffix))
        engine.load()
        engines[variant.name] = engine
    return engines


def _never(text: str) -> int | None:
    return None


def _generate(engine: Any, prefix: str, suffix: str, max_tokens: int,
              stop: StopRule) -> GenerationResult:
    request = GenerationRequest(prefix=prefix, suffix=suffix, max_tokens=max_tokens, stop=stop)
    result: GenerationResult = engine.generate(request, CancelToken())
    return result


def run_attempt(engine: Any, variant: Variant, row: dict[str, Any],
                config: InfillConfig) -> Attempt:
    """Type (or walk over) the end of the row's prefix (reuse variants only), then generate
    the middle."""
    prefix, suffix = row["prompt"], row["suffix"]
    steps = cursor_steps(variant, prefix, suffix, config.typed_chars)
    typing_evaluated: list[int] = []
    typing_ms: list[float] = []
    for index, (before, after) in enumerate(steps[:-1]):
        started = time.perf_counter()
        warm = _generate(engine, before, after, 1, _never)
        if index > 0:  # the first one is where the typist arrived, not a keystroke
            typing_evaluated.append(warm.timings.evaluated_tokens)
            typing_ms.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    result = _generate(engine, prefix, suffix, config.max_tokens, suffix_line_stop(suffix))
    if len(steps) > 1:
        typing_evaluated.append(result.timings.evaluated_tokens)
        typing_ms.append((time.perf_counter() - started) * 1000)
    timings = result.timings
    return Attempt(
        text=trim_repeated_suffix(result.text, suffix), finish=result.finish,
        generated_tokens=timings.generated_tokens, prompt_tokens=timings.prompt_tokens,
        evaluated_tokens=timings.evaluated_tokens, prompt_ms=timings.prompt_ms,
        generate_ms=timings.generate_ms, typing_evaluated=typing_evaluated,
        typing_ms=typing_ms)


def run_row(engines: dict[str, Any], row: dict[str, Any],
            config: InfillConfig) -> dict[str, Attempt]:
    """Every variant's scored attempt at one row."""
    attempts = {variant.name: run_attempt(engines[variant.name], variant, row, config)
                for variant in chosen_variants(config)}
    verdicts: dict[str, bool] = {}
    for attempt in attempts.values():
        score(attempt, row, attempts[REFERENCE])
        if config.run_tests:
            if attempt.text not in verdicts:
                verdicts[attempt.text] = passes_tests(row, attempt.text)
            attempt.passed = verdicts[attempt.text]
    return attempts


# Summary and output


def _rate(flags: Sequence[bool]) -> float | None:
    return mean([1.0 if flag else 0.0 for flag in flags])


def summarize(attempts: Sequence[Attempt]) -> dict[str, Any]:
    """Accuracy and cost of one variant over all rows."""
    typed = [count for attempt in attempts for count in attempt.typing_evaluated]
    typed_ms = [ms for attempt in attempts for ms in attempt.typing_ms]
    tested = [attempt.passed for attempt in attempts if attempt.passed is not None]
    finishes: dict[str, int] = {}
    for attempt in attempts:
        finishes[attempt.finish] = finishes.get(attempt.finish, 0) + 1
    return {
        "rows": len(attempts),
        "exact_match": _rate([attempt.exact for attempt in attempts]),
        "first_line_match": _rate([attempt.first_line for attempt in attempts]),
        "agreement_with_full": _rate([attempt.agrees_with_full for attempt in attempts]),
        "pass_at_1": _rate(tested),
        "mean_evaluated_tokens_per_typed_char": mean(typed),
        "mean_ms_per_typed_char": mean(typed_ms),
        "mean_final_evaluated_tokens": mean([a.evaluated_tokens for a in attempts]),
        "mean_prompt_tokens": mean([a.prompt_tokens for a in attempts]),
        "mean_final_prompt_ms": mean([a.prompt_ms for a in attempts]),
        "mean_generate_ms": mean([a.generate_ms for a in attempts]),
        "mean_generated_tokens": mean([a.generated_tokens for a in attempts]),
        "finish": finishes,
        "model_s": sum(a.prompt_ms + a.generate_ms + sum(a.typing_ms) for a in attempts) / 1000,
    }


def _progress(index: int, total: int, row: dict[str, Any], attempts: dict[str, Attempt]) -> None:
    marks = " ".join(
        f"{name}={'exact' if a.exact else 'pass' if a.passed else '-'}"
        f"{'' if a.agrees_with_full or name == REFERENCE else '(differs)'}"
        for name, a in attempts.items())
    print(f"[{index + 1}/{total}] {row['task_id']}: {marks}", file=sys.stderr, flush=True)


def build_payload(config: InfillConfig, model: str, attempts: dict[str, list[Attempt]],
                  records: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
    """Settings, summary per variant and per-row results, ready for JSON."""
    return {
        **run_header("infill", config), "complete": complete, "model": model,
        "variants": {variant.name: asdict(variant) for variant in chosen_variants(config)},
        "summary": {name: summarize(done) for name, done in attempts.items()},
        "rows": records,
    }


def run_benchmark(config: InfillConfig,
                  checkpoint: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every variant over the sampled rows; `checkpoint` gets the payload after each row."""
    rows = load_rows(config)
    engines = load_engines(config)
    model = str(engines[REFERENCE].model_path)
    attempts: dict[str, list[Attempt]] = {variant.name: []
                                          for variant in chosen_variants(config)}
    records: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        started = time.perf_counter()
        answers = run_row(engines, row, config)
        for name, attempt in answers.items():
            attempts[name].append(attempt)
        records.append({"task_id": row["task_id"], "row_s": time.perf_counter() - started,
                        "variants": {name: asdict(a) for name, a in answers.items()}})
        _progress(index, len(rows), row, answers)
        if checkpoint is not None and index + 1 < len(rows):
            checkpoint(build_payload(config, model, attempts, records, complete=False))
    return build_payload(config, model, attempts, records, complete=True)


def format_table(payload: dict[str, Any]) -> str:
    """The summary as an aligned text table, one variant a row."""
    header = ("variant", "exact", "first line", "= full", "pass@1", "eval tok/char",
              "ms/char", "final prompt ms", "generate ms")
    lines = [header]
    for name, summary in payload["summary"].items():
        lines.append((
            name, percent(summary["exact_match"]), percent(summary["first_line_match"]),
            percent(summary["agreement_with_full"]), percent(summary["pass_at_1"]),
            fixed(summary["mean_evaluated_tokens_per_typed_char"]),
            fixed(summary["mean_ms_per_typed_char"]), fixed(summary["mean_final_prompt_ms"]),
            fixed(summary["mean_generate_ms"])))
    return "\n".join(aligned(lines))


# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `flashls bench infill`."""
    defaults = InfillConfig()
    parser.add_argument("--data", choices=tuple(DATA_FILES), default=defaults.data,
                        help="HumanEval infilling set (default: %(default)s)")
    parser.add_argument("--data-dir", default=defaults.data_dir, metavar="DIR",
                        help="folder holding the .jsonl.gz files (default: %(default)s, "
                             "or $FLASHLS_INFILL_DATA)")
    parser.add_argument("--limit", type=int, default=defaults.limit, metavar="N",
                        help="rows to sample (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed for sampling rows (default: %(default)s)")
    parser.add_argument("--typed-chars", type=int, default=defaults.typed_chars, metavar="K",
                        help="reuse variants type the prefix's last K characters one at a "
                             "time before generating (default: %(default)s)")
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens,
                        help="most tokens generated for a middle (default: %(default)s)")
    parser.add_argument("--model", default=defaults.model,
                        help="GGUF path or model name (default: the default model)")
    parser.add_argument("--n-threads", type=int, default=defaults.n_threads,
                        help="CPU threads per engine (default: %(default)s)")
    parser.add_argument("--run-tests", action=argparse.BooleanOptionalAction,
                        default=defaults.run_tests,
                        help="execute each row's tests on the generated middle for pass@1, "
                             f"in a subprocess with a {TEST_TIMEOUT_S:.0f} s timeout "
                             "(default: on)")
    parser.add_argument("--out", default=defaults.out_dir, metavar="DIR",
                        help="where infill-<timestamp>.json goes (default: %(default)s)")
    parser.add_argument("--variants", default=",".join(defaults.variants), metavar="LIST",
                        help="comma-separated variants to run besides full "
                             "(default: %(default)s)")


def config_from_arguments(arguments: argparse.Namespace) -> InfillConfig:
    """An InfillConfig from parsed options; nonsense values raise InfillError."""
    if min(arguments.limit, arguments.typed_chars, arguments.max_tokens) < 1:
        raise InfillError("--limit, --typed-chars and --max-tokens must be at least 1")
    if arguments.n_threads < 0:
        raise InfillError("--n-threads must not be negative")
    variants = tuple(name.strip() for name in arguments.variants.split(",") if name.strip())
    unknown = set(variants) - {variant.name for variant in VARIANTS}
    if unknown:
        raise InfillError(f"unknown variant(s) {', '.join(sorted(unknown))}: choose from "
                          f"{', '.join(variant.name for variant in VARIANTS)}")
    return InfillConfig(
        data=arguments.data, data_dir=arguments.data_dir, limit=arguments.limit,
        seed=arguments.seed, typed_chars=arguments.typed_chars,
        max_tokens=arguments.max_tokens, model=arguments.model,
        n_threads=arguments.n_threads, run_tests=arguments.run_tests, out_dir=arguments.out,
        variants=variants)


def handler(arguments: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write the JSON."""
    try:
        config = config_from_arguments(arguments)
        path = report_paths(Path(config.out_dir), "infill")[0]
        payload = run_benchmark(config, lambda partial: write_json(path, partial))
    except (InfillError, EngineError) as error:
        print(f"flashls bench infill: {error}", file=sys.stderr)
        return 1
    write_json(path, payload)
    print(f"flashls bench infill: {len(payload['rows'])} rows of {config.data}, "
          f"{config.typed_chars} typed characters, {payload['model']}")
    print(format_table(payload))
    print(f"wrote {path}")
    return 0


HELP = "accuracy cost of KV-cache reuse on HumanEval infilling"
DESCRIPTION = ("Fill in HumanEval infilling rows with three engines: full "
               "re-evaluation, KV-prefix reuse, and prefix reuse with the cached "
               "suffix shifted into place; compare their middles.")
