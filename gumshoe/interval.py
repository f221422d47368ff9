"""Intervals: one time bucket of rolled-up rows, stored as a list of segments.

Imports schema, layout, block and segment. Within an interval every dimension key appears once, in key
order across its segments; a flush that adds rows writes a new generation of the interval. An
interval knows its duration (with tiers, a re-rolled interval is coarser than new ones) and,
per segment, whether the segment's rows are in roll-up order: by the dimensions in schema
order, each nil first, then ascending values. Roll-up writes them so; the flag is checked, not
assumed (a segment written by another tool may not be: `key_sorted`), and lets a query turn an
equality filter on the leading dimensions into row ranges by binary search (engine.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
from pathlib import Path

import numpy as np

from .block import Block
from .errors import CorruptDataError
from .layout import IntervalMeta, SegmentMeta, segment_filename
from .schema import Schema
from .segment import Segment, narrow_dtype, write_segment


@dataclasses.dataclass(frozen=True, slots=True)
class Interval:
    start: int
    generation: int
    segments: tuple[Segment, ...]
    duration: int = 0  # seconds (set by build_interval and open_interval)
    sorted: tuple[bool, ...] = ()  # per segment: in roll-up order (key_sorted)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.segments)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.segments)

    @property
    def blocks(self) -> list[Block]:
        return [s.block for s in self.segments]

    def filenames(self) -> list[str]:
        return [segment_filename(self.start, self.generation, i)
                for i in range(len(self.segments))]

    def meta(self) -> IntervalMeta:
        """Its entry in the metadata."""
        return IntervalMeta(self.start, self.generation, tuple(
            SegmentMeta(name, s.rows) for name, s in zip(self.filenames(), self.segments)),
            self.duration)


def key_sorted(schema: Schema, block: Block) -> bool:
    """Are the block's rows in roll-up order: by the dimensions in schema order, each with
    nil first, then ascending values (rows may repeat a key)? Vectorised: one pass over
    each dimension column."""
    if not schema.dimensions or block.n < 2:
        return True
    ok = np.ones(block.n - 1, bool)
    equal = np.ones(block.n - 1, bool)  # rows i and i+1 equal in the dimensions so far
    for d in schema.dimensions:
        values, nil = block.dims[d.name], block.nils[d.name]
        a, b = values[:-1], values[1:]
        if nil is None:
            greater, same = a > b, a == b
        else:
            na, nb = nil[:-1], nil[1:]
            greater = (~na & nb) | (~na & ~nb & (a > b))
            same = (na & nb) | (~na & ~nb & (a == b))
        ok &= ~(equal & greater)
        equal &= same
        if not equal.any():
            break
    return bool(ok.all())


def rows_per_segment(schema: Schema, block: Block, narrow: bool) -> int:
    """Rows per segment so that a segment's columns take at most `segment_size` bytes. Written
    segments store the count and integer metrics narrow (segment.narrowest), so this measures
    the block's own widths (a segment's are no wider) rather than the schema's full row width;
    never fewer rows than `schema.rows_per_segment`."""
    if not narrow or not block.n:
        return schema.rows_per_segment
    width = narrow_dtype(block.count).itemsize
    for d in schema.dimensions:
        width += d.dtype.itemsize + (block.nils[d.name] is not None)
    width += sum(narrow_dtype(block.metrics[m.name]).itemsize for m in schema.metrics)
    width += -(-sum(s.nbytes for s in block.sketches.values()) // block.n)  # uniques: mean
    return max(schema.rows_per_segment, schema.segment_size // width)


def build_interval(schema: Schema, start: int, generation: int, block: Block,
                   directory: Path | None, fsync: bool = True,
                   written: list[Path] | None = None, duration: int | None = None) -> Interval:
    """Cut a rolled-up block into segments whose columns take at most `segment_size` bytes
    (rows_per_segment); write them to `directory` (None: keep them in memory, full width).
    Each file is appended to `written` (when given) before it is written, so a caller can
    remove the files of an attempt that failed. `duration`: the interval's (default: the
    schema's interval_duration)."""
    per = rows_per_segment(schema, block, directory is not None)
    ordered = key_sorted(schema, block)  # then every slice of it is too
    segments = []
    for i, lo in enumerate(range(0, block.n, per)):
        part = block.slice(lo, lo + per)
        if directory is None:
            segments.append(Segment.in_memory(schema, part))
        else:
            path = directory / segment_filename(start, generation, i)
            if written is not None:
                written.append(path)
            write_segment(path, schema, part, fsync=fsync)
            segments.append(Segment.open(path, schema))
    return Interval(start, generation, tuple(segments), duration or schema.interval_duration,
                    (ordered,) * len(segments))


def open_interval(schema: Schema, directory: Path, meta: IntervalMeta,
                  verify: bool = False) -> Interval:
    """Open (memory-map) the segments the metadata lists, checking their row counts (and, with
    `verify`, every column checksum)."""
    segments = []
    for s in meta.segments:
        seg = Segment.open(directory / s.file, schema, verify=verify)
        if seg.rows != s.rows:
            raise CorruptDataError(f"{directory / s.file}: segment holds {seg.rows} rows, the "
                                   f"metadata says {s.rows}")
        segments.append(seg)
    ordered = tuple(key_sorted(schema, s.block) for s in segments)
    if verify:
        for seg in segments:
            _release(seg)
    return Interval(meta.start, meta.generation, tuple(segments),
                    meta.duration or schema.interval_duration, ordered)


def _release(segment: Segment) -> None:
    """Unmap the pages of a segment that were read for its checksums (they stay in the page
    cache; a query faults in what it touches): a database need not fit in memory, and a
    process that opened one does not hold all of it resident."""
    mm = getattr(segment.block.count.base, "obj", None)
    if isinstance(mm, mmap.mmap):
        with contextlib.suppress(OSError, ValueError):
            mm.madvise(mmap.MADV_DONTNEED)
