"""Stop rules and clean-up of generated text."""

from __future__ import annotations

from flashls.context import SyntaxTrees, build_context
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


def test_closers_the_text_after_the_cursor_already_has_are_not_doubled() -> None:
    # An editor that auto-closes brackets and quotes leaves them after the cursor.
    assert clean('hello there"', context_at('print(f"|")\n')) == "hello there"
    assert clean("x)", context_at("if check(|):\n")) == "x"
    assert clean("compute(x)", context_at("if check(|):\n")) == "compute(x)"  # balanced
    assert clean("items[0]]", context_at("value = table[|]\n")) == "items[0]"
    # Closers the line needs stay: here the model's `)` closes its own `(`.
    assert clean("len(x)", context_at("total = (|)\n")) == "len(x)"
    assert clean("a)", context_at("print(|)\n")) == "a"
    assert clean("x  # note", context_at("y = |  # note\n")) == "x"  # the rest echoed
    # A line that is unbalanced either way is left as generated.
    assert clean("don't", context_at("say('|')\n")) == "don't"


def test_a_suggestion_writing_past_an_auto_closed_bracket_stops_before_it() -> None:
    # The model writes the call's `)` and goes on; an inserted suggestion cannot replace
    # the editor's `)`, so it ends where that `)` takes over.
    assert clean("payload):", context_at("send(|)\n")) == "payload"
    assert clean("x):", context_at("if check(|):\n")) == "x"
    assert clean("len(x)):", context_at("print(|)\n")) == "len(x)"
    assert clean('name"]:', context_at('value = row["|"]\n')) == "name"
    # Balanced with the rest of the line: left alone.
    assert clean("a, b", context_at("send(|)\n")) == "a, b"
    assert clean("x) + f(y", context_at("send(|)\n")) == "x) + f(y"


def test_a_line_repeating_the_same_few_characters_is_cut_after_the_first() -> None:
    rule = stop_rule(context_at("values = |\n"), max_lines=8)
    assert rule("[a, b, c]") is None
    for copies in (6, 9):
        looping = "foo(" + "bar, " * copies
        cut = rule(looping)
        assert cut is not None and looping[:cut] == "foo(bar, "
    # Rules, separators and long literals are not loops.
    assert rule("'" + "-" * 40) is None and rule("0x" + "0" * 32) is None
    assert rule("'ab" + "=" * 30) is None
    chain = "_bootstrap_external." * 5  # a longer unit: fewer copies make a loop
    cut = rule(chain)
    assert cut is not None and chain[:cut] == "_bootstrap_external."
    assert rule("f(first_argument, first_argument, first_argument)") is None  # three


def test_a_block_repeating_the_same_lines_is_cut_after_the_first_copy() -> None:
    context = context_at("def f(x):\n    |\n")
    rule = stop_rule(context, max_lines=40)
    same = "y = x + 1\n" + "    print(y)\n" * 4
    cut = rule(same)
    assert cut is not None and same[:cut] == "y = x + 1\n    print(y)"
    pairs = "a = 1\n" + "    b = 2\n    c = 3\n" * 3 + "    d"
    cut = rule(pairs)
    assert cut is not None and pairs[:cut] == "a = 1\n    b = 2\n    c = 3"
    # Two copies may be meant, and blank lines are not a loop.
    assert rule("y = 1\n    y += 1\n    y += 1\n    return y\n    ") is None
    assert rule("y = 1\n\n\n    return y\n    ") is None


def parsed_context_at(text: str, multiline: str = "never"):  # type: ignore[no-untyped-def]
    cursor = text.index("|")
    text = text.replace("|", "", 1)
    tree = SyntaxTrees().update("file:///t.py", "python", text)
    return build_context(text, cursor, language_id="python", tree=tree, prefix_budget=500,
                         suffix_budget=500, multiline=multiline)


CONDITION = ("if (\n"
             "    isinstance(obj, type)\n"
             "    and issubclass(obj, case.|\n"
             "    and obj not in (case.TestCase, case.FunctionTestCase)\n"
             "):\n"
             "    pass\n")


def test_brackets_the_lines_below_close_are_not_closed_again() -> None:
    context = parsed_context_at(CONDITION)
    assert context.closable == 1  # of `if (` and `issubclass(`, the `(` of `if` closes below
    assert clean("TestCase)):", context) == "TestCase)"
    assert clean("TestCase)", context) == "TestCase)"
    call = parsed_context_at("result = compute(\n    first,\n    second|\n)\n")
    assert call.closable == 0
    assert clean(")", call) == ""  # the `)` is on the next line already
    assert clean(", third)", call) == ", third"
    assert clean(', ")", third)', call) == ', ")", third'  # a quoted bracket closes nothing
    assert context_at("x = f(|\n)\n").closable is None  # no parse tree, no limit


def context_in(language_id: str, text: str):  # type: ignore[no-untyped-def]
    cursor = text.index("|")
    text = text.replace("|", "", 1)
    tree = SyntaxTrees().update("file:///t", language_id, text)
    return build_context(text, cursor, language_id=language_id, tree=tree, prefix_budget=500,
                         suffix_budget=500, multiline="never")


def test_a_comma_that_would_make_a_python_statement_a_tuple_is_dropped() -> None:
    in_class = parsed_context_at("class MessageIDHeader:\n"
                                 "    max_count = 1\n"
                                 "    value_parser = staticmethod(parser.|\n"
                                 "\n"
                                 "    def parse(self):\n"
                                 "        pass\n")
    assert in_class.statement_depth == 1
    assert clean("parse_message_id),", in_class) == "parse_message_id)"
    assert clean("parse_message_id, extra),", in_class) == "parse_message_id, extra)"
    assert clean("parse_message_id,", in_class) == "parse_message_id,"  # `(` still open
    assert clean("parse_message_id)", in_class) == "parse_message_id)"
    assert clean("f(')', x),", in_class) == "f(')', x),"  # a quoted `)` closes nothing
    returned = parsed_context_at("def decode(encoded):\n"
                                 "    if len(encoded) % 4:\n"
                                 "        return encoded, [errors.|\n")
    assert clean("InvalidBase64LengthDefect()],", returned) == "InvalidBase64LengthDefect()]"
    blank = parsed_context_at("x = compute(\n    1,\n    2)\n|\n")
    assert blank.statement_depth == 0  # the statement above is closed
    assert clean("y = f(x),", blank) == "y = f(x)"
    assert clean(",", blank) == ""


def test_a_comma_inside_brackets_opened_lines_above_is_kept() -> None:
    table = parsed_context_at('TABLE = {\n    "a": f(1),\n    "b": g(|\n}\n')
    assert table.statement_depth == 2  # counted from `TABLE = {`, not from the line
    assert clean("2),", table) == "2),"
    # A literal longer than the lines scanned: its opening line is not found, and
    # nothing is cut.
    long_list = "NAMES = [\n" + "".join(f"    'n{i}',\n" for i in range(60)) + "    |\n]\n"
    deep = parsed_context_at(long_list)
    assert deep.statement_depth is None
    assert clean("'last',", deep) == "'last',"
    in_string = parsed_context_at('def f(a, b):\n    """Takes a,|\n    and b."""\n')
    assert in_string.statement_depth is None
    assert clean(" b,", in_string) == " b,"
    # Where `;` ends statements, a line's last comma goes on with the next line.
    assert context_in("javascript", "let a = 1,|\n").statement_depth is None
    assert clean("b = f(x),", context_in("javascript", "let a = 1,\n  |\n")) == "b = f(x),"
    assert context_at("x = f(|\n").statement_depth is None  # no parse tree: not known
