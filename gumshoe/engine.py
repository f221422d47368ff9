"""Query execution over a Snapshot: plan, scan tasks in parallel, merge, finish.

Imports schema, block, snapshot, query, partials, keyparts (the group key) and pieces (what a
task reads). A task scans a run of blocks (from one or many intervals): the filter becomes row
positions, the groupings one mixed-radix integer key (a timestamp grouping is a code that is
constant over an interval), and the sums either dense accumulators (small key spaces: the fused
C kernel, or `np.bincount`, exact: float64 partial sums are checked against 2**53 and cast to
int64 per block) or a sort-and-reduce over the selected rows; uniques sketches go to one union
per task (sketch.union_blocks), except in the fused dense scan, whose tasks gather and one union
over every block runs on the scan's threads (`Scanner.unite`).

Pruning before the scan (docs/storage.md §4, the rules in filters.py): intervals by their start
(timestamp filters), segments by their header's per-dimension min/max and nil presence (skipped
unread), rows of a segment ordered by the leading dimension by binary search to the ranges its
restriction admits (the scan sees slices: views, no copies), and nothing at all when a
restriction admits no value. Unflushed blocks are scanned whole. `Scanner.pruned` counts what
was skipped. With tiers, `Scanner.granularity` is the coarsest interval scanned when a time
grouping or timestamp filter is finer than some scanned interval (the answer uses the stored
buckets there), else None.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import threading
from collections.abc import Iterator
from concurrent.futures import Executor
from typing import Any, NamedTuple

import numpy as np

from . import native
from .config import format_duration
from .block import Block
from .fill import time_bounds
from .filters import CompiledFilter
from .query import Query
from .partials import (
    EXACT_FLOAT_SUM,
    Partial,
    check_sums,
    decode,
    empty_partial,
    finalize,
    merge,
    query_kinds,
    reduce_groups,
    sketch_columns,
    value_columns,
)
from .keyparts import plan_part
from .kinds import SUM, Kind
from .pieces import (
    COALESCE_MIN_PIECES,
    COALESCE_ROWS,
    START,
    Piece,
    concat_pieces,
    piece_stats,
    rolled_up,
    slice_block,
)
from .schema import Schema
from .sketch import Keys, SketchColumn, union_blocks, union_summing
from .snapshot import IntervalView, Snapshot

DENSE_MAX_GROUPS = 1 << 20  # largest key space accumulated densely per task
TASK_ROWS = 1 << 21  # most rows per scan task
MIN_TASK_ROWS = 1 << 16  # fewer rows are not worth a task of their own

# (interval start, block, its segment stats); start None: a block coalesced from small pieces
# of several intervals, each row's interval start in its dims[START]
Item = tuple[int | None, Block, dict[str, Any]]
HI, LO = "\0hi:", "\0lo:"  # the two halves of a split sum (names no column can have)
_KERNEL_OPS = {"sum": 0, "min": 1, "max": 2}  # native.kernels.accumulate's ops


class Scanner:
    """A query's scan over one snapshot: how each grouping becomes integer codes, the filter
    compiled against the snapshot's dictionaries, the scan tasks, and the kernels that turn a
    task's blocks into a Partial (`scan`)."""

    def __init__(self, query: Query, snapshot: Snapshot, max_groups: int | None) -> None:
        self.query = query
        self.schema: Schema = snapshot.schema
        self.max_groups = max_groups
        self.filter = (CompiledFilter(query.filter, snapshot.dictionaries, snapshot.dict_sizes)
                       if query.filter is not None else None)
        self.parts = [plan_part(g, snapshot) for g in query.groupings]
        self.key_space = math.prod(p.card for p in self.parts)
        self.dense = (all(p.kind != "values" for p in self.parts)
                      and self.key_space <= DENSE_MAX_GROUPS)
        self.metric_filter = query.has_metric_filter(self.schema)
        self.sum_dtypes = {c: self.schema.column(c).store_dtype  # type: ignore[union-attr]
                           for c in value_columns(query)}
        self.kinds = query_kinds(query)  # min/max columns: reduced by their kind, not summed
        # uniques: the dense scan gathers the selected rows' sketches and group keys of every
        # block, united per group by one C call at the end (the fused kernel sums only)
        self.sketches = sketch_columns(query)
        self.kernels = native.kernels  # the fused C kernel, or None: the numpy kernels
        self.split: list[str] = []  # integer sums summed in two halves (split_sums)
        self.extent: tuple[int, int] | None = None  # first and last interval scanned
        self.cancel: threading.Event | None = None  # set: stop scanning (QueryCancelled)
        self.base = self.schema.interval_duration  # the finest interval duration
        self.lead = self.schema.dimensions[0].name if self.schema.dimensions else None
        self.sort_key = tuple(d.name for d in self.schema.dimensions)  # roll-up order
        # what pruning skipped: whole segments, and rows (in skipped segments or outside the
        # leading dimension's ranges)
        self.pruned = {"segments": 0, "rows": 0}
        self.granularity: int | None = None  # seconds, when coarser than asked (module doc)

    def _each(self, items: list[Item]) -> Iterator[Item]:
        """The items of a task, stopping at the next block once the query is cancelled (a
        block is one segment: the scan threads return within a few milliseconds)."""
        cancel = self.cancel
        for item in items:
            if cancel is not None and cancel.is_set():
                raise QueryCancelled
            yield item

    def memory_estimate(self, tasks: list[list[Item]], threads: int) -> tuple[int, int]:
        """(bytes, groups): an upper estimate of what running the query allocates, made before
        anything is: per-task accumulators or sorted keys, the merge, and the result rows."""
        rows = sum(b.n for items in tasks for _, b, _ in items)
        width = 8 + 8 * len(self.sum_dtypes) + 9 * len(self.parts)  # bytes per group
        known = math.prod(p.card for p in self.parts if p.kind != "values")
        groups = min(rows, known) if any(p.kind == "values" for p in self.parts) else \
            min(self.key_space, max(rows, 1))
        if not self.parts:
            groups = 1
        busy = min(threads, len(tasks))  # tasks scanned at once
        if self.dense:
            scan = self.key_space * (8 + 8 * len(self.sum_dtypes)) * (busy + 1)
        else:
            largest = max((sum(b.n for _, b, _ in items) for items in tasks), default=0)
            scan = 3 * width * largest * busy
        # uniques: the per-group sketches are at most the scanned sketches (x2: the merge),
        # and the union's partition of the groups it does not stream at most as much again
        scan += 3 * sum(b.sketches[c].nbytes for items in tasks for _, b, _ in items
                        for c in self.sketches)
        shown = groups if self.query.limit is None else min(groups, self.query.limit)
        outputs = len(self.parts) + len(self.query.aggregates) + 1
        result = shown * (120 + 70 * outputs)  # Python dicts and values, then JSON
        return scan + 3 * width * groups + result, groups

    def tasks(self, snapshot: Snapshot, threads: int) -> list[list[Item]]:
        """The blocks to scan, cut into about `threads` tasks (none over TASK_ROWS rows, none
        under MIN_TASK_ROWS unless it is the last); a task may span intervals."""
        items: list[Item] = []
        scanned: list[IntervalView] = []
        f = self.filter
        nothing = f is not None and f.matches_nothing()
        views = snapshot.intervals
        timed = f is not None and f.compares_time()  # then no coalescing (blocks keep a start)
        if timed:  # only starts inside the filter's time bounds can pass: bisect to them
            lo, hi = time_bounds(self.query.filter, self.schema.timestamp.name)
            first = 0 if lo is None else bisect.bisect_left(views, lo, key=_start)
            last = len(views) if hi is None else bisect.bisect_right(views, hi, key=_start)
            views = views[first:last]
        pieces: list[Piece] = []  # row ranges that pruning left of segments
        for view in views:
            if timed and f.prune(view.start) is False:  # type: ignore[union-attr]
                continue
            scanned.append(view)
            if not nothing:
                self._items(view, items, pieces)
        self.extent = (scanned[0].start, scanned[-1].start) if scanned else None
        self.granularity = self._granularity(scanned, snapshot.intervals)
        items.extend(self._pieces(pieces, coalesce=not timed))
        total = sum(b.n for _, b, _ in items)
        threads = max(threads, 1)
        # a multiple of `threads` tasks of equal size, so no thread is left with an extra one;
        # with uniques, one per thread: the tasks gather (and sum) and one union over all of
        # their blocks runs on the threads (`unite`); a task's accumulators are held until then
        n_tasks = threads * (1 if self.sketches else max(1, -(-total // (threads * TASK_ROWS))))
        per_task = max(MIN_TASK_ROWS, -(-total // n_tasks))
        tasks: list[list[Item]] = [[]]
        rows = 0
        for item in items:
            if rows >= per_task:
                tasks.append([])
                rows = 0
            tasks[-1].append(item)
            rows += item[1].n
        return [t for t in tasks if t]

    def split_sums(self, tasks: list[list[Item]]) -> None:
        """Sums kept in 64 bits must not wrap. For each integer sum that could leave its range
        over these blocks (segments carry a bound from their min/max; an unflushed block sums
        at most `count` inputs of the declared type per row), the scan sums `v >> 32` and
        `v & 0xffffffff` instead: neither can wrap below 2**31 rows, and `exact_sums` adds
        them up exactly."""
        cols = [c for c, dt in self.sum_dtypes.items() if dt.kind in "iu" and c not in self.kinds]
        if not cols:
            return
        declared = [max(abs(int(x)) for x in self.schema.column(c).value_range)  # type: ignore
                    for c in cols]
        flushed = [stats for items in tasks for _, _, stats in items if stats]
        logical = sum(b.logical_rows for items in tasks for _, b, stats in items if not stats)
        for c, d in zip(cols, declared):
            key = "bound:m:" + c
            bound = sum(stats.get(key, 0) for stats in flushed) + logical * d
            dt = self.sum_dtypes[c]
            if bound > np.iinfo(dt).max:
                self.split.append(c)
                del self.sum_dtypes[c]
                self.sum_dtypes[HI + c] = dt
                self.sum_dtypes[LO + c] = np.dtype(np.uint64)

    def _split_items(self, items: list[Item]) -> list[Item]:
        out = []
        for start, block, stats in items:
            metrics = dict(block.metrics)
            for c in self.split:  # in the full type (a segment may store it narrower)
                v = metrics[c].astype(self.schema.column(c).store_dtype,  # type: ignore
                                      copy=False)
                metrics[HI + c] = v >> 32
                metrics[LO + c] = (v & v.dtype.type(0xFFFFFFFF)).astype(np.uint64)
            out.append((start, dataclasses.replace(block, metrics=metrics), stats))
        return out

    def exact_sums(self, partial: Partial) -> Partial:
        """Put split sums back together as exact integers; a sum outside its 64-bit type is a
        QueryError naming the aggregate, never a wrapped number."""
        for c in self.split:
            dt = self.schema.column(c).store_dtype  # type: ignore[union-attr]
            hi, lo = partial.sums.pop(HI + c), partial.sums.pop(LO + c)
            exact = [h * 2**32 + x for h, x in zip(hi.tolist(), lo.tolist())]
            where = next(f"aggregates[{i}]" for i, a in enumerate(self.query.aggregates)
                         if a.column.name == c)
            check_sums(c, dt, exact, where)
            partial.sums[c] = np.array(exact, dt)
        return partial

    def _items(self, view: IntervalView, items: list[Item], pieces: list[Piece]) -> None:
        """Append the view's blocks to scan to `items`, and the row ranges that pruning left
        of its segments (small, usually) to `pieces`."""
        if self.metric_filter and not view.fully_rolled_up:
            # Metric filters apply to rolled-up rows: combine flushed and unflushed rows first.
            blocks = view.rollup_inputs(self.schema)  # several runs: their roll-up, cached
            block = rolled_up(self.schema, blocks) if view.mem else blocks[0]
            items.append((view.start, block, {}))
            return
        f = self.filter
        if f is None or not f.restrictions:
            items.extend((view.start, s.block, s.scan_stats) for s in view.segments)
            items.extend((view.start, b, {}) for b in view.mem)
            return
        ordered = view.sorted
        pruned = self.pruned
        for i, seg in enumerate(view.segments):
            block = seg.block
            if not f.segment_may_match(seg.scan_stats, block.nils, seg.path is not None):
                pruned["segments"] += 1
                pruned["rows"] += block.n
                continue
            if self.lead is None or i >= len(ordered) or not ordered[i]:
                items.append((view.start, block, seg.scan_stats))
                continue
            ranges = f.row_ranges(block, self.sort_key)
            if ranges is None:  # the leading dimension is not restricted
                items.append((view.start, block, seg.scan_stats))
                continue
            kept = sum(hi - lo for lo, hi in ranges)
            pruned["rows"] += block.n - kept
            if kept == block.n:
                items.append((view.start, block, seg.scan_stats))
            elif not ranges:
                pruned["segments"] += 1
            else:
                pieces.extend((view.start, block, seg.scan_stats, lo, hi) for lo, hi in ranges)
        items.extend((view.start, b, {}) for b in view.mem)

    def _pieces(self, pieces: list[Piece], coalesce: bool) -> list[Item]:
        """The pieces as items to scan: slices of their segments (views, no copies), or, when
        many are small and `coalesce` (no timestamp comparison in the filter: a scan of rows
        of several intervals needs none), joined into blocks of up to MIN_TASK_ROWS rows with
        each row's interval start in dims[START] -- a scan then costs per block, not per piece
        (one app over 3 years of daily intervals leaves a few rows in each of a thousand)."""
        small = [p for p in pieces if p[4] - p[3] <= COALESCE_ROWS]
        if not coalesce or len(small) < COALESCE_MIN_PIECES:
            return [(s, slice_block(b, lo, hi), st) for s, b, st, lo, hi in pieces]
        out: list[Item] = [(s, slice_block(b, lo, hi), st) for s, b, st, lo, hi in pieces
                           if hi - lo > COALESCE_ROWS]
        run: list[Piece] = []
        rows = 0
        for p in small:
            if rows + p[4] - p[3] > MIN_TASK_ROWS:
                out.append((None, concat_pieces(self.schema, run), piece_stats(run)))
                run, rows = [], 0
            run.append(p)
            rows += p[4] - p[3]
        if run:
            out.append((None, concat_pieces(self.schema, run), piece_stats(run)))
        return out

    def _granularity(self, views: list[IntervalView],
                     every: tuple[IntervalView, ...]) -> int | None:
        """The coarsest duration among the scanned intervals (`views`) and those a timestamp
        filter cuts (of `every` interval, ascending) when some interval is coarser than the
        query asks: a scanned interval that spans several buckets of a time grouping (its
        rows all land in the bucket of its start) or whose roll-up a metric filter tests
        (coarser than the finest interval's), or any interval that a timestamp filter's
        boundary falls inside (its start decides for all of it); else None."""
        groupings = [g for g in self.query.groupings if g.column.role == "timestamp"]
        cuts = self.filter.time_cuts(self.base) if self.filter is not None else ()
        coarsest: int | None = None
        for p in cuts:  # the interval holding p, if p is inside it (not its start)
            i = bisect.bisect_left(every, p, key=lambda v: v.start) - 1
            if i >= 0 and every[i].start + (every[i].duration or self.base) > p:
                coarsest = max(coarsest or 0, every[i].duration or self.base)
        if not views or (not groupings and not self.metric_filter and coarsest is None):
            return coarsest
        n = len(views)
        starts = np.fromiter((v.start for v in views), np.int64, n)
        durations = np.fromiter((v.duration or self.base for v in views), np.int64, n)
        # a metric filter sees each interval's roll-up: a coarser one sums more input rows
        coarse = durations > self.base if self.metric_filter else np.zeros(n, bool)
        for g in groupings:
            if g.transform is None:  # a bucket per interval of the finest duration
                coarse |= durations > self.base
            else:
                coarse |= g.buckets(starts) != g.buckets(starts + durations - 1)
        if coarsest is None and not coarse.any():
            return None
        return max(coarsest or 0, int(durations.max()))

    # -- one task -----------------------------------------------------------------------------
    def scan(self, items: list[Item]) -> Partial:
        if self.dense and self.kernels is not None:
            return self._scan_fused(items)
        if self.split:
            items = self._split_items(items)
        if not self.parts:
            return self._scan_total(items)
        if self.dense:
            return self._scan_dense(items)
        return self._scan_sorted(items)

    @property
    def unites_once(self) -> bool:
        """Whether the tasks only gather (`gather`) and one union over all of them finishes
        the scan (`unite`): the fused dense scan with uniques. The union runs on the scan's
        threads itself (sketch.union_blocks), and the tasks' partials are not merged: their
        per-task unions' registers, up to 16 KiB a group, were maxed together again by the
        merge (country x device: 4.2 ms of ~75)."""
        return self.dense and self.kernels is not None and bool(self.sketches)

    def _scan_fused(self, items: list[Item]) -> Partial:
        return self.unite([self.gather(items)])

    def gather(self, items: list[Item]) -> _Gathered:
        """A task of the fused dense scan: with the C kernel, one call per block does the
        filter, the group key and every sum (and min/max) in one pass, GIL released (exact:
        int64/uint64 accumulators). Uniques: every block's sketch column with its key parts
        (and the filter's rows as a mask, given to the kernel too), for the union of `unite`,
        which computes the keys from the stored codes as the kernel does. With uniques alone
        (no sum, min or max), the union's first pass, which makes the keys anyway, sums the
        roll-up counts too, and the kernel is not called (a by-name query 97.7 -> 91.6 ms,
        country x device 125.1 -> 116.9: the kernel's pass over the rows was as long as a
        whole sum query's)."""
        if self.split:  # the sums that could wrap, in two halves (`split_sums`)
            items = self._split_items(items)
        k = self.key_space
        strides = [math.prod(p.card for p in self.parts[i + 1:]) for i in range(len(self.parts))]
        acc_count = np.zeros(k, np.int64)
        acc = {c: self._kind(c).empty(k, dt) for c, dt in self.sum_dtypes.items()}
        accs = (acc_count, *acc.values())
        # the kernel's op per column (0 sum, 1 min, 2 max); none when every column is a sum
        ops = (bytes([0, *(_KERNEL_OPS[self._kind(c).name] for c in acc)]) if self.kinds
               else None)
        accumulate = self.kernels.accumulate  # type: ignore[union-attr]
        sk_parts: dict[str, list[tuple[SketchColumn, Keys]]] = {c: [] for c in self.sketches}
        counted = bool(sk_parts) and not acc  # uniques alone: the union sums the counts
        weights: list[np.ndarray] = []  # then each block's counts
        for start, block, _ in self._each(items):
            if block.n == 0:
                continue
            # the filter as a predicate program, evaluated by the kernel in the same pass (with
            # uniques, as a mask: the sketch union needs the rows too)
            mask: Any = None
            if self.filter is not None:
                mask = (self.filter.mask(block, start) if sk_parts
                        else self.filter.program(block, start))
            if mask is False:
                continue
            base = 0
            parts: list[tuple[np.ndarray, int, int, np.ndarray | None]] = []
            for p, stride in zip(self.parts, strides):
                if p.kind == "time" and start is None:  # a coalesced block: codes per row
                    parts.append((p.row_time_codes(block.dims[START]), 0, stride, None))
                elif p.kind == "time":
                    base += p.time_code(start) * stride  # type: ignore[arg-type]
                else:
                    name = p.grouping.column.name
                    parts.append((block.dims[name], p.offset, stride, block.nils[name]))
            if sk_parts:
                rows = None if mask is None or mask is True else mask
                row_keys: Keys = (base, parts, rows) if parts or rows is not None else base
                for c, sk in sk_parts.items():
                    sk.append((block.sketches[c], row_keys))
                if counted:
                    weights.append(block.count)
                    continue
            columns = (block.count, *(block.metrics[c] for c in acc))
            if ops is None:
                accumulate(base, k, parts, None if mask is True else mask, columns, accs)
            else:
                accumulate(base, k, parts, None if mask is True else mask, columns, accs, ops)
        return _Gathered(None if counted else acc_count, acc, sk_parts, weights)

    def unite(self, gathered: list[_Gathered], executor: Executor | None = None,
              threads: int = 1, estimated: bool = False) -> Partial:
        """The gathered tasks (in task order) as one partial: their accumulators combined by
        kind, the sketches of all their blocks united by one union on `threads` threads (this
        one and threads - 1 of `executor`'s). `estimated`: the partial is answered here (not
        sent on to a router), so the union makes its registers' histograms too."""
        acc_count = None
        acc: dict[str, np.ndarray] = {}
        for g in gathered:
            if g.row_count is not None:
                acc_count = (g.row_count if acc_count is None
                             else np.add(acc_count, g.row_count, out=acc_count))
            for c, v in g.acc.items():
                acc[c] = v if c not in acc else self._kind(c).ufunc(acc[c], v, out=acc[c])
        k = self.key_space
        sketches: dict[str, SketchColumn] = {}
        for c in self.sketches:
            parts = [part for g in gathered for part in g.sketches[c]]
            if acc_count is None:  # uniques alone: the first union also counts
                weights = [w for g in gathered for w in g.weights]
                sketches[c], acc_count = union_summing(parts, k, weights, executor, threads,
                                                       estimated)
            else:
                sketches[c] = union_blocks(parts, k, executor, threads, estimated)
        if acc_count is None:
            acc_count = np.zeros(k, np.int64)
        if not self.parts:
            return Partial([], [], acc_count, acc, kinds=self.kinds, sketches=sketches)
        present = np.flatnonzero(acc_count)
        keys, nils = self._decode_dense(present)
        return Partial(keys, nils, acc_count[present], {c: v[present] for c, v in acc.items()},
                       kinds=self.kinds,
                       sketches={c: u.keep(present) for c, u in sketches.items()})

    def _rows(self, block: Block, start: int | None) -> np.ndarray | bool:
        """The filter's rows of a block: True (all), False (none) or their positions. Filtered
        columns are then gathered with one `take` each (cheaper than boolean indexing)."""
        if block.n == 0:
            return False
        mask = True if self.filter is None else self.filter.mask(block, start)
        if isinstance(mask, bool):
            return mask
        rows = np.flatnonzero(mask)
        return rows if len(rows) else False

    def _scan_total(self, items: list[Item]) -> Partial:
        count = 0
        kinds = self.kinds
        sums = {c: self._kind(c).identity(dt) for c, dt in self.sum_dtypes.items()}
        # uniques: every selected block's (sketch column, keys), united in one call at the end
        sk_parts: dict[str, list[tuple[SketchColumn, np.ndarray | int]]] = {
            c: [] for c in self.sketches}
        for start, block, _ in self._each(items):
            rows = self._rows(block, start)
            if rows is False:
                continue
            sel = _selector(rows)
            count += int(sel(block.count).sum())
            if sk_parts:
                row_keys = 0 if rows is True else _scatter_keys(block.n, rows, 0)
                for c, parts in sk_parts.items():
                    parts.append((block.sketches[c], row_keys))
            for c in sums:
                if c in kinds:
                    kind = kinds[c]
                    sums[c] = kind.ufunc(sums[c], kind.total(sel(block.metrics[c]))[0])
                else:
                    sums[c] = sums[c] + sel(block.metrics[c]).sum(dtype=self.sum_dtypes[c])
        return Partial([], [], np.array([count], np.int64),
                       {c: np.array([v], self.sum_dtypes[c]) for c, v in sums.items()},
                       kinds=kinds,
                       sketches={c: union_blocks(p, 1) for c, p in sk_parts.items()})

    def _kind(self, column: str) -> Kind:
        return self.kinds.get(column, SUM)

    def _scan_dense(self, items: list[Item]) -> Partial:
        k = self.key_space
        kinds = self.kinds
        acc_count = np.zeros(k, np.int64)
        acc = {c: self._kind(c).empty(k, dt) for c, dt in self.sum_dtypes.items()}
        # uniques: every selected block's (sketch column, keys), united in one call at the end
        sk_parts: dict[str, list[tuple[SketchColumn, np.ndarray | int]]] = {
            c: [] for c in self.sketches}
        for start, block, stats in self._each(items):
            rows = self._rows(block, start)
            if rows is False:
                continue
            index = None if rows is True else rows
            key: np.ndarray | None = None  # mixed radix, built in place
            scalar = 0  # the key while every part so far is constant over the block (time)
            for p in self.parts:
                if p.kind == "time" and start is not None:
                    code = p.time_code(start)
                    if key is None:
                        scalar = scalar * p.card + code
                    else:
                        key *= p.card
                        key += code
                    continue
                if p.kind == "time":  # a coalesced block: codes per row
                    row_starts = block.dims[START]
                    codes = p.row_time_codes(row_starts if index is None
                                             else row_starts.take(index))
                else:
                    codes = p.codes(block, index)
                if key is None:
                    if scalar:
                        codes += scalar * p.card
                    key = codes
                else:
                    key *= p.card
                    key += codes
            sel = _selector(rows)
            count = sel(block.count)
            if sk_parts:
                if key is None:
                    row_keys: np.ndarray | int = scalar if index is None \
                        else _scatter_keys(block.n, index, scalar)
                else:
                    row_keys = key.astype(np.int64, copy=False) if index is None \
                        else _scatter_keys(block.n, index, key)
                for c, parts in sk_parts.items():
                    parts.append((block.sketches[c], row_keys))
            if key is None:  # only time groupings: one group for the whole block
                acc_count[scalar] += int(count.sum())
                for c, out in acc.items():
                    if c in kinds:
                        out[scalar] = kinds[c].ufunc(out[scalar],
                                                     kinds[c].total(sel(block.metrics[c]))[0])
                    else:
                        out[scalar] += sel(block.metrics[c]).sum(dtype=out.dtype)
                continue
            acc_count += _bincount_exact(key, count, k, None, acc_count.dtype)
            for c, out in acc.items():
                if c in kinds:  # min/max into the accumulator in place (no sorting)
                    kinds[c].scatter(out, key, sel(block.metrics[c]))
                else:
                    out += _bincount_exact(key, sel(block.metrics[c]), k, stats.get("m:" + c),
                                           out.dtype)
        present = np.flatnonzero(acc_count)
        keys, nils = self._decode_dense(present)
        sketches = {c: union_blocks(parts, k).keep(present) for c, parts in sk_parts.items()}
        return Partial(keys, nils, acc_count[present], {c: v[present] for c, v in acc.items()},
                       kinds=kinds, sketches=sketches)

    def _decode_dense(self, index: np.ndarray) -> tuple[list[np.ndarray],
                                                        list[np.ndarray | None]]:
        codes_of: list[np.ndarray] = [np.zeros(0, np.int64)] * len(self.parts)
        rem = index.astype(np.int64)
        for i in reversed(range(len(self.parts))):
            codes_of[i] = rem % self.parts[i].card
            rem = rem // self.parts[i].card
        keys, nils = [], []
        for p, codes in zip(self.parts, codes_of):
            v, nil = p.decode(codes)
            keys.append(v)
            nils.append(nil)
        return keys, nils

    def _scan_sorted(self, items: list[Item]) -> Partial:
        partials = []
        for start, block, _ in self._each(items):
            rows = self._rows(block, start)
            if rows is False:
                continue
            sel = _selector(rows)
            keys, nils = [], []
            for p in self.parts:
                v, nil = p.values(block, start)
                keys.append(sel(v))
                nils.append(None if nil is None else sel(nil))
            count = sel(block.count).astype(np.int64, copy=False)  # stored narrow: widen
            sums = {c: sel(block.metrics[c]).astype(dt, copy=False)
                    for c, dt in self.sum_dtypes.items()}
            partials.append(reduce_groups(
                keys, nils, count, sums, False, self.max_groups, self.kinds,
                {c: (block.sketches[c], None if rows is True else rows) for c in self.sketches}))
        if not partials:
            return empty_partial(self.query, self.sum_dtypes)
        return merge(partials, self.max_groups)


def _start(view: IntervalView) -> int:
    return view.start


def _selector(rows: np.ndarray | bool) -> Any:
    """A function giving a column's filtered values: the column itself for all rows."""
    if rows is True:
        return lambda a: a
    return lambda a: a.take(rows)


def _scatter_keys(n: int, rows: np.ndarray, keys: np.ndarray | int) -> np.ndarray:
    """A block's per-row group keys for the sketch union: keys at the selected rows, -1
    (left out) elsewhere."""
    out = np.full(n, -1, np.int64)
    out[rows] = keys
    return out


def _bincount_exact(key: np.ndarray, weights: np.ndarray, k: int,
                    stat: tuple[Any, Any] | None, dtype: np.dtype) -> np.ndarray:
    """Per-key sums of `weights` (perhaps stored narrow) in `dtype`; exact for integers."""
    if weights.dtype.kind == "f":
        return np.bincount(key, weights=weights, minlength=k)
    if stat is not None:
        bound = max(abs(int(stat[0])), abs(int(stat[1]))) * len(key)
    else:
        bound = max(abs(int(weights.min())), abs(int(weights.max()))) * len(key) \
            if len(weights) else 0
    if bound < EXACT_FLOAT_SUM:
        return np.bincount(key, weights=weights, minlength=k).astype(dtype)
    out = np.zeros(k, dtype)
    order = np.argsort(key, kind="stable")
    sk = key[order]
    starts = np.concatenate(([0], np.flatnonzero(sk[1:] != sk[:-1]) + 1))
    out[sk[starts]] = np.add.reduceat(weights[order].astype(dtype, copy=False), starts)
    return out


class _Gathered(NamedTuple):
    """A task's share of a fused dense scan (Scanner.gather): its accumulators (row_count None:
    uniques alone, counted by the union), and per uniques column its blocks' (sketch column,
    keys), with their roll-up counts as weights when uniques are alone."""
    row_count: np.ndarray | None
    acc: dict[str, np.ndarray]
    sketches: dict[str, list[tuple[SketchColumn, Keys]]]
    weights: list[np.ndarray]


class QueryCancelled(Exception):
    """Raised in the scan threads of a query whose `Prepared.cancel` was set."""


class Prepared:
    """A planned query over a snapshot: its scan tasks are cut, its memory estimated, and
    nothing is allocated until `run`. `cancel` (a threading.Event) stops the scan."""

    def __init__(self, query: Query, snapshot: Snapshot, threads: int = 1,
                 max_groups: int | None = None, cancel: threading.Event | None = None
                 ) -> None:
        self.query = query
        self.snapshot = snapshot
        self.threads = max(1, threads)
        self.scanner = Scanner(query, snapshot, max_groups)
        self.tasks = self.scanner.tasks(snapshot, self.threads)
        self.scanner.split_sums(self.tasks)
        self.cancel = self.scanner.cancel = cancel or threading.Event()
        self.approximate: list[str] = []  # set by `rows` (see `extra`)

    def rows_to_scan(self) -> int:
        """Rows of the blocks the plan scans (after pruning)."""
        return sum(b.n for items in self.tasks for _, b, _ in items)

    def memory_estimate(self) -> tuple[int, int]:
        """(bytes, groups) the query is estimated to need at most."""
        return self.scanner.memory_estimate(self.tasks, self.threads)

    def run(self, executor: Executor | None = None, estimated: bool = True) -> Partial:
        """Scan into one (undecoded) partial; raises QueryCancelled once `cancel` is set.
        `estimated`: its uniques are estimated here (`rows`), not sent on (`decoded_partial`)."""
        scanner = self.scanner
        task = scanner.gather if scanner.unites_once else scanner.scan
        if executor is None or len(self.tasks) <= 1:
            partials: list[Any] = [task(items) for items in self.tasks]
        else:
            partials = list(executor.map(task, self.tasks))
        if self.cancel.is_set():
            raise QueryCancelled
        if scanner.unites_once and partials:
            partials = [scanner.unite(partials, executor, self.threads, estimated)]
        if self.cancel.is_set():
            raise QueryCancelled
        partial = (merge(partials, scanner.max_groups) if partials
                   else empty_partial(self.query, scanner.sum_dtypes))
        partial.extent, partial.max_groups = scanner.extent, scanner.max_groups
        partial.granularity = scanner.granularity
        return scanner.exact_sums(partial)

    def rows(self, executor: Executor | None = None) -> list[dict[str, Any]]:
        """The finished result rows."""
        partial = decode(self.run(executor), self.query, self.snapshot.strings,
                         self.snapshot.ranks)
        if self.cancel.is_set():
            raise QueryCancelled
        self.approximate = []
        return finalize(self.query, partial, self.approximate)

    def extra(self) -> dict[str, Any]:
        """Response fields beside the rows: `granularity` (e.g. "1d") when the answer used
        stored intervals coarser than the query's time grouping or filter asked, and (after
        `rows`) `approximate`: the uniques outputs some group answers with an HLL estimate."""
        g = self.scanner.granularity
        out: dict[str, Any] = {} if g is None else {"granularity": format_duration(g)}
        if self.approximate:
            out["approximate"] = self.approximate
        return out

    def decoded_partial(self, executor: Executor | None = None) -> Partial:
        """The mergeable partial with string keys decoded (what a shard sends a router)."""
        return decode(self.run(executor, estimated=False), self.query, self.snapshot.strings)
