"""What the user of `flashls bench session` saw, worked out from the timeline of one run:
which suggestion was on screen at each keystroke and how much of it was right, the longest
stretch without one, how long each place waited for its first one, and the request, token
and memory figures.

Pure functions over logged records; nothing here talks to a server or keeps time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flashls.bench.report import p50_p90, rate

THROUGHPUT_MIN_TOKENS = 64  # smaller prompt evaluations are dominated by fixed costs
INDEX_BUCKETS = 12  # keystrokes 1..12 at a place each get their figures, later ones "13+"
LAST_BUCKET = f"{INDEX_BUCKETS + 1}+"
_BACKGROUND_TOKENS = re.compile(r"evaluated (\d+) prompt tokens")


@dataclass(frozen=True)
class RequestLog:
    """One inline completion request of the session; times in ms from the session's start.

    `typed` counts the characters re-typed at the place when it was sent (-1: before the
    tail was deleted). `suggestion` is the first item's text after the cursor (what the
    item repeats of the typed line removed), "" for an empty answer, None without one.
    """

    visit: int
    typed: int
    sent_ms: float
    outcome: str  # answered | cancelled | error | timeout
    arrived_ms: float | None = None
    cancelled_ms: float | None = None  # when the bench sent $/cancelRequest for it
    suggestion: str | None = None
    source: str | None = None  # "model" or "cache", from the server's flashls/status
    finish: str | None = None
    evaluated_tokens: int | None = None
    prompt_tokens: int | None = None
    prompt_ms: float | None = None

    @property
    def latency_ms(self) -> float | None:
        """Request written to response read, for answered requests (late ones included)."""
        if self.outcome != "answered" or self.arrived_ms is None:
            return None
        return self.arrived_ms - self.sent_ms

    def shows_from(self) -> float | None:
        """When the editor would put this answer on screen; None if it never would: not
        an answer, asked before the tail was deleted, or arrived after being cancelled."""
        if self.outcome != "answered" or self.arrived_ms is None or self.typed < 0:
            return None
        if self.cancelled_ms is not None and self.arrived_ms >= self.cancelled_ms:
            return None
        return self.arrived_ms


@dataclass(frozen=True)
class VisitLog:
    """When each character was typed at one visit, and when the user left: the first
    `len(keystroke_ms)` characters of `removed` were typed, one keystroke each."""

    visit: int
    is_return: bool
    removed: str  # the line's text deleted at the cut: what the line holds after the cursor
    keystroke_ms: tuple[float, ...]
    end_ms: float


@dataclass(frozen=True)
class KeystrokeView:
    """What was on screen at the end of one keystroke (just before the next, or on leaving),
    judged against `rest`, the line's text after the cursor (trailing blanks dropped).

    `line` is the first line of the shown text, trailing blanks dropped: visible when it is
    non-empty, strict when it is exactly `rest`, lenient when one starts with the other,
    and `accept_chars` characters of it are right (its common prefix with `rest`).
    """

    typed: int
    shown: str | None  # the suggestion's text still to accept, None when nothing shows
    rest: str

    @property
    def line(self) -> str:
        """The shown text's first line, trailing blanks dropped; "" when nothing shows."""
        return first_line(self.shown)

    @property
    def visible(self) -> bool:
        """Something shows on this line."""
        return self.line != ""

    @property
    def strict(self) -> bool:
        """The line shown is the rest of the line, exactly (nothing, at the line's end)."""
        return self.line == self.rest

    @property
    def lenient(self) -> bool:
        """Something shows, and either it or the rest of the line starts with the other."""
        return self.visible and (self.rest.startswith(self.line)
                                 or self.line.startswith(self.rest))

    @property
    def accept_chars(self) -> int:
        """Characters of the shown line the user could accept: those the line holds next."""
        return common_prefix_length(self.line, self.rest)


@dataclass
class PlaceResult:
    """One visit's keystrokes and its time to the first suggestion."""

    visit: int
    is_return: bool
    keystrokes: list[KeystrokeView] = field(default_factory=list)
    first_suggestion_ms: float | None = None  # from the first keystroke; None: none showed
    first_suggestion_source: str | None = None  # "model" or "cache": who answered it
    first_answer_tokens: int | None = None  # evaluated tokens of the place's first model answer

    @property
    def blank_run(self) -> int:
        """The longest stretch of keystrokes here with nothing on screen."""
        return longest_blank_run(self.keystrokes)


def newest_answer(answers: Sequence[RequestLog], typed: int,
                  at_ms: float) -> RequestLog | None:
    """The answer on screen at `at_ms` with `typed` characters typed: the newest one
    shown by then (it may no longer agree with the typing; see `shown_at`)."""
    newest: RequestLog | None = None
    for answer in answers:
        since = answer.shows_from()
        if since is None or since > at_ms or answer.typed > typed:
            continue
        if newest is None or since >= (newest.arrived_ms or 0.0):
            newest = answer
    return newest


def shown_at(answers: Sequence[RequestLog], removed: str, typed: int,
             at_ms: float) -> str | None:
    """The suggestion on screen at `at_ms` with `typed` characters typed, as VS Code keeps
    showing it: the newest answer shown by then, if what was typed since it was asked is a
    prefix of it and something is left; the part still to accept, else None."""
    newest = newest_answer(answers, typed, at_ms)
    if newest is None or not newest.suggestion:
        return None
    typed_since = removed[newest.typed:typed]
    text = newest.suggestion
    if not text.startswith(typed_since) or len(text) <= len(typed_since):
        return None
    return text[len(typed_since):]


def first_line(text: str | None) -> str:
    """The first line of `text`, trailing whitespace dropped; "" for None."""
    return "" if text is None else text.split("\n", 1)[0].rstrip()


def common_prefix_length(first: str, second: str) -> int:
    """How many leading characters the two strings share."""
    count = 0
    for one, other in zip(first, second, strict=False):
        if one != other:
            break
        count += 1
    return count


def keystroke_views(visit: VisitLog, answers: Sequence[RequestLog]) -> list[KeystrokeView]:
    """What showed at the end of each keystroke of one visit."""
    checks = [*visit.keystroke_ms[1:], visit.end_ms]
    return [KeystrokeView(typed, shown_at(answers, visit.removed, typed, at_ms),
                          visit.removed[typed:].rstrip())
            for typed, at_ms in enumerate(checks, start=1)]


def longest_blank_run(views: Sequence[KeystrokeView]) -> int:
    """The most consecutive keystrokes at whose end nothing was visible."""
    longest = current = 0
    for view in views:
        current = 0 if view.visible else current + 1
        longest = max(longest, current)
    return longest


def first_suggestion(visit: VisitLog,
                     answers: Sequence[RequestLog]) -> tuple[float, RequestLog] | None:
    """From the first keystroke to the first moment a visible suggestion (one consistent
    with the typing whose first line is not empty) is on screen, and the answer that
    showed it; None if none showed before the user moved on.

    The screen changes only when a keystroke lands (which can hide a suggestion) or an
    answer arrives (which can show one), so those are the moments to look at.
    """
    if not visit.keystroke_ms:
        return None
    first = visit.keystroke_ms[0]
    arrivals = sorted(t for t in (a.shows_from() for a in answers)
                      if t is not None and first < t <= visit.end_ms)
    for moment in [first, *arrivals]:
        typed = sum(at <= moment for at in visit.keystroke_ms)
        if first_line(shown_at(answers, visit.removed, typed, moment)):
            shown = newest_answer(answers, typed, moment)
            assert shown is not None
            return moment - first, shown
    return None


def place_results(visits: Sequence[VisitLog],
                  requests: Sequence[RequestLog]) -> list[PlaceResult]:
    """Keystroke views, first-suggestion time and first-answer tokens of every visit."""
    by_visit: dict[int, list[RequestLog]] = {}
    for request in requests:
        by_visit.setdefault(request.visit, []).append(request)
    results = []
    for visit in visits:
        answers = by_visit.get(visit.visit, [])
        model = sorted((a for a in answers if a.source == "model" and a.arrived_ms is not None
                        and a.evaluated_tokens is not None), key=lambda a: a.sent_ms)
        first = first_suggestion(visit, answers)
        results.append(PlaceResult(
            visit.visit, visit.is_return, keystroke_views(visit, answers),
            None if first is None else first[0], None if first is None else first[1].source,
            model[0].evaluated_tokens if model else None))
    return results


def keystroke_figures(views: Sequence[KeystrokeView]) -> dict[str, Any]:
    """Counts and rates of visible, strict and lenient keystrokes, and accept chars."""
    counts = {"keystrokes": len(views), "visible": sum(v.visible for v in views),
              "strict": sum(v.strict for v in views), "lenient": sum(v.lenient for v in views),
              "accept_chars": sum(v.accept_chars for v in views)}
    return {**counts, **{f"{name}_rate": rate(counts[name], len(views))
                         for name in ("visible", "strict", "lenient")},
            "accept_chars_per_keystroke": rate(counts["accept_chars"], len(views))}


def index_bucket(typed: int) -> str:
    """The bucket of the `typed`-th keystroke at a place: "1" .. "12", then "13+"."""
    return str(typed) if typed <= INDEX_BUCKETS else LAST_BUCKET


def by_index(views: Sequence[KeystrokeView]) -> dict[str, dict[str, Any]]:
    """`keystroke_figures` per keystroke index at a place, every bucket present."""
    buckets: dict[str, list[KeystrokeView]] = {
        index_bucket(typed): [] for typed in range(1, INDEX_BUCKETS + 2)}
    for view in views:
        buckets[index_bucket(view.typed)].append(view)
    return {bucket: keystroke_figures(group) for bucket, group in buckets.items()}


def blank_run_summary(places: Sequence[PlaceResult]) -> dict[str, Any]:
    """The longest blank run per place: p50, p90, max, and how many places had each length."""
    runs = [place.blank_run for place in places]
    histogram: dict[str, int] = {}
    for run in sorted(runs):
        histogram[str(run)] = histogram.get(str(run), 0) + 1
    return {**p50_p90(float(run) for run in runs), "max": max(runs) if runs else None,
            "histogram": histogram}


def group_summary(places: Sequence[PlaceResult]) -> dict[str, Any]:
    """Every keystroke and place figure over one group of places (new ones, or returns)."""
    views = [view for place in places for view in place.keystrokes]
    return {
        "places": len(places), **keystroke_figures(views), "by_index": by_index(views),
        "blank_run": blank_run_summary(places),
        "first_suggestion_ms": p50_p90(p.first_suggestion_ms for p in places),
        "never_shown": sum(p.first_suggestion_ms is None for p in places),
        "first_from_cache": sum(p.first_suggestion_source == "cache" for p in places),
        "first_answer_tokens": p50_p90(
            None if p.first_answer_tokens is None else float(p.first_answer_tokens)
            for p in places)}


def visibility_summary(places: Sequence[PlaceResult]) -> dict[str, Any]:
    """`group_summary` of new places and of returns, apart: a return re-types what was
    typed there before, which the server may still hold."""
    return {kind: group_summary([p for p in places if p.is_return == returns])
            for kind, returns in (("new", False), ("return", True))}


def request_summary(requests: Sequence[RequestLog]) -> dict[str, Any]:
    """Counts by outcome, answers in time and late, empty answers, latency p50/p90."""
    answered = [r for r in requests if r.outcome == "answered"]
    in_time = sum(r.arrived_ms is not None and r.shows_from() is not None for r in answered)
    counts = {outcome: sum(r.outcome == outcome for r in requests)
              for outcome in ("answered", "cancelled", "error", "timeout")}
    return {
        "sent": len(requests), **counts,
        "answered_before_cancel": sum(r.cancelled_ms is None or r.arrived_ms is None
                                      or r.arrived_ms < r.cancelled_ms for r in answered),
        "answered_in_time": in_time,
        "empty": sum(not r.suggestion for r in answered),
        "cancel_sent": sum(r.cancelled_ms is not None for r in requests),
        "cache_answers": sum(r.source == "cache" for r in answered),
        "latency_ms": p50_p90(r.latency_ms for r in answered),
    }


def token_summary(statuses: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Prompt tokens the server evaluated, from its `flashls/status` notifications.

    Answers carry `timings`; background warm-ups say "evaluated N prompt tokens". The
    prompt throughput is the sum of evaluated tokens over the sum of `prompt_ms` of the
    answers that evaluated at least THROUGHPUT_MIN_TOKENS.
    """
    timed = [s["timings"] for s in statuses if isinstance(s.get("timings"), dict)]
    evaluated = sum(int(t.get("evaluated_tokens", 0)) for t in timed)
    background = 0
    for status in statuses:
        match = _BACKGROUND_TOKENS.search(str(status.get("message", "")))
        if match and not isinstance(status.get("timings"), dict):
            background += int(match.group(1))
    big = [t for t in timed if t.get("evaluated_tokens", 0) >= THROUGHPUT_MIN_TOKENS
           and t.get("prompt_ms", 0) > 0]
    big_ms = sum(float(t["prompt_ms"]) for t in big)
    return {
        "answers_with_timings": len(timed), "evaluated_tokens": evaluated,
        "prompt_tokens": sum(int(t.get("prompt_tokens", 0)) for t in timed),
        "background_evaluated_tokens": background,
        "prompt_tokens_per_s": (sum(int(t["evaluated_tokens"]) for t in big) / big_ms * 1000
                                if big_ms else None),
        "throughput_samples": len(big),
        "states": _count_states(statuses),
    }


def _count_states(statuses: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in statuses:
        state = str(status.get("state"))
        counts[state] = counts.get(state, 0) + 1
    return counts


def rss_summary(samples_mb: Sequence[float | None]) -> dict[str, float | None]:
    """RSS before the session (after warm-up), after it (before shutdown) and its peak."""
    present = [sample for sample in samples_mb if sample is not None]
    return {"before": samples_mb[0] if samples_mb else None,
            "after": samples_mb[-1] if samples_mb else None,
            "peak": max(present) if present else None}
