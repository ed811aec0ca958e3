"""Scores of `flashls bench repo`: one completion against the masked rest of its line, as
CrossCodeEval and RepoBench score them, and their aggregation over sites. No server here.
"""

from __future__ import annotations

import keyword
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flashls.bench.infill import first_line
from flashls.bench.report import latency_stats, mean, p50_p90

# A word that does not continue a number or another word (`x1f` in `0x1f` is none).
IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_])[A-Za-z_][A-Za-z0-9_]*")
KEYWORDS = frozenset(keyword.kwlist)
SCORE_NAMES = ("exact_match", "first_line_match", "edit_similarity", "identifier_match",
               "identifier_f1")


@dataclass(frozen=True)
class Score:
    """How one completion's first line fares against the target line."""

    exact_match: bool
    first_line_match: bool
    edit_similarity: float
    identifier_match: bool
    identifier_f1: float


def normalise_whitespace(text: str) -> str:
    """Runs of whitespace made one space, the ends stripped."""
    return " ".join(text.split())


def completion_line(completion: str) -> str:
    """The completion's first line, as the editor shows it on the cursor's line."""
    return completion.split("\n", 1)[0].rstrip("\r")


def levenshtein(left: str, right: str) -> int:
    """Edits (insert, delete, substitute one character) turning `left` into `right`."""
    if len(left) < len(right):
        left, right = right, left
    previous = list(range(len(right) + 1))
    for row, left_char in enumerate(left, start=1):
        current = [row]
        for column, right_char in enumerate(right, start=1):
            current.append(min(previous[column] + 1, current[column - 1] + 1,
                               previous[column - 1] + (left_char != right_char)))
        previous = current
    return previous[-1]


def edit_similarity(left: str, right: str) -> float:
    """1 - Levenshtein distance / the longer length; 1.0 for two empty strings."""
    longest = max(len(left), len(right))
    return 1.0 - levenshtein(left, right) / longest if longest else 1.0


def identifiers(text: str) -> list[str]:
    """The identifiers of a line in order, Python keywords left out."""
    return [word for word in IDENTIFIER.findall(text) if word not in KEYWORDS]


def identifier_f1(predicted: Sequence[str], expected: Sequence[str]) -> float:
    """F1 of the two identifier multisets; 1.0 when both are empty."""
    if not predicted and not expected:
        return 1.0
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def score(completion: str, target: str) -> Score:
    """Exact match and edit similarity of the whitespace-normalised first line; first-line
    match as `bench infill` counts it (trailing whitespace and leading blank lines
    ignored); identifier exact match (same identifiers, same order) and F1."""
    predicted = normalise_whitespace(completion_line(completion))
    expected = normalise_whitespace(target)
    predicted_names, expected_names = identifiers(predicted), identifiers(expected)
    return Score(
        exact_match=predicted == expected,
        first_line_match=first_line(completion) == first_line(target),
        edit_similarity=edit_similarity(predicted, expected),
        identifier_match=predicted_names == expected_names,
        identifier_f1=identifier_f1(predicted_names, expected_names))


def summarize(scores: Sequence[Score], latencies_ms: Sequence[float],
              prompt_tokens: Sequence[float]) -> dict[str, Any]:
    """Mean of each score over the sites, and the latencies' and prompt sizes' spread."""
    summary: dict[str, Any] = {"scored": len(scores)}
    for name in SCORE_NAMES:
        summary[name] = mean([float(getattr(one, name)) for one in scores])
    summary["latency_ms"] = latency_stats(latencies_ms)
    summary["prompt_tokens"] = p50_p90(prompt_tokens)
    return summary
