"""Intervals: one time bucket of rolled-up rows, stored as one or more runs of segments.

Imports schema, layout, block and segment. A **run** is a rolled-up list of segments written at
once (its own generation): within a run every dimension key appears once, in key order across
its segments. A flush appends a new run to each interval it touches rather than rewriting it,
and a merge (db.py, in the background) combines runs as `merge_plan` says, size-tiered as LSM
stores do (both: `keep_runs`). Keys may repeat across runs: a query merges them as it merges
unflushed rows, and `rolled` is the one roll-up of all runs (for metric filters), kept as long
as the interval is (docs/storage.md section 6). An interval knows its duration (with tiers, a
re-rolled interval is coarser than new ones) and, per segment, whether the segment's rows are
in roll-up order: by the dimensions in schema order, each nil first, then ascending values.
Roll-up writes them so; the flag is checked, not assumed (a segment written by another tool may
not be: `key_sorted`), and lets a query turn an equality filter on the leading dimensions into
row ranges by binary search (engine.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import mmap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .block import Block, rollup
from .errors import CorruptDataError
from .layout import IntervalMeta, SegmentMeta, segment_filename
from .schema import Schema
from .segment import Segment, narrow_dtype, write_segment


FANOUT = 8  # runs of one size level merged at once
MAX_RUNS = 24  # runs per interval, at most (a flush beyond it merges the smallest)


@dataclasses.dataclass(frozen=True, slots=True)
class Interval:
    start: int
    generation: int  # the newest run's
    segments: tuple[Segment, ...]  # run after run
    duration: int = 0  # seconds (set by build_interval and open_interval)
    sorted: tuple[bool, ...] = ()  # per segment: in roll-up order (key_sorted)
    # (generation, segments) per run, oldest first, when there are several (layout.IntervalMeta)
    runs: tuple[tuple[int, int], ...] = ()
    # the roll-up of all runs once made (`rolled`); never compared
    _rolled: list[Block] = dataclasses.field(default_factory=list, compare=False, repr=False)

    @property
    def rows(self) -> int:
        """Rows stored (with several runs, an upper bound of the rolled-up rows)."""
        return sum(s.rows for s in self.segments)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.segments)

    @property
    def blocks(self) -> list[Block]:
        return [s.block for s in self.segments]

    @property
    def run_list(self) -> tuple[tuple[int, int], ...]:
        """(generation, segments) of each run, oldest first."""
        return self.runs or ((self.generation, len(self.segments)),)

    @property
    def nruns(self) -> int:
        return max(len(self.runs), 1)

    def run_segments(self) -> list[tuple[Segment, ...]]:
        """The segments of each run, oldest first."""
        out, i = [], 0
        for _, n in self.run_list:
            out.append(self.segments[i:i + n])
            i += n
        return out

    def run_rows(self) -> list[int]:
        return [sum(s.rows for s in segs) for segs in self.run_segments()]

    def run_filenames(self, run: int) -> list[str]:
        gen, n = self.run_list[run]
        return [segment_filename(self.start, gen, i) for i in range(n)]

    def filenames(self) -> list[str]:
        return [f for r in range(len(self.run_list)) for f in self.run_filenames(r)]

    def meta(self) -> IntervalMeta:
        """Its entry in the metadata."""
        return IntervalMeta(self.start, self.generation, tuple(
            SegmentMeta(name, s.rows) for name, s in zip(self.filenames(), self.segments)),
            self.duration, self.runs)

    def rolled(self, schema: Schema) -> Block:
        """All runs rolled up into one block (each key once), made once per interval (an
        interval never changes: a flush or merge makes a new one)."""
        if not self._rolled:
            blocks = self.blocks
            self._rolled.append(blocks[0] if len(blocks) == 1 and self.nruns == 1
                                else rollup(schema, blocks))
        return self._rolled[0]

    def keep_runs(self, keep: Sequence[int], merged: Interval | None) -> Interval:
        """This interval with only the runs at the indices `keep` (in their order), then
        `merged` (a one-run interval of a newer generation, if any) as its newest run."""
        segs = self.run_segments()
        sorted_flags = self.run_sorted()
        runs = [self.run_list[i] for i in keep]
        segments = [s for i in keep for s in segs[i]]
        flags = [f for i in keep for f in sorted_flags[i]]
        gen = self.run_list[keep[-1]][0] if keep else self.generation
        if merged is not None:
            assert merged.nruns == 1 and merged.generation > self.generation
            runs.append((merged.generation, len(merged.segments)))
            segments.extend(merged.segments)
            flags.extend(merged.sorted)
            gen = merged.generation
        assert runs, "an interval keeps at least one run"
        return dataclasses.replace(self, generation=gen, segments=tuple(segments),
                                   sorted=tuple(flags), runs=tuple(runs) if len(runs) > 1
                                   else (), _rolled=[])

    def run_sorted(self) -> list[tuple[bool, ...]]:
        out, i = [], 0
        for _, n in self.run_list:
            out.append(self.sorted[i:i + n])
            i += n
        return out


def merge_plan(rows: Sequence[int], fanout: int = FANOUT, max_runs: int = MAX_RUNS
               ) -> tuple[int, ...]:
    """Which runs (indices, ascending) to merge into one, size-tiered: a run's level is
    floor(log_fanout(rows)); the runs of the lowest level that holds `fanout` or more are
    merged (each row is rewritten about once per level: log_fanout of the interval's growth).
    Else, over `max_runs` runs, the smallest ones, down to `max_runs`. () : nothing to do."""
    if len(rows) < 2:
        return ()
    levels = [int(math.log(max(r, 1)) / math.log(fanout) + 1e-9) for r in rows]
    for level in sorted(set(levels)):
        same = tuple(i for i, lv in enumerate(levels) if lv == level)
        if len(same) >= fanout:
            return same
    return cap_plan(rows, max_runs)


def cap_plan(rows: Sequence[int], max_runs: int = MAX_RUNS) -> tuple[int, ...]:
    """Over `max_runs` runs: the smallest ones (indices, ascending), whose merge into one
    leaves `max_runs`; else (). A flush applies it (the size-tiered rest is background)."""
    if len(rows) <= max_runs:
        return ()
    smallest = sorted(range(len(rows)), key=lambda i: rows[i])[:len(rows) - max_runs + 1]
    return tuple(sorted(smallest))


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
                    meta.duration or schema.interval_duration, ordered, meta.runs)


def _release(segment: Segment) -> None:
    """Unmap the pages of a segment that were read for its checksums (they stay in the page
    cache; a query faults in what it touches): a database need not fit in memory, and a
    process that opened one does not hold all of it resident."""
    mm = getattr(segment.block.count.base, "obj", None)
    if isinstance(mm, mmap.mmap):
        with contextlib.suppress(OSError, ValueError):
            mm.madvise(mmap.MADV_DONTNEED)
