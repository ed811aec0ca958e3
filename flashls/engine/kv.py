"""Which prompt tokens sit in llama.cpp's KV cache, and how to reuse them after an edit.

A prompt is a head (everything up to the cursor: markers and prefix) and a tail (what
follows the cursor: suffix marker, suffix, middle marker). Head cells live in sequences 0
and 1, tail and generated cells in sequence 0 only. After typing, the head is evaluated
from the first changed token in sequence 1 (where no tail cells can be attended to), the
new cells are copied into sequence 0, and the tail is shifted to its new positions instead
of being evaluated again. llama.cpp only accepts tokens after a sequence's last position,
which is why the edit cannot be decoded into sequence 0 in front of the shifted tail.

The shifted tail's keys and values were computed against the old head: an approximation
that `reuse_suffix` turns off and that the benchmark measures.

Snapshots: when a prompt shares far more with an earlier prompt (another file, another
place) than with the cached one, the cached cells of sequence 0 are saved to host memory
and the earlier prompt's saved cells restored, so returning costs a copy, not a
re-evaluation. They are kept most recent first within `snapshot_bytes`; even a short
prompt is worth keeping (a cold place's short window, displaced by its full window's
warm-up, is what the next keystroke there needs).

After the tail, sequence 0 holds the generated tokens' cells; typed text can stand there
too, as if generated (`extend_middle`): the next keystroke's tokens are evaluated there
instead of the edited head's end and the tail's markers.

A decode can be aborted midway (llama.cpp's abort callback, when the job's token is
cancelled): `Memory.decode` then raises Cancelled with that call's cells already gone, and
the layout is left as consistent as after a cancel between chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

HEAD_SEQUENCES = (0, 1)


class Cancelled(Exception):
    """The cancel token was set between two chunks of prompt evaluation, or during one."""


@dataclass
class Memory:
    """The four llama.cpp operations this layout needs, bound to one context."""

    # tokens, first position, sequence; raises Cancelled when aborted (its cells removed)
    decode: Callable[[list[int], int, int], None]
    remove: Callable[[int, int, int], None]  # sequence, from position, to (-1: end)
    shift: Callable[[int, int, int], None]  # sequence 0 cells from position onward, by delta
    copy: Callable[[int, int, int, int], None]  # source seq, destination seq, from, to
    can_shift: bool
    save: Callable[[], bytes] = field(default=lambda: b"")  # sequence 0's cells, serialised
    load: Callable[[bytes], None] = field(default=lambda state: None)  # into empty sequence 0


@dataclass(frozen=True)
class Snapshot:
    """Sequence 0's cells for a prompt (head and as much tail as was evaluated)."""

    head: tuple[int, ...]
    tail: tuple[int, ...]
    state: bytes


def common_prefix_length(left: list[int], right: list[int]) -> int:
    """How many leading tokens two sequences share."""
    limit = min(len(left), len(right))
    index = 0
    while index < limit and left[index] == right[index]:
        index += 1
    return index


# The suffix may start a few tokens later or earlier than the cached one (the cursor moved
# over text: Neovim's `a` after a warm-up at the normal-mode cursor, typing over a closing
# bracket, a merged token such as ")\n" split at the cursor): the cached suffix cells are
# reused when, after at most this many differing tokens, at least MIN_REALIGNED match.
MAX_REALIGNED_TOKENS = 4
MIN_REALIGNED = 8
# The engine's `snapshot_min_tokens`: a prompt is saved when a new one displaces more than
# this many of its head tokens, and a saved one restored when it shares this many more
# with the new head than the cache does. Restoring copies the cells (about a millisecond
# per hundred tokens); evaluating them costs about 10 ms a token on 2 cores.
SNAPSHOT_MIN_TOKENS = 16


@dataclass(frozen=True)
class TailReuse:
    """How the new tail maps onto the cached one: `tail[:fresh]` is evaluated (the suffix
    marker and any new tokens at the suffix's start), `tail[fresh:reusable]` reuses the
    cached cells at tail indices shifted by `offset`, and the rest is evaluated after."""

    offset: int
    fresh: int
    reusable: int


class KvLayout:
    """The cached head and tail, and the cheapest way to bring them to a new prompt."""

    def __init__(self, memory: Memory, chunk: int, *, reuse_prefix: bool,
                 reuse_suffix: bool, refresh_tokens: int = 0, snapshot_bytes: int = 0,
                 snapshot_min_tokens: int = SNAPSHOT_MIN_TOKENS, capacity: int = 1 << 30
                 ) -> None:
        self._memory = memory
        self._chunk = chunk
        # Saved prompts, most recently used last; their states add up to <= the budget.
        # The cached prompt is never among them (restoring one takes it out).
        self._snapshot_bytes = snapshot_bytes if reuse_prefix else 0
        self._snapshot_min = snapshot_min_tokens
        self._capacity = capacity  # cells the context holds (n_ctx)
        self.snapshots: list[Snapshot] = []
        self._reuse_prefix = reuse_prefix
        self._reuse_suffix = reuse_suffix and reuse_prefix and memory.can_shift
        # Tail tokens (from the suffix marker on) evaluated again after every edit: the
        # ones right after the cursor are where a stale cache misleads the model most.
        self._refresh = refresh_tokens
        self.head: list[int] = []
        self.tail: list[int] = []
        # The tokens whose cells follow the tail in sequence 0 (generated, or typed text
        # put after the middle marker: see `extend_middle`).
        self.generated_ids: list[int] = []
        # Tokens the last `prepare` evaluated so far (also when it was cancelled midway).
        self.evaluated = 0

    @property
    def generated(self) -> int:
        """How many cells follow the tail."""
        return len(self.generated_ids)

    @property
    def end(self) -> int:
        """The position after the last cached cell of sequence 0."""
        return len(self.head) + len(self.tail) + self.generated

    def prepare(self, head: list[int], tail: list[int], cancel: Callable[[], bool]) -> int:
        """Make the cache hold `head + tail` with logits for its last token; returns how
        many tokens were evaluated. Raises Cancelled, leaving a consistent (shorter) cache."""
        self.evaluated = 0
        if cancel():
            raise Cancelled
        keep = common_prefix_length(self.head, head) if self._reuse_prefix else 0
        keep = self._switch_to_snapshot(head, keep)
        keep = min(keep, len(head) - 1) if not tail else keep
        edited = len(head) - keep
        # Old tail cells that still match the new tail (all but the middle marker, which is
        # always re-run for its logits); a tail cut short by a cancel counts as far as it got.
        reuse = self._tail_reuse(self.tail, tail)
        if self._shifts(reuse, len(self.head), edited):
            assert reuse is not None
            return self._shift_tail(head, tail, keep, reuse, cancel)
        return self._evaluate(head, tail, keep, cancel)

    def _tail_reuse(self, cached: list[int], tail: list[int]) -> TailReuse | None:
        """The cheapest mapping of `tail` onto the `cached` tail, or None (evaluate it)."""
        if not cached or not tail or cached[0] != tail[0]:
            return None
        last = len(tail) - 1  # the middle marker is always re-run for its logits
        shared = min(common_prefix_length(cached, tail), last)
        if shared > 1:
            return TailReuse(0, min(self._refresh, shared), shared)
        best = TailReuse(0, min(self._refresh, 1), 1) if shared == 1 else None
        for new in range(MAX_REALIGNED_TOKENS + 1):
            for old in range(MAX_REALIGNED_TOKENS + 1):
                matched = common_prefix_length(cached[1 + old:], tail[1 + new:last])
                if matched < min(MIN_REALIGNED, last - 1 - new) or matched == 0:
                    continue
                reusable = 1 + new + matched
                fresh = max(self._refresh, 1 + new)
                saved = reusable - fresh
                if saved > 0 and (best is None or saved > best.reusable - best.fresh):
                    best = TailReuse(old - new, fresh, reusable)
        return best

    def cost(self, head: list[int], tail: list[int]) -> int:
        """How many tokens `prepare(head, tail)` would evaluate now (changes nothing)."""
        keep = common_prefix_length(self.head, head) if self._reuse_prefix else 0
        cached_head, cached_tail = len(self.head), self.tail
        shared, best = self._snapshot_for(head, keep)
        if best is not None:
            keep, cached_head, cached_tail = shared, len(best.head), list(best.tail)
        keep = min(keep, len(head) - 1) if not tail else keep
        edited = len(head) - keep
        reuse = self._tail_reuse(cached_tail, tail)
        if self._shifts(reuse, cached_head, edited):
            assert reuse is not None
            return edited + reuse.fresh + len(tail) - reuse.reusable
        return edited + len(tail)

    def _shifts(self, reuse: TailReuse | None, cached_head: int, edited: int) -> bool:
        """Whether the cached tail is shifted into place rather than evaluated again: an
        edit of at most a chunk, and room for the edit's cells beside the cached prompt's
        (they are decoded before the old ones are dropped)."""
        if not self._reuse_suffix or reuse is None or edited > self._chunk:
            return False
        kept = cached_head + reuse.reusable + reuse.offset
        return kept + edited + reuse.fresh <= self._capacity

    def _shift_tail(self, head: list[int], tail: list[int], keep: int, reuse: TailReuse,
                    cancel: Callable[[], bool]) -> int:
        memory = self._memory
        old_head = len(self.head)
        # The cached tail cells kept: old positions [first, end), moving to len(head) + fresh.
        first = old_head + reuse.fresh + reuse.offset
        end = old_head + reuse.reusable + reuse.offset
        memory.remove(0, end, -1)  # the rest of the old tail, the middle marker, generated
        self.tail, self.generated_ids = self.tail[:end - old_head], []
        memory.remove(1, keep, -1)
        fresh = head[keep:] + tail[:reuse.fresh]
        if fresh:
            # Decoded into sequence 1 (no tail cells to attend to) before sequence 0 is
            # touched, so an abort leaves the cached prompt as it was (see `_shifts`).
            try:
                memory.decode(fresh, keep, 1)
            except Cancelled:
                memory.copy(0, 1, keep, old_head)
                raise
        memory.remove(0, keep, first)  # the edited head, the old suffix marker and skipped
        delta = len(head) + reuse.fresh - first
        if delta:
            memory.shift(first, -1, delta)
        if fresh:
            memory.copy(1, 0, keep, len(head) + reuse.fresh)
            memory.remove(1, len(head), -1)
        self.head, self.tail, self.generated_ids = list(head), tail[:reuse.reusable], []
        self.evaluated = len(fresh)
        return len(fresh) + self._extend_tail(tail, cancel)

    def _extend_tail(self, tail: list[int], cancel: Callable[[], bool]) -> int:
        """Decode the rest of `tail` after the cached part, in chunks that check `cancel`."""
        evaluated = 0
        for start in range(len(self.tail), len(tail), self._chunk):
            if evaluated and cancel():
                raise Cancelled
            piece = tail[start:start + self._chunk]
            self._memory.decode(piece, len(self.head) + start, 0)
            self.tail.extend(piece)
            evaluated += len(piece)
            self.evaluated += len(piece)
        return evaluated

    def _evaluate(self, head: list[int], tail: list[int], keep: int,
                  cancel: Callable[[], bool]) -> int:
        memory = self._memory
        for sequence in HEAD_SEQUENCES:
            memory.remove(sequence, keep, -1)
        self.head, self.tail, self.generated_ids = self.head[:keep], [], []
        evaluated = 0
        for start in range(keep, len(head), self._chunk):
            if cancel():
                raise Cancelled
            piece = head[start:start + self._chunk]
            memory.decode(piece, start, 0)
            memory.copy(0, 1, start, start + len(piece))
            self.head.extend(piece)
            evaluated += len(piece)
            self.evaluated += len(piece)
        if cancel():
            raise Cancelled
        return evaluated + self._extend_tail(tail, cancel)

    def _switch_to_snapshot(self, head: list[int], keep: int) -> int:
        """Restore the saved prompt that shares the most with `head` when it beats the
        cached one by more than a chunk; save the cached prompt whenever `head` displaces
        more than a chunk of it. Returns the length `head` now shares with the cache."""
        if not self._snapshot_bytes:
            return keep
        shared, best = self._snapshot_for(head, keep)
        if best is None:
            if len(self.head) - keep > self._snapshot_min:
                self._save()
            return keep
        self._restore(best)
        return shared

    def _restore(self, snapshot: Snapshot) -> None:
        """Bring `snapshot`'s prompt back into the cache, the cached one saved in its place."""
        self.snapshots.remove(snapshot)
        self._save()
        for sequence in HEAD_SEQUENCES:
            self._memory.remove(sequence, 0, -1)
        self._memory.load(snapshot.state)
        self._memory.copy(0, 1, 0, len(snapshot.head))
        self.head, self.tail, self.generated_ids = list(snapshot.head), list(snapshot.tail), []

    def _snapshot_for(self, head: list[int], keep: int) -> tuple[int, Snapshot | None]:
        """The saved prompt sharing the most with `head`, and how much, when that beats
        the `keep` tokens shared with the cached one by more than `snapshot_min_tokens`;
        else (keep, None)."""
        if not self._snapshot_bytes:
            return keep, None
        shared, best = max(((common_prefix_length(list(snapshot.head), head), snapshot)
                            for snapshot in self.snapshots),
                           key=lambda pair: pair[0], default=(0, None))
        return (shared, best) if best is not None and shared > keep + self._snapshot_min else (
            keep, None)

    def _save(self) -> None:
        """Keep the cached prompt (without generated cells) among the snapshots."""
        if len(self.head) <= self._snapshot_min:
            return
        self._memory.remove(0, len(self.head) + len(self.tail), -1)
        self.generated_ids = []
        head = tuple(self.head)
        # An earlier save of a prompt this one only extends is superseded by it.
        self.snapshots = [snapshot for snapshot in self.snapshots
                          if head[:len(snapshot.head)] != snapshot.head]
        self.snapshots.append(Snapshot(head, tuple(self.tail), self._memory.save()))
        while self.snapshot_memory > self._snapshot_bytes:
            self.snapshots.pop(0)

    @property
    def snapshot_memory(self) -> int:
        """Bytes held by the snapshots."""
        return sum(len(snapshot.state) for snapshot in self.snapshots)

    def append_generated(self, token: int) -> None:
        """Decode one generated token after the prompt, in sequence 0 (raises Cancelled
        when aborted, with nothing appended)."""
        self._memory.decode([token], self.end, 0)
        self.generated_ids.append(token)

    def drop_generated(self, keep: int = 0) -> None:
        """Take the generated cells after the first `keep` back out (with none kept, the
        cache holds the prompt alone again); the last kept token's logits are gone until
        the next decode."""
        self._memory.remove(0, len(self.head) + len(self.tail) + keep, -1)
        del self.generated_ids[keep:]

    def holds(self, head: list[int], tail: list[int]) -> bool:
        """Whether the cache holds the whole prompt `head + tail` (and maybe cells after)."""
        return self.head == head and self.tail == tail

    def recall(self, head: list[int], tail: list[int]) -> bool:
        """Whether the cache holds the whole prompt `head + tail`, after restoring the
        snapshot that holds exactly it when the cache does not (a warm-up of another
        window displaced it). False, with nothing changed, when neither holds it."""
        if self.holds(head, tail):
            return True
        for snapshot in self.snapshots:
            if list(snapshot.head) == head and list(snapshot.tail) == tail:
                self._restore(snapshot)
                return True
        return False

    def extend_middle(self, tokens: list[int]) -> int:
        """Make the cells after the cached prompt (which must be whole: `holds`) hold
        `tokens`, with logits for the last one (for no tokens, the middle marker's);
        returns how many tokens were evaluated. Cells already holding the first ones are
        kept. Raises Cancelled when aborted, the cache consistent (and shorter)."""
        assert self.tail, "no prompt is cached"
        self.evaluated = 0
        keep = common_prefix_length(self.generated_ids, tokens)
        if keep == len(tokens):  # everything is there: only the last logits are wanted
            keep -= 1
        if keep < 0:  # the middle marker itself, for its logits
            marker = len(self.head) + len(self.tail) - 1
            self.drop_generated()
            self._memory.remove(0, marker, -1)
            try:
                self._memory.decode([self.tail[-1]], marker, 0)
            except Cancelled:
                self.tail.pop()
                raise
            self.evaluated = 1
            return 1
        self.drop_generated(keep)
        piece = tokens[keep:]
        self._memory.decode(piece, self.end, 0)
        self.generated_ids.extend(piece)
        self.evaluated = len(piece)
        return len(piece)

    def forget(self) -> None:
        """Empty the cache and the snapshots (after a llama.cpp error)."""
        for sequence in HEAD_SEQUENCES:
            self._memory.remove(sequence, 0, -1)
        self.head, self.tail, self.generated_ids = [], [], []
        self.snapshots.clear()
