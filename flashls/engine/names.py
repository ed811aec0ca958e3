"""Which tokens keep the identifier a generation is writing at the cursor one of a set of
names (`NameConstraint`): the local engine takes the likeliest token when the rule allows
it, else the likeliest of all the tokens the rule allows (found in the vocabulary sorted
by text, however unlikely: the name the model would not have guessed is the point).

Works on bytes: a token's text may end inside a UTF-8 character. Bytes of non-ASCII
characters count as identifier bytes (Python names may hold them).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from flashls.engine.base import NameConstraint


def word_length(piece: bytes) -> int:
    """How many of `piece`'s first bytes can be part of an identifier."""
    for index, byte in enumerate(piece):
        if not (byte == 0x5F or 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A
                or 0x61 <= byte <= 0x7A or byte >= 0x80):
            return index
    return len(piece)


class NameRule:
    """A `NameConstraint` as a check of tokens. The rule holds while the generated text
    is all identifier bytes; the first other byte ends the identifier, and the rule."""

    def __init__(self, constraint: NameConstraint) -> None:
        self._typed = constraint.typed.encode("utf-8")
        self._names = sorted(name.encode("utf-8") for name in constraint.names)
        self._set = frozenset(self._names)

    def word(self, generated: bytes) -> bytes | None:
        """The identifier written so far (the typed part and `generated`), or None once
        `generated` went past it (the rule no longer applies)."""
        if word_length(generated) != len(generated):
            return None
        return self._typed + generated

    def _is_prefix(self, head: bytes) -> bool:
        at = bisect.bisect_left(self._names, head)
        return at < len(self._names) and self._names[at].startswith(head)

    def allows(self, word: bytes, piece: bytes) -> bool:
        """Whether the token `piece` may follow the identifier `word` written so far: it
        goes on towards one of the names, or ends one of them and goes on with other
        text (`all_tasks(` after `all_`)."""
        length = word_length(piece)
        if length == len(piece):
            return self._is_prefix(word + piece)
        return word + piece[:length] in self._set

    def allows_end(self, word: bytes) -> bool:
        """Whether generation may stop after `word`: only after a whole name (at
        `module.`, a suggestion of nothing is never what the user writes next)."""
        return word in self._set

    def tokens(self, word: bytes, healed: bytes, pieces: Sequence[bytes],
               ids: Sequence[int]) -> set[int]:
        """The tokens whose text, after the `healed` bytes it must start with, `allows`
        to follow `word`, except those that follow a whole name with other text (where
        `word` is one, most tokens do: check the likeliest with `allows`) and end tokens
        (`allows_end`); `pieces` is the vocabulary's texts sorted, `ids` their tokens in
        the same order."""
        first = bisect.bisect_left(self._names, word)
        rests: set[bytes] = set()
        for name in self._names[first:]:
            if not name.startswith(word):
                break
            rests.add(name[len(word):])
        wanted = {healed + rest[:length] for rest in rests for length in range(1, len(rest) + 1)}
        if healed:
            wanted.add(healed)  # the taken-back token itself: the name comes after it
        found: set[int] = set()
        for text in wanted:  # tokens that go on towards a name
            at = bisect.bisect_left(pieces, text)
            while at < len(pieces) and pieces[at] == text:
                found.add(ids[at])
                at += 1
        for rest in rests:  # tokens that end a name and go on with other text
            if not rest:
                continue  # `word` is a whole name: most tokens end it; see `allows`
            head = healed + rest
            at = bisect.bisect_left(pieces, head)
            while at < len(pieces) and pieces[at].startswith(head):
                after = pieces[at][len(head):len(head) + 1]
                if after and word_length(after) == 0:
                    found.add(ids[at])
                at += 1
        return found


def names_grammar(constraint: NameConstraint) -> str:
    """A GBNF grammar (llama.cpp's `grammar`) for what `NameRule` allows: the rest of
    one of the names after the typed part, then, if anything, other text that starts
    with a byte no identifier has."""
    rests = sorted({name[len(constraint.typed):] for name in constraint.names})
    quoted = " | ".join(
        '"' + rest.replace("\\", "\\\\").replace('"', '\\"') + '"' for rest in rests if rest)
    optional = "?" if "" in rests else ""
    return (f"root ::= ({quoted}){optional} tail\n"
            "tail ::= ([^a-zA-Z0-9_] .*)?\n")
