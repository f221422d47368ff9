"""A consistent read view of a database: flushed intervals plus unflushed rows.

Imports schema, block, segment, interval and dictionary. Every array in a snapshot is immutable
and every dictionary is append-only (readers use the sizes recorded here), so a concurrent
insert or flush can never tear what a query sees.
"""

from __future__ import annotations

import dataclasses

from .block import Block
from .dictionary import Dictionary
from .interval import Interval
from .schema import Schema
from .segment import Segment


@dataclasses.dataclass(frozen=True, slots=True)
class IntervalView:
    start: int
    segments: tuple[Segment, ...]  # flushed, rolled up, each key once per run
    mem: tuple[Block, ...]  # unflushed chunks (keys may repeat, also vs. segments)
    duration: int = 0  # seconds (with tiers, coarser for re-rolled intervals); 0: the schema's
    sorted: tuple[bool, ...] = ()  # per segment: rows in roll-up order (interval.key_sorted)
    interval: Interval | None = None  # the flushed interval (its runs), if any

    @property
    def blocks(self) -> list[Block]:
        return [s.block for s in self.segments] + list(self.mem)

    @property
    def runs(self) -> int:
        """Flushed runs (keys may repeat across runs, as in unflushed chunks)."""
        return self.interval.nruns if self.interval is not None else min(len(self.segments), 1)

    @property
    def fully_rolled_up(self) -> bool:
        """True when every dimension key appears once across all blocks (a flushed interval
        of one run is; unflushed chunks and several runs may repeat keys)."""
        return not self.mem and self.runs <= 1

    def rollup_inputs(self, schema: Schema) -> list[Block]:
        """Blocks whose roll-up is the interval's: the flushed rows as one roll-up of its
        runs (made once per run set, interval.rolled) when there are several, then the
        unflushed chunks."""
        if self.runs > 1 and self.interval is not None:
            return [self.interval.rolled(schema), *self.mem]
        return self.blocks


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    schema: Schema
    intervals: tuple[IntervalView, ...]  # ascending start
    dictionaries: dict[str, Dictionary]
    dict_sizes: dict[str, int]

    def strings(self, name: str):  # type: ignore[no-untyped-def]
        """Code -> string object array of a string dimension, as of this snapshot."""
        return self.dictionaries[name].strings(self.dict_sizes[name])

    def ranks(self, name: str):  # type: ignore[no-untyped-def]
        """Code -> rank of its string in string order, as of this snapshot."""
        return self.dictionaries[name].ranks(self.dict_sizes[name])
