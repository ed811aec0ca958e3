"""The document store: LSP line rules, position encodings, rejected changes, random edits."""

from __future__ import annotations

import random
import re

import pytest

from flashls.documents import (
    Change,
    Document,
    DocumentError,
    DocumentStore,
    Position,
    Range,
    column_units,
    scan_line_starts,
)

URI = "file:///t.py"
NON_TERMINATORS = ["\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
ENCODINGS = ["utf-8", "utf-16", "utf-32"]


def span(start_line: int, start_char: int, end_line: int, end_char: int) -> Range:
    return Range(Position(start_line, start_char), Position(end_line, end_char))


def store_with(text: str, version: int = 1) -> DocumentStore:
    store = DocumentStore()
    store.open(URI, "python", version, text)
    return store


def current(store: DocumentStore) -> Document:
    document = store.get(URI)
    assert document is not None
    return document


# --- line terminators -------------------------------------------------------------------

@pytest.mark.parametrize("terminator", ["\n", "\r\n", "\r"])
def test_each_lsp_terminator_splits_lines(terminator: str) -> None:
    document = Document(URI, "python", 1, f"ab{terminator}cd{terminator}")
    assert document.line_count == 3
    assert document.offset_of(Position(1, 1)) == 3 + len(terminator)
    assert document.position_of(len(document.text)) == Position(2, 0)
    assert document.lf_view() == "ab\ncd\n"


@pytest.mark.parametrize("separator", NON_TERMINATORS)
def test_other_separators_do_not_split_lines(separator: str) -> None:
    store = store_with(f"a{separator}b\ncd")
    assert current(store).line_count == 2
    # pygls's splitlines put line 1 after the separator; the edit must land after "c".
    cursor = store.change(URI, 2, [Change(span(1, 1, 1, 1), "X")], "utf-16")
    assert current(store).text == f"a{separator}b\ncXd"
    assert cursor == Position(1, 2)
    assert current(store).position_of(2) == Position(0, 2)


def test_crlf_and_lone_cr_in_one_text() -> None:
    document = Document(URI, "python", 1, "ab\r\ncd\ref\n\r\n")
    assert document.line_starts == [0, 4, 7, 10, 12]
    assert document.offset_of(Position(1, 1)) == 5
    assert document.offset_of(Position(2, 0)) == 7
    assert document.lf_view() == "ab\ncd\nef\n\n"
    assert document.lf_offset(5) == 4
    assert document.lf_offset(8) == 7
    assert document.lf_offset(len(document.text)) == len(document.lf_view())
    assert document.lf_view() is document.lf_view()


# --- positions and encodings ------------------------------------------------------------

@pytest.mark.parametrize(("encoding", "after_emoji"), [("utf-8", 5), ("utf-16", 3),
                                                       ("utf-32", 2)])
def test_astral_characters_in_each_encoding(encoding: str, after_emoji: int) -> None:
    document = Document(URI, "python", 1, "a😀b\n😀")
    assert document.offset_of(Position(0, after_emoji), encoding) == 2
    assert document.position_of(2, encoding) == Position(0, after_emoji)
    assert document.position_of(len(document.text), encoding) == Position(1, after_emoji - 1)
    assert column_units("a😀b", encoding) == after_emoji + 1


@pytest.mark.parametrize(("encoding", "inside"), [("utf-16", [2]), ("utf-8", [2, 3, 4])])
def test_positions_inside_a_character_are_rejected(encoding: str, inside: list[int]) -> None:
    document = Document(URI, "python", 1, "a😀b")
    for character in inside:
        with pytest.raises(DocumentError, match="inside a character"):
            document.offset_of(Position(0, character), encoding)


def test_character_past_the_line_end_clamps_to_it() -> None:
    document = Document(URI, "python", 1, "ab\r\ncd\nef")
    assert document.offset_of(Position(0, 4)) == 2
    assert document.offset_of(Position(1, 3)) == 6
    assert document.offset_of(Position(2, 99)) == len(document.text)


def test_position_inside_crlf_is_rejected() -> None:
    document = Document(URI, "python", 1, "ab\r\ncd")
    with pytest.raises(DocumentError, match="CRLF"):
        document.offset_of(Position(0, 3))
    with pytest.raises(DocumentError, match="CRLF"):
        document.position_of(3)


@pytest.mark.parametrize("position", [Position(2, 0), Position(-1, 0), Position(0, -1)])
def test_positions_outside_the_document_are_rejected(position: Position) -> None:
    with pytest.raises(DocumentError):
        Document(URI, "python", 1, "ab\ncd").offset_of(position)


# --- changes ----------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "version"), [
    ([Change(span(0, 2, 0, 1), "X")], 2),          # reversed
    ([Change(span(0, 0, 5, 0), "X")], 2),          # past the last line
    ([Change(span(0, 2, 0, 2), "X")], 2),          # inside the emoji's surrogate pair
    ([Change(span(0, 5, 0, 5), "X")], 2),          # between \r and \n
    ([Change(span(0, 0, 0, 0), "X")], 1),          # same version
    ([Change(span(0, 0, 0, 0), "X")], 0),          # older version
    ([Change(span(0, 0, 0, 1), "Y"), Change(span(0, 9, 0, 8), "Z")], 2),  # one bad of two
])
def test_rejected_change_keeps_text_until_a_full_change(changes: list[Change],
                                                        version: int) -> None:
    store = store_with("a😀b\r\nc", version=1)
    with pytest.raises(DocumentError):
        store.change(URI, version, changes, "utf-16")
    document = current(store)
    assert (document.text, document.version, document.in_sync) == ("a😀b\r\nc", 1, False)
    store.change(URI, 3, [Change(span(0, 0, 0, 0), "z")], "utf-16")
    assert not current(store).in_sync  # incremental changes cannot restore it
    assert store.change(URI, 4, [Change(None, "fresh\n")], "utf-16") is None
    assert (current(store).text, current(store).in_sync) == ("fresh\n", True)


def test_changes_apply_in_order_to_the_text_left_by_the_previous_one() -> None:
    store = store_with("hello\nworld")
    cursor = store.change(URI, 2, [Change(span(0, 0, 0, 5), "hi"),
                                   Change(span(0, 2, 1, 0), " there "),
                                   Change(span(0, 9, 0, 14), "all")], "utf-16")
    assert current(store).text == "hi there all"
    assert cursor == Position(0, 12)


def test_unknown_uri_is_neither_changed_nor_read_from_disk() -> None:
    store = DocumentStore()
    assert store.get("file:///etc/hostname") is None
    with pytest.raises(DocumentError, match="not open"):
        store.change("file:///etc/hostname", 2, [Change(None, "x")])
    assert len(store) == 0


@pytest.mark.parametrize(("before", "change", "encoding", "cursor"), [
    ("ab", Change(span(0, 1, 0, 1), "x\r\ny"), "utf-16", Position(1, 1)),
    ("ab", Change(span(0, 1, 0, 1), "😀"), "utf-16", Position(0, 3)),
    ("ab", Change(span(0, 1, 0, 1), "😀"), "utf-8", Position(0, 5)),
    ("ab", Change(span(0, 1, 0, 1), "x\ry"), "utf-32", Position(1, 1)),
    ("a\nb", Change(span(0, 1, 0, 1), "\r"), "utf-16", Position(1, 0)),  # makes a CRLF
    ("a\rb", Change(span(1, 0, 1, 0), "\n"), "utf-16", Position(1, 0)),  # makes a CRLF
    ("abc\ndef", Change(span(0, 1, 1, 2), ""), "utf-16", Position(0, 1)),
])
def test_cursor_after_a_change(before: str, change: Change, encoding: str,
                               cursor: Position) -> None:
    store = store_with(before)
    assert store.change(URI, 2, [change], encoding) == cursor
    document = current(store)
    assert document.line_starts == scan_line_starts(document.text)


def test_open_close_and_reopen() -> None:
    store = store_with("one")
    store.open("file:///b.py", "python", 1, "two")
    assert store.uris() == [URI, "file:///b.py"]
    assert store.change(URI, 5, []) is None
    assert current(store).version == 5
    store.open(URI, "python", 1, "again")
    assert (current(store).text, current(store).version) == ("again", 1)
    store.close(URI)
    store.close(URI)
    assert store.get(URI) is None and len(store) == 1


def test_edits_in_a_large_document_keep_line_starts_exact() -> None:
    text = "x = 1\r\n" * 10_000 + "y\rz\n" * 10_000 + "😀" * 50_000
    store = store_with(text)
    rng = random.Random(7)
    for version in range(2, 52):
        line = rng.randrange(current(store).line_count - 1)  # the emoji line stays whole
        store.change(URI, version, [Change(span(line, 1, line, 3), rng.choice(["\r", "\n", "ab"]))])
    document = current(store)
    assert len(document.text) > 100_000
    last_line = Position(document.line_count - 1, 100_000)
    assert document.position_of(len(document.text)) == last_line
    assert document.offset_of(last_line) == len(document.text)
    assert document.line_starts == scan_line_starts(document.text)


# --- random edits against a deliberately simple reference ---------------------------------

PIECES = ["a", "b", " ", "é", "中", "😀", "𝄞", "\t", "\n", "\r", "\r\n", *NON_TERMINATORS]


def ref_lines(text: str) -> list[tuple[str, str]]:
    """(content, terminator) per LSP line."""
    parts = re.split(r"(\r\n|\r|\n)", text)
    parts.append("")
    return [(parts[index], parts[index + 1]) for index in range(0, len(parts) - 1, 2)]


def ref_width(char: str, encoding: str) -> int:
    if encoding == "utf-8":
        return len(char.encode("utf-8"))
    if encoding == "utf-16":
        return len(char.encode("utf-16-le")) // 2
    return 1


def ref_offset(text: str, position: Position, encoding: str) -> int | None:
    """The offset of `position`, or None where the store must reject it."""
    lines = ref_lines(text)
    if position.line < 0 or position.character < 0 or position.line >= len(lines):
        return None
    offset = sum(len(content) + len(terminator) for content, terminator in lines[:position.line])
    content, terminator = lines[position.line]
    units = 0
    for index, char in enumerate(content):
        if units >= position.character:
            return offset + index if units == position.character else None
        units += ref_width(char, encoding)
    if units > position.character:
        return None
    if terminator == "\r\n" and position.character == units + 1:
        return None
    return offset + len(content)


def ref_position(text: str, offset: int, encoding: str) -> Position:
    for line, (content, terminator) in enumerate(ref_lines(text)):
        if offset <= len(content):
            return Position(line, sum(ref_width(char, encoding) for char in content[:offset]))
        offset -= len(content) + len(terminator)
        assert offset >= 0, "inside a CRLF"
    raise AssertionError("past the end")


def ref_apply(text: str, changes: list[Change],
              encoding: str) -> tuple[str, Position | None] | None:
    cursor: int | None = None
    for change in changes:
        if change.range is None:
            text, cursor = change.text, None
            continue
        start, end = change.range.start, change.range.end
        start_offset = ref_offset(text, start, encoding)
        end_offset = ref_offset(text, end, encoding)
        if (start_offset is None or end_offset is None
                or (end.line, end.character) < (start.line, start.character)):
            return None
        text = text[:start_offset] + change.text + text[end_offset:]
        cursor = start_offset + len(change.text)
    if cursor is None:
        return text, None
    if cursor > 0 and text[cursor - 1:cursor + 1] == "\r\n":
        cursor += 1
    return text, ref_position(text, cursor, encoding)


def random_text(rng: random.Random, pieces: int) -> str:
    return "".join(rng.choice(PIECES) for _ in range(pieces))


def random_position(rng: random.Random, text: str, encoding: str) -> Position:
    """Mostly valid positions; some inside characters or CRLFs, past line ends or lines."""
    lines = ref_lines(text)
    line = rng.randrange(len(lines) + (1 if rng.random() < 0.02 else 0))
    content = lines[min(line, len(lines) - 1)][0]
    index = rng.randint(0, len(content))
    character = sum(ref_width(char, encoding) for char in content[:index])
    roll = rng.random()
    if roll < 0.08:
        character += 1
    elif roll < 0.12:
        character += rng.randint(2, 40)
    return Position(line, character)


def random_change(rng: random.Random, text: str, encoding: str) -> Change:
    if rng.random() < 0.03:
        return Change(None, random_text(rng, rng.randint(0, 30)))
    start = random_position(rng, text, encoding)
    end = start
    if rng.random() < 0.5 or len(text) > 120:
        end = random_position(rng, text, encoding)
        if (end.line, end.character) < (start.line, start.character) and rng.random() < 0.9:
            start, end = end, start
    inserted = random_text(rng, rng.choice([0, 0, 1, 1, 1, 2, 4]))
    return Change(Range(start, end), inserted)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_random_edits_match_the_reference(encoding: str) -> None:
    rng = random.Random(f"flashls-{encoding}")
    text = random_text(rng, 40)
    store = store_with(text)
    version, in_sync = 1, True
    for _ in range(2_000):
        changes: list[Change] = []
        scratch = text
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            changes.append(random_change(rng, scratch, encoding))
            applied = ref_apply(scratch, changes[-1:], encoding)
            scratch = scratch if applied is None else applied[0]
        new_version = version + 1 if rng.random() < 0.97 else version - rng.randint(0, 1)
        expected = ref_apply(text, changes, encoding)
        if expected is None or new_version <= version:
            with pytest.raises(DocumentError):
                store.change(URI, new_version, changes, encoding)
            in_sync = False
        else:
            cursor = store.change(URI, new_version, changes, encoding)
            text, version = expected[0], new_version
            in_sync = in_sync or any(change.range is None for change in changes)
            assert cursor == expected[1]
        document = current(store)
        assert (document.text, document.version, document.in_sync) == (text, version, in_sync)
        assert document.line_starts == scan_line_starts(text)
        assert document.line_count == len(ref_lines(text))
        assert document.lf_view() == text.replace("\r\n", "\n").replace("\r", "\n")
        offset = rng.randint(0, len(text))
        if offset == 0 or text[offset - 1:offset + 1] != "\r\n":
            assert document.position_of(offset, encoding) == ref_position(text, offset, encoding)
            lf_offset = len(text[:offset].replace("\r\n", "\n"))
            assert document.lf_offset(offset) == lf_offset
        position = random_position(rng, text, encoding)
        wanted = ref_offset(text, position, encoding)
        if wanted is None:
            with pytest.raises(DocumentError):
                document.offset_of(position, encoding)
        else:
            assert document.offset_of(position, encoding) == wanted
