"""The memtable: rows inserted since the last flush, per interval, visible to every read.

Imports schema and block. Each interval keeps one rolled-up block plus the chunks appended
since; chunks are rolled into it once they outgrow it (amortised, vectorised roll-up), so an
insert only appends. Readers take `view()`: immutable arrays, safe against later writes.
"""

from __future__ import annotations

import numpy as np

from .block import Block, rollup
from .schema import Schema

_MIN_COMPACT_ROWS = 1 << 16


class MemInterval:
    __slots__ = ("chunks", "pending_rows", "rolled", "schema")

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.rolled: Block | None = None
        self.chunks: list[Block] = []
        self.pending_rows = 0

    def add(self, block: Block) -> None:
        self.chunks.append(block)
        self.pending_rows += block.n
        if self.pending_rows >= max(_MIN_COMPACT_ROWS, self.rolled.n if self.rolled else 0):
            self.compact()

    def compact(self) -> Block:
        if self.chunks or self.rolled is None:
            blocks = ([self.rolled] if self.rolled is not None else []) + self.chunks
            self.rolled = rollup(self.schema, blocks)
            self.chunks = []
            self.pending_rows = 0
        return self.rolled

    def view(self) -> tuple[Block, ...]:
        head = (self.rolled,) if self.rolled is not None and self.rolled.n else ()
        return head + tuple(self.chunks)


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
        if (starts == first).all():
            groups = [(first, None)]
        else:
            order = np.argsort(starts, kind="stable")
            sorted_starts = starts[order]
            cuts = np.flatnonzero(sorted_starts[1:] != sorted_starts[:-1]) + 1
            groups = [(int(sorted_starts[lo]), order[lo:hi]) for lo, hi in
                      zip(np.concatenate(([0], cuts)), np.concatenate((cuts, [block.n])))]
        for start, index in groups:
            part = block if index is None else block.take(index)
            mi = self.intervals.get(start)
            if mi is None:
                mi = self.intervals[start] = MemInterval(self.schema)
            mi.add(part)

    def view(self) -> dict[int, tuple[Block, ...]]:
        return {start: mi.view() for start, mi in self.intervals.items()}

    def __len__(self) -> int:
        return len(self.intervals)
