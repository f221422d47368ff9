"""Compiled filters: a query's filter, per block, as a small predicate program over its columns.

Imports schema, block, dictionary, query, textmatch and native; never opens files.

Every filter rule (the nil table, exact integer bounds, float32 rounding of filter values,
string order, unknown strings) is decided once, in `CompiledFilter.program`, which reduces
the filter for one block to either a constant (every row passes, or none does) or a postfix
program of leaves and combinators:

    (RANGE, values, lo, hi, negate, nil, nil_result)  lo <= v <= hi (integers, exact; negated)
    (LUT, codes, table, 0, 0, nil, nil_result)        table[code] (False outside the table)
    (FCMP, values, op, x, 0, nil, nil_result)         v op x for floats (op: index in FLOAT_OPS)
    (MASK, mask, 0, 0, 0, None, 0)                    a mask computed in numpy (rare leaves)
    (AND, n) (OR, n) (NOT, 0)                         combine the top n results / negate

String matching (prefix, contains, regex; textmatch.py) becomes a LUT over the dictionary
codes, each string tested once. An `in` of a few values becomes an `or` of ranges (one per
run of consecutive values): compares that vectorise, where a table look-up is one load per row.

A leaf with a nil array gives `nil_result` on nil rows. The program has two evaluators: the
C scan kernel (`gumshoe/_kernels.c`, in cache-sized chunks, fused with the group-by) and
`evaluate` here, the numpy reference that every other path uses.

Pruning (docs/storage.md §4) uses the same rules: `restrictions` are, per dimension, the
stored values (codes) and nil that a row must hold to pass the filter, a superset derived from
the filter tree once per query (an `and` intersects its operands', an `or` unites them when
every operand restricts the column, a `not` restricts nothing). A segment whose min/max and nil
presence lie outside a restriction is skipped unread (`segment_may_match`); in a segment
ordered by the leading dimension, that dimension's restriction becomes row ranges by binary
search (`row_ranges`); an empty restriction (a string that is not in the dictionary) matches
nothing at all (`matches_nothing`). The filter program still runs on the rows that remain, so
pruning only ever removes rows the filter would reject. `time_cuts` are the times where a
timestamp comparison changes its answer, for the response's "granularity".
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import native
from .block import Block
from .dictionary import Dictionary
from .query import Compare, Filter, Logical, Match
from .textmatch import match_table

Mask = np.ndarray | bool  # a per-row mask, or a constant for every row
Op = tuple[Any, ...]
Program = list[Op]
Leaf = Op | Program | bool  # one leaf, a fragment of ops (an "or" of ranges), or a constant
MAX_IN_RANGES = 8  # an "in" of up to this many runs of values: ranges or'ed, else a table
MAX_PRUNE_RANGES = 16  # a restriction keeps at most this many value ranges (gaps merged)

RANGE, LUT, FCMP, MASK, AND, OR, NOT = range(7)
FLOAT_OPS = ("=", "!=", ">", ">=", "<", "<=")
_NP_FLOAT_OPS = (np.equal, np.not_equal, np.greater, np.greater_equal, np.less, np.less_equal)


@functools.cache
def _int_range(dtype: np.dtype) -> tuple[int, int]:
    if dtype == np.bool_:
        return 0, 1
    info = np.iinfo(dtype)  # ~2 us a call: asked once per block and filter otherwise
    return int(info.min), int(info.max)


def int_bounds(op: str, x: int | float, lo: int, hi: int) -> tuple[int, int, bool] | bool:
    """`v op x` for integers v in [lo, hi], exactly (x may be a float: 30.5 is not 30), as a
    range test `(a <= v <= b) != negate`, or a constant when it does not depend on v."""
    if op in ("=", "!="):
        if isinstance(x, float) and not x.is_integer():
            return op == "!="
        t = int(x)
        if t < lo or t > hi:
            return op == "!="
        return t, t, op == "!="
    if op in (">", "<="):
        t = math.floor(x)
        if t >= hi:
            return op == "<="
        if t < lo:
            return op == ">"
        return (t + 1, hi, False) if op == ">" else (lo, t, False)
    t = math.ceil(x)  # ">=", "<"
    if t <= lo:
        return op == ">="
    if t > hi:
        return op == "<"
    return (t, hi, False) if op == ">=" else (lo, t - 1, False)


def _as_column_float(arr: np.ndarray, x: int | float) -> float:
    """A filter value on a float column means the value inserting it would store: rounded to
    the column's precision (float32(0.1) = 0.1 matches a stored 0.1; beyond float32, +-inf)."""
    with np.errstate(over="ignore"):
        return float(arr.dtype.type(x))


def _range(arr: np.ndarray, bounds: tuple[int, int, bool] | bool) -> Op | bool:
    if isinstance(bounds, bool):
        return bounds
    lo, hi, negate = bounds
    return (RANGE, arr, lo, hi, negate, None, False)


def _number_leaf(arr: np.ndarray, op: str, x: int | float) -> Op | bool:
    if arr.dtype.kind == "f":
        return (FCMP, arr, FLOAT_OPS.index(op), _as_column_float(arr, x), 0, None, False)
    return _range(arr, int_bounds(op, x, *_int_range(arr.dtype)))


def _in_ranges(arr: np.ndarray, values: list[int], table: np.ndarray | None) -> Leaf:
    """`arr in values` (sorted distinct integers inside arr's type): an or of ranges over the
    runs of consecutive values, or the table (or numpy's isin) when there are many runs."""
    if not values:
        return False
    runs: list[list[int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    if len(runs) > MAX_IN_RANGES:
        if table is not None:
            return (LUT, arr, table, 0, 0, None, False)
        return (MASK, np.isin(arr, np.array(values, dtype=arr.dtype)), 0, 0, 0, None, False)
    ops: Program = [(RANGE, arr, a, b, False, None, False) for a, b in runs]
    return ops[0] if len(ops) == 1 else [*ops, (OR, len(ops))]


def _number_in(arr: np.ndarray, values: Sequence[int | float]) -> Leaf:
    if arr.dtype.kind == "f":
        cand = sorted({_as_column_float(arr, v) for v in values})
        if not cand:
            return False
        if len(cand) == 1:
            return _number_leaf(arr, "=", cand[0])
        return (MASK, np.isin(arr, np.array(cand, dtype=arr.dtype)), 0, 0, 0, None, False)
    lo, hi = _int_range(arr.dtype)
    return _in_ranges(arr, sorted({int(v) for v in values if float(v).is_integer()
                                   and lo <= v <= hi}), None)


def _nil_leaf(nil: np.ndarray, is_nil: bool) -> Op:
    """The rows that are nil (or are not): a range test over the nil mask's bytes."""
    return (RANGE, nil.view(np.uint8), 1, 1, not is_nil, None, False)


def _with_nil(leaf: Leaf, nil: np.ndarray | None, nil_result: bool) -> Leaf:
    """`leaf` on valid rows, `nil_result` on nil rows (for a fragment, an or of leaves: every
    leaf gets the same nil result, so the or does too)."""
    if nil is None:
        return leaf
    if isinstance(leaf, bool):
        return leaf if leaf == nil_result else _nil_leaf(nil, nil_result)
    if isinstance(leaf, list):
        return [op if op[0] >= AND else _with_nil(op, nil, nil_result)  # type: ignore[misc]
                for op in leaf]
    if leaf[0] == MASK:
        m = leaf[1] | nil if nil_result else leaf[1] & ~nil
        return (MASK, m, 0, 0, 0, None, False)
    return (*leaf[:5], nil, nil_result)


@dataclasses.dataclass(frozen=True, slots=True)
class Restriction:
    """The stored values (sorted, disjoint, inclusive integer ranges) and whether nil, that a
    row's dimension must hold for the row to pass a filter (a superset: pruning with it never
    drops a passing row)."""

    ranges: tuple[tuple[int, int], ...]
    nil: bool = False

    @property
    def empty(self) -> bool:
        return not self.ranges and not self.nil

    def overlaps(self, lo: int, hi: int) -> bool:
        """Can a non-nil value in [lo, hi] pass?"""
        i = bisect.bisect_left(self.ranges, (lo,))
        return (i < len(self.ranges) and self.ranges[i][0] <= hi) or (
            i > 0 and self.ranges[i - 1][1] >= lo)


def _coalesce(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted, merged ranges; beyond MAX_PRUNE_RANGES only the widest gaps stay open."""
    if not ranges:
        return ()
    a = np.array(sorted(ranges), dtype=object)  # Python ints: uint64 and int64 alike
    los, his = a[:, 0].tolist(), a[:, 1].tolist()
    out_lo, out_hi = [los[0]], [his[0]]
    for lo, hi in zip(los[1:], his[1:]):
        if lo <= out_hi[-1] + 1:
            out_hi[-1] = max(out_hi[-1], hi)
        else:
            out_lo.append(lo)
            out_hi.append(hi)
    if len(out_lo) > MAX_PRUNE_RANGES:
        gaps = [out_lo[i + 1] - out_hi[i] for i in range(len(out_lo) - 1)]
        keep = sorted(sorted(range(len(gaps)), key=gaps.__getitem__)[-(MAX_PRUNE_RANGES - 1):])
        out_lo = [out_lo[0]] + [out_lo[i + 1] for i in keep]
        out_hi = [out_hi[i] for i in keep] + [out_hi[-1]]
    return tuple(zip(out_lo, out_hi))


def _codes_ranges(codes: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Ranges of sorted distinct integers (runs of consecutive ones), coalesced."""
    if not len(codes):
        return ()
    cuts = np.flatnonzero(np.diff(codes) != 1) + 1
    if len(cuts) >= MAX_PRUNE_RANGES:  # keep the widest gaps only
        gaps = codes[cuts] - codes[cuts - 1]
        cuts = np.sort(cuts[np.argsort(gaps, kind="stable")[-(MAX_PRUNE_RANGES - 1):]])
    firsts = codes[np.concatenate(([0], cuts))].tolist()
    lasts = codes[np.concatenate((cuts - 1, [len(codes) - 1]))].tolist()
    return tuple(zip(firsts, lasts))


def _intersect(a: Restriction, b: Restriction) -> Restriction:
    out = []
    i = j = 0
    while i < len(a.ranges) and j < len(b.ranges):
        lo, hi = max(a.ranges[i][0], b.ranges[j][0]), min(a.ranges[i][1], b.ranges[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a.ranges[i][1] < b.ranges[j][1]:
            i += 1
        else:
            j += 1
    return Restriction(tuple(out), a.nil and b.nil)


def _unite(a: Restriction, b: Restriction) -> Restriction:
    return Restriction(_coalesce([*a.ranges, *b.ranges]), a.nil or b.nil)


class CompiledFilter:
    """A filter prepared once per query: dictionary look-ups and tables computed up front.

    `prune(start)` decides an interval from its start alone (True/False) or says None (it
    depends on the rows); `program(block, start)` reduces it for one block (module doc);
    `mask(block, start)` evaluates that with numpy.
    """

    def __init__(self, f: Filter, dictionaries: dict[str, Dictionary],
                 sizes: dict[str, int]) -> None:
        self.f = f
        self.dictionaries = dictionaries
        self.sizes = sizes
        self._tables: dict[int, Any] = {}
        self._match_tables(f)  # before the scan threads start, so each is computed once
        self.restrictions: dict[str, Restriction] = self._restrict(f)
        self._typed: dict[tuple[str, np.dtype], Any] = {}  # restriction bounds, per dtype

    def _match_tables(self, f: Filter) -> None:
        if isinstance(f, Match):
            name = f.column.name
            self._tables[id(f)] = match_table(self.dictionaries[name], self.sizes[name], f.op,
                                              f.value, f.case_insensitive)
        elif not isinstance(f, Compare):
            for g in f.operands:
                self._match_tables(g)

    # -- pruning ------------------------------------------------------------------------------
    def _restrict(self, f: Filter) -> dict[str, Restriction]:
        """Per dimension, what a passing row must hold (module doc); absent: anything."""
        if isinstance(f, Match):
            table = self._tables[id(f)]
            return {f.column.name: Restriction(_codes_ranges(np.flatnonzero(table)))}
        if isinstance(f, Compare):
            r = self._compare_restriction(f)
            return {} if r is None else {f.column.name: r}
        if f.op == "not":
            return {}
        parts = [self._restrict(g) for g in f.operands]
        if f.op == "and":
            out: dict[str, Restriction] = {}
            for part in parts:
                for name, r in part.items():
                    out[name] = _intersect(out[name], r) if name in out else r
            return out
        if not parts:
            return {}
        common = set(parts[0]).intersection(*parts[1:])
        return {name: functools.reduce(_unite, (p[name] for p in parts)) for name in common}

    def _compare_restriction(self, f: Compare) -> Restriction | None:
        col = f.column
        if col.role != "dimension" or col.dtype.kind == "f":
            return None
        values = f.value if f.op == "in" else (f.value,)
        if f.op in ("in", "="):
            nil = any(v is None for v in values)
            if col.is_string:
                d, size = self.dictionaries[col.name], self.sizes[col.name]
                codes = sorted({c for v in values if v is not None
                                and (c := d.lookup(v)) is not None and c < size})
                return Restriction(_codes_ranges(np.array(codes, np.int64)), nil)
            lo, hi = _int_range(col.dtype)
            wanted = []
            for v in values:
                if v is None:
                    continue
                b = int_bounds("=", v, lo, hi)
                if not isinstance(b, bool):
                    wanted.append((b[0], b[1]))
            return Restriction(_coalesce(wanted), nil)
        if f.value is None or f.op == "!=":
            return None  # != matches nil rows and nearly everything: nothing to prune
        if col.is_string:  # string order: the table of codes that pass
            self._string_compare(f, np.zeros(0, col.dtype))
            lut = self._tables.get(id(f))
            return Restriction(() if lut is None else _codes_ranges(np.flatnonzero(lut)))
        lo, hi = _int_range(col.dtype)
        b = int_bounds(f.op, f.value, lo, hi)
        if isinstance(b, bool):
            return Restriction(((lo, hi),) if b else ())
        return Restriction(((b[0], b[1]),))

    def matches_nothing(self) -> bool:
        """Does some dimension's restriction admit no value at all (e.g. `name = <a string
        not in the dictionary>` in an `and`)? Then no row passes: nothing need be read."""
        return any(r.empty for r in self.restrictions.values())

    def segment_may_match(self, stats: dict[str, Any], nils: dict[str, np.ndarray | None],
                          has_stats: bool) -> bool:
        """False when a segment's header (per-dimension min/max of the non-nil values, and
        which dimensions have a nil column) shows that no row can pass: its data is never
        read. `has_stats`: the segment records dimension min/max (files do; in-memory
        segments do not, and are never skipped)."""
        if not has_stats:
            return True
        for name, r in self.restrictions.items():
            if r.nil and nils[name] is not None:
                continue  # nil rows may pass
            mm = stats.get("d:" + name)
            if mm is None or not r.overlaps(int(mm[0]), int(mm[1])):
                return False  # every row nil (and nil fails), or no value in range
        return True

    def row_ranges(self, block: Block, sort_key: tuple[str, ...]
                   ) -> list[tuple[int, int]] | None:
        """The row ranges [lo, hi) that the restrictions admit in a block ordered by the
        dimensions `sort_key` (roll-up order: by the first, nil rows first, then ascending
        values; then by the second among rows equal in the first, and so on), by binary
        search: the first dimension's ranges, each narrowed by the next dimension's while it
        holds one value (`app = 7 and name = x`: one row). None when the first dimension is
        not restricted."""
        if sort_key[0] not in self.restrictions:
            return None
        out: list[tuple[int, int]] = []
        stack = [(0, block.n, 0)]  # (lo, hi, index in sort_key): rows equal before it
        while stack:
            lo, hi, k = stack.pop()
            r = self.restrictions.get(sort_key[k]) if k < len(sort_key) else None
            if r is None or (out and len(out) + len(stack) > 4 * MAX_PRUNE_RANGES):
                out.append((lo, hi))
                continue
            found = self._ranges_in(block, sort_key[k], r, lo, hi)
            for a, b, single in reversed(found):  # popped in ascending order
                if single:
                    stack.append((a, b, k + 1))
                else:
                    out.append((a, b))
        out.sort()
        merged: list[tuple[int, int]] = []
        for a, b in out:
            if merged and merged[-1][1] == a:
                merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        return merged

    def _ranges_in(self, block: Block, name: str, r: Restriction, lo: int, hi: int
                   ) -> list[tuple[int, int, bool]]:
        """(a, b, one value?) ranges of rows in [lo, hi) -- ordered by dimension `name`, nil
        rows first -- that restriction `r` admits."""
        values, nil = block.dims[name], block.nils[name]
        k = lo
        if nil is not None:  # the nil rows are a prefix of [lo, hi): find its end
            k = bisect.bisect_left(range(lo, hi), True, key=lambda i: not nil[i]) + lo
        out = [(lo, k, True)] if r.nil and k > lo else []
        if r.ranges and k < hi:
            typed = self._typed.get((name, values.dtype))
            if typed is None:
                t_lo, t_hi = _int_range(values.dtype)
                typed = self._typed[(name, values.dtype)] = (
                    np.array([min(max(a, t_lo), t_hi) for a, _ in r.ranges], values.dtype),
                    np.array([min(max(b, t_lo), t_hi) for _, b in r.ranges], values.dtype),
                    [a == b for a, b in r.ranges])
            los, his, singles = typed
            vals = values[k:hi]
            starts = vals.searchsorted(los, side="left").tolist()
            ends = vals.searchsorted(his, side="right").tolist()
            out.extend((a + k, b + k, single) for a, b, single in zip(starts, ends, singles)
                       if b > a)
        return out

    def time_cuts(self, base: int) -> tuple[int, ...]:
        """Interval starts where the filter's timestamp comparisons change their answer, over
        intervals of `base` seconds (the finest): an interval that spans one of them is cut by
        the filter (interval-start semantics answer for all of it). A superset: every
        comparison counts, whatever the filter combines it with."""
        points: set[int] = set()

        def up(t: int) -> int:
            return -(-t // base) * base

        def walk(f: Filter) -> None:
            if isinstance(f, Logical):
                for g in f.operands:
                    walk(g)
                return
            if not isinstance(f, Compare) or f.column.role != "timestamp":
                return
            values = f.value if f.op == "in" else (f.value,)
            for x in values:
                if not -1 <= x <= 2**33:  # beyond any interval of uint32 times (or nan)
                    continue
                if f.op in (">=", "<"):
                    points.add(up(math.ceil(x)))
                elif f.op in (">", "<="):
                    points.add(up(math.floor(x) + 1))
                elif x == math.floor(x) and int(x) % base == 0:  # =, !=, in
                    points.update((int(x), int(x) + base))

        walk(self.f)
        return tuple(sorted(points))

    def compares_time(self) -> bool:
        """Whether any comparison is on the timestamp (even one with no cut: `at in []`, a
        time beyond any interval): its blocks then need their interval start."""
        def walk(f: Filter) -> bool:
            if isinstance(f, Logical):
                return any(walk(g) for g in f.operands)
            return isinstance(f, Compare) and f.column.role == "timestamp"

        return walk(self.f)

    def prune(self, start: int, f: Filter | None = None) -> bool | None:
        f = self.f if f is None else f
        if isinstance(f, Match):
            return None
        if isinstance(f, Compare):
            if f.column.role != "timestamp":
                return None
            if f.op == "in":
                return any(float(start) == v for v in f.value)
            if isinstance(f.value, float):
                return bool(_NP_FLOAT_OPS[FLOAT_OPS.index(f.op)](start, f.value))
            b = int_bounds(f.op, f.value, -2**63, 2**63 - 1)
            return b if isinstance(b, bool) else (b[0] <= start <= b[1]) != b[2]
        results = [self.prune(start, g) for g in f.operands]
        if f.op == "not":
            return None if results[0] is None else not results[0]
        if f.op == "and":
            if any(r is False for r in results):
                return False
            return True if all(r is True for r in results) else None
        if any(r is True for r in results):
            return True
        return False if all(r is False for r in results) else None

    def mask(self, block: Block, start: int | None) -> Mask:
        prog = self.program(block, start)
        return prog if isinstance(prog, bool) else evaluate(prog)

    def program(self, block: Block, start: int | None) -> Program | bool:
        """The filter reduced for one block of the interval at `start` (None: a block of
        several intervals' rows, for a filter without timestamp comparisons)."""
        out: Program = []
        result = self._emit(self.f, block, start, out)
        return result if isinstance(result, bool) else out

    def _emit(self, f: Filter, block: Block, start: int | None, out: Program) -> bool | None:
        """Append f's program to `out`, or return its constant value (appending nothing)."""
        if isinstance(f, (Compare, Match)):
            leaf = self._match(f, block) if isinstance(f, Match) else self._leaf(f, block, start)
            if isinstance(leaf, bool):
                return leaf
            if isinstance(leaf, list):
                out.extend(leaf)
            else:
                out.append(leaf)
            return None
        if f.op == "not":
            r = self._emit(f.operands[0], block, start, out)
            if r is not None:
                return not r
            out.append((NOT, 0))
            return None
        is_and = f.op == "and"
        mark, emitted = len(out), 0
        for g in f.operands:
            r = self._emit(g, block, start, out)
            if r is None:
                emitted += 1
            elif r != is_and:  # False in an and, True in an or: the whole node is decided
                del out[mark:]
                return r
        if emitted == 0:
            return is_and
        if emitted > 1:
            out.append((AND if is_and else OR, emitted))
        return None

    def _leaf(self, f: Compare, block: Block, start: int | None) -> Leaf:
        col = f.column
        if col.role == "timestamp":
            assert start is not None, "a timestamp comparison needs the interval start"
            return bool(self.prune(start, f))
        if col.role == "metric":
            arr = block.metrics[col.name]
            leaf = _number_in(arr, f.value) if f.op == "in" else _number_leaf(arr, f.op,
                                                                              f.value)
            missing = col.kind.missing(arr)  # a min/max without a value: as a nil dimension
            if missing is None or not missing.any():
                return leaf
            return _with_nil(leaf, missing, f.op == "!=")
        nil = block.nils[col.name]
        arr = block.dims[col.name]
        if f.op == "in":
            values = [v for v in f.value if v is not None]
            leaf = self._string_in(f, arr, values) if col.is_string else _number_in(arr, values)
            return _with_nil(leaf, nil, None in f.value)
        if f.value is None:  # = null, != null; ordering ops are false on nil and on values
            if f.op not in ("=", "!="):
                return False
            if nil is None:
                return f.op == "!="
            return _nil_leaf(nil, f.op == "=")
        leaf = self._string_compare(f, arr) if col.is_string else _number_leaf(arr, f.op,
                                                                              f.value)
        return _with_nil(leaf, nil, f.op == "!=")

    def _match(self, f: Match, block: Block) -> Leaf:
        """prefix/contains/regex: a table over the dictionary codes (each string tested once);
        nil rows never match."""
        name = f.column.name
        table = self._tables[id(f)]
        leaf: Leaf = (LUT, block.dims[name], table, 0, 0, None, False)
        if not table.any() or table.all():  # every code of the snapshot is inside the table
            leaf = bool(table.any())
        return _with_nil(leaf, block.nils[name], False)

    def _string_compare(self, f: Compare, codes: np.ndarray) -> Op | bool:
        d = self.dictionaries[f.column.name]
        size = self.sizes[f.column.name]
        if f.op in ("=", "!="):
            code = d.lookup(f.value)
            if code is None or code >= size:
                return f.op == "!="
            return (RANGE, codes, code, code, f.op == "!=", None, False)
        lut = self._tables.get(id(f))
        if lut is None:  # string order: a table over the codes, once per query
            ranks, ordered = d.ranks(size), d.sorted_values(size)
            if f.op in ("<", ">="):
                pos = bisect.bisect_left(ordered, f.value)
                lut = ranks < pos if f.op == "<" else ranks >= pos
            else:
                pos = bisect.bisect_right(ordered, f.value)
                lut = ranks <= pos - 1 if f.op == "<=" else ranks >= pos
            self._tables[id(f)] = lut
        return (LUT, codes, lut, 0, 0, None, False) if lut.any() else False

    def _string_in(self, f: Compare, codes: np.ndarray, values: list[str]) -> Leaf:
        table = self._tables.get(id(f))
        if table is None:  # once per query: the codes of the known strings, as a table
            d = self.dictionaries[f.column.name]
            size = self.sizes[f.column.name]
            known = sorted({c for c in map(d.lookup, values) if c is not None and c < size})
            lut = np.zeros(size, bool)
            lut[known] = True
            self._tables[id(f)] = table = (known, lut)
        known, lut = table
        return _in_ranges(codes, known, lut)


# -- the numpy evaluator ----------------------------------------------------------------------

def evaluate(prog: Program) -> np.ndarray:
    """A program's mask, with numpy (the reference for the C evaluator)."""
    stack: list[np.ndarray] = []
    for op in prog:
        kind = op[0]
        if kind == AND or kind == OR:
            n = op[1]
            combine = np.logical_and if kind == AND else np.logical_or
            m = functools.reduce(combine, stack[-n:])
            del stack[-n:]
        elif kind == NOT:
            m = ~stack.pop()
        else:
            m = _leaf_mask(op)
        stack.append(m)
    assert len(stack) == 1, "a program leaves one mask"
    return stack[0]


def _leaf_mask(op: Op) -> np.ndarray:
    kind, arr, a, b, negate, nil, nil_result = op
    if kind == MASK:
        return arr
    if kind == RANGE:
        lo, hi = _int_range(arr.dtype)
        if a == b:
            m = arr != a if negate else arr == a
            negate = False
        elif a <= lo:
            m = arr <= b
        elif b >= hi:
            m = arr >= a
        else:
            m = (arr >= a) & (arr <= b)
        if negate:
            m = ~m
    elif kind == LUT:
        m = _take(a, arr)
    else:
        m = _NP_FLOAT_OPS[a](arr, arr.dtype.type(b))
    if nil is not None:
        m = m | nil if nil_result else m & ~nil
    return m


def _take(lut: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """lut[codes] for a bool look-up table over dictionary codes, False outside the table
    (the C kernel reads the codes as they are; numpy widens them to intp first)."""
    kernels = native.kernels
    if kernels is None:
        if not len(lut):
            return np.zeros(len(codes), bool)
        c = codes.astype(np.intp)  # a uint64 beyond intp wraps negative: outside as well
        inside = (c >= 0) & (c < len(lut))
        return np.where(inside, lut[np.where(inside, c, 0)], False)
    out = np.empty(len(codes), bool)
    kernels.lookup(lut, codes, out)
    return out
