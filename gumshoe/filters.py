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
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import native
from .block import Block
from .dictionary import Dictionary
from .query import Compare, Filter, Match
from .textmatch import match_table

Mask = np.ndarray | bool  # a per-row mask, or a constant for every row
Op = tuple[Any, ...]
Program = list[Op]
Leaf = Op | Program | bool  # one leaf, a fragment of ops (an "or" of ranges), or a constant
MAX_IN_RANGES = 8  # an "in" of up to this many runs of values: ranges or'ed, else a table

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

    def _match_tables(self, f: Filter) -> None:
        if isinstance(f, Match):
            name = f.column.name
            self._tables[id(f)] = match_table(self.dictionaries[name], self.sizes[name], f.op,
                                              f.value, f.case_insensitive)
        elif not isinstance(f, Compare):
            for g in f.operands:
                self._match_tables(g)

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

    def mask(self, block: Block, start: int) -> Mask:
        prog = self.program(block, start)
        return prog if isinstance(prog, bool) else evaluate(prog)

    def program(self, block: Block, start: int) -> Program | bool:
        out: Program = []
        result = self._emit(self.f, block, start, out)
        return result if isinstance(result, bool) else out

    def _emit(self, f: Filter, block: Block, start: int, out: Program) -> bool | None:
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

    def _leaf(self, f: Compare, block: Block, start: int) -> Leaf:
        col = f.column
        if col.role == "timestamp":
            return bool(self.prune(start, f))
        if col.role == "metric":
            arr = block.metrics[col.name]
            return _number_in(arr, f.value) if f.op == "in" else _number_leaf(arr, f.op,
                                                                               f.value)
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
