"""Several conversations in one llama.cpp context (`edgekit serve`): one KV sequence ("slot") each.

A prompt that begins like one a slot already holds (the system prompt and chat template, the same camera frame, the
earlier turns of the same conversation and the answers given to them) reuses those cells instead of evaluating them
again, as llama-server's prompt cache does: within its own slot by cutting the cache after the shared part, from
another slot by sharing its cells (the cache is unified, so nothing is copied). One decode step advances every
answering slot together, one batch of one token each: on a CPU the weights are read once per step, whoever asks.

A prompt is compared as units: a text token is its id; an image is one unit for all its cells, keyed by what its
embeddings are of (`ImageEmbedding.key`: pixels + bundle seal).

With one slot a prompt is resumed only where a fresh prefill would start a batch (`batch_starts`), and its answer is
exactly the tokens `edgekit run` gives (tested): the system prompt and a camera frame are reused, the text after the
last image runs again. With several, exactness is gone anyway (a decode step's attention spans the other slots'
cells and batches several tokens: llama.cpp's kernels then sum in another order, as llama-server documents for its
own slots, so greedy answers can differ where two tokens are nearly tied), and a prompt is resumed at any cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from edgekit.runtime.prompt_segments import ImageEmbedding, split_prompt


@dataclass(frozen=True)
class ImageUnit:
    key: object  # equal keys: equal embeddings (an image without a key gets a fresh object: never shared)
    grid: tuple[int, int]
    cells: int


def prompt_units(segments) -> list:
    """The prompt as units: an int per text token, an ImageUnit per image."""
    units: list = []
    for kind, seg in segments:
        if kind == "text":
            units += [int(t) for t in seg]
        else:
            units.append(ImageUnit(seg.key if seg.key is not None else object(), seg.grid, seg.embeds.shape[0]))
    return units


def _cells(unit) -> int:
    return unit.cells if isinstance(unit, ImageUnit) else 1


def batch_starts(segments, n_batch: int) -> list[int]:
    """The cells where a prefill from an empty cache starts a llama.cpp batch (LlamaDecoder.feed_segments: each
    segment on its own, text in n_batch pieces), in order. Only there is a prompt resumed: llama.cpp's float sums
    depend on a batch's size, so a suffix fed in the very batches a fresh prefill would use gives the same logits, bit
    for bit, as the fresh prefill (tested), while one cut elsewhere does not."""
    starts, at = [], 0
    for kind, seg in segments:
        n = len(seg) if kind == "text" else seg.embeds.shape[0]
        starts += list(range(at, at + n, n_batch)) if kind == "text" else [at]
        at += n
    return starts


def shared_prefix(held: Sequence, units: Sequence, starts: Sequence[int] | None) -> int:
    """Cells of a prompt (`units`) that a sequence holding `held` can keep: the common leading units, cut back to the
    last batch start within them (`starts`; None: to any cell that leaves the last one to run again, and never inside
    an image). Always less than the prompt's length: the last batch runs again for the logits."""
    n = kept = 0
    while n < min(len(held), len(units)) and held[n] == units[n]:
        kept += _cells(units[n])
        n += 1
    if starts is not None:
        return max((s for s in starts if s <= kept), default=0)
    total = sum(_cells(u) for u in units)
    while n and kept > total - 1:
        n -= 1
        kept -= _cells(units[n])
    return kept


class Slots:
    """Bookkeeping of a LlamaDecoder made with n_seq slots: which units each sequence holds, where it continues, which
    slots are answering."""

    def __init__(self, decoder):
        self.decoder = decoder
        self.n = decoder.n_seq
        self.held: list[list] = [[] for _ in range(self.n)]  # units in each sequence's cells, in position order
        self.next_pos = [0] * self.n  # the next token's position in each sequence
        self.busy = [False] * self.n
        self.exact = self.n == 1  # resume only at batch starts: answers bit-identical to `edgekit run`

    def free(self) -> int:
        return self.busy.count(False)

    def _take(self, units: Sequence, starts: Sequence[int] | None) -> int:
        """The free slot holding the longest reusable prefix of `units` (the first free one when none does)."""
        free = [s for s in range(self.n) if not self.busy[s]]
        if not free:
            raise RuntimeError("no free slot")  # the engine admits a request only when a slot is free
        slot = max(free, key=lambda s: shared_prefix(self.held[s], units, starts)) if units else free[0]
        self.busy[slot] = True
        return slot

    def prefill(self, ids: Sequence[int], images: Sequence[ImageEmbedding]) -> tuple[int, int]:
        """Evaluate a prompt in a free slot, reusing every cell it can; its next-token logits are left in llama.cpp
        (`decoder.last_logits()`). Returns (slot, cells reused)."""
        dec = self.decoder
        segments = split_prompt(ids, dec.image_token_id, images)
        positions = dec.positions_of(segments)  # [3, L]
        units = prompt_units(segments)
        starts = batch_starts(segments, dec.n_batch) if self.exact else None
        slot = self._take(units, starts)
        source = max(range(self.n), key=lambda s: (shared_prefix(self.held[s], units, starts), s == slot))
        kept = shared_prefix(self.held[source], units, starts)
        if kept == 0:
            dec.seq_remove(slot)
        elif source == slot:
            dec.seq_remove(slot, int(positions[0, kept]))
        else:
            dec.seq_remove(slot)
            dec.seq_copy(source, slot, int(positions[0, kept]))
        self.held[slot] = []  # until the prompt is in: a failed prefill leaves nothing to reuse
        try:
            dec.feed_segments(segments, positions, skip=kept, seq=slot, read=False)
        except BaseException:
            dec.seq_remove(slot)
            self.busy[slot] = False
            raise
        self.held[slot] = units
        self.next_pos[slot] = int(positions.max()) + 1 if positions.shape[1] else 0
        return slot, kept

    def adopt(self, next_pos: int) -> int:
        """A free slot for a prompt evaluated elsewhere (libmtmd, into sequence 0 of a one-slot decoder): nothing in
        it is known, so nothing is reused from it."""
        slot = self._take([], None)
        self.held[slot], self.next_pos[slot] = [object()], next_pos
        return slot

    def step(self, pairs: Sequence[tuple[int, int]]) -> None:
        """One token for each (slot, token), in one batch; row i's next-token logits: `decoder.logits_row(i)`."""
        slots = [s for s, _ in pairs]
        tokens = [t for _, t in pairs]
        try:
            self.decoder.decode_tokens(tokens, [self.next_pos[s] for s in slots], slots)
        except BaseException:
            for s in slots:  # what these sequences hold is unknown now: reuse nothing from them
                self.held[s] = [object()]
            raise
        for s, t in pairs:
            self.held[s].append(int(t))
            self.next_pos[s] += 1

    def release(self, slot: int) -> None:
        """The slot's answer is over; its cells stay for the next prompt that begins the same way."""
        self.busy[slot] = False
