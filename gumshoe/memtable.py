"""The memtable: rows inserted since the last flush, per interval, visible to every read.

Imports schema and block. Each interval keeps one rolled-up block plus the chunks appended
since; chunks are rolled into it once they outgrow it (amortised, vectorised roll-up), so an
insert only appends. Readers take `view()`: immutable arrays, safe against later writes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .block import Block, rollup
from .schema import Schema

_MIN_COMPACT_ROWS = 1 << 16


class MemInterval:
    """One interval's unflushed rows: a rolled-up block plus the chunks appended since.

    Both live in one attribute, `_state`, which compaction replaces in a single assignment: a
    reader's `view()` (which may run during a flush's `compact()`) sees either the old block
    and chunks or the new block alone, never the new block together with the chunks it
    absorbed. Appends happen under the DB's write lock, as do `view()` calls that could
    race with them.
    """

    __slots__ = ("_state", "pending_rows", "schema")

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._state: tuple[Block | None, list[Block]] = (None, [])
        self.pending_rows = 0

    @property
    def rolled(self) -> Block | None:
        return self._state[0]

    @property
    def chunks(self) -> list[Block]:
        return self._state[1]

    def add(self, block: Block) -> None:
        self._state[1].append(block)
        self.pending_rows += block.n
        rolled = self._state[0]
        if self.pending_rows >= max(_MIN_COMPACT_ROWS, rolled.n if rolled else 0):
            self.compact()

    def compact(self) -> Block:
        rolled, chunks = self._state
        if chunks or rolled is None:
            blocks = ([rolled] if rolled is not None else []) + chunks
            rolled = rollup(self.schema, blocks)
            self._state = (rolled, [])
            self.pending_rows = 0
        return rolled

    def view(self) -> tuple[Block, ...]:
        rolled, chunks = self._state
        head = (rolled,) if rolled is not None and rolled.n else ()
        return head + tuple(chunks)


class Memtable:
    """Unflushed rows: interval start -> MemInterval."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.intervals: dict[int, MemInterval] = {}
        self.rows = 0  # input rows added

    def add(self, starts: np.ndarray, block: Block) -> None:
        """Add encoded rows whose interval starts are `starts`."""
        self.rows += int(block.count.sum())
        if block.n == 0:
            return
        first = int(starts[0])
        parts: list[tuple[int, Block]]
        if (starts == first).all():
            parts = [(first, block)]
        elif (starts[1:] >= starts[:-1]).all():  # in time order (a rolled-up bulk batch):
            cuts = np.flatnonzero(starts[1:] != starts[:-1]) + 1  # slices, nothing copied
            parts = [(int(starts[lo]), block.slice(lo, hi)) for lo, hi in
                     zip([0, *cuts.tolist()], [*cuts.tolist(), block.n])]
        else:
            order = np.argsort(starts, kind="stable")
            sorted_starts = starts[order]
            cuts = np.flatnonzero(sorted_starts[1:] != sorted_starts[:-1]) + 1
            parts = [(int(sorted_starts[lo]), block.take(order[lo:hi])) for lo, hi in
                     zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [block.n])))]
        for start, part in parts:
            mi = self.intervals.get(start)
            if mi is None:
                mi = self.intervals[start] = MemInterval(self.schema)
            mi.add(part)

    def view(self) -> dict[int, tuple[Block, ...]]:
        return {start: mi.view() for start, mi in self.intervals.items()}

    def rekey(self, start_of: Callable[[int], int]) -> None:
        """Move each interval's rows to the interval `start_of(start)` (with tiers: after a
        re-roll moved a watermark, unflushed rows of the re-rolled range belong to its coarser
        interval). Blocks move, nothing is copied; call under the DB's write lock."""
        groups: dict[int, list[tuple[int, MemInterval]]] = {}
        for start, mi in self.intervals.items():
            groups.setdefault(start_of(start), []).append((start, mi))
        moved: dict[int, MemInterval] = {}
        for target, members in groups.items():
            if len(members) == 1 and members[0][0] == target:
                moved[target] = members[0][1]
                continue
            into = moved[target] = MemInterval(self.schema)  # new: readers keep the old ones
            for _, mi in members:
                for b in mi.view():
                    into.add(b)
        self.intervals = moved

    def __len__(self) -> int:
        return len(self.intervals)
