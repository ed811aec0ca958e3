"""Stop rules while generating and clean-up after: where a suggestion ends, what it drops."""

from __future__ import annotations

from flashls.context import CompletionContext
from flashls.engine.base import StopRule


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
            offset += len(line) + 1
        if text.endswith("\n\n\n"):
            return len(text.rstrip("\n"))
        return None

    return block_stop


def _single_line_stop(text: str) -> int | None:
    newline = text.find("\n")
    return None if newline < 0 else newline


def _whole_words(text: str) -> str:
    """Text cut short by a deadline, without its possibly half-generated last word."""
    cut = len(text)
    while cut > 0 and (text[cut - 1].isalnum() or text[cut - 1] == "_"):
        cut -= 1
    return text[:cut] if text[:cut].strip() else text


def clean(text: str, context: CompletionContext, *, cut_short: bool = False) -> str:
    """The suggestion as shown: no trailing blanks, no echo of text after the cursor, and
    no half word when generation was `cut_short` by its deadline."""
    if cut_short:
        text = _whole_words(text)
    if not context.multiline:
        text = text.split("\n", 1)[0]
    text = text.rstrip()
    if not context.multiline:
        rest = context.line_suffix.strip()
        if rest and text.endswith(rest):
            text = text[:len(text) - len(rest)].rstrip()
    if not text.strip():
        return ""
    return text
