"""A naive pure-Python model of gumshoe, "assumed perfect": roll-up and query evaluation.

Deliberately slow and obvious: plain dicts, one Python statement per row, no numpy. Tests
compare the real engine with it. Two entry points:

- ``rollup(schema, rows)``: the rolled-up table of a list of accepted raw row dicts, as
  ``{(interval_start, dims_tuple): {"count": n, <metric>: sum, ...}}`` (a min/max metric:
  the smallest/largest input, None when no row had one).
- ``evaluate(schema, table, query)``: the result rows of a (valid) query dict over such a table.
- ``bucket_start(t, unit, zone)`` / ``bucket_range``: calendar buckets computed with zoneinfo's
  own rules only (the model for gumshoe/timebuckets.py).

Values are Python ints, floats, strs and None (nil). Integer sums are exact (Python ints);
float32 columns are rounded to float32 first, as they are stored.
"""

from __future__ import annotations

import ast
import datetime
import math
import operator
import re
import struct
import zoneinfo
from typing import Any

from gumshoe.schema import Column, Schema
from gumshoe.sketch import _xxh64_py  # checked against published XXH64 values (test_sketch)

Key = tuple[int, tuple[Any, ...]]  # (interval start, dimension values with None for nil)
Table = dict[Key, dict[str, Any]]  # key -> {"count": int, metric: sum}

TIME_TRANSFORMS = {"minute": 60, "hour": 3600, "day": 86400}
CALENDAR_UNITS = ("minute", "hour", "day", "week", "month", "quarter", "year")


# -- calendar buckets, straight from zoneinfo ------------------------------------------------

def _wall(t: int, zone: zoneinfo.ZoneInfo) -> datetime.datetime:
    """The local clock reading (naive) at Unix time t."""
    return datetime.datetime.fromtimestamp(t, zone).replace(tzinfo=None)


def truncate_local(wall: datetime.datetime, unit: str) -> datetime.datetime:
    """A local clock reading truncated to the start of its minute ... year (ISO weeks start on
    Monday)."""
    wall = wall.replace(microsecond=0, second=0)
    if unit == "minute":
        return wall
    wall = wall.replace(minute=0)
    if unit == "hour":
        return wall
    wall = wall.replace(hour=0)
    if unit == "day":
        return wall
    if unit == "week":
        return wall - datetime.timedelta(days=wall.weekday())
    if unit == "month":
        return wall.replace(day=1)
    if unit == "quarter":
        return wall.replace(day=1, month=(wall.month - 1) // 3 * 3 + 1)
    assert unit == "year", unit
    return wall.replace(day=1, month=1)


def first_instant(local: datetime.datetime, zone_name: str) -> int:
    """The earliest Unix second whose local reading is `local`; when `local` was skipped (a
    DST gap), the first second after the gap. Only zoneinfo's own fold rules are used."""
    zone = zoneinfo.ZoneInfo(zone_name)
    found = []
    instants = []
    for fold in (0, 1):
        s = int(local.replace(tzinfo=zone, fold=fold).timestamp())
        instants.append(s)
        if _wall(s, zone) == local:
            found.append(s)
    if found:
        return min(found)
    lo, hi = min(instants), max(instants)  # around the gap: before it, and after it
    assert _wall(lo, zone) < local < _wall(hi, zone), (local, zone_name)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(mid, zone) >= local:
            hi = mid
        else:
            lo = mid
    return hi


def bucket_start(t: int, unit: str, zone_name: str = "UTC") -> int:
    """The start of the local `unit` bucket holding Unix time t, in zone `zone_name`."""
    return first_instant(truncate_local(_wall(t, zoneinfo.ZoneInfo(zone_name)), unit),
                         zone_name)


def bucket_range(lo: int, hi: int, unit: str, zone_name: str = "UTC") -> list[int]:
    """Every bucket start from bucket_start(lo) to bucket_start(hi), by walking the local
    calendar one unit at a time."""
    if hi < lo:
        return []
    zone = zoneinfo.ZoneInfo(zone_name)
    first, last = bucket_start(lo, unit, zone_name), bucket_start(hi, unit, zone_name)
    a, b = sorted((truncate_local(_wall(lo, zone), unit), truncate_local(_wall(hi, zone), unit)))
    out = set()
    while a <= b:
        s = first_instant(a, zone_name)
        if first <= s <= last:
            out.add(s)
        a = _next_local(a, unit)
    return sorted(out)


def _next_local(local: datetime.datetime, unit: str) -> datetime.datetime:
    if unit in ("minute", "hour", "day", "week"):
        return local + datetime.timedelta(**{unit + "s": 1})
    months = {"month": 1, "quarter": 3, "year": 12}[unit]
    m = local.month - 1 + months
    return local.replace(year=local.year + m // 12, month=m % 12 + 1)


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


def stored_metric(m: Column, v: Any) -> Any:
    """What one raw row's metric value is stored as: the value, or without one 0 (a sum) or
    the kind's identity (min: the stored type's maximum or inf; max: its minimum or -inf)."""
    v = stored_value(m, v)
    if v is not None:
        return v
    return m.kind.identity(m.store_dtype).item()


def timestamp(v: float) -> int:
    return math.floor(v)


def interval_start(schema: Schema, ts: int) -> int:
    return ts - ts % schema.interval_duration


def row_key(schema: Schema, row: dict[str, Any]) -> Key:
    start = interval_start(schema, timestamp(row[schema.timestamp.name]))
    return start, tuple(stored_value(d, row.get(d.name)) for d in schema.dimensions)


def identity_hash(v: Any) -> int | None:
    """A uniques identity's hash (XXH64 of its UTF-8 text, an integer as its decimal text, by
    the pure-Python reference of tests/storage/test_sketch.py); None: no identity."""
    if v is None:
        return None
    return _xxh64_py(str(v).encode("utf-8"))


def empty_value(m: Column) -> Any:
    """A metric's value over no input: 0 for a sum, None for a min/max, the empty set of
    identity hashes for a uniques."""
    if m.kind.name == "uniques":
        return frozenset()
    if m.kind.name != "sum":
        return None
    return 0.0 if m.is_float else 0


def combine(m: Column, a: Any, b: Any) -> Any:
    """Two rolled-up values of metric `m` combined: added, or the smaller/larger (None: no
    value)."""
    if m.kind.name == "sum":
        return a + b
    if m.kind.name == "uniques":
        return a | b
    if a is None or b is None:
        return b if a is None else a
    return min(a, b) if m.kind.name == "min" else max(a, b)


def rollup(schema: Schema, rows: list[dict[str, Any]]) -> Table:
    """Roll up accepted raw rows: one entry per (interval start, dimension values)."""
    table: Table = {}
    for row in rows:
        entry = table.setdefault(row_key(schema, row),
                                 {"count": 0, **{m.name: empty_value(m)
                                                 for m in (*schema.metrics, *schema.uniques)}})
        entry["count"] += 1
        for m in schema.metrics:
            v = stored_value(m, row.get(m.name))
            if v is not None:
                entry[m.name] = combine(m, entry[m.name], v)
        for u in schema.uniques:
            h = identity_hash(row.get(u.name))
            if h is not None:
                entry[u.name] = entry[u.name] | {h}
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
    if ftype in ("prefix", "contains", "regex"):
        return string_matches(ftype, _column_value(schema, key, entry, column), value,
                              bool(_get(f, "caseInsensitive")))
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


def _grouping(g: str | dict[str, Any]) -> tuple[str, str, str | None, str, bool]:
    """(column, output name, time unit or None, time zone, fill)."""
    if isinstance(g, str):
        return g, g, None, "UTC", False
    column = _get(g, "column")
    transform = _get(g, "timeTransform")
    return (column, _get(g, "name") or column, transform.lower() if transform else None,
            _get(g, "timeZone") or "UTC", bool(_get(g, "fill")))


def _bucket(v: int, unit: str | None, zone: str) -> int:
    if unit is None:
        return v
    if zone == "UTC" and unit in TIME_TRANSFORMS:
        return v - v % TIME_TRANSFORMS[unit]
    return bucket_start(v, unit, zone)


def _aggregate(a: dict[str, Any]) -> tuple[str, str, str]:
    """(type, column, output name)."""
    column = _get(a, "column")
    return _get(a, "type") or "sum", column, _get(a, "name") or column


def _order_key(v: Any) -> tuple[bool, Any]:
    return (v is not None, v)  # nil first


# -- string matching, post-aggregations, having --------------------------------------------

def string_matches(op: str, s: str | None, value: str, case_insensitive: bool) -> bool:
    """prefix / contains / regex (re.search) on one value; nil never matches."""
    if s is None:
        return False
    if op == "regex":
        return re.search(value, s, re.IGNORECASE if case_insensitive else 0) is not None
    if case_insensitive:
        s, value = s.casefold(), value.casefold()
    return s.startswith(value) if op == "prefix" else value in s


def _number(v: Any) -> float | None:
    return None if v is None else float(v)


def expression_value(source: str, values: dict[str, Any]) -> float | None:
    """A post-aggregation expression over one row, with Python's own parser (names: Python
    identifiers, dotted names, or double-quoted strings), in float64: a non-finite result
    (division by zero, overflow) is null, and null operands give null."""
    tree = ast.parse(source.strip(), mode="eval")

    def name_of(node: ast.expr) -> str:
        if isinstance(node, ast.Name):
            return node.id
        assert isinstance(node, ast.Attribute), ast.dump(node)
        return name_of(node.value) + "." + node.attr

    def value(node: ast.expr) -> float | None:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return _number(values[node.value])
            return float(node.value)
        if isinstance(node, (ast.Name, ast.Attribute)):
            return _number(values[name_of(node)])
        if isinstance(node, ast.UnaryOp):
            assert isinstance(node.op, ast.USub), ast.dump(node)
            x = value(node.operand)
            return None if x is None else -x
        assert isinstance(node, ast.BinOp), ast.dump(node)
        a, b = value(node.left), value(node.right)
        if a is None or b is None:
            return None
        try:
            r = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                 ast.Div: operator.truediv}[type(node.op)](a, b)
        except ZeroDivisionError:
            return None
        return r if math.isfinite(r) else None

    return value(tree.body)


def having_matches(f: dict[str, Any], row: dict[str, Any], float32_outputs: set[str]) -> bool:
    ftype = _get(f, "type") or "="
    if ftype == "and":
        return all(having_matches(g, row, float32_outputs) for g in _get(f, "filters"))
    if ftype == "or":
        return any(having_matches(g, row, float32_outputs) for g in _get(f, "filters"))
    if ftype == "not":
        return not having_matches(_get(f, "filter"), row, float32_outputs)
    name, value = _get(f, "column"), _get(f, "value")
    if name in float32_outputs:
        value = [_round32(e) for e in value] if ftype == "in" else _round32(value)
    return compare(ftype, row[name], value)


# -- zero-fill --------------------------------------------------------------------------------

def prune(schema: Schema, start: int, f: dict[str, Any]) -> bool | None:
    """Does the interval starting at `start` pass f (None: it depends on the rows)?"""
    ftype = _get(f, "type") or "="
    if ftype in ("and", "or"):
        results = [prune(schema, start, g) for g in _get(f, "filters")]
        decided, undecided = (False, True) if ftype == "and" else (True, False)
        if decided in results:
            return decided
        return undecided if all(r is undecided for r in results) else None
    if ftype == "not":
        r = prune(schema, start, _get(f, "filter"))
        return None if r is None else not r
    if _get(f, "column") != schema.timestamp.name:
        return None
    return compare(ftype, start, _get(f, "value"))


def time_range(schema: Schema, f: dict[str, Any], negate: bool = False
               ) -> tuple[float, float]:
    """The hull of the interval starts the timestamp comparisons in f let through, with
    -inf/inf for an unbounded side (other leaves bound nothing)."""
    ftype = _get(f, "type") or "="
    inf = math.inf
    if ftype == "not":
        return time_range(schema, _get(f, "filter"), not negate)
    if ftype in ("and", "or"):
        parts = [time_range(schema, g, negate) for g in _get(f, "filters")]
        if (ftype == "and") != negate:
            return max([lo for lo, _ in parts], default=-inf), min([hi for _, hi in parts],
                                                                   default=inf)
        parts = [p for p in parts if p[0] <= p[1]]
        return (min([lo for lo, _ in parts], default=inf),
                max([hi for _, hi in parts], default=-inf))
    if _get(f, "column") != schema.timestamp.name:
        return -inf, inf
    x = _get(f, "value")
    if negate:
        ftype = {"=": "!=", "!=": "=", "<": ">=", ">=": "<", ">": "<=", "<=": ">",
                 "in": "not in"}[ftype]
    if ftype in ("!=", "not in"):
        return -inf, inf
    if ftype in ("=", "in"):
        whole = [int(v) for v in (x if ftype == "in" else [x])
                 if (isinstance(v, int) or v.is_integer()) and 0 <= v < 2**32]
        return (min(whole), max(whole)) if whole else (inf, -inf)
    if ftype in (">", ">="):
        return (math.floor(x) + 1 if ftype == ">" else math.ceil(x)), inf
    return -inf, (math.floor(x) if ftype == "<=" else math.ceil(x) - 1)


def fill_buckets(schema: Schema, table: Table, filters: list[dict[str, Any]],
                 unit: str | None, zone: str) -> list[int]:
    """The buckets zero-fill emits: the range's sides from the timestamp filters when they
    bound it, else from the first/last interval the query scans, cut to interval starts."""
    lo, hi = time_range(schema, {"type": "and", "filters": filters})
    if lo > hi:
        return []
    scanned = [k[0] for k in table
               if all(prune(schema, k[0], f) is not False for f in filters)]
    if lo == -math.inf:
        lo = min(scanned, default=None)
    if hi == math.inf:
        hi = max(scanned, default=None)
    if lo is None or hi is None:
        return []
    d = schema.interval_duration
    lo, hi = -(-max(int(lo), 0) // d) * d, min(int(hi), 2**32 - 1) // d * d
    if lo > hi:
        return []
    if unit is None:
        return list(range(lo, hi + 1, d))
    if zone == "UTC" and unit in TIME_TRANSFORMS:
        step = TIME_TRANSFORMS[unit]
        return list(range(lo - lo % step, hi - hi % step + 1, step))
    return bucket_range(lo, hi, unit, zone)


def evaluate(schema: Schema, table: Table, query: dict[str, Any]) -> list[dict[str, Any]]:
    """Result rows of a valid query over a rolled-up table.

    Each row holds the aggregates, then the grouping values (a grouping name overwrites an
    aggregate of the same name), then ``rowCount``. Without groupings there is exactly one
    row (zeros and rowCount 0 when nothing matches; average over zero rows is None). With
    groupings, one row per combination present among the matching rows, plus (zero-fill) a
    zero row for every missing bucket of the time range and combination of the other
    groupings present. Then post-aggregations, having; without orderBy the rows are ordered
    by grouping values, nil first. orderBy sorts by its columns (nil sorts before every
    value, so last when descending), ties keep the grouping-value order; offset and limit
    cut the rows.
    """
    aggregates = [_aggregate(a) for a in _get(query, "aggregates") or []]
    groupings = [_grouping(g) for g in _get(query, "groupings") or []]
    filters = _get(query, "filters") or []

    def zero() -> dict[str, Any]:
        return {"count": 0, **{m.name: empty_value(m)
                               for m in (*schema.metrics, *schema.uniques)}}

    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    if not groupings:
        groups[()] = zero()
    for key, entry in table.items():
        if not all(matches(schema, key, entry, f) for f in filters):
            continue
        gkey = []
        for column, _name, unit, zone, _fill in groupings:
            v = _column_value(schema, key, entry, column)
            gkey.append(None if v is None else _bucket(v, unit, zone))
        acc = groups.setdefault(tuple(gkey), zero())
        acc["count"] += entry["count"]
        for m in (*schema.metrics, *schema.uniques):
            acc[m.name] = combine(m, acc[m.name], entry[m.name])

    filled = [i for i, g in enumerate(groupings) if g[4]]
    if filled:
        i = filled[0]
        _, _, unit, zone, _ = groupings[i]
        buckets = set(fill_buckets(schema, table, filters, unit, zone))
        buckets |= {k[i] for k in groups}
        others = {k[:i] + k[i + 1:] for k in groups} if len(groupings) > 1 else {()}
        for rest in others:
            for b in buckets:
                groups.setdefault((*rest[:i], b, *rest[i:]), zero())

    float32_outputs = {name for column, name, unit, _, _ in groupings
                       if unit is None and (c := schema.column(column)) is not None
                       and c.role == "dimension" and c.type_name == "float32"}
    results = []
    for gkey in sorted(groups, key=lambda k: tuple(map(_order_key, k))):
        acc = groups[gkey]
        row: dict[str, Any] = {}
        for atype, column, name in aggregates:
            if isinstance(acc[column], frozenset):  # uniques (the type may be left out):
                row[name] = len(acc[column])  # exact below SPARSE_MAX distinct identities
            elif atype in ("sum", "min", "max"):
                row[name] = acc[column]
            else:
                row[name] = acc[column] / acc["count"] if acc["count"] else None
        for (_column, name, *_), v in zip(groupings, gkey):
            row[name] = v
        row["rowCount"] = acc["count"]
        for p in _get(query, "postAggregations") or []:
            row[_get(p, "name")] = expression_value(_get(p, "expression"), row)
        having = _get(query, "having")
        if having is not None:
            if isinstance(having, list):
                having = {"type": "and", "filters": having}
            if not having_matches(having, row, float32_outputs):
                continue
        results.append(row)

    for spec in reversed(_get(query, "orderBy") or []):
        name = _get(spec, "column")
        results.sort(key=lambda r: _order_key(r[name]), reverse=bool(_get(spec, "descending")))
    offset = _get(query, "offset") or 0
    limit = _get(query, "limit")
    return results[offset:] if limit is None else results[offset:offset + limit]
