"""The speculative suggestion cache: typing along, backspacing, unrelated edits, bounds."""

from __future__ import annotations

from flashls.cache import SuggestionCache

TEXT = "def area(r):\n    return \n\nprint(area(2))\n"
CURSOR = TEXT.index("return ") + len("return ")


def typed(text: str, cursor: int, chars: str) -> tuple[str, int]:
    return text[:cursor] + chars + text[cursor:], cursor + len(chars)


def test_typing_along_a_suggestion_returns_its_rest() -> None:
    cache = SuggestionCache(16)
    cache.remember("u", TEXT, CURSOR, "3.14 * r * r")
    text, cursor = typed(TEXT, CURSOR, "3.1")
    assert cache.lookup("u", text, cursor) == "4 * r * r"
    text, cursor = typed(TEXT, CURSOR, "3.14 * r * r")
    assert cache.lookup("u", text, cursor) is None  # fully typed: nothing left to show


def test_backspacing_returns_the_deleted_text_too() -> None:
    cache = SuggestionCache(16)
    text, cursor = typed(TEXT, CURSOR, "3.1")
    cache.remember("u", text, cursor, "4 * r * r")
    backspaced, cursor = typed(TEXT, CURSOR, "3")
    assert cache.lookup("u", backspaced, cursor) == ".14 * r * r"


def test_diverging_or_unrelated_edits_miss() -> None:
    cache = SuggestionCache(16)
    cache.remember("u", TEXT, CURSOR, "3.14 * r * r")
    text, cursor = typed(TEXT, CURSOR, "2")
    assert cache.lookup("u", text, cursor) is None
    edited_below = TEXT.replace("area(2)", "area(3)")
    assert cache.lookup("u", edited_below, CURSOR) is None
    edited_above = "# note\n" + TEXT
    assert cache.lookup("u", edited_above, CURSOR + 7) is None
    assert cache.lookup("other", TEXT, CURSOR) is None


def test_bounded_and_forgettable() -> None:
    cache = SuggestionCache(8)
    for index in range(100):
        text = f"x{index} = \n"
        cache.remember("u", text, len(text) - 1, "1")
    assert len(cache) <= 8
    cache.forget("u")
    assert len(cache) == 0
