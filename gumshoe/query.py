"""Query parsing and validation: JSON -> a typed Query, or a QueryError naming the part.

Imports schema and errors only; no numpy kernels here (those live in scan.py). The language is
the original GumshoeDB's (aggregates, groupings, filters; keys matched case-insensitively) plus
several groupings, and/or/not filters, orderBy and limit.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .errors import QueryError
from .schema import Column, Schema

TIME_TRANSFORMS = {"minute": 60, "hour": 3600, "day": 86400}
COMPARISONS = ("=", "!=", ">", ">=", "<", "<=")
FILTER_TYPES = (*COMPARISONS, "in", "and", "or", "not")
ROW_COUNT = "rowCount"


@dataclasses.dataclass(frozen=True, slots=True)
class Aggregate:
    type: str  # "sum" | "average"
    column: Column
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Grouping:
    column: Column
    name: str
    transform: int | None = None  # truncation in seconds (minute/hour/day)


@dataclasses.dataclass(frozen=True, slots=True)
class Compare:
    """`column op value`; op is a comparison or "in" (then value is a tuple)."""

    op: str
    column: Column
    value: Any


@dataclasses.dataclass(frozen=True, slots=True)
class Logical:
    op: str  # "and" | "or" | "not" (not: exactly one operand)
    operands: tuple[Filter, ...]


Filter = Compare | Logical


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
    timeout_ms: int | None = None  # lowers query_timeout for this query

    @property
    def metric_columns(self) -> tuple[str, ...]:
        """Distinct metric columns the aggregates need summed."""
        return tuple(dict.fromkeys(a.column.name for a in self.aggregates))

    def filter_columns(self) -> set[str]:
        out: set[str] = set()

        def walk(f: Filter) -> None:
            if isinstance(f, Compare):
                out.add(f.column.name)
            else:
                for g in f.operands:
                    walk(g)
        if self.filter is not None:
            walk(self.filter)
        return out

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
        if self.order_by:
            out["orderBy"] = [{"column": o.name, "descending": o.descending}
                              for o in self.order_by]
        if self.limit is not None:
            out["limit"] = self.limit
        if self.allow_partial:
            out["allowPartial"] = True
        if self.timeout_ms is not None:
            out["timeout"] = self.timeout_ms
        return out


def _grouping_json(g: Grouping) -> dict[str, Any]:
    out: dict[str, Any] = {"column": g.column.name, "name": g.name}
    if g.transform is not None:
        out["timeTransform"] = {v: k for k, v in TIME_TRANSFORMS.items()}[g.transform]
    return out


def filter_json(f: Filter) -> dict[str, Any]:
    if isinstance(f, Compare):
        value = list(f.value) if f.op == "in" else f.value
        return {"type": f.op, "column": f.column.name, "value": value}
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


def _column(schema: Schema, value: Any, path: str) -> Column:
    if not isinstance(value, str):
        raise QueryError(f"{path}.column: expected a column name, got {_describe(value)}")
    col = schema.column(value)
    if col is None:
        raise QueryError(f"{path}.column: unknown column {value!r}")
    return col


def _aggregate(schema: Schema, obj: Any, path: str) -> Aggregate:
    f = _fields(obj, path, ("type", "column", "name"))
    kind = f.get("type", "sum")
    if kind is None:
        kind = "sum"
    if not isinstance(kind, str) or kind.lower() not in ("sum", "average"):
        raise QueryError(f"{path}.type: bad aggregate type {_describe(kind)} (sum or average)")
    col = _column(schema, f.get("column"), path)
    if col.role != "metric":
        raise QueryError(f"{path}: {col.name!r} is a {col.role}, not a metric")
    return Aggregate(kind.lower(), col, _name(f.get("name"), col.name, path))


def _grouping(schema: Schema, obj: Any, path: str) -> Grouping:
    if isinstance(obj, str):
        obj = {"column": obj}
    if not isinstance(obj, dict):
        raise QueryError(f"{path}: invalid grouping {_describe(obj)} (a column name or "
                         "{column, name, timeTransform})")
    f = _fields(obj, path, ("column", "name", "timeTransform"))
    col = _column(schema, f.get("column"), path)
    if col.role == "metric":
        raise QueryError(f"{path}: {col.name!r} is a metric; group by the timestamp or a "
                         "dimension")
    transform = f.get("timeTransform")
    seconds = None
    if transform is not None:
        if not isinstance(transform, str) or transform.lower() not in TIME_TRANSFORMS:
            raise QueryError(f"{path}.timeTransform: bad time transform {_describe(transform)} "
                             "(minute, hour or day)")
        if col.type_name != "uint32":
            # as the original: only a uint32 column holds Unix seconds to truncate
            raise QueryError(f"{path}.timeTransform: cannot apply timestamp truncation to "
                             f"non-uint32 column {col.name!r} ({col.type_name})")
        seconds = TIME_TRANSFORMS[transform.lower()]
    return Grouping(col, _name(f.get("name"), col.name, path), seconds)


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
    return value


def _filter(schema: Schema, obj: Any, path: str, depth: int = 0) -> Filter:
    if depth > 32:
        raise QueryError(f"{path}: filters nested too deeply (32 levels at most)")
    if not isinstance(obj, dict):
        raise QueryError(f"{path}: expected a filter object, got {_describe(obj)}")
    kind = next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == "type"), "=")
    if kind is None:
        kind = "="
    if not isinstance(kind, str) or kind.lower() not in FILTER_TYPES:
        raise QueryError(f"{path}.type: {_describe(kind)} is not a valid filter type (one of "
                         f"{', '.join(FILTER_TYPES)})")
    kind = kind.lower()
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


def parse_query(obj: Any, schema: Schema) -> Query:
    """Parse and validate a JSON query against `schema`.

    Raises
    ------
    QueryError whose message starts with the path of the part at fault, e.g.
    ``filters[1].column: unknown column 'cuntry'``.
    """
    if obj is None:
        obj = {}
    f = _fields(obj, "query", ("aggregates", "groupings", "filters", "orderBy", "limit",
                               "allowPartial", "timeout"))
    aggregates = tuple(_aggregate(schema, a, f"aggregates[{i}]")
                       for i, a in enumerate(_list(f.get("aggregates"), "aggregates")))
    groupings = tuple(_grouping(schema, g, f"groupings[{i}]")
                      for i, g in enumerate(_list(f.get("groupings"), "groupings")))
    filters = tuple(_filter(schema, x, f"filters[{i}]")
                    for i, x in enumerate(_list(f.get("filters"), "filters")))
    names: dict[str, str] = {}
    for what, items in (("aggregates", aggregates), ("groupings", groupings)):
        for i, item in enumerate(items):
            if item.name == ROW_COUNT:
                raise QueryError(f"{what}[{i}].name: {ROW_COUNT!r} is reserved for the row count")
            if item.name in names:
                raise QueryError(f"{what}[{i}].name: output name {item.name!r} is already used "
                                 f"by {names[item.name]}")
            names[item.name] = f"{what}[{i}]"
    order_by = []
    for i, o in enumerate(_list(f.get("orderBy"), "orderBy")):
        path = f"orderBy[{i}]"
        if isinstance(o, str):
            o = {"column": o}
        of = _fields(o, path, ("column", "descending"))
        name = of.get("column")
        if not isinstance(name, str) or (name != ROW_COUNT and name not in names):
            raise QueryError(f"{path}.column: {_describe(name)} is not an aggregate or grouping "
                             f"name of this query, nor {ROW_COUNT!r}")
        desc = of.get("descending", False)
        if not isinstance(desc, bool):
            raise QueryError(f"{path}.descending: expected true or false, got {_describe(desc)}")
        order_by.append(OrderBy(name, desc))
    limit = f.get("limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                              or limit < 0):
        raise QueryError(f"limit: expected a non-negative integer, got {_describe(limit)}")
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
    return Query(aggregates, groupings, flt, tuple(order_by), limit, allow_partial, timeout)
