"""A consistent read view of a database: flushed intervals plus unflushed rows.

Imports schema, block, segment, interval and dictionary. Every array in a snapshot is immutable
and every dictionary is append-only (readers use the sizes recorded here), so a concurrent
insert or flush can never tear what a query sees.
"""

from __future__ import annotations

import dataclasses

from .block import Block
from .dictionary import Dictionary
from .schema import Schema
from .segment import Segment


@dataclasses.dataclass(frozen=True, slots=True)
class IntervalView:
    start: int
    segments: tuple[Segment, ...]  # flushed, rolled up, each key once
    mem: tuple[Block, ...]  # unflushed chunks (keys may repeat, also vs. segments)
    duration: int = 0  # seconds (with tiers, coarser for re-rolled intervals); 0: the schema's
    sorted: tuple[bool, ...] = ()  # per segment: rows in roll-up order (interval.key_sorted)

    @property
    def blocks(self) -> list[Block]:
        return [s.block for s in self.segments] + list(self.mem)

    @property
    def fully_rolled_up(self) -> bool:
        """True when every dimension key appears once across all blocks (flushed intervals
        are; unflushed chunks may repeat keys)."""
        return not self.mem


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
