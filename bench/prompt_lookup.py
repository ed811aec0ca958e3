"""Would prompt-lookup speculative decoding pay on this machine? A measurement, not a feature.

Prompt lookup drafts the next tokens by finding the last few generated tokens earlier in
the prompt and copying what followed; one batched decode then checks the draft, and the
greedy answer is unchanged. It wins only when drafts are accepted often enough to pay for
the larger batches. This script takes the greedy middles that `flashls bench infill`
recorded (the `full` variant), replays lookup over their tokens to count what would be
accepted, and prices every step with decode times it measures on the default model:

    .venv/bin/python bench/prompt_lookup.py bench/reports/infill-<stamp>.json

It prints the acceptance rate and the modelled decode time with and without lookup for
each draft length, and writes them next to the input as `<input>.lookup.json`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from flashls.bench.infill import DATA_FILES, DEFAULT_DATA_DIR
from flashls.models import resolve_model_path
from flashls.settings import Settings

NGRAM_SIZES = (3, 2)  # longest first: a longer match drafts more reliably
DRAFT_LENGTHS = (2, 4, 8)
BATCH_SIZES = (1, 2, 3, 5, 9)
CONTEXT_TOKENS = 400  # decode times are measured after this many cached tokens


def lookup_draft(tokens: list[int], length: int) -> list[int]:
    """The tokens that followed the latest earlier occurrence of the trailing n-gram."""
    for size in NGRAM_SIZES:
        if len(tokens) <= size:
            continue
        tail = tokens[-size:]
        for start in range(len(tokens) - size - 1, -1, -1):
            if tokens[start:start + size] == tail:
                return tokens[start + size:start + size + length]
    return []


def replay(prompt: list[int], output: list[int], length: int) -> list[tuple[int, int]]:
    """Per decoding step: (batch size, tokens gained) if drafts of `length` were checked."""
    steps = []
    position = 0
    while position < len(output):
        draft = lookup_draft(prompt + output[:position], length)
        accepted = 0
        while (accepted < len(draft) and position + accepted < len(output)
               and draft[accepted] == output[position + accepted]):
            accepted += 1
        # The batch holds the last accepted token plus the draft; the model's own token
        # after the accepted part comes free with it.
        steps.append((1 + len(draft), min(accepted + 1, len(output) - position)))
        position += accepted + 1
    return steps


def measure_batches(llm: Any, sample: list[int]) -> dict[int, float]:
    """Median milliseconds of one decode of each batch size after CONTEXT_TOKENS cells."""
    import llama_cpp

    memory = llm._ctx.memory
    llm._batch.set_batch(batch=sample[:CONTEXT_TOKENS], n_past=0, logits_all=False)
    llm._ctx.decode(llm._batch)
    costs = {}
    for size in BATCH_SIZES:
        times = []
        for _ in range(7):
            llama_cpp.llama_memory_seq_rm(memory, 0, CONTEXT_TOKENS, -1)
            started = time.perf_counter()
            llm._batch.set_batch(batch=sample[CONTEXT_TOKENS:CONTEXT_TOKENS + size],
                                 n_past=CONTEXT_TOKENS, logits_all=True)
            llm._ctx.decode(llm._batch)
            times.append((time.perf_counter() - started) * 1000)
        costs[size] = statistics.median(times)
    return costs


def batch_cost(costs: dict[int, float], size: int) -> float:
    """Linear interpolation between measured batch sizes."""
    sizes = sorted(costs)
    if size in costs:
        return costs[size]
    upper = next(s for s in sizes if s > size)
    lower = max(s for s in sizes if s < size)
    weight = (size - lower) / (upper - lower)
    return costs[lower] + weight * (costs[upper] - costs[lower])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("infill_json", type=Path)
    parser.add_argument("--n-threads", type=int, default=2)
    arguments = parser.parse_args(argv)
    payload = json.loads(arguments.infill_json.read_text())
    data = Path(payload["config"].get("data_dir", DEFAULT_DATA_DIR)) / DATA_FILES[
        payload["config"]["data"]]
    with gzip.open(data, "rt", encoding="utf-8") as stream:
        rows = {row["task_id"]: row for row in map(json.loads, stream)}

    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(resolve_model_path(Settings().model)), n_ctx=2048,
                          n_threads=arguments.n_threads,
                          n_threads_batch=arguments.n_threads, verbose=False)
    tokenize = lambda text: list(llm.tokenize(text.encode(), add_bos=False))  # noqa: E731
    pairs = []
    for record in payload["rows"]:
        row, text = rows[record["task_id"]], record["variants"]["full"]["text"]
        if text:
            pairs.append((tokenize(row["prompt"]) + tokenize(row["suffix"]), tokenize(text)))
    sample = tokenize((Path(llama_cpp.__file__).parent / "llama.py").read_text())
    costs = measure_batches(llm, sample)
    generated = sum(len(output) for _, output in pairs)
    plain_ms = generated * costs[1]
    report: dict[str, Any] = {"rows": len(pairs), "generated_tokens": generated,
                              "batch_ms": costs, "plain_ms": plain_ms, "draft_lengths": {}}
    print(f"{len(pairs)} middles, {generated} tokens; decode ms by batch size: "
          + ", ".join(f"{size}: {cost:.1f}" for size, cost in costs.items()))
    for length in DRAFT_LENGTHS:
        steps = [step for prompt, output in pairs for step in replay(prompt, output, length)]
        drafted = sum(size - 1 for size, _ in steps)
        accepted = sum(gained - 1 for _, gained in steps)
        lookup_ms = sum(batch_cost(costs, size) for size, _ in steps)
        report["draft_lengths"][length] = {
            "steps": len(steps), "drafted": drafted, "accepted": accepted,
            "acceptance": accepted / drafted if drafted else None, "lookup_ms": lookup_ms,
            "speed_up": plain_ms / lookup_ms}
        print(f"draft {length}: {accepted}/{drafted} drafted tokens accepted, "
              f"{len(steps)} decodes instead of {generated}; modelled decode time "
              f"{lookup_ms / 1000:.1f} s vs {plain_ms / 1000:.1f} s "
              f"(x{plain_ms / lookup_ms:.2f})")
    out = arguments.infill_json.with_suffix(".lookup.json")
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
