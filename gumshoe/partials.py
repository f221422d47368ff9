"""Partial results: per-group sums (and minima/maxima), the associative merge of partials, and
the finishing step that makes result rows. (Filters are compiled in filters.py.)

Imports kinds, schema, block, query (the AST), expression, having and fill; never opens files.
Each aggregated column's values combine by its metric kind (`Partial.kinds`, kinds.py): sums
add, min/max take the extreme, a group without a min/max value holds the kind's identity and
answers null. A uniques aggregate's column keeps a sketch per group instead
(`Partial.sketches`, sketch.SketchColumn), united by `merge` (sketch.union) and turned into
integer estimates only by `finalize` (`estimates`), which says which outputs are approximate.
The same Partial and `merge` serve a block, an interval, a whole shard and the router (over
decoded keys). `finalize` works on the merged groups only: zero-fill, aggregates,
post-aggregations, having, orderBy, offset and limit, in that order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from . import expression, fill, having
from .block import dense_codes, group_key, string_ranks
from .errors import QueryError
from .kinds import SUM, Kind
from .query import ROW_COUNT, Grouping, Query
from .sketch import SketchColumn, union, union_blocks

EXACT_FLOAT_SUM = 2**53  # float64 (bincount) sums of integers are exact below this


# -- partial results ------------------------------------------------------------------------

@dataclasses.dataclass(slots=True)
class Partial:
    """Per-group sums. keys[i] holds grouping i's values (string groupings: dictionary codes
    while `decoded` is False, str objects once decoded), nils[i] marks nil keys. Without
    groupings there is exactly one group."""

    keys: list[np.ndarray]
    nils: list[np.ndarray | None]
    count: np.ndarray  # int64 rowCount per group
    sums: dict[str, np.ndarray]  # metric column -> per-group sum (or min/max: see kinds)
    decoded: bool = False
    # The first and last interval start the scan read (None: none), for zero-fill's time
    # range; merging takes the union, so through the router it covers every shard.
    extent: tuple[int, int] | None = None
    # The group limit the scan and merge enforced; zero-fill is held to the same.
    max_groups: int | None = None
    # decoded string keys' ranks in string order (from the dictionary), when known: finishing
    # orders by these integers instead of sorting the strings (not carried by merge or wire)
    ranks: list[np.ndarray | None] | None = None
    # seconds: the coarsest interval the scan used when it is coarser than the query asked
    # (a time grouping or timestamp filter finer than a stored, re-rolled interval; engine.py),
    # else None; merging takes the coarsest, so through the router it covers every shard
    granularity: int | None = None
    # the kind of each column of `sums` that is not a sum (min, max); carried by merge and wire
    kinds: dict[str, Kind] = dataclasses.field(default_factory=dict)
    # uniques columns: a sketch per group (sketch.SketchColumn), united by merge and wire
    sketches: dict[str, SketchColumn] = dataclasses.field(default_factory=dict)

    @property
    def groups(self) -> int:
        return len(self.count)

    def kind(self, column: str) -> Kind:
        return self.kinds.get(column, SUM)


def query_kinds(query: Query) -> dict[str, Kind]:
    """The kinds of the query's aggregated value columns that are not sums (min, max)."""
    return {a.column.name: a.column.kind for a in query.aggregates
            if not a.column.kind.is_sum and not a.column.kind.is_sketch}


def sketch_columns(query: Query) -> tuple[str, ...]:
    """The query's uniques columns (aggregated as sketches, not values)."""
    return tuple(dict.fromkeys(a.column.name for a in query.aggregates
                               if a.column.kind.is_sketch))


def value_columns(query: Query) -> tuple[str, ...]:
    """The query's columns aggregated as values (sums, min, max)."""
    return tuple(c for c in query.metric_columns if c not in sketch_columns(query))


def empty_partial(query: Query, sum_dtypes: dict[str, np.dtype], decoded: bool = False
                  ) -> Partial:
    n = 0 if query.groupings else 1
    keys = [np.zeros(0, object if (decoded and g.column.is_string) else _key_dtype(g))
            for g in query.groupings]
    kinds = query_kinds(query)
    return Partial(keys, [None] * len(keys), np.zeros(n, np.int64),
                   {c: kinds.get(c, SUM).empty(n, dt) for c, dt in sum_dtypes.items()}, decoded,
                   kinds=kinds, sketches={c: SketchColumn.empty(n) for c in sketch_columns(query)})


def _key_dtype(g: Grouping) -> np.dtype:
    """Grouping values' dtype: int64 for timestamps, time buckets (which may start before
    1970 in a zone east of UTC) and dictionary codes; else the column's."""
    if g.column.role == "timestamp" or g.column.is_string or g.transform is not None:
        return np.dtype(np.int64)
    return g.column.dtype


def union_extent(extents: Iterable[tuple[int, int] | None]) -> tuple[int, int] | None:
    """The smallest extent covering every given one (None: no interval at all). Associative
    and commutative, with None as its identity."""
    given = [e for e in extents if e is not None]
    if not given:
        return None
    return min(lo for lo, _ in given), max(hi for _, hi in given)


def merge(partials: list[Partial], max_groups: int | None = None) -> Partial:
    """Combine partials: groups with equal keys (nil equal to nil) are combined (sums added,
    min/max by their kind), extents united."""
    extent = union_extent(p.extent for p in partials)
    if max_groups is None:
        max_groups = next((p.max_groups for p in partials if p.max_groups is not None), None)
    granularity = max((p.granularity for p in partials if p.granularity), default=None)
    return dataclasses.replace(_merge_groups(partials, max_groups), extent=extent,
                               max_groups=max_groups, granularity=granularity)


def _merge_groups(partials: list[Partial], max_groups: int | None) -> Partial:
    partials = [p for p in partials if p.groups] or partials[:1]
    if len(partials) == 1:
        return partials[0]
    first = partials[0]
    count = np.concatenate([p.count for p in partials])
    sums = {c: np.concatenate([p.sums[c] for p in partials]) for c in first.sums}
    # each partial's sketch column stays where it is: the union reads them in place
    sketches = {c: [p.sketches[c] for p in partials] for c in first.sketches}
    kinds = first.kinds
    if not first.keys:
        return Partial([], [], np.array([count.sum()], np.int64),
                       {c: _reduce(c, kinds.get(c, SUM), v, None, np.zeros(1, np.intp))
                        for c, v in sums.items()}, first.decoded, kinds=kinds,
                       sketches={c: union_blocks([(col, 0) for col in cols], 1)
                                 for c, cols in sketches.items()})
    keys, nils = [], []
    for i in range(len(first.keys)):
        keys.append(np.concatenate([p.keys[i] for p in partials]))
        parts = [p.nils[i] for p in partials]
        nils.append(None if all(x is None for x in parts) else np.concatenate(
            [np.zeros(p.groups, bool) if x is None else x for p, x in zip(partials, parts)]))
    return reduce_groups(keys, nils, count, sums, first.decoded, max_groups, kinds,
                         {c: (col, None) for c, col in sketches.items()})


def reduce_groups(keys: list[np.ndarray], nils: list[np.ndarray | None], count: np.ndarray,
                  sums: dict[str, np.ndarray], decoded: bool,
                  max_groups: int | None = None, kinds: dict[str, Kind] | None = None,
                  sketches: dict[str, tuple[SketchColumn | list[SketchColumn],
                                            np.ndarray | None]] | None = None
                  ) -> Partial:
    """Combine the rows of equal keys (sort-based, vectorised): sums added, the columns of
    `kinds` reduced by their kind, `sketches` (a column and its rows giving these rows in
    order, None: all; or columns whose rows, one after another, are these rows) united per
    group (sketch.union)."""
    kinds = kinds or {}
    sketches = sketches or {}
    n = len(count)
    parts = [dense_codes(_sortable(k, nil), nil) for k, nil in zip(keys, nils)]
    packed = group_key(parts, n)
    if packed is not None:
        order = np.argsort(packed[0], kind="stable")
        sk = packed[0][order]
        boundary = sk[1:] != sk[:-1]
    else:
        order = np.lexsort([c for c, _ in reversed(parts)])
        boundary = np.zeros(max(n - 1, 0), bool)
        for c, _ in parts:
            sc = c[order]
            boundary |= sc[1:] != sc[:-1]
    starts = np.concatenate(([0], np.flatnonzero(boundary) + 1)) if n else np.zeros(0, np.intp)
    if max_groups is not None and len(starts) > max_groups:
        raise QueryError(f"query produces more than {max_groups} groups (max_groups); add "
                         "filters or coarser groupings")
    first = order[starts]
    united = {}
    if sketches:
        group = np.empty(n, np.int64)  # each row's group number
        if n:
            group[order] = np.concatenate(([0], np.cumsum(boundary)))
        united = {c: _unite(col, rows, group, len(starts)) for c, (col, rows) in sketches.items()}
    return Partial(
        [k[first] for k in keys],
        [None if nil is None else nil[first] for nil in nils],
        np.add.reduceat(count[order], starts) if n else count,
        {c: (_reduce(c, kinds.get(c, SUM), v, order, starts) if n else v)
         for c, v in sums.items()},
        decoded,
        kinds=kinds,
        sketches=united,
    )


def _unite(col: SketchColumn | list[SketchColumn], rows: np.ndarray | None, group: np.ndarray,
           n_groups: int) -> SketchColumn:
    """The sketches of `col`'s rows `rows` (all: None) united into their `group`; a list of
    columns is read in place, its rows one after another (the partials of a merge)."""
    if isinstance(col, SketchColumn):
        return union(col, rows, group, n_groups)
    assert rows is None
    ends = np.cumsum([len(c) for c in col])
    return union_blocks([(c, group[e - len(c):e]) for c, e in zip(col, ends)], n_groups)


def _reduce(name: str, kind: Kind, v: np.ndarray, order: np.ndarray | None,
            starts: np.ndarray) -> np.ndarray:
    """Per run of (ordered) rows: the sum (never wrapped) or the kind's reduction."""
    if kind.is_sum:
        return _reduce_sums(name, v, order, starts)
    return kind.reduceat(v if order is None else v[order], starts)


def _reduce_sums(name: str, v: np.ndarray, order: np.ndarray | None,
                 starts: np.ndarray) -> np.ndarray:
    """np.add.reduceat(v[order], starts), refusing a 64-bit integer sum that would wrap. When
    the sum of |v| (in float64, whose error is far below the margin) is under 2**62, no sum can
    wrap; otherwise the sums are added exactly as Python integers and checked."""
    if order is not None:
        v = v[order]
    if v.dtype.kind == "f" or float(np.abs(v.astype(np.float64)).sum()) < 2.0**62:
        return np.add.reduceat(v, starts)
    exact = np.add.reduceat(v.astype(object), starts)
    check_sums(name, v.dtype, exact)
    return np.array(exact.tolist(), v.dtype)


def check_sums(name: str, dtype: np.dtype, exact: Any, where: str = "") -> None:
    """Raise QueryError when an exact integer sum does not fit `dtype`, the 64-bit type that
    sums of `name` are kept and returned in (never wrapped: a wrong number is worse)."""
    info = np.iinfo(dtype)
    for x in exact:
        if not info.min <= x <= info.max:
            raise QueryError(f"{where or 'aggregates'}: the sum of {name!r} ({x}) does not "
                             f"fit {dtype}, the type its sums are kept in")


def _sortable(keys: np.ndarray, nil: np.ndarray | None) -> np.ndarray:
    if keys.dtype == object and nil is not None and nil.any():
        keys = keys.copy()
        keys[nil] = ""
    return keys


# -- finishing ------------------------------------------------------------------------------

def decode(partial: Partial, query: Query, strings: Callable[[str], np.ndarray],
           ranks: Callable[[str], np.ndarray] | None = None) -> Partial:
    """Replace string-grouping codes by the strings (nil keys become None); with `ranks`
    (code -> rank in string order), keep each string key's rank for ordering the result."""
    if partial.decoded:
        return partial
    keys = []
    key_ranks: list[np.ndarray | None] = []
    for g, k, nil in zip(query.groupings, partial.keys, partial.nils):
        rank = None
        if g.column.is_string:
            if ranks is not None:
                table_ranks = ranks(g.column.name)
                rank = table_ranks[np.where(nil, 0, k) if nil is not None else k] \
                    if len(table_ranks) else np.zeros(len(k), np.int64)
            table = strings(g.column.name)
            k = table[np.where(nil, 0, k) if nil is not None else k] if len(table) else \
                np.full(len(k), None, object)
            if nil is not None:
                k = k.copy()
                k[nil] = None
        keys.append(k)
        key_ranks.append(rank)
    return Partial(keys, partial.nils, partial.count, partial.sums, True, partial.extent,
                   partial.max_groups, key_ranks if ranks is not None else None,
                   partial.granularity, partial.kinds, partial.sketches)


def _json_values(keys: np.ndarray, nil: np.ndarray | None) -> list[Any]:
    values: list[Any]
    if keys.dtype == np.float32:  # shortest float32 repr: 0.1, not 0.10000000149011612
        values = [float(str(v)) for v in keys]
    else:
        values = keys.tolist()
    if nil is not None:
        for i in np.flatnonzero(nil).tolist():
            values[i] = None
    return values


def _sort_key(values: np.ndarray, nil: np.ndarray | None, descending: bool) -> list[np.ndarray]:
    """Lexsort keys (least significant first) ordering nil first, then values."""
    if values.dtype == object:
        filled = _sortable(values, nil)
        values = string_ranks(filled)[0]
    v = values
    if descending:  # ~x reverses integer order exactly (-x could overflow or round)
        v = -v if v.dtype.kind == "f" else ~v
    is_value = np.ones(len(values), bool) if nil is None else ~nil
    return [v, (~is_value) if descending else is_value]


def _outputs(query: Query, count: np.ndarray, sums: dict[str, np.ndarray]
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Aggregate values per group: sums, averages (float64, NaN for no rows) and min/max;
    and, per min/max output, where it is null (the group saw no value: the identity)."""
    outputs: dict[str, np.ndarray] = {}
    nulls: dict[str, np.ndarray] = {}
    for a in query.aggregates:
        s = sums[a.column.name]
        if a.type == "sum":
            outputs[a.name] = s
        elif a.type in ("min", "max"):
            outputs[a.name] = s
            nulls[a.name] = a.column.kind.missing(s)  # type: ignore[assignment]
        elif a.type == "uniques":  # the estimates (`estimates`): integers, 0 for no identity
            outputs[a.name] = s
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                outputs[a.name] = np.where(count > 0, s.astype(np.float64) /
                                           np.maximum(count, 1), np.nan)
    return outputs, nulls


def _null_of(v: np.ndarray, null: np.ndarray | None) -> np.ndarray | None:
    """Where an output is null: its min/max null mask, or NaN of a float output."""
    if null is not None:
        return null
    return np.isnan(v) if v.dtype.kind == "f" else None


def _as_float(values: np.ndarray, nil: np.ndarray | None) -> np.ndarray:
    out = values.astype(np.float64)
    if nil is not None and nil.any():
        out[nil] = np.nan
    return out


def estimates(partial: Partial) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per uniques column: the integer estimate per group (int64; exact while a group's sketch
    holds at most sketch.SPARSE_MAX identities, else from its HLL registers), and per group
    whether it came from registers (an estimate, not an exact count)."""
    values, inexact = {}, {}
    for c, col in partial.sketches.items():
        est, exact = col.estimate()
        values[c] = np.rint(est).astype(np.int64)
        inexact[c] = ~exact
    return values, inexact


_INEXACT = "\0inexact:"  # a uniques column's per-group estimate flags among the sums (fill)


def finalize(query: Query, partial: Partial,
             approximate: list[str] | None = None) -> list[dict[str, Any]]:
    """Result rows (Python scalars only) from a decoded partial: zero-fill, aggregates
    (average = sum / rowCount, null for no rows), post-aggregations, having, then ordered by
    `orderBy` then grouping values (nil first), cut to `offset` and `limit`. `approximate`,
    when given, receives the uniques outputs that some returned row answers with an HLL
    estimate (the response's `approximate` list; decided on the rows returned, after having
    and limit)."""
    assert partial.decoded or not any(g.column.is_string for g in query.groupings)
    keys, nils, count = partial.keys, partial.nils, partial.count
    estimated, inexact = estimates(partial)
    sums = {**partial.sums, **estimated}  # a uniques column as its estimates
    ranks = partial.ranks  # string keys' ranks, to order by integers (see Partial.ranks)
    if query.fill is not None:  # a filled bucket answers an exact 0
        keys, nils, count, sums = fill.zero_fill(
            query, keys, nils, count, {**sums, **{_INEXACT + c: v for c, v in inexact.items()}},
            partial.extent, partial.max_groups, partial.kinds)
        inexact = {c: sums.pop(_INEXACT + c) for c in inexact}
        ranks = None
    n = len(count)
    outputs, nulls = _outputs(query, count, sums)
    if query.post_aggregations or query.having is not None:
        columns: dict[str, tuple[np.ndarray, np.ndarray | None]] = {ROW_COUNT: (count, None)}
        for g, k, nil in zip(query.groupings, keys, nils):
            columns[g.name] = (k, nil)
        for name, v in outputs.items():
            columns[name] = (v, _null_of(v, nulls.get(name)))
        used = {r.name for p in query.post_aggregations for r in expression.refs(p.expr)}
        numbers = {name: _as_float(*columns[name]) for name in used if name in columns}
        for p in query.post_aggregations:
            v = numbers[p.name] = outputs[p.name] = expression.evaluate(p.expr, numbers, n)
            columns[p.name] = (v, np.isnan(v))
        if query.having is not None:
            keep = np.flatnonzero(having.evaluate(query.having, columns, n))
            if len(keep) < n:
                keys = [k[keep] for k in keys]
                nils = [None if nil is None else nil[keep] for nil in nils]
                if ranks is not None:
                    ranks = [None if r is None else r[keep] for r in ranks]
                count = count[keep]
                inexact = {c: v[keep] for c, v in inexact.items()}
                outputs = {name: v[keep] for name, v in outputs.items()}
                nulls = {name: v[keep] for name, v in nulls.items()}
                n = len(keep)
    order: np.ndarray | None = None
    if n > 1 and (query.groupings or query.order_by):
        sort_keys: list[np.ndarray] = []
        ordered = [k if r is None else r for k, r in zip(keys, ranks or [None] * len(keys))]
        by_name = {g.name: (k, nil) for g, k, nil in zip(query.groupings, ordered, nils)}
        for k, nil in reversed(list(zip(ordered, nils))):
            sort_keys.extend(_sort_key(k, nil, False))
        for o in reversed(query.order_by):
            if o.name in by_name:
                sort_keys.extend(_sort_key(*by_name[o.name], o.descending))
            else:
                v = count if o.name == ROW_COUNT else outputs[o.name]
                null = _null_of(v, nulls.get(o.name))
                if null is not None and null.any():  # null (average of nothing) is smallest
                    v = np.where(null, v.dtype.type(0), v)
                sort_keys.extend(_sort_key(v, null, o.descending))
        order = np.lexsort(sort_keys)
    if query.limit is not None or query.offset:
        stop = None if query.limit is None else query.offset + query.limit
        order = (np.arange(n) if order is None else order)[query.offset:stop]
    def take(a: np.ndarray) -> np.ndarray:
        return a if order is None else a[order]

    if approximate is not None:
        shown = {c for c, v in inexact.items() if take(v).any()}
        approximate.extend(a.name for a in query.aggregates
                           if a.type == "uniques" and a.column.name in shown)
    columns_out: list[tuple[str, list[Any]]] = []
    for g, k, nil in zip(query.groupings, keys, nils):
        columns_out.append((g.name, _json_values(take(k),
                                                 None if nil is None else take(nil))))
    for name, v in outputs.items():
        values = take(v).tolist()
        if name in nulls:
            values = _json_values(take(v), take(nulls[name]))
        elif v.dtype.kind == "f":
            values = [None if x != x else x for x in values]
        columns_out.append((name, values))
    columns_out.append((ROW_COUNT, take(count).tolist()))
    rows = len(columns_out[-1][1])
    names = [c[0] for c in columns_out]
    return [dict(zip(names, vals)) for vals in zip(*(c[1] for c in columns_out))] if rows else []
