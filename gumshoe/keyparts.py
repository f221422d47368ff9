"""The group key of a query's scan: one part per grouping, how its values become integer
codes (a time grouping's code per interval, dense codes of strings and narrow integers, or
values grouped by sorting), and back. The scan combines the parts' codes into one mixed-radix
key (engine.py; the C kernels take the same parts).

Imports query, block, snapshot and pieces (a coalesced block's per-row interval starts).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .block import Block
from .pieces import START
from .query import Grouping
from .snapshot import Snapshot


@dataclasses.dataclass(frozen=True, slots=True)
class KeyPart:
    """How one grouping becomes integer codes. kind: "time" (a code per interval: the index of
    its bucket start among `times`), "dense" (codes from a fixed range: string codes,
    8/16-bit integers) or "values" (anything else: grouped by sorting the values)."""

    grouping: Grouping
    kind: str
    card: int = 1
    offset: int = 0  # dense integers: code = value - offset (nil = 0)
    times: tuple[int, ...] = ()  # time parts: the distinct bucket starts of the intervals
    value_of: dict[int, int] = dataclasses.field(default_factory=dict)  # start -> bucket
    code_of: dict[int, int] = dataclasses.field(default_factory=dict)  # start -> its code
    # time parts, as arrays over the ascending interval starts: each one's bucket and code
    starts: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    bucket_values: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    bucket_codes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))

    def time_value(self, start: int) -> int:
        return self.value_of[start]

    def time_code(self, start: int) -> int:
        return self.code_of[start]

    def row_time_codes(self, starts: np.ndarray) -> np.ndarray:
        """The codes of rows of a coalesced block, from their interval starts."""
        return self.bucket_codes[np.searchsorted(self.starts, starts)]

    def codes(self, block: Block, rows: np.ndarray | None = None) -> np.ndarray:
        """int64 codes (value - offset; nil 0) of the block's rows (all, or those at `rows`)."""
        name = self.grouping.column.name
        values, nil = block.dims[name], block.nils[name]
        if rows is not None:
            values = values.take(rows)
            nil = None if nil is None else nil.take(rows)
        codes = np.subtract(values, self.offset, dtype=np.int64)  # one pass, one array
        if nil is not None:
            codes[nil] = 0
        return codes

    def values(self, block: Block, start: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        if self.kind == "time":
            if start is None:  # a coalesced block: per row
                return self.bucket_values[np.searchsorted(self.starts, block.dims[START])], None
            return np.full(block.n, self.time_value(start), np.int64), None
        name = self.grouping.column.name
        # a time transform of a uint32 dimension: vectorised over the rows (bucket starts)
        return self.grouping.buckets(block.dims[name]), block.nils[name]

    def decode(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.kind == "time":
            return np.asarray(self.times, np.int64)[codes], None
        nil = codes == 0
        col = self.grouping.column
        values = (codes + self.offset).astype(np.int64 if col.is_string else col.dtype)
        return values, (nil if nil.any() else None)


def plan_part(g: Grouping, snapshot: Snapshot) -> KeyPart:
    col = g.column
    if col.role == "timestamp":
        # the bucket of each interval start, vectorised (a calendar bucket costs per interval)
        starts = np.array([v.start for v in snapshot.intervals], np.int64)
        values = g.buckets(starts)
        times = np.unique(values)
        codes = np.searchsorted(times, values)
        keys = starts.tolist()
        return KeyPart(g, "time", max(len(times), 1), 0, tuple(times.tolist()),
                     dict(zip(keys, values.tolist())), dict(zip(keys, codes.tolist())),
                     starts, values.astype(np.int64), codes.astype(np.int64))
    if col.is_string:
        return KeyPart(g, "dense", snapshot.dict_sizes[col.name] + 1, -1)
    if g.transform is None and col.dtype.kind in "ui" and col.dtype.itemsize <= 2:
        lo, hi = col.value_range
        return KeyPart(g, "dense", int(hi) - int(lo) + 2, int(lo) - 1)
    return KeyPart(g, "values")
