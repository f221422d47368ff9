"""Query parsing and validation: JSON -> a typed Query, or a QueryError naming the part.

Imports schema, errors, expression, timebuckets and textmatch; no numpy kernels here (those
live in partials.py and engine.py). The language is the original GumshoeDB's (aggregates, groupings, filters;
keys matched case-insensitively) plus several groupings, and/or/not filters, string matching
(prefix, contains, regex), calendar time transforms in a time zone with zero-fill,
post-aggregations, having, orderBy, limit and offset.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from . import expression, textmatch, timebuckets
from .errors import QueryError
from .schema import Column, Schema

TIME_TRANSFORMS = timebuckets.UNITS  # minute, hour, day: UTC truncations as in the original
COMPARISONS = ("=", "!=", ">", ">=", "<", "<=")
MATCH_TYPES = textmatch.MATCH_TYPES
FILTER_TYPES = (*COMPARISONS, "in", *MATCH_TYPES, "and", "or", "not")
HAVING_TYPES = (*COMPARISONS, "in", "and", "or", "not")
ROW_COUNT = "rowCount"
AGGREGATE_TYPES = ("sum", "average", "min", "max", "uniques")


@dataclasses.dataclass(frozen=True, slots=True)
class Aggregate:
    type: str  # "sum" | "average" | "min" | "max" | "uniques" (the column's kind decides)
    column: Column
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Grouping:
    column: Column
    name: str
    transform: str | None = None  # a unit of timebuckets.UNITS
    time_zone: str = timebuckets.UTC
    fill: bool = False  # zero-fill every bucket of the query's time range (timestamp only)
    interval: int = 0  # timestamp groupings: the schema's interval duration

    def buckets(self, values: Any) -> Any:
        """The grouping values of timestamps (int64 array), or `values` without transform."""
        if self.transform is None:
            return values
        return timebuckets.bucket_starts(values, self.transform, self.time_zone)


@dataclasses.dataclass(frozen=True, slots=True)
class Compare:
    """`column op value`; op is a comparison or "in" (then value is a tuple)."""

    op: str
    column: Column
    value: Any


@dataclasses.dataclass(frozen=True, slots=True)
class Match:
    """A string dimension's value `op` (prefix, contains, regex) `value`; nil never matches."""

    op: str
    column: Column
    value: str
    case_insensitive: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class OutputCompare:
    """A having comparison: output `name` op value ("in": value is a tuple)."""

    op: str
    name: str
    value: Any


@dataclasses.dataclass(frozen=True, slots=True)
class Logical:
    op: str  # "and" | "or" | "not" (not: exactly one operand)
    operands: tuple[Any, ...]  # Filters in a filter, Havings in a having


Filter = Compare | Match | Logical
Having = OutputCompare | Logical


@dataclasses.dataclass(frozen=True, slots=True)
class PostAggregation:
    name: str
    source: str  # the expression as written
    expr: expression.Expr = dataclasses.field(compare=False)


@dataclasses.dataclass(frozen=True, slots=True)
class OrderBy:
    name: str
    descending: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    aggregates: tuple[Aggregate, ...]
    groupings: tuple[Grouping, ...]
    filter: Filter | None
    order_by: tuple[OrderBy, ...] = ()
    limit: int | None = None
    allow_partial: bool = False
    having: Having | None = None
    post_aggregations: tuple[PostAggregation, ...] = ()
    offset: int = 0
    timeout_ms: int | None = None  # lowers query_timeout for this query

    @property
    def fill(self) -> Grouping | None:
        """The zero-filled grouping, if any."""
        return next((g for g in self.groupings if g.fill), None)

    def output_names(self) -> list[str]:
        """Every output column, in the stable order of CSV headers: groupings, aggregates,
        post-aggregations, rowCount."""
        return [*(g.name for g in self.groupings), *(a.name for a in self.aggregates),
                *(p.name for p in self.post_aggregations), ROW_COUNT]

    @property
    def metric_columns(self) -> tuple[str, ...]:
        """Distinct metric columns the aggregates need summed."""
        return tuple(dict.fromkeys(a.column.name for a in self.aggregates))

    def filter_columns(self) -> set[str]:
        out: set[str] = set()

        def walk(f: Filter) -> None:
            if isinstance(f, (Compare, Match)):
                out.add(f.column.name)
            else:
                for g in f.operands:
                    walk(g)
        if self.filter is not None:
            walk(self.filter)
        return out

    def matches_text(self) -> bool:
        """Whether the filter has a prefix/contains/regex part (evaluated over a dictionary)."""
        def walk(f: Filter) -> bool:
            if isinstance(f, Match):
                return True
            return not isinstance(f, Compare) and any(walk(g) for g in f.operands)
        return self.filter is not None and walk(self.filter)

    def has_metric_filter(self, schema: Schema) -> bool:
        return any(c.role == "metric" for c in (schema.column(n) for n in self.filter_columns())
                   if c is not None)

    def to_json(self) -> dict[str, Any]:
        """Canonical JSON form (what the router forwards to shards)."""
        out: dict[str, Any] = {
            "aggregates": [{"type": a.type, "column": a.column.name, "name": a.name}
                           for a in self.aggregates],
            "groupings": [_grouping_json(g) for g in self.groupings],
            "filters": [] if self.filter is None else (
                [filter_json(f) for f in self.filter.operands]
                if isinstance(self.filter, Logical) and self.filter.op == "and"
                else [filter_json(self.filter)]),
        }
        if self.post_aggregations:
            out["postAggregations"] = [{"name": p.name, "expression": p.source}
                                       for p in self.post_aggregations]
        if self.having is not None:
            out["having"] = filter_json(self.having)
        if self.order_by:
            out["orderBy"] = [{"column": o.name, "descending": o.descending}
                              for o in self.order_by]
        if self.limit is not None:
            out["limit"] = self.limit
        if self.offset:
            out["offset"] = self.offset
        if self.allow_partial:
            out["allowPartial"] = True
        if self.timeout_ms is not None:
            out["timeout"] = self.timeout_ms
        return out


def _grouping_json(g: Grouping) -> dict[str, Any]:
    out: dict[str, Any] = {"column": g.column.name, "name": g.name}
    if g.transform is not None:
        out["timeTransform"] = g.transform
    if g.time_zone != timebuckets.UTC:
        out["timeZone"] = g.time_zone
    if g.fill:
        out["fill"] = True
    return out


def filter_json(f: Filter | Having) -> dict[str, Any]:
    """The canonical JSON of a filter or a having filter."""
    if isinstance(f, (Compare, OutputCompare)):
        value = list(f.value) if f.op == "in" else f.value
        column = f.column.name if isinstance(f, Compare) else f.name
        return {"type": f.op, "column": column, "value": value}
    if isinstance(f, Match):
        out: dict[str, Any] = {"type": f.op, "column": f.column.name, "value": f.value}
        if f.case_insensitive:
            out["caseInsensitive"] = True
        return out
    if f.op == "not":
        return {"type": "not", "filter": filter_json(f.operands[0])}
    return {"type": f.op, "filters": [filter_json(g) for g in f.operands]}


# -- parsing ----------------------------------------------------------------------------------

def _describe(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return repr(v)
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and (
        isinstance(v, int) or math.isfinite(v))


def _fields(obj: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Lower-case the keys of a JSON object (the original matches keys case-insensitively)
    and reject keys the language does not know (a typo must not pass silently)."""
    if not isinstance(obj, dict):
        raise QueryError(f"{path}: expected an object, got {_describe(obj)}")
    out: dict[str, Any] = {}
    lookup = {a.lower(): a for a in allowed}
    for key, value in obj.items():
        if not isinstance(key, str) or key.lower() not in lookup:
            raise QueryError(f"{path}: unknown key {key!r} (expected one of "
                             f"{', '.join(allowed)})")
        canon = lookup[key.lower()]
        if canon in out:
            raise QueryError(f"{path}: key {key!r} given twice")
        out[canon] = value
    return out


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise QueryError(f"{path}: expected an array, got {_describe(value)}")
    return value


def _name(value: Any, default: str, path: str) -> str:
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise QueryError(f"{path}.name: expected a string, got {_describe(value)}")
    return value


def _column(schema: Schema, value: Any, path: str, sketch: bool = False) -> Column:
    """The column named by `value`; a uniques metric (no value per row, only a sketch) only
    where `sketch` (an aggregate)."""
    if not isinstance(value, str):
        raise QueryError(f"{path}.column: expected a column name, got {_describe(value)}")
    col = schema.column(value)
    if col is None:
        raise QueryError(f"{path}.column: unknown column {value!r}")
    if col.kind.is_sketch and not sketch:
        raise QueryError(f"{path}.column: {value!r} is a uniques metric: it answers only a "
                         "uniques aggregate (it cannot be filtered or grouped by)")
    return col


def _aggregate(schema: Schema, obj: Any, path: str) -> Aggregate:
    f = _fields(obj, path, ("type", "column", "name"))
    kind = f.get("type")
    if kind is not None and (not isinstance(kind, str) or kind.lower() not in AGGREGATE_TYPES):
        raise QueryError(f"{path}.type: bad aggregate type {_describe(kind)} "
                         f"({', '.join(AGGREGATE_TYPES[:-1])} or {AGGREGATE_TYPES[-1]})")
    col = _column(schema, f.get("column"), path, sketch=True)
    if col.role != "metric":
        raise QueryError(f"{path}: {col.name!r} is a {col.role}, not a metric")
    # no type: the column's own (sum, as the original, for a summed metric; min/max for theirs)
    kind = col.kind.aggregates[0] if kind is None else kind.lower()
    if kind not in col.kind.aggregates:
        raise QueryError(f"{path}: {kind} of {col.name!r} ({col.type_name}) is not possible: a "
                         f"{col.kind.name} metric answers {' or '.join(col.kind.aggregates)}"
                         + (" (its stored values are sums, not the inputs)"
                            if col.kind.is_sum else ""))
    return Aggregate(kind, col, _name(f.get("name"), col.name, path))


def _grouping(schema: Schema, obj: Any, path: str) -> Grouping:
    if isinstance(obj, str):
        obj = {"column": obj}
    if not isinstance(obj, dict):
        raise QueryError(f"{path}: invalid grouping {_describe(obj)} (a column name or "
                         "{column, name, timeTransform, timeZone, fill})")
    f = _fields(obj, path, ("column", "name", "timeTransform", "timeZone", "fill"))
    col = _column(schema, f.get("column"), path)
    if col.role == "metric":
        raise QueryError(f"{path}: {col.name!r} is a metric; group by the timestamp or a "
                         "dimension")
    transform = f.get("timeTransform")
    if transform is not None:
        if not isinstance(transform, str) or transform.lower() not in TIME_TRANSFORMS:
            raise QueryError(f"{path}.timeTransform: bad time transform {_describe(transform)} "
                             f"({', '.join(TIME_TRANSFORMS[:-1])} or {TIME_TRANSFORMS[-1]})")
        if col.type_name != "uint32":
            # as the original: only a uint32 column holds Unix seconds to truncate
            raise QueryError(f"{path}.timeTransform: cannot apply timestamp truncation to "
                             f"non-uint32 column {col.name!r} ({col.type_name})")
        transform = transform.lower()
    zone = f.get("timeZone")
    if zone is None:
        zone = timebuckets.UTC
    elif not isinstance(zone, str):
        raise QueryError(f"{path}.timeZone: expected an IANA time zone name such as "
                         f"'Europe/Berlin', got {_describe(zone)}")
    elif not timebuckets.is_zone(zone):
        raise QueryError(f"{path}.timeZone: unknown time zone {zone!r} (an IANA name such as "
                         "'Europe/Berlin' or 'UTC')")
    elif transform is None and zone != timebuckets.UTC:
        raise QueryError(f"{path}.timeZone: a time zone needs a timeTransform to bucket by")
    fill = f.get("fill", False)
    if fill is None:
        fill = False
    if not isinstance(fill, bool):
        raise QueryError(f"{path}.fill: expected true or false, got {_describe(fill)}")
    if fill and col.role != "timestamp":
        raise QueryError(f"{path}.fill: zero-fill applies to the timestamp column "
                         f"{schema.timestamp.name!r} only, not {col.name!r}")
    interval = schema.interval_duration if col.role == "timestamp" else 0
    return Grouping(col, _name(f.get("name"), col.name, path), transform, zone, fill, interval)


_TIMESTAMP_MAX = 2**32 - 1  # the timestamp column is uint32 Unix seconds


def _check_value(col: Column, value: Any, path: str, op: str) -> Any:
    if value is None:
        if col.role != "dimension":
            raise QueryError(f"{path}.value: null can only be compared with a dimension "
                             f"({col.name!r} is the {col.role})")
        return None
    if col.is_string:
        if not isinstance(value, str):
            raise QueryError(f"{path}.value: {col.name!r} is a string dimension; expected a "
                             f"string or null, got {_describe(value)}")
        return value
    if not _is_number(value):
        raise QueryError(f"{path}.value: {col.name!r} is numeric; expected a number, got "
                         f"{_describe(value)}")
    if col.role == "timestamp" and _TIMESTAMP_MAX < value < (_TIMESTAMP_MAX + 1) * 1000:
        # milliseconds would silently match nothing (or everything). Larger values are no
        # mistake of units (10**400 bounds nothing) and compare exactly.
        raise QueryError(f"{path}.value: {value} is beyond the range of the timestamp "
                         f"{col.name!r} (Unix seconds, at most {_TIMESTAMP_MAX}); milliseconds? "
                         f"{value} ms is {int(value // 1000)} s")
    return value


def _filter_type(obj: dict[str, Any], path: str, allowed: tuple[str, ...]) -> str:
    kind = next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == "type"), "=")
    if kind is None:
        kind = "="
    if not isinstance(kind, str) or kind.lower() not in allowed:
        raise QueryError(f"{path}.type: {_describe(kind)} is not a valid filter type (one of "
                         f"{', '.join(allowed)})")
    return kind.lower()


def _match(schema: Schema, obj: dict[str, Any], path: str, kind: str) -> Match:
    f = _fields(obj, path, ("type", "column", "value", "caseInsensitive"))
    col = _column(schema, f.get("column"), path)
    if not col.is_string:
        what = "a numeric dimension" if col.role == "dimension" else f"the {col.role}"
        raise QueryError(f"{path}.column: {col.name!r} is {what}; {kind!r} matches string "
                         "dimensions only")
    value = f.get("value")
    if not isinstance(value, str):
        raise QueryError(f"{path}.value: {kind!r} needs a string, got {_describe(value)}")
    ci = f.get("caseInsensitive", False)
    if ci is None:
        ci = False
    if not isinstance(ci, bool):
        raise QueryError(f"{path}.caseInsensitive: expected true or false, got {_describe(ci)}")
    if kind == "regex":
        problem = textmatch.check_regex(value, ci)
        if problem is not None:
            raise QueryError(f"{path}.value: {problem}")
    return Match(kind, col, value, ci)


def _filter(schema: Schema, obj: Any, path: str, depth: int = 0) -> Filter:
    if depth > 32:
        raise QueryError(f"{path}: filters nested too deeply (32 levels at most)")
    if not isinstance(obj, dict):
        raise QueryError(f"{path}: expected a filter object, got {_describe(obj)}")
    kind = _filter_type(obj, path, FILTER_TYPES)
    if kind in ("and", "or"):
        f = _fields(obj, path, ("type", "filters"))
        subs = _list(f.get("filters"), path + ".filters")
        return Logical(kind, tuple(_filter(schema, s, f"{path}.filters[{i}]", depth + 1)
                                   for i, s in enumerate(subs)))
    if kind == "not":
        f = _fields(obj, path, ("type", "filter"))
        if "filter" not in f:
            raise QueryError(f"{path}.filter: a 'not' filter needs one filter")
        return Logical("not", (_filter(schema, f["filter"], path + ".filter", depth + 1),))
    if kind in MATCH_TYPES:
        return _match(schema, obj, path, kind)
    f = _fields(obj, path, ("type", "column", "value"))
    col = _column(schema, f.get("column"), path)
    value = f.get("value")
    if kind == "in":
        if not isinstance(value, list):
            raise QueryError(f"{path}.value: 'in' needs an array, got {_describe(value)}")
        items = tuple(_check_value(col, v, f"{path}.value[{i}]", kind)
                      for i, v in enumerate(value))
        return Compare("in", col, items)
    return Compare(kind, col, _check_value(col, value, path, kind))


# -- outputs: post-aggregations and having ----------------------------------------------------

def _post_aggregations(value: Any, kinds: dict[str, str], names: dict[str, str]
                       ) -> tuple[PostAggregation, ...]:
    """Parse postAggregations; each may use aggregates, numeric groupings, rowCount and the
    post-aggregations listed before it. Adds each name to `kinds` and `names`."""
    out = []
    for i, obj in enumerate(_list(value, "postAggregations")):
        path = f"postAggregations[{i}]"
        f = _fields(obj, path, ("name", "expression"))
        name = f.get("name")
        if not isinstance(name, str) or not name:
            raise QueryError(f"{path}.name: a post-aggregation needs a name, got "
                             f"{_describe(name)}")
        _claim(names, name, path)
        source = f.get("expression")
        if not isinstance(source, str):
            raise QueryError(f"{path}.expression: expected an expression string such as "
                             f"'clicks / visits', got {_describe(source)}")
        where = path + ".expression"
        expr = expression.parse(source, where)
        for ref in expression.refs(expr):
            kind = kinds.get(ref.name)
            if kind is None:
                raise QueryError(f"{where}: unknown name {ref.name!r} at position "
                                 f"{ref.position} in {source!r} (an aggregate, a grouping, "
                                 f"{ROW_COUNT!r}, or a post-aggregation listed before)")
            if kind == "string":
                raise QueryError(f"{where}: {ref.name!r} at position {ref.position} in "
                                 f"{source!r} is a string grouping; expressions take numbers")
        kinds[name] = "number"
        out.append(PostAggregation(name, source, expr))
    return tuple(out)


def _claim(names: dict[str, str], name: str, path: str) -> None:
    if name == ROW_COUNT:
        raise QueryError(f"{path}.name: {ROW_COUNT!r} is reserved for the row count")
    if name in names:
        raise QueryError(f"{path}.name: output name {name!r} is already used by {names[name]}")
    names[name] = path


def _having_value(kind: str, name: str, value: Any, path: str) -> Any:
    if value is None:
        return None
    if kind == "string":
        if not isinstance(value, str):
            raise QueryError(f"{path}.value: {name!r} is a string grouping; expected a string "
                             f"or null, got {_describe(value)}")
        return value
    if not _is_number(value):
        raise QueryError(f"{path}.value: {name!r} is numeric; expected a number or null, got "
                         f"{_describe(value)}")
    return value


def _having(obj: Any, path: str, kinds: dict[str, str], depth: int = 0) -> Having:
    if depth > 32:
        raise QueryError(f"{path}: filters nested too deeply (32 levels at most)")
    if isinstance(obj, list):  # a list of filters is ANDed, as "filters" is
        return Logical("and", tuple(_having(x, f"{path}[{i}]", kinds, depth + 1)
                                    for i, x in enumerate(obj)))
    if not isinstance(obj, dict):
        raise QueryError(f"{path}: expected a filter object, got {_describe(obj)}")
    kind = _filter_type(obj, path, HAVING_TYPES)
    if kind in ("and", "or"):
        f = _fields(obj, path, ("type", "filters"))
        subs = _list(f.get("filters"), path + ".filters")
        return Logical(kind, tuple(_having(x, f"{path}.filters[{i}]", kinds, depth + 1)
                                   for i, x in enumerate(subs)))
    if kind == "not":
        f = _fields(obj, path, ("type", "filter"))
        if "filter" not in f:
            raise QueryError(f"{path}.filter: a 'not' filter needs one filter")
        return Logical("not", (_having(f["filter"], path + ".filter", kinds, depth + 1),))
    f = _fields(obj, path, ("type", "column", "value"))
    name = f.get("column")
    if not isinstance(name, str) or name not in kinds:
        raise QueryError(f"{path}.column: {_describe(name)} is not an output of this query "
                         f"(an aggregate, grouping or post-aggregation name, or {ROW_COUNT!r})")
    value = f.get("value")
    if kind == "in":
        if not isinstance(value, list):
            raise QueryError(f"{path}.value: 'in' needs an array, got {_describe(value)}")
        return OutputCompare("in", name, tuple(
            _having_value(kinds[name], name, v, f"{path}.value[{i}]")
            for i, v in enumerate(value)))
    return OutputCompare(kind, name, _having_value(kinds[name], name, value, path))


def _count(value: Any, what: str) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                              or value < 0):
        raise QueryError(f"{what}: expected a non-negative integer, got {_describe(value)}")
    return value


def parse_query(obj: Any, schema: Schema) -> Query:
    """Parse and validate a JSON query against `schema`.

    Raises
    ------
    QueryError whose message starts with the path of the part at fault, e.g.
    ``filters[1].column: unknown column 'cuntry'``.
    """
    if obj is None:
        obj = {}
    f = _fields(obj, "query", ("aggregates", "groupings", "filters", "postAggregations",
                               "having", "orderBy", "limit", "offset", "allowPartial",
                               "timeout"))
    aggregates = tuple(_aggregate(schema, a, f"aggregates[{i}]")
                       for i, a in enumerate(_list(f.get("aggregates"), "aggregates")))
    groupings = tuple(_grouping(schema, g, f"groupings[{i}]")
                      for i, g in enumerate(_list(f.get("groupings"), "groupings")))
    filled = [i for i, g in enumerate(groupings) if g.fill]
    if len(filled) > 1:
        raise QueryError(f"groupings[{filled[1]}].fill: only one grouping may be zero-filled")
    filters = tuple(_filter(schema, x, f"filters[{i}]")
                    for i, x in enumerate(_list(f.get("filters"), "filters")))
    names: dict[str, str] = {}
    kinds: dict[str, str] = {ROW_COUNT: "number"}
    outputs = [(f"aggregates[{i}]", a.name, False) for i, a in enumerate(aggregates)] + [
        (f"groupings[{i}]", g.name, g.column.is_string) for i, g in enumerate(groupings)]
    for path, out_name, string in outputs:
        _claim(names, out_name, path)
        kinds[out_name] = "string" if string else "number"
    post = _post_aggregations(f.get("postAggregations"), kinds, names)
    having = None if f.get("having") is None else _having(f["having"], "having", kinds)
    order_by = []
    for i, o in enumerate(_list(f.get("orderBy"), "orderBy")):
        path = f"orderBy[{i}]"
        if isinstance(o, str):
            o = {"column": o}
        of = _fields(o, path, ("column", "descending"))
        name = of.get("column")
        if not isinstance(name, str) or name not in kinds:
            raise QueryError(f"{path}.column: {_describe(name)} is not an aggregate, grouping "
                             f"or post-aggregation name of this query, nor {ROW_COUNT!r}")
        desc = of.get("descending", False)
        if not isinstance(desc, bool):
            raise QueryError(f"{path}.descending: expected true or false, got {_describe(desc)}")
        order_by.append(OrderBy(name, desc))
    limit = _count(f.get("limit"), "limit")
    offset = _count(f.get("offset"), "offset") or 0
    allow_partial = f.get("allowPartial", False)
    if not isinstance(allow_partial, bool):
        raise QueryError(f"allowPartial: expected true or false, got {_describe(allow_partial)}")
    timeout = f.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)
                                or timeout < 1):
        raise QueryError(f"timeout: expected a positive number of milliseconds, got "
                         f"{_describe(timeout)}")
    flt: Filter | None = None
    if len(filters) == 1:
        flt = filters[0]
    elif filters:
        flt = Logical("and", filters)
    return Query(aggregates, groupings, flt, tuple(order_by), limit, allow_partial, having,
                 post, offset, timeout)
