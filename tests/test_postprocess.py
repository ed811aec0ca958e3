"""Stop rules and clean-up of generated text."""

from __future__ import annotations

from flashls.context import build_context
from flashls.postprocess import clean, stop_rule


def context_at(text: str, marker: str = "|"):  # type: ignore[no-untyped-def]
    cursor = text.index(marker)
    text = text.replace(marker, "", 1)
    return build_context(text, cursor, language_id="python", tree=None, prefix_budget=500,
                         suffix_budget=500, multiline="auto")


def test_single_line_stops_at_newline_and_drops_echoed_suffix() -> None:
    context = context_at("print(|)\n")
    rule = stop_rule(context, max_lines=8)
    assert rule("value") is None
    assert rule("value)\nmore") == len("value)")
    assert clean("value)", context) == "value"
    assert clean("   \n", context) == ""


def test_block_stops_on_dedent_and_line_cap() -> None:
    context = context_at("def f(x):\n    |\n\ndef g():\n    pass\n")
    assert context.multiline
    rule = stop_rule(context, max_lines=8)
    generated = "y = x + 1\n    return y\n\ndef h():\n"
    cut = rule(generated)
    assert cut is not None and generated[:cut] == "y = x + 1\n    return y\n"
    assert clean(generated[:cut], context) == "y = x + 1\n    return y"
    capped = stop_rule(context, max_lines=2)("a = 1\n    b = 2\n    c = 3\n")
    assert capped is not None


def test_block_stops_before_repeating_the_next_line() -> None:
    context = context_at("def f(x):\n    |\n    return total\n")
    rule = stop_rule(context, max_lines=8)
    generated = "total = x * 2\n    return total\n"
    cut = rule(generated)
    assert cut is not None and generated[:cut] == "total = x * 2"


def test_deadline_answers_end_on_a_whole_word() -> None:
    context = context_at("value = |\n")
    assert clean("compute(alpha, bet", context, cut_short=True) == "compute(alpha,"
    assert clean("compute", context, cut_short=True) == "compute"  # nothing to fall back to
    assert clean("compute(alpha, bet", context) == "compute(alpha, bet"
