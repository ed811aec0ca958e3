"""The KV layout's bookkeeping against a simulated cache that enforces llama.cpp's rules."""

from __future__ import annotations

import pytest

from flashls.engine.kv import Cancelled, KvLayout, Memory


class SimulatedCache:
    """Cells as {(sequence, position): token}; decoding must follow a sequence's last cell."""

    def __init__(self) -> None:
        self.cells: dict[tuple[int, int], int] = {}
        self.decoded = 0
        self.last_decoded: tuple[int, int] | None = None  # whose logits llama.cpp holds

    def last(self, sequence: int) -> int:
        return max((pos for seq, pos in self.cells if seq == sequence), default=-1)

    def decode(self, tokens: list[int], position: int, sequence: int) -> None:
        assert position == self.last(sequence) + 1, "llama.cpp refuses this position"
        for offset, token in enumerate(tokens):
            self.cells[(sequence, position + offset)] = token
        self.decoded += len(tokens)
        self.last_decoded = (sequence, position + len(tokens) - 1)

    def remove(self, sequence: int, start: int, end: int) -> None:
        end = end if end >= 0 else 1 << 30
        self.cells = {key: token for key, token in self.cells.items()
                      if not (key[0] == sequence and start <= key[1] < end)}

    def shift(self, start: int, end: int, delta: int) -> None:
        end = end if end >= 0 else 1 << 30
        self.cells = {(seq, pos + delta if seq == 0 and start <= pos < end else pos): token
                      for (seq, pos), token in self.cells.items()}

    def copy(self, source: int, target: int, start: int, end: int) -> None:
        for (seq, pos), token in list(self.cells.items()):
            if seq == source and start <= pos < end:
                self.cells[(target, pos)] = token

    def sequence(self, sequence: int) -> list[int]:
        return [self.cells[(sequence, pos)] for pos in range(self.last(sequence) + 1)]

    def memory(self) -> Memory:
        return Memory(self.decode, self.remove, self.shift, self.copy, can_shift=True)


def layout(cache: SimulatedCache, **options: bool) -> KvLayout:
    return KvLayout(cache.memory(), 4, reuse_prefix=options.get("reuse_prefix", True),
                    reuse_suffix=options.get("reuse_suffix", True), refresh_tokens=1)


HEAD = [1, 10, 11, 12, 13]
TAIL = [2, 20, 21, 22, 3]


def test_first_prompt_is_evaluated_whole() -> None:
    cache = SimulatedCache()
    kv = layout(cache)
    assert kv.prepare(HEAD, TAIL, lambda: False) == len(HEAD) + len(TAIL)
    assert cache.sequence(0) == HEAD + TAIL
    assert cache.sequence(1) == HEAD


@pytest.mark.parametrize(("new_head", "edited"), [([*HEAD, 14, 15], 2), ([*HEAD[:-1], 99], 1),
                                                  (HEAD[:3], 0)])
def test_edit_shifts_the_tail_and_evaluates_only_the_edit(new_head: list[int],
                                                          edited: int) -> None:
    cache = SimulatedCache()
    kv = layout(cache)
    kv.prepare(HEAD, TAIL, lambda: False)
    kv.append_generated(7)
    kv.append_generated(8)
    evaluated = kv.prepare(new_head, TAIL, lambda: False)
    assert cache.sequence(0) == new_head + TAIL
    assert cache.sequence(1) == new_head
    assert evaluated == edited + 2  # the edit, the suffix marker, the middle marker


def test_changed_tail_or_no_reuse_evaluates_again() -> None:
    cache = SimulatedCache()
    kv = layout(cache)
    kv.prepare(HEAD, TAIL, lambda: False)
    other_tail = [2, 20, 30, 3]
    # The shared start of the tail is kept (its marker re-run); the rest is evaluated.
    assert kv.prepare(HEAD, other_tail, lambda: False) == 1 + 2
    assert cache.sequence(0) == HEAD + other_tail
    naive = layout(SimulatedCache(), reuse_prefix=False)
    naive.prepare(HEAD, TAIL, lambda: False)
    assert naive.prepare(HEAD, TAIL, lambda: False) == len(HEAD) + len(TAIL)


def test_cancel_between_chunks_leaves_a_consistent_cache() -> None:
    cache = SimulatedCache()
    kv = layout(cache)
    calls = iter([False, False, True])
    with pytest.raises(Cancelled):
        kv.prepare(list(range(100, 112)), TAIL, lambda: next(calls, True))
    assert cache.sequence(0) == kv.head == list(range(100, 104))
    assert kv.prepare(list(range(100, 112)), TAIL, lambda: False) == 8 + len(TAIL)
    assert cache.sequence(0) == list(range(100, 112)) + TAIL


def test_a_tail_cut_by_cancel_is_continued_after_the_next_edit() -> None:
    cache = SimulatedCache()
    kv = layout(cache)
    long_tail = [2, *range(200, 210), 3]  # 12 tokens: three chunks of 4
    calls = iter([False, False, False, False, True])  # top, 2 head chunks, tail start; stop
    with pytest.raises(Cancelled):
        kv.prepare(HEAD, long_tail, lambda: next(calls, True))
    assert kv.tail == long_tail[:4]
    typed = [*HEAD, 14]
    # The edit (1), the refreshed marker (1), and only the 8 tail tokens not yet cached.
    assert kv.prepare(typed, long_tail, lambda: False) == 1 + 1 + 8
    assert cache.sequence(0) == typed + long_tail
    assert cache.sequence(1) == typed


class AbortingCache(SimulatedCache):
    """llama.cpp with its abort callback firing on the `abort_at`-th decode call: the call
    raises Cancelled and its cells are gone (llama.cpp removes the aborted ubatch)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.abort_at: int | None = None

    def decode(self, tokens: list[int], position: int, sequence: int) -> None:
        self.calls += 1
        if self.calls == self.abort_at:
            assert position == self.last(sequence) + 1, "llama.cpp refuses this position"
            raise Cancelled
        super().decode(tokens, position, sequence)


def _consistent(cache: SimulatedCache, kv: KvLayout) -> None:
    assert cache.sequence(0)[:len(kv.head) + len(kv.tail)] == kv.head + kv.tail
    assert cache.sequence(0)[len(kv.head) + len(kv.tail):] == kv.generated_ids
    assert len(cache.sequence(0)) == kv.end
    assert cache.sequence(1) == kv.head


LONG_HEAD = list(range(100, 112))  # three chunks of 4
LONG_TAIL = [2, *range(200, 210), 3]


@pytest.mark.parametrize("abort_at", range(1, 9))
def test_a_decode_aborted_midway_leaves_a_consistent_cache(abort_at: int) -> None:
    """Aborted in the head, in the tail, or while decoding the edit in front of a shifted
    tail: what the layout believes is cached is what is cached, and the next prepare
    brings the cache to the prompt."""
    cache = AbortingCache()
    kv = layout(cache)
    cache.abort_at = abort_at
    try:
        kv.prepare(LONG_HEAD, LONG_TAIL, lambda: False)
        typed = [*LONG_HEAD, 14]
        kv.append_generated(7)
        kv.prepare(typed, LONG_TAIL, lambda: False)  # the shifted-tail path
    except Cancelled:
        pass
    else:
        pytest.fail("the abort did not reach the layout")
    _consistent(cache, kv)
    cache.abort_at = None
    for head in (LONG_HEAD, [*LONG_HEAD, 14]):
        kv.prepare(head, LONG_TAIL, lambda: False)
        assert cache.sequence(0) == head + LONG_TAIL and cache.sequence(1) == head


def test_an_edit_aborted_in_front_of_the_tail_keeps_the_cached_prompt() -> None:
    """A warm-up aborted while decoding a keystroke's few tokens must not cost the next
    request the whole suffix (measured: 30 tokens a warm keystroke when it did)."""
    cache = AbortingCache()
    kv = layout(cache)
    kv.prepare(LONG_HEAD, LONG_TAIL, lambda: False)
    kv.append_generated(7)
    cache.abort_at = cache.calls + 1
    with pytest.raises(Cancelled):
        kv.prepare([*LONG_HEAD, 14], LONG_TAIL, lambda: False)
    _consistent(cache, kv)
    assert kv.head == LONG_HEAD and kv.tail == LONG_TAIL[:-1]  # all but the middle marker
    cache.abort_at = None
    typed = [*LONG_HEAD, 14]
    assert kv.prepare(typed, LONG_TAIL, lambda: False) == 1 + 1 + 1  # edit, markers
    assert cache.sequence(0) == typed + LONG_TAIL and cache.sequence(1) == typed


def test_a_context_too_full_for_the_edit_beside_the_tail_evaluates_the_tail() -> None:
    cache = SimulatedCache()
    kv = KvLayout(cache.memory(), 4, reuse_prefix=True, reuse_suffix=True, refresh_tokens=1,
                  capacity=len(HEAD) + len(TAIL) + 1)
    kv.prepare(HEAD, TAIL, lambda: False)
    typed = [*HEAD, 14, 15]
    assert kv.cost(typed, TAIL) == kv.prepare(typed, TAIL, lambda: False) == 2 + len(TAIL)
    assert cache.sequence(0) == typed + TAIL and cache.sequence(1) == typed


def test_an_aborted_generated_token_is_not_counted() -> None:
    cache = AbortingCache()
    kv = layout(cache)
    kv.prepare(HEAD, TAIL, lambda: False)
    cache.abort_at = cache.calls + 1
    with pytest.raises(Cancelled):
        kv.append_generated(7)
    assert kv.generated == 0 and kv.end == len(HEAD) + len(TAIL)
    cache.abort_at = None
    kv.append_generated(8)
    assert cache.sequence(0) == [*HEAD, *TAIL, 8]


def test_typed_text_after_the_middle_marker_keeps_the_cells_that_hold_it() -> None:
    cache = SimulatedCache()
    kv = layout(cache)
    kv.prepare(HEAD, TAIL, lambda: False)
    for token in (7, 8, 9):
        kv.append_generated(token)
    assert kv.holds(HEAD, TAIL) and not kv.holds([*HEAD, 14], TAIL)
    # Typed: what the model wrote first (7), then something else (5).
    assert kv.extend_middle([7, 5]) == 1
    assert cache.sequence(0) == [*HEAD, *TAIL, 7, 5] and kv.generated_ids == [7, 5]
    assert cache.last_decoded == (0, kv.end - 1)
    # All of it there already: the last token again, for its logits.
    assert kv.extend_middle([7, 5]) == 1
    assert cache.sequence(0) == [*HEAD, *TAIL, 7, 5] and cache.last_decoded == (0, kv.end - 1)
    # Nothing to put there (all taken back for token healing): the middle marker's logits.
    assert kv.extend_middle([]) == 1
    assert cache.sequence(0) == HEAD + TAIL and cache.last_decoded == (0, kv.end - 1)
    _consistent(cache, kv)
    kv.extend_middle([7, 5])
    # The prompt ending at the cursor again: the middle's cells go, the tail is shifted.
    assert kv.prepare([*HEAD, 14], TAIL, lambda: False) == 1 + 1 + 1
    assert cache.sequence(0) == [*HEAD, 14, *TAIL] and kv.generated_ids == []
    _consistent(cache, kv)


@pytest.mark.parametrize("typed", [[7, 5], [], [6]])
def test_an_aborted_extension_of_the_middle_leaves_a_consistent_cache(typed: list[int]) -> None:
    cache = AbortingCache()
    kv = layout(cache)
    kv.prepare(HEAD, TAIL, lambda: False)
    kv.append_generated(7)
    kv.append_generated(8)
    cache.abort_at = cache.calls + 1
    with pytest.raises(Cancelled):
        kv.extend_middle(typed)
    _consistent(cache, kv)
    cache.abort_at = None
    kv.prepare(HEAD, TAIL, lambda: False)
    kv.extend_middle(typed)
    assert cache.sequence(0) == [*HEAD, *TAIL, *typed] and kv.generated_ids == typed
    _consistent(cache, kv)


class SavingCache(SimulatedCache):
    """The simulated cache with llama_state_seq_get/set_data on sequence 0."""

    def save(self) -> bytes:
        return repr(sorted((pos, token) for (seq, pos), token in self.cells.items()
                           if seq == 0)).encode()

    def load(self, state: bytes) -> None:
        assert self.last(0) == -1, "restoring into a sequence that is not empty"
        for pos, token in eval(state.decode()):  # the test's own repr, nothing else
            self.cells[(0, pos)] = token

    def memory(self) -> Memory:
        return Memory(self.decode, self.remove, self.shift, self.copy, can_shift=True,
                      save=self.save, load=self.load)


def test_returning_to_an_earlier_prompt_restores_it_instead_of_evaluating() -> None:
    cache = SavingCache()
    kv = KvLayout(cache.memory(), 4, reuse_prefix=True, reuse_suffix=True, refresh_tokens=1,
                  snapshot_bytes=1 << 20, snapshot_min_tokens=4)
    file_a = [1, *range(100, 120)]
    file_b = [1, *range(200, 216)]
    assert kv.prepare(file_a, TAIL, lambda: False) == len(file_a) + len(TAIL)
    kv.append_generated(7)  # a generated token is not part of what is saved
    assert kv.prepare(file_b, TAIL, lambda: False) == len(file_b) - 1 + len(TAIL)
    assert [snapshot.head for snapshot in kv.snapshots] == [tuple(file_a)]
    # Back in file A, two characters typed: only those and the markers are evaluated.
    typed = [*file_a, 121]
    assert kv.prepare(typed, TAIL, lambda: False) == 1 + 1 + 1
    assert cache.sequence(0) == typed + TAIL and cache.sequence(1) == typed
    assert [snapshot.head for snapshot in kv.snapshots] == [tuple(file_b)]


def test_recall_brings_back_a_displaced_prompt_and_keeps_the_displacing_one() -> None:
    cache = SavingCache()
    kv = KvLayout(cache.memory(), 4, reuse_prefix=True, reuse_suffix=True, refresh_tokens=1,
                  snapshot_bytes=1 << 20, snapshot_min_tokens=4)
    short = [1, *range(100, 110)]
    full = [1, *range(200, 230), *range(100, 110)]
    kv.prepare(short, TAIL, lambda: False)
    kv.append_generated(7)
    assert kv.recall(short, TAIL)  # held already: nothing changes
    assert cache.sequence(0) == [*short, *TAIL, 7]
    # A warm-up of the full window, cancelled after two chunks, displaced it.
    checks = iter([False, False, False, True])
    with pytest.raises(Cancelled):
        kv.prepare(full, TAIL, lambda: next(checks))
    assert not kv.holds(short, TAIL)
    decoded = cache.decoded
    assert not kv.recall(short, [*TAIL, 4])  # no snapshot holds that prompt
    assert not kv.recall(full, TAIL)  # nor the one cut short
    assert kv.head == full[:9] and cache.decoded == decoded  # the shared 1, two chunks
    assert kv.recall(short, TAIL)
    assert cache.decoded == decoded  # a copy, nothing evaluated
    assert kv.holds(short, TAIL) and kv.generated_ids == []
    assert cache.sequence(0) == short + TAIL and cache.sequence(1) == short
    # The warm-up's cells are saved: going on with it evaluates the rest only.
    assert [snapshot.head for snapshot in kv.snapshots] == [tuple(full[:9])]
    assert kv.prepare(full, TAIL, lambda: False) == len(full) - 9 + len(TAIL)
    _consistent(cache, kv)


def test_snapshots_stay_within_their_budget_and_off_means_off() -> None:
    cache = SavingCache()
    prompts = [[1, *range(base, base + 12)] for base in (100, 200, 300, 400)]
    one = len(SavingCache().save()) + 200  # room for about two saved prompts
    kv = KvLayout(cache.memory(), 4, reuse_prefix=True, reuse_suffix=True, refresh_tokens=1,
                  snapshot_bytes=2 * one, snapshot_min_tokens=4)
    for prompt in prompts:
        kv.prepare(prompt, TAIL, lambda: False)
    assert 0 < kv.snapshot_memory <= 2 * one
    assert [snapshot.head[1] for snapshot in kv.snapshots][-1] == 300  # most recent kept
    off = KvLayout(SavingCache().memory(), 4, reuse_prefix=True, reuse_suffix=True,
                   snapshot_bytes=0)
    for prompt in prompts:
        off.prepare(prompt, TAIL, lambda: False)
    assert off.snapshots == []


def test_cost_foretells_what_prepare_evaluates() -> None:
    """`cost` is what the engine uses to choose the short window: it must match `prepare`
    for a cold prompt, a keystroke, a changed tail and a return to a saved prompt."""
    cache = SavingCache()
    kv = KvLayout(cache.memory(), 4, reuse_prefix=True, reuse_suffix=True, refresh_tokens=1,
                  snapshot_bytes=1 << 20, snapshot_min_tokens=4)
    file_a = [1, *range(100, 120)]
    file_b = [1, *range(200, 216)]
    for head, tail in ((file_a, TAIL), ([*file_a, 121], TAIL), ([*file_a, 121], [2, 20, 9, 3]),
                       (file_b, TAIL), ([*file_a, 121, 122], TAIL), (file_a[:3], TAIL)):
        foretold = kv.cost(head, tail)
        assert foretold == kv.prepare(head, tail, lambda: False), (head, tail)
        assert kv.cost(head, tail) <= 2  # at most the refreshed marker and the middle one


def test_a_suffix_starting_a_token_later_reuses_the_rest_of_the_tail() -> None:
    """The cursor moved right over one suffix token (Neovim's `a` after a warm-up at the
    normal-mode cursor; typing over a closing bracket): that token joins the head, and
    the rest of the cached tail is shifted into place instead of evaluated again."""
    cache = SimulatedCache()
    kv = layout(cache)
    long_tail = [2, *range(200, 212), 3]
    kv.prepare(HEAD, long_tail, lambda: False)
    moved_head, moved_tail = [*HEAD, 200], [2, *range(201, 212), 3]
    assert kv.cost(moved_head, moved_tail) == 1 + 1 + 1  # the token, both markers
    assert kv.prepare(moved_head, moved_tail, lambda: False) == 3
    assert cache.sequence(0) == moved_head + moved_tail
    assert cache.sequence(1) == moved_head
    # A tail that shares nothing after its marker is evaluated again.
    other = [2, *range(300, 312), 3]
    assert kv.prepare(moved_head, other, lambda: False) == 1 + len(other) - 1
    assert cache.sequence(0) == moved_head + other


@pytest.mark.parametrize(("new_tail", "evaluated"), [
    ([2, 77, *range(201, 212), 3], 1 + 2 + 1),  # one new token where the cursor split one
    ([2, 76, 77, *range(200, 212), 3], 1 + 3 + 1),  # two tokens in front of the old suffix
])
def test_a_suffix_whose_first_tokens_changed_reuses_the_rest(new_tail: list[int],
                                                            evaluated: int) -> None:
    cache = SimulatedCache()
    kv = layout(cache)
    kv.prepare(HEAD, [2, *range(200, 212), 3], lambda: False)
    typed = [*HEAD, 14]
    assert kv.cost(typed, new_tail) == evaluated
    assert kv.prepare(typed, new_tail, lambda: False) == evaluated
    assert cache.sequence(0) == typed + new_tail and cache.sequence(1) == typed
