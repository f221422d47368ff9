"""Query execution over a Snapshot: plan, per-interval scan tasks in parallel, merge, finish.

Imports schema, block, snapshot, query and scan. A task scans a run of blocks of one interval:
the filter becomes a mask, the groupings one integer key, and the sums either dense
`np.bincount` accumulators (small key spaces; exact: float64 partial sums are checked against
2**53 and cast to int64 per block) or a sort-and-reduce over the masked rows.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from concurrent.futures import Executor
from typing import Any

import numpy as np

from .block import Block, rollup
from .query import Grouping, Query
from .scan import EXACT_FLOAT_SUM, CompiledFilter, Partial, decode, empty_partial, finalize, \
    merge, reduce_groups
from .schema import Schema
from .snapshot import IntervalView, Snapshot

DENSE_MAX_GROUPS = 1 << 20  # largest key space accumulated densely per task
TASK_ROWS = 1 << 21  # rows per scan task (large intervals are split across threads)


@dataclasses.dataclass(frozen=True, slots=True)
class _Part:
    """How one grouping becomes integer codes. kind: "time" (constant per interval),
    "dense" (codes from a fixed range: string codes, 8/16-bit integers) or "values"."""

    grouping: Grouping
    kind: str
    card: int = 1
    offset: int = 0  # dense integers: code = value - offset (nil = 0)

    def time_value(self, start: int) -> int:
        t = self.grouping.transform
        return start - start % t if t else start

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

    def values(self, block: Block, start: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self.kind == "time":
            return np.full(block.n, self.time_value(start), np.int64), None
        name = self.grouping.column.name
        v, t = block.dims[name], self.grouping.transform
        if t:
            v = v - v % v.dtype.type(t)
        return v, block.nils[name]

    def decode(self, codes: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray | None]:
        if self.kind == "time":
            return np.full(len(codes), self.time_value(start), np.int64), None
        nil = codes == 0
        col = self.grouping.column
        values = (codes + self.offset).astype(np.int64 if col.is_string else col.dtype)
        return values, (nil if nil.any() else None)


def _plan_part(g: Grouping, sizes: dict[str, int]) -> _Part:
    col = g.column
    if col.role == "timestamp":
        return _Part(g, "time")
    if col.is_string:
        return _Part(g, "dense", sizes[col.name] + 1, -1)
    if g.transform is None and col.dtype.kind in "ui" and col.dtype.itemsize <= 2:
        lo, hi = col.value_range
        return _Part(g, "dense", int(hi) - int(lo) + 2, int(lo) - 1)
    return _Part(g, "values")


class Plan:
    def __init__(self, query: Query, snapshot: Snapshot, max_groups: int | None) -> None:
        self.query = query
        self.schema: Schema = snapshot.schema
        self.max_groups = max_groups
        self.filter = (CompiledFilter(query.filter, snapshot.dictionaries, snapshot.dict_sizes)
                       if query.filter is not None else None)
        self.parts = [_plan_part(g, snapshot.dict_sizes) for g in query.groupings]
        self.key_space = 1
        for p in self.parts:
            self.key_space *= p.card
        self.dense = (all(p.kind != "values" for p in self.parts)
                      and self.key_space <= DENSE_MAX_GROUPS)
        self.metric_filter = query.has_metric_filter(self.schema)
        self.sum_dtypes = {c: self.schema.column(c).store_dtype  # type: ignore[union-attr]
                           for c in query.metric_columns}

    def tasks(self, snapshot: Snapshot) -> list[tuple[int, list[tuple[Block, dict[str, Any]]]]]:
        out = []
        for view in snapshot.intervals:
            if self.filter is not None and self.filter.prune(view.start) is False:
                continue
            out.extend((view.start, chunk) for chunk in self._chunks(view))
        return out

    def _chunks(self, view: IntervalView) -> list[list[tuple[Block, dict[str, Any]]]]:
        if self.metric_filter and not view.fully_rolled_up:
            # Metric filters apply to rolled-up rows: combine flushed and unflushed rows first.
            return [[(_rolled_up(self.schema, view.blocks), {})]]
        items = [(s.block, s.stats) for s in view.segments] + [(b, {}) for b in view.mem]
        chunks: list[list[tuple[Block, dict[str, Any]]]] = [[]]
        rows = 0
        for item in items:
            if rows >= TASK_ROWS:
                chunks.append([])
                rows = 0
            chunks[-1].append(item)
            rows += item[0].n
        return [c for c in chunks if c]

    # -- one task -----------------------------------------------------------------------------
    def scan(self, start: int, items: list[tuple[Block, dict[str, Any]]]) -> Partial:
        if all(p.kind == "time" for p in self.parts):  # one group per task: plain sums
            total = self._scan_total(start, items)
            if not self.parts or total.count[0] == 0:
                return total if not self.parts else empty_partial(self.query, self.sum_dtypes)
            keys, nils = self._decode_dense(np.zeros(1, np.int64), start)
            return Partial(keys, nils, total.count, total.sums)
        if self.dense:
            return self._scan_dense(start, items)
        return self._scan_sorted(start, items)

    def _mask(self, block: Block, start: int) -> np.ndarray | bool:
        return True if self.filter is None else self.filter.mask(block, start)

    def _rows(self, block: Block, start: int) -> np.ndarray | bool:
        """The filter's rows of a block: True (all), False (none) or their positions. Filtered
        columns are then gathered with one `take` each (cheaper than boolean indexing)."""
        mask = self._mask(block, start)
        if isinstance(mask, bool):
            return mask and block.n > 0
        rows = np.flatnonzero(mask)
        return rows if len(rows) else False

    def _scan_total(self, start: int, items: list[tuple[Block, dict[str, Any]]]) -> Partial:
        count = 0
        sums = {c: self.sum_dtypes[c].type(0) for c in self.sum_dtypes}
        for block, _ in items:
            rows = self._rows(block, start)
            if rows is False:
                continue
            sel = _selector(rows)
            count += int(sel(block.count).sum())
            for c in sums:
                sums[c] = sums[c] + sel(block.metrics[c]).sum(dtype=self.sum_dtypes[c])
        return Partial([], [], np.array([count], np.int64),
                       {c: np.array([v], self.sum_dtypes[c]) for c, v in sums.items()})

    def _scan_dense(self, start: int, items: list[tuple[Block, dict[str, Any]]]) -> Partial:
        k = self.key_space
        acc_count = np.zeros(k, np.int64)
        acc = {c: np.zeros(k, dt) for c, dt in self.sum_dtypes.items()}
        code_parts = [p for p in self.parts if p.kind == "dense"]
        for block, stats in items:
            rows = self._rows(block, start)
            if rows is False:
                continue
            index = None if rows is True else rows
            key: np.ndarray | None = None
            for p in code_parts:  # mixed radix, built in place (no temporaries per part)
                codes = p.codes(block, index)
                if key is None:
                    key = codes
                else:
                    key *= p.card
                    key += codes
            sel = _selector(rows)
            count = sel(block.count)
            if key is None:  # only time groupings
                key = np.zeros(len(count), np.int64)
            acc_count += _bincount_exact(key, count, k, None)
            for c, out in acc.items():
                out += _bincount_exact(key, sel(block.metrics[c]), k, stats.get("m:" + c))
        present = np.flatnonzero(acc_count)
        keys, nils = self._decode_dense(present, start)
        return Partial(keys, nils, acc_count[present], {c: v[present] for c, v in acc.items()})

    def _decode_dense(self, index: np.ndarray, start: int
                      ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        codes_of: dict[int, np.ndarray] = {}
        rem = index.astype(np.int64)
        for i in reversed(range(len(self.parts))):
            p = self.parts[i]
            if p.kind == "dense":
                codes_of[i] = rem % p.card
                rem = rem // p.card
        keys, nils = [], []
        for i, p in enumerate(self.parts):
            v, nil = p.decode(codes_of.get(i, np.zeros(len(index), np.int64)), start)
            keys.append(v)
            nils.append(nil)
        return keys, nils

    def _scan_sorted(self, start: int, items: list[tuple[Block, dict[str, Any]]]) -> Partial:
        partials = []
        for block, _ in items:
            rows = self._rows(block, start)
            if rows is False:
                continue
            sel = _selector(rows)
            keys, nils = [], []
            for p in self.parts:
                v, nil = p.values(block, start)
                keys.append(sel(v))
                nils.append(None if nil is None else sel(nil))
            count = sel(block.count)
            sums = {c: sel(block.metrics[c]) for c in self.sum_dtypes}
            partials.append(reduce_groups(keys, nils, count, sums, False, self.max_groups))
        if not partials:
            return empty_partial(self.query, self.sum_dtypes)
        return merge(partials, self.max_groups)


_ROLLUP_CACHE: OrderedDict[tuple[int, ...], tuple[list[Block], Block]] = OrderedDict()
_ROLLUP_CACHE_SIZE = 4
_ROLLUP_LOCK = threading.Lock()


def _rolled_up(schema: Schema, blocks: list[Block]) -> Block:
    """rollup(blocks), remembered for the last few block sets. Blocks never change, so their
    identities key the cache (the entry holds the blocks, so the ids stay theirs); repeated
    metric-filter queries on the current interval pay for its roll-up once per insert."""
    key = tuple(map(id, blocks))
    with _ROLLUP_LOCK:
        hit = _ROLLUP_CACHE.get(key)
        if hit is not None:
            _ROLLUP_CACHE.move_to_end(key)
            return hit[1]
    rolled = rollup(schema, blocks)
    with _ROLLUP_LOCK:
        _ROLLUP_CACHE[key] = (blocks, rolled)
        while len(_ROLLUP_CACHE) > _ROLLUP_CACHE_SIZE:
            _ROLLUP_CACHE.popitem(last=False)
    return rolled


def _selector(rows: np.ndarray | bool) -> Any:
    """A function giving a column's filtered values: the column itself for all rows."""
    if rows is True:
        return lambda a: a
    return lambda a: a.take(rows)


def _bincount_exact(key: np.ndarray, weights: np.ndarray, k: int,
                    stat: tuple[Any, Any] | None) -> np.ndarray:
    """Per-key sums of `weights` in its own dtype; exact for integers."""
    if weights.dtype.kind == "f":
        return np.bincount(key, weights=weights, minlength=k)
    if stat is not None:
        bound = max(abs(int(stat[0])), abs(int(stat[1]))) * len(key)
    else:
        bound = int(np.abs(weights).max()) * len(key) if len(weights) else 0
    if bound < EXACT_FLOAT_SUM:
        return np.bincount(key, weights=weights, minlength=k).astype(weights.dtype)
    out = np.zeros(k, weights.dtype)
    order = np.argsort(key, kind="stable")
    sk = key[order]
    starts = np.concatenate(([0], np.flatnonzero(sk[1:] != sk[:-1]) + 1))
    out[sk[starts]] = np.add.reduceat(weights[order], starts)
    return out


def run(query: Query, snapshot: Snapshot, executor: Executor | None = None,
        max_groups: int | None = None) -> Partial:
    """Scan a snapshot into one (undecoded) partial."""
    plan = Plan(query, snapshot, max_groups)
    tasks = plan.tasks(snapshot)
    if executor is None or len(tasks) <= 1:
        partials = [plan.scan(start, items) for start, items in tasks]
    else:
        partials = list(executor.map(lambda t: plan.scan(*t), tasks))
    if not partials:
        return empty_partial(query, plan.sum_dtypes)
    return merge(partials, max_groups)


def execute(query: Query, snapshot: Snapshot, executor: Executor | None = None,
            max_groups: int | None = None) -> list[dict[str, Any]]:
    """Run a query and return its result rows."""
    partial = run(query, snapshot, executor, max_groups)
    return finalize(query, decode(partial, query, snapshot.strings))
