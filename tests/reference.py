"""A naive pure-Python model of gumshoe, "assumed perfect": roll-up and query evaluation.

Deliberately slow and obvious: plain dicts, one Python statement per row, no numpy. Tests
compare the real engine with it. Two entry points:

- ``rollup(schema, rows)``: the rolled-up table of a list of accepted raw row dicts, as
  ``{(interval_start, dims_tuple): {"count": n, <metric>: sum, ...}}``.
- ``evaluate(schema, table, query)``: the result rows of a (valid) query dict over such a table.

Values are Python ints, floats, strs and None (nil). Integer sums are exact (Python ints);
float32 columns are rounded to float32 first, as they are stored.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from gumshoe.schema import Column, Schema

Key = tuple[int, tuple[Any, ...]]  # (interval start, dimension values with None for nil)
Table = dict[Key, dict[str, Any]]  # key -> {"count": int, metric: sum}

TIME_TRANSFORMS = {"minute": 60, "hour": 3600, "day": 86400}


def float32(v: float) -> float:
    """The float32 nearest to `v`, as a Python float."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


def stored_value(col: Column, v: Any) -> Any:
    """The value a (valid) raw JSON value is stored as: None for nil, exact ints, floats."""
    if v is None:
        return None
    if col.is_string:
        return v
    if col.dtype.kind == "f":
        return float32(float(v)) if col.dtype.itemsize == 4 else float(v)
    return int(v)  # integral floats such as 3.0 are accepted for integer columns


def timestamp(v: float) -> int:
    return math.floor(v)


def interval_start(schema: Schema, ts: int) -> int:
    return ts - ts % schema.interval_duration


def row_key(schema: Schema, row: dict[str, Any]) -> Key:
    start = interval_start(schema, timestamp(row[schema.timestamp.name]))
    return start, tuple(stored_value(d, row.get(d.name)) for d in schema.dimensions)


def rollup(schema: Schema, rows: list[dict[str, Any]]) -> Table:
    """Roll up accepted raw rows: one entry per (interval start, dimension values)."""
    table: Table = {}
    for row in rows:
        entry = table.setdefault(row_key(schema, row),
                                 {"count": 0, **{m.name: (0.0 if m.is_float else 0)
                                                 for m in schema.metrics}})
        entry["count"] += 1
        for m in schema.metrics:
            v = stored_value(m, row.get(m.name))
            entry[m.name] += 0 if v is None else v
    return table


def drop_before(table: Table, cutoff: int) -> Table:
    """The table without the intervals starting before `cutoff` (retention)."""
    return {k: v for k, v in table.items() if k[0] >= cutoff}


# -- queries -------------------------------------------------------------------------------

def _get(obj: dict[str, Any], key: str, default: Any = None) -> Any:
    """Case-insensitive key look-up, as the original's JSON decoder matches keys."""
    for k, v in obj.items():
        if k.lower() == key.lower():
            return v
    return default


def compare(op: str, v: Any, x: Any) -> bool:
    """One filter comparison with the nil table: nil = x false, nil != x true, ordered ops on
    nil false; = null matches nil, != null matches non-nil, ordered ops with null false.
    `in` takes a list; a None element matches nil. Numbers compare exactly (Python int/float
    comparison is exact); on a float32 dimension `matches` first rounds the filter value to
    float32 (it means the value inserting it would store: `= 0.1` matches a stored 0.1).
    Metric filters compare with the rolled-up sums, float64 for float32 metrics, unrounded.
    Strings compare by code point."""
    if op == "in":
        return any((v is None) if e is None else (v is not None and v == e) for e in x)
    if x is None or v is None:
        if op == "=":
            return v is None and x is None
        if op == "!=":
            return (v is None) != (x is None)
        return False
    return {"=": v == x, "!=": v != x, ">": v > x, ">=": v >= x, "<": v < x,
            "<=": v <= x}[op]


def _column_value(schema: Schema, key: Key, entry: dict[str, Any], name: str) -> Any:
    if name == schema.timestamp.name:
        return key[0]
    for i, d in enumerate(schema.dimensions):
        if d.name == name:
            return key[1][i]
    return entry[name]  # a metric: its rolled-up value


def matches(schema: Schema, key: Key, entry: dict[str, Any], f: dict[str, Any]) -> bool:
    ftype = _get(f, "type") or "="
    if ftype == "and":
        return all(matches(schema, key, entry, g) for g in _get(f, "filters"))
    if ftype == "or":
        return any(matches(schema, key, entry, g) for g in _get(f, "filters"))
    if ftype == "not":
        return not matches(schema, key, entry, _get(f, "filter"))
    column, value = _get(f, "column"), _get(f, "value")
    col = schema.column(column)
    if col is not None and col.role == "dimension" and col.type_name == "float32":
        value = ([_round32(e) for e in value] if ftype == "in" else _round32(value))
    return compare(ftype, _column_value(schema, key, entry, column), value)


def _round32(x: Any) -> Any:
    """float32(x) as a Python float (+-inf beyond float32); None stays None."""
    if x is None:
        return None
    try:
        return float32(float(x))
    except OverflowError:  # beyond float32 (struct refuses to round it to infinity)
        return math.copysign(math.inf, x)


def _grouping(g: str | dict[str, Any]) -> tuple[str, str, int | None]:
    """(column, output name, truncation seconds or None)."""
    if isinstance(g, str):
        return g, g, None
    column = _get(g, "column")
    transform = _get(g, "timeTransform")
    return column, _get(g, "name") or column, TIME_TRANSFORMS[transform] if transform else None


def _aggregate(a: dict[str, Any]) -> tuple[str, str, str]:
    """(type, column, output name)."""
    column = _get(a, "column")
    return _get(a, "type") or "sum", column, _get(a, "name") or column


def _order_key(v: Any) -> tuple[bool, Any]:
    return (v is not None, v)  # nil first


def evaluate(schema: Schema, table: Table, query: dict[str, Any]) -> list[dict[str, Any]]:
    """Result rows of a valid query over a rolled-up table.

    Each row holds the aggregates, then the grouping values (a grouping name overwrites an
    aggregate of the same name), then ``rowCount``. Without groupings there is exactly one
    row (zeros and rowCount 0 when nothing matches; average over zero rows is None). With
    groupings, one row per combination present among the matching rows. Without orderBy the
    rows are ordered by grouping values, nil first. orderBy sorts by its columns (nil sorts
    before every value, so last when descending), ties keep the grouping-value order; limit
    keeps the first N rows.
    """
    aggregates = [_aggregate(a) for a in _get(query, "aggregates") or []]
    groupings = [_grouping(g) for g in _get(query, "groupings") or []]
    filters = _get(query, "filters") or []

    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    if not groupings:
        groups[()] = {"count": 0, **{m.name: 0 for m in schema.metrics}}
    for key, entry in table.items():
        if not all(matches(schema, key, entry, f) for f in filters):
            continue
        gkey = []
        for column, _name, trunc in groupings:
            v = _column_value(schema, key, entry, column)
            gkey.append(v - v % trunc if trunc and v is not None else v)
        acc = groups.setdefault(tuple(gkey), {"count": 0, **{m.name: 0 for m in schema.metrics}})
        acc["count"] += entry["count"]
        for m in schema.metrics:
            acc[m.name] += entry[m.name]

    results = []
    for gkey in sorted(groups, key=lambda k: tuple(map(_order_key, k))):
        acc = groups[gkey]
        row: dict[str, Any] = {}
        for atype, column, name in aggregates:
            if atype == "sum":
                row[name] = acc[column]
            else:
                row[name] = acc[column] / acc["count"] if acc["count"] else None
        for (_column, name, _trunc), v in zip(groupings, gkey):
            row[name] = v
        row["rowCount"] = acc["count"]
        results.append(row)

    for spec in reversed(_get(query, "orderBy") or []):
        name = _get(spec, "column")
        results.sort(key=lambda r: _order_key(r[name]), reverse=bool(_get(spec, "descending")))
    limit = _get(query, "limit")
    return results if limit is None else results[:limit]
