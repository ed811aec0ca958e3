"""Stop rules while generating and clean-up after: where a suggestion ends, what it drops.

Guards against what small models do wrong at a cursor: a block that ends where the code
after the cursor goes on (dedent, or the next line repeated), degenerate repetition (the
same lines, or the same few characters, again and again), and closing brackets or quotes
that the text after the cursor already has, on its line or below it, and a comma that
would end a Python statement (making it a tuple).
"""

from __future__ import annotations

from collections.abc import Iterator

from flashls.context import CompletionContext
from flashls.engine.base import StopRule

REPEATED_LINES = 3  # a run of this many copies of the same 1-3 lines is degenerate
REPEATED_UNITS = 6  # ... of the same 2-16 characters within a line
REPEATED_LONG_UNITS = 4  # ... of the same 17-48 characters (`_bootstrap_external.`)
MIN_REPEATED_CHARS = 16
CLOSERS = frozenset(")]}\"'`")
_CLOSER_CHARS = "".join(sorted(CLOSERS))
_OPENER_OF = {")": "(", "]": "[", "}": "{"}


def _indent_width(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _next_suffix_line(context: CompletionContext) -> str:
    for line in context.suffix.split("\n")[1:]:
        if line.strip():
            return line.strip()
    return ""


def stop_rule(context: CompletionContext, max_lines: int) -> StopRule:
    """Where to cut generated text: one line, or a block that ends on dedent."""
    if not context.multiline:
        return _single_line_stop
    next_line = _next_suffix_line(context)

    def block_stop(text: str) -> int | None:
        lines = text.split("\n")
        complete = lines[:-1]  # the last line may still grow
        offset = 0
        block_indent: int | None = None
        for number, line in enumerate(complete):
            whole = context.line_prefix + line if number == 0 else line
            if line.strip():
                if block_indent is None:
                    block_indent = _indent_width(whole)
                elif _indent_width(whole) < block_indent:
                    return max(offset - 1, 0)
                if number > 0 and len(line.strip()) > 3 and line.strip() == next_line:
                    return max(offset - 1, 0)
            if number >= max_lines:
                return max(offset - 1, 0)
            repeated = _repeated_lines(complete[:number + 1])
            if repeated is not None:
                return max(sum(len(kept) + 1 for kept in complete[:repeated]) - 1, 0)
            offset += len(line) + 1
        if text.endswith("\n\n\n"):
            return len(text.rstrip("\n"))
        return None

    return block_stop


def _repeated_lines(lines: list[str]) -> int | None:
    """How many of `lines` to keep when they end in REPEATED_LINES copies of the same one to
    three non-blank lines (the first copy is kept); None when they do not."""
    for period in (1, 2, 3):
        run = period * REPEATED_LINES
        if len(lines) < run:
            break
        tail = [line.strip() for line in lines[-run:]]
        if any(tail[:period]) and all(tail[i] == tail[i % period] for i in range(run)):
            return len(lines) - run + period
    return None


def repeated_tail(text: str) -> int | None:
    """Where to cut a line that ends in REPEATED_UNITS copies of the same 2-16 characters,
    or REPEATED_LONG_UNITS of the same 17-48, (at least MIN_REPEATED_CHARS, with a letter
    or digit in them: not `-----` or `0000` rules and literals): after the first copy of
    the whole run. None when it does not."""
    for period in range(2, 49):
        copies = REPEATED_UNITS if period <= 16 else REPEATED_LONG_UNITS
        run = period * copies
        if len(text) < max(run, MIN_REPEATED_CHARS):
            continue
        unit = text[-period:]
        if not any(char.isalnum() for char in unit) or len(set(unit)) == 1:
            continue
        if text.endswith(unit * copies):
            start = len(text) - run
            while text.endswith(unit, 0, start):  # the run's earlier copies
                start -= period
            return start + period
    return None


def _single_line_stop(text: str) -> int | None:
    newline = text.find("\n")
    if newline >= 0:
        return newline
    return repeated_tail(text)


def _whole_words(text: str) -> str:
    """Text cut short by a deadline, without its possibly half-generated last word."""
    cut = len(text)
    while cut > 0 and (text[cut - 1].isalnum() or text[cut - 1] == "_"):
        cut -= 1
    return text[:cut] if text[:cut].strip() else text


def over_closed(line: str) -> bool:
    """Whether a line closes more brackets than it opens, or has an odd quote count (a
    rough count: brackets and quotes inside strings count too)."""
    depth = {opener: 0 for opener in _OPENER_OF.values()}
    for char in line:
        if char in depth:
            depth[char] += 1
        elif char in _OPENER_OF:
            depth[_OPENER_OF[char]] -= 1
            if depth[_OPENER_OF[char]] < 0:
                return True
    return any(line.count(quote) % 2 for quote in "\"'`")


def _without_doubled_closers(text: str, line_prefix: str, rest: str) -> str:
    """`text` without the closing brackets and quotes at its end that the text after the
    cursor (`rest`) begins with, when keeping them would leave the line over-closed and
    dropping them would not: `print(f"hi|")` + `there")` gives `there`."""
    overlap = 0
    for size in range(min(len(text), len(rest)), 0, -1):
        if text.endswith(rest[:size]) and set(rest[:size]) <= CLOSERS:
            overlap = size
            break
    if not overlap:
        return _cut_at_suffix_closers(text, line_prefix, rest)
    kept = text[:len(text) - overlap]
    if over_closed(line_prefix + text + rest) and not over_closed(line_prefix + kept + rest):
        return kept
    return text


def _cut_at_suffix_closers(text: str, line_prefix: str, rest: str) -> str:
    """`text` up to where it writes the closers that `rest` begins with, when it goes on
    past them and so over-closes the line: `foo(|)` + `payload):` gives `payload`, as an
    inserted suggestion cannot replace the editor's auto-closed `)`. The latest such
    place that leaves the line not over-closed wins (`len(x)):` gives `len(x)`)."""
    closers = rest[:len(rest) - len(rest.lstrip(_CLOSER_CHARS))]
    if not closers or not over_closed(line_prefix + text + rest):
        return text
    for cut in range(len(text) - len(closers), 0, -1):
        kept = text[:cut].rstrip()
        if (text.startswith(closers, cut) and kept.strip()
                and not over_closed(line_prefix + kept + rest)):
            return kept
    return text


def _bracket_steps(text: str) -> Iterator[tuple[int, int]]:
    """(offset, +1 for an opener or -1 for a closer) of the brackets in `text` outside
    quotes on one line (a rough count: a quote inside a string ends it)."""
    quote = ""
    for at, char in enumerate(text):
        if quote:
            if char == quote or char == "\n":
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char in _OPENER_OF.values():
            yield at, 1
        elif char in _OPENER_OF:
            yield at, -1


def _cut_closing_below(text: str, closable: int) -> str:
    """`text` up to the closer that would close one of the brackets the code below the
    cursor closes (more than `closable` of those open at the cursor), blanks before it
    dropped (`TestCase)):` with one closable gives `TestCase)`)."""
    depth = 0
    for at, step in _bracket_steps(text):
        depth += step
        if depth < -closable:
            return text[:at].rstrip()
    return text


def _without_statement_comma(text: str, statement_depth: int) -> str:
    """`text` without a comma at its end that would end the statement, with no bracket
    of it left open (`value = staticmethod(parse),` gives `value = staticmethod(parse)`):
    such a comma makes the statement a tuple, which code almost never means."""
    if not text.endswith(","):
        return text
    if statement_depth + sum(step for _, step in _bracket_steps(text)) != 0:
        return text
    return text[:-1].rstrip()


def clean(text: str, context: CompletionContext, *, cut_short: bool = False) -> str:
    """The suggestion as shown: no trailing blanks, no echo of text after the cursor, and
    no half word when generation was `cut_short` by its deadline."""
    if cut_short:
        text = _whole_words(text)
    if not context.multiline:
        text = text.split("\n", 1)[0]
    text = text.rstrip()
    if context.closable is not None:
        text = _cut_closing_below(text, context.closable)
    if context.statement_depth is not None:
        text = _without_statement_comma(text, context.statement_depth)
    if not context.multiline:
        rest = context.line_suffix.strip()
        if rest and text.endswith(rest) and not set(rest) <= CLOSERS:
            text = text[:len(text) - len(rest)].rstrip()  # the rest of the line echoed
        else:
            text = _without_doubled_closers(text, context.line_prefix, rest)
    if not text.strip():
        return ""
    return text
