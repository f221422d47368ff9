"""Hypothesis strategies: schemas, valid rows, invalid batches and queries.

- ``schema_configs()`` / ``schemas()``: random schemas with dimensions of every type (numeric,
  float, ``string:uintN``), every metric type (sums, ``min:``/``max:`` of each), several interval
  durations and small segment sizes (so intervals split into several segments).
- ``rows(schema)``: valid raw rows with nils, missing keys, integral floats for integer
  columns, boundary values and timestamps spread over many intervals. Values come from small
  per-column pools (``value_pool``) so that rows collide and roll up.
- ``invalid_batches(schema)``: a batch with exactly one bad row and what the error must name.
- ``queries(schema)``: query dicts over the same pools (filters of every type, string
  matching, and/or/not, several groupings, calendar time transforms in time zones, zero-fill,
  post-aggregations, having, orderBy/limit/offset) for differential query tests.

Float metric values are dyadic and small (multiples of 1/4), so their sums are exact in any
order and the reference can be compared with ``==``. 64-bit metric values stay within
+-2**40 so that sums of many rows never leave the int64/uint64 range (a known limit: a 64-bit
metric sum that leaves its type's range wraps).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hypothesis import strategies as st

from gumshoe.config import SchemaConfig
from gumshoe.schema import NUMERIC_TYPES, Column, Schema

STRING_TYPES = ("string:uint8", "string:uint16", "string:uint32")
DIMENSION_TYPES = NUMERIC_TYPES + STRING_TYPES
METRIC_TYPES = NUMERIC_TYPES + tuple(f"{k}:{t}" for k in ("min", "max") for t in NUMERIC_TYPES)
INTERVAL_DURATIONS = (60, 300, 3600, 86400)
# Interval-aligned for every duration above; the last one sits near the end of uint32 time.
TIMESTAMP_BASES = (0, 1_699_920_000, 2**32 - 30 * 86400 - 2**32 % 86400)
TIMESTAMP_MAX = 2**32 - 1
NAME_POOL = ("name", "country", "age", "d0", "d1", "x", "with space", "dotted.name", "ünï",
             "a-b", "UPPER", "n9")
TIMESTAMP_NAMES = ("at", "ts", "time")

STRINGS = ("", "a", "b", "US", "CA", "Starbuck", "Ünïcödé", "日本", "tab\there", "a" * 40)
TIME_UNITS = ("minute", "hour", "day", "week", "month", "quarter", "year")
UNIT_WIDTH = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400,
              "month": 28 * 86400, "quarter": 89 * 86400, "year": 365 * 86400}
# UTC, DST zones both sides of the equator, 30/45-minute offsets and half-hour DST.
TIME_ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu",
              "Australia/Lord_Howe", "America/St_Johns", "Pacific/Chatham", "America/Sao_Paulo")
# uniques identities: strings and integers (5 and "5" are one identity)
IDENTITIES = ("a", "b", "5", 5, 7, -3, 0, "", "日本", "Starbuck", 2**63, "x" * 40)
MATCH_VALUES = ("", "a", "A", "S", "US", "us", "日", "tab", "ü", "Ü", "^a+$", "b|U", ".",
                "^$", "[a-c]", "A$", "t.*e")


def value_pool(col: Column) -> list[Any]:
    """Candidate values for one column: collisions, boundaries, and (metrics) exact sums."""
    if col.is_string:
        return list(STRINGS)
    if col.dtype.kind == "f":
        if col.role == "metric":
            return [0.0, 0.5, -0.25, 3.0, 1024.75, -7.5, 1.0]
        big = 3.4028234663852886e38 if col.dtype.itemsize == 4 else 1.7976931348623157e308
        return [0.0, -0.0, 0.5, -1.5, 0.1, 1e-3, 1e30, -1e30, big, -big, 2.0**-126]
    lo, hi = col.value_range
    if col.role == "metric":
        if col.dtype.itemsize == 8:
            lo, hi = max(lo, -(2**40)), min(hi, 2**40 + 1)
        cands = [0, 1, 2, 100, hi, hi - 1, lo, -1]
        # a min/max of a 64-bit type reserves its identity (max:uint64: 0)
        reserved = col.kind.reserved(col.dtype)
        cands = [v for v in cands if reserved is None or v != int(reserved)]
    else:
        cands = [0, 1, 2, 7, -1, -2, lo, lo + 1, hi, hi - 1, 2**31, 2**53 + 1]
    return sorted({v for v in cands if lo <= v <= hi})


@st.composite
def schema_configs(draw: st.DrawFn, max_dimensions: int = 4, max_metrics: int = 3,
                   dimension_types: tuple[str, ...] = DIMENSION_TYPES,
                   metric_types: tuple[str, ...] = METRIC_TYPES,
                   uniques: bool = False) -> SchemaConfig:
    """A random valid [schema] section (segment sizes small: a few to ~40 rows/segment)."""
    n_dims = draw(st.integers(0, max_dimensions))
    n_mets = draw(st.integers(1, max_metrics))
    names = draw(st.lists(st.sampled_from(NAME_POOL), min_size=n_dims + n_mets,
                          max_size=n_dims + n_mets, unique=True))
    dims = tuple((n, draw(st.sampled_from(dimension_types))) for n in names[:n_dims])
    mets = tuple((n, draw(st.sampled_from(metric_types))) for n in names[n_dims:])
    if uniques and draw(st.booleans()):  # a distinct count beside them (`uniques` metric)
        at = draw(st.integers(0, len(mets)))
        mets = (*mets[:at], ("visitors", "uniques"), *mets[at:])
    ts = (draw(st.sampled_from(TIMESTAMP_NAMES)), "uint32")
    interval = draw(st.sampled_from(INTERVAL_DURATIONS))
    probe = Schema.from_config(SchemaConfig(10**9, interval, ts, dims, mets))
    per_segment = draw(st.integers(1, 40))
    segment_size = max(100, probe.row_bytes * per_segment
                       + draw(st.integers(0, probe.row_bytes - 1)))
    return SchemaConfig(segment_size, interval, ts, dims, mets, str(segment_size))


def schemas(**kwargs: Any) -> st.SearchStrategy[Schema]:
    return schema_configs(**kwargs).map(Schema.from_config)


def _json_number(draw: st.DrawFn, col: Column, v: Any) -> Any:
    """`v` as JSON might carry it: integers sometimes as integral floats."""
    if isinstance(v, int) and abs(v) < 2**53 and draw(st.booleans()):
        return float(v)
    return v


@st.composite
def timestamps(draw: st.DrawFn, schema: Schema, base: int | None = None,
               max_intervals: int = 12) -> int | float:
    if base is None:
        base = draw(st.sampled_from(TIMESTAMP_BASES))
    d = schema.interval_duration
    ts = base + draw(st.integers(0, max_intervals - 1)) * d + draw(
        st.sampled_from([0, 1, d // 2, d - 1]))
    ts = min(ts, TIMESTAMP_MAX)
    if draw(st.integers(0, 9)) == 0 and ts < TIMESTAMP_MAX:
        return ts + 0.5  # fractional seconds are floored
    return ts


@st.composite
def row(draw: st.DrawFn, schema: Schema, base: int | None = None,
        max_intervals: int = 12) -> dict[str, Any]:
    """One valid raw row: missing keys and nulls (nil dimensions, zero metrics) included."""
    out: dict[str, Any] = {schema.timestamp.name: draw(timestamps(schema, base, max_intervals))}
    for col in (*schema.dimensions, *schema.metrics, *schema.uniques):
        choice = draw(st.integers(0, 9))
        if choice == 0:
            continue  # missing: nil dimension / zero metric / no identity
        if choice == 1:
            out[col.name] = None
            continue
        if col.kind.is_sketch:
            out[col.name] = draw(st.sampled_from(IDENTITIES))
            continue
        v = draw(st.sampled_from(value_pool(col)))
        out[col.name] = v if col.is_string else _json_number(draw, col, v)
    return out


@st.composite
def rows(draw: st.DrawFn, schema: Schema, min_size: int = 0, max_size: int = 30,
         base: int | None = None, max_intervals: int = 12) -> list[dict[str, Any]]:
    """A valid batch. All rows share one timestamp base (drawn when not given)."""
    if base is None:
        base = draw(st.sampled_from(TIMESTAMP_BASES))
    return draw(st.lists(row(schema, base, max_intervals), min_size=min_size,
                         max_size=max_size))


# -- invalid input -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class InvalidBatch:
    rows: list[Any]
    index: int  # the bad row
    column: str | None  # the column the error must name (None: the row itself)
    kind: str


def _bad_values(col: Column) -> list[tuple[str, Any]]:
    wrong = [True, False, [1], {"a": 1}]
    if col.is_string:
        return [("type", v) for v in [*wrong, 5, 1.5]]
    out = [("type", v) for v in [*wrong, "5", ""]]
    out += [("nonfinite", v) for v in (math.nan, math.inf, -math.inf)]
    out += [("range", 10**400), ("range", -(10**400))]  # beyond even float64
    lo, hi = col.value_range
    if col.dtype.kind == "f":
        if col.dtype.itemsize == 4:
            out += [("range", 1e39), ("range", -1e39), ("range", 10**39)]
    else:
        out += [("range", hi + 1), ("range", lo - 1), ("range", 2**64), ("range", -(2**63) - 1),
                ("range", float(hi) * 4 + 8), ("fraction", 2.5), ("fraction", -0.5),
                ("fraction", 2.9)]
    reserved = col.kind.reserved(col.dtype) if col.role == "metric" else None
    if reserved is not None:  # a min/max's identity (min:int64's max, max:uint64's 0, ...)
        out.append(("reserved", int(reserved)))
    return out


@st.composite
def invalid_batches(draw: st.DrawFn, schema: Schema, max_size: int = 10) -> InvalidBatch:
    """A batch of valid rows with exactly one bad row (every kind of validation error)."""
    good = draw(rows(schema, min_size=1, max_size=max_size))
    i = draw(st.integers(0, len(good) - 1))
    bad = dict(good[i])
    ts = schema.timestamp.name
    options: list[tuple[str, str | None, Any]] = [
        ("not_object", None, None), ("missing_timestamp", ts, None),
        ("timestamp", ts, None), ("unknown_column", "bogus", None)]
    options += [(kind, c.name, v) for c in (*schema.dimensions, *schema.metrics)
                for kind, v in _bad_values(c)]
    kind, column, value = draw(st.sampled_from(options))
    if kind == "not_object":
        bad = draw(st.sampled_from([None, 1, "row", [], [1, 2], True]))
    elif kind == "missing_timestamp":
        del bad[ts]
    elif kind == "timestamp":
        bad[ts] = draw(st.sampled_from([None, "12", True, [0], {}, -1, -3600.5, 2**32,
                                        2**32 + 0.5, 2**70, 1e300, math.nan, math.inf]))
    elif kind == "unknown_column":
        column = draw(st.sampled_from(["bogus", "AT", "Name ", ""]))
        if schema.column(column) is not None:
            column = "bogus"
        bad[column] = draw(st.sampled_from([1, None, "x"]))
    else:
        bad[column] = value
    batch = [*good[:i], bad, *good[i + 1:]]
    return InvalidBatch(batch, i, column, kind)


# -- queries (for the query engine's differential tests) -----------------------------------

def _filter_values(col: Column, schema: Schema, base: int, is_timestamp: bool) -> list[Any]:
    if is_timestamp:
        d = schema.interval_duration
        return [base + k * d + off for k in (0, 1, 2, 5) for off in (0, 1)]
    if col.is_string:
        return [*STRINGS[:6], "zz-not-there", None]
    pool = value_pool(col)
    if col.role == "metric":
        return [*pool, 0.5, -1, 3, 250]
    extra: list[Any] = [None, 0.5, 21.5]
    if col.dtype.kind != "f":
        lo, hi = col.value_range
        extra += [hi + 1, lo - 1]
    return [*pool, *extra]


@st.composite
def filters(draw: st.DrawFn, schema: Schema, base: int | None = None,
            depth: int = 2) -> dict[str, Any]:
    """One filter: a comparison on any column, or (depth > 0) an and/or/not composition."""
    if base is None:
        base = draw(st.sampled_from(TIMESTAMP_BASES))
    if depth > 0 and draw(st.integers(0, 4)) == 0:
        kind = draw(st.sampled_from(["and", "or", "not"]))
        if kind == "not":
            return {"type": "not", "filter": draw(filters(schema, base, depth - 1))}
        return {"type": kind, "filters": draw(st.lists(filters(schema, base, depth - 1),
                                                       min_size=1, max_size=3))}
    strings = [c for c in schema.dimensions if c.is_string]
    if strings and draw(st.integers(0, 4)) == 0:  # string matching: prefix, contains, regex
        m: dict[str, Any] = {"type": draw(st.sampled_from(["prefix", "contains", "regex"])),
                             "column": draw(st.sampled_from(strings)).name,
                             "value": draw(st.sampled_from(MATCH_VALUES))}
        if draw(st.booleans()):
            m["caseInsensitive"] = draw(st.booleans())
        return m
    col = draw(st.sampled_from([c for c in schema.columns if not c.kind.is_sketch]))
    is_ts = col.role == "timestamp"
    values = _filter_values(col, schema, base, is_ts)
    if col.role == "metric" or is_ts:
        values = [v for v in values if v is not None]  # null filters only on dimensions
    op = draw(st.sampled_from(["=", "!=", ">", ">=", "<", "<=", "in"]))
    if op == "in":
        value: Any = draw(st.lists(st.sampled_from(values), max_size=4))
    else:
        value = draw(st.sampled_from(values))
    f = {"type": op, "column": col.name, "value": value}
    if op == "=" and draw(st.booleans()):
        del f["type"]  # a missing type means "="
    return f


@st.composite
def queries(draw: st.DrawFn, schema: Schema, base: int | None = None,
            max_groupings: int = 3) -> dict[str, Any]:
    """A valid query dict. Output names (aggregates, groupings) are distinct and never
    "rowCount"; base is the rows' timestamp base (drawn when not given). Sometimes a sum
    has no "type" (it defaults to sum) and the top-level keys are upper- or title-cased."""
    if base is None:
        base = draw(st.sampled_from(TIMESTAMP_BASES))
    used: set[str] = {"rowCount"}
    query: dict[str, Any] = {}

    aggregates = []
    for i, m in enumerate(draw(st.lists(st.sampled_from((*schema.metrics, *schema.uniques)),
                                        max_size=3))):
        a: dict[str, Any] = {"type": draw(st.sampled_from(m.kind.aggregates)), "column": m.name}
        if a["type"] == "sum" and draw(st.booleans()):
            del a["type"]  # a missing type means sum
        name = m.name if m.name not in used and draw(st.booleans()) else f"agg{i}"
        if name != m.name or draw(st.booleans()):
            a["name"] = name  # else the name defaults to the column
        used.add(name)
        aggregates.append(a)
    if aggregates or draw(st.booleans()):
        query["aggregates"] = aggregates

    groupable = [schema.timestamp, *schema.dimensions]
    groupings: list[Any] = []
    kinds: dict[str, list[Any]] = {"rowCount": NUMBERS}  # output name -> having values
    for a in aggregates:
        kinds[a.get("name", a["column"])] = NUMBERS
    filled = False
    for i, col in enumerate(draw(st.lists(st.sampled_from(groupable), max_size=max_groupings,
                                          unique_by=lambda c: c.name))):
        transform = zone = None
        fill = False
        if col.role == "timestamp" or (col.type_name == "uint32" and draw(st.integers(0, 3))
                                       == 0):
            transform = draw(st.sampled_from([None, *TIME_UNITS]))
            if transform is not None and draw(st.booleans()):
                zone = draw(st.sampled_from(TIME_ZONES))
        if (col.role == "timestamp" and not filled and draw(st.integers(0, 2)) == 0
                and UNIT_WIDTH.get(transform or "", 10**9) >= schema.interval_duration):
            fill = filled = True  # (buckets no finer than intervals: few rows to fill)
        name = col.name if col.name not in used else f"group{i}"
        if transform is None and not fill and name == col.name and draw(st.booleans()):
            groupings.append(col.name)
        else:
            g: dict[str, Any] = {"column": col.name, "name": name}
            if transform is not None:
                g["timeTransform"] = transform
            if zone is not None:
                g["timeZone"] = zone
            if fill:
                g["fill"] = True
            groupings.append(g)
        used.add(name)
        if col.is_string:
            kinds[name] = [*STRINGS[:6], "zz-not-there", None]
        elif col.role == "timestamp":
            d = schema.interval_duration
            kinds[name] = [base + k * d for k in (0, 1, 3)] + [base - 20000, 0.5]
        else:
            kinds[name] = [*value_pool(col), None, 0.5]
    if groupings:
        query["groupings"] = groupings

    fs = draw(st.lists(filters(schema, base), max_size=3))
    if fs:
        query["filters"] = fs

    numeric = [n for n, pool in kinds.items() if pool is NUMBERS or not any(
        isinstance(v, str) for v in pool)]
    posts = []
    for i in range(draw(st.integers(0, 2))):
        name = f"post{i}"
        posts.append({"name": name, "expression": draw(expressions(numeric))})
        numeric.append(name)
        kinds[name] = NUMBERS
    if posts:
        query["postAggregations"] = posts
    if draw(st.integers(0, 2)) == 0:
        query["having"] = draw(havings(kinds))

    if groupings and draw(st.booleans()):
        names = list(kinds)
        query["orderBy"] = [{"column": n, "descending": draw(st.booleans())}
                            for n in draw(st.lists(st.sampled_from(names), min_size=1,
                                                   max_size=2, unique=True))]
        if draw(st.booleans()):
            query["limit"] = draw(st.integers(1, 5))
    if groupings and draw(st.integers(0, 3)) == 0:
        query["offset"] = draw(st.integers(0, 4))
    if draw(st.integers(0, 7)) == 0:  # keys match case-insensitively, as in the original
        query = {draw(st.sampled_from([k.upper(), k.title(), k])): v for k, v in query.items()}
    return query


NUMBERS: list[Any] = [0, 1, 2, 3.0, 0.5, -1, 100, 250, 2**53 + 1, -(2**63), None]


def _expression_name(name: str) -> str:
    """A name as an expression writes it: bare when it is a (dotted) identifier, else
    double-quoted."""
    if all(part.isidentifier() for part in name.split(".")):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def expressions(draw: st.DrawFn, names: list[str], depth: int = 3) -> str:
    """An arithmetic expression over output names and numbers (+ - * /, unary minus,
    parentheses), sometimes dividing by zero or overflowing."""
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        if names and draw(st.booleans()):
            return _expression_name(draw(st.sampled_from(names)))
        return draw(st.sampled_from(["0", "1", "2", "0.5", "3", "100", "1e300", "2.5e-3"]))
    if draw(st.integers(0, 4)) == 0:
        return "-" + draw(expressions(names, depth - 1))
    op = draw(st.sampled_from(["+", "-", "*", "/"]))
    left, right = draw(expressions(names, depth - 1)), draw(expressions(names, depth - 1))
    if draw(st.booleans()):
        left = f"({left})"
    if draw(st.booleans()):
        right = f"({right})"
    space = draw(st.sampled_from(["", " "]))
    return f"{left}{space}{op}{space}{right}"


@st.composite
def havings(draw: st.DrawFn, kinds: dict[str, list[Any]], depth: int = 1) -> dict[str, Any]:
    """A having filter over the output names (values: numbers, or strings for string
    groupings, and null)."""
    if depth > 0 and draw(st.integers(0, 3)) == 0:
        kind = draw(st.sampled_from(["and", "or", "not"]))
        if kind == "not":
            return {"type": "not", "filter": draw(havings(kinds, depth - 1))}
        return {"type": kind, "filters": draw(st.lists(havings(kinds, depth - 1), min_size=1,
                                                       max_size=3))}
    name = draw(st.sampled_from(sorted(kinds)))
    op = draw(st.sampled_from(["=", "!=", ">", ">=", "<", "<=", "in"]))
    pool = kinds[name]
    value = (draw(st.lists(st.sampled_from(pool), max_size=3)) if op == "in"
             else draw(st.sampled_from(pool)))
    return {"type": op, "column": name, "value": value}
