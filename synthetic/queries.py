"""The benchmark's query shapes, each written once and rendered three ways: gumshoe JSON, SQL
for DuckDB, and a description the ideal kernels and the pure-Python reference read.

Also: result normalisation and the exact comparison every engine's answer must pass.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

from .data import DAY, HOUR, METRIC_NAMES, NAMES, T0, Spec

TRANSFORMS = {"hour": HOUR, "day": DAY}


@dataclasses.dataclass(frozen=True)
class Group:
    column: str
    name: str
    transform: str | None = None


@dataclasses.dataclass(frozen=True)
class Filter:
    type: str  # "=", ">", ">=", "<", "<=", "in"
    column: str
    value: Any


@dataclasses.dataclass(frozen=True)
class Agg:
    type: str  # "sum" | "average"
    column: str
    name: str


@dataclasses.dataclass(frozen=True)
class Query:
    name: str
    aggs: tuple[Agg, ...]
    groups: tuple[Group, ...] = ()
    filters: tuple[Filter, ...] = ()
    order_by: tuple[tuple[str, bool], ...] = ()  # (output column, descending)
    limit: int | None = None
    low_cardinality: bool = False  # counts toward the ">= 1.5x DuckDB" target

    @property
    def output_names(self) -> list[str]:
        return [g.name for g in self.groups] + [a.name for a in self.aggs] + ["rowCount"]


def _sums(*cols: str) -> tuple[Agg, ...]:
    return tuple(Agg("sum", c, c) for c in cols)


def queries(spec: Spec) -> list[Query]:
    """The benchmark queries for a data set (the time range is the middle third of it)."""
    t_lo = T0 + (spec.hours // 3) * HOUR
    t_hi = T0 + (2 * spec.hours // 3) * HOUR
    some = ["US", "DE", "JP", "BR", "ZA"]
    return [
        Query("total", _sums(*METRIC_NAMES)),
        Query("by_country", _sums("clicks", "bytes"), (Group("country", "country"),),
              low_cardinality=True),
        Query("by_device_avg", (Agg("sum", "clicks", "clicks"),
                                Agg("average", "bytes", "avg_bytes")),
              (Group("device", "device"),), low_cardinality=True),
        Query("by_name", _sums("clicks", "bytes"), (Group("name", "name"),)),
        Query("by_hour", _sums("visits", "clicks"), (Group("at", "hour", "hour"),),
              low_cardinality=True),
        Query("by_day", _sums("visits", "clicks"), (Group("at", "day", "day"),),
              low_cardinality=True),
        Query("day_x_country", _sums("clicks"),
              (Group("at", "day", "day"), Group("country", "country"))),
        Query("country_x_device", _sums("clicks", "bytes"),
              (Group("country", "country"), Group("device", "device"))),
        Query("filter_in", _sums(*METRIC_NAMES), (), (Filter("in", "country", some),)),
        Query("filter_range", _sums("clicks"), (Group("country", "country"),),
              (Filter(">=", "device", 3), Filter("<", "device", 8))),
        Query("filter_metric", _sums("visits", "bytes"), (),
              (Filter(">", "clicks", 6),)),
        Query("filter_combo", _sums("clicks", "bytes"), (Group("name", "name"),),
              (Filter("in", "country", some), Filter(">=", "device", 2),
               Filter("<=", "device", 6), Filter(">", "clicks", 2))),
        Query("time_range", _sums("clicks", "bytes"), (Group("country", "country"),),
              (Filter(">=", "at", t_lo), Filter("<", "at", t_hi))),
        Query("top_names", _sums("clicks", "bytes"), (Group("name", "name"),),
              (Filter("in", "country", some[:3]),),
              order_by=(("bytes", True), ("name", False)), limit=10),
        # equality on the leading dimension (issue 18: pruned by sorted segments)
        Query("name_by_hour", _sums("clicks"), (Group("at", "hour", "hour"),),
              (Filter("=", "name", NAMES[20]),)),
        Query("name_unknown", _sums(*METRIC_NAMES), (), (Filter("=", "name", "/no/such"),)),
    ]


# -- rendering ----------------------------------------------------------------------------------
def to_json(q: Query) -> dict[str, Any]:
    """The gumshoe (original GumshoeDB) JSON query."""
    obj: dict[str, Any] = {"aggregates": [{"type": a.type, "column": a.column, "name": a.name}
                                          for a in q.aggs]}
    if q.groups:
        obj["groupings"] = [
            {"column": g.column, "name": g.name, **({"timeTransform": g.transform}
                                                   if g.transform else {})}
            for g in q.groups]
    if q.filters:
        obj["filters"] = [{"type": f.type, "column": f.column, "value": f.value}
                          for f in q.filters]
    if q.order_by:
        obj["orderBy"] = [{"column": c, "descending": d} for c, d in q.order_by]
    if q.limit is not None:
        obj["limit"] = q.limit
    return obj


def _sql_value(v: Any) -> str:
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, list):
        return "(" + ", ".join(_sql_value(x) for x in v) + ")"
    return repr(v)


def to_sql(q: Query, table: str = "t") -> str:
    """The same query in SQL over the rolled-up table (`at` = interval start, `count`)."""
    def group_expr(g: Group) -> str:
        if g.transform:
            return f'("at" - "at" % {TRANSFORMS[g.transform]})'
        return f'"{g.column}"'

    select = [f'{group_expr(g)} AS "{g.name}"' for g in q.groups]
    # without groupings there is one row even when no row matches: sums 0 (not NULL)
    total = "coalesce({}, 0)" if not q.groups else "{}"
    for a in q.aggs:
        expr = (total.format(f'sum("{a.column}")') if a.type == "sum"
                else f'sum("{a.column}")::DOUBLE / sum("count")')
        select.append(f'{expr} AS "{a.name}"')
    select.append(total.format('sum("count")') + ' AS "rowCount"')
    sql = f"SELECT {', '.join(select)} FROM {table}"
    if q.filters:
        op = {"=": "=", "in": "IN"}
        sql += " WHERE " + " AND ".join(f'"{f.column}" {op.get(f.type, f.type)} '
                                        f"{_sql_value(f.value)}" for f in q.filters)
    if q.groups:
        sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(q.groups)))
    if q.order_by:
        sql += " ORDER BY " + ", ".join(f'"{c}" {"DESC" if d else "ASC"}'
                                        for c, d in q.order_by)
    if q.limit is not None:
        sql += f" LIMIT {q.limit}"
    return sql


# -- results ------------------------------------------------------------------------------------
Row = tuple[Any, ...]


def normalize(q: Query, rows: Iterable[dict[str, Any]]) -> list[Row]:
    """Result rows as tuples in `output_names` order; unordered queries sorted by group values
    (nil first), ordered ones kept in the engine's order."""
    names = q.output_names
    out = [tuple(r.get(n) for n in names) for r in rows]
    if not q.order_by:
        k = len(q.groups)
        out.sort(key=lambda t: tuple((v is not None, v) for v in t[:k]))
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def diff(q: Query, got: Sequence[Row], want: Sequence[Row], limit: int = 3) -> str | None:
    """None when equal; otherwise a short description of the first differences."""
    problems = []
    if len(got) != len(want):
        problems.append(f"{len(got)} rows, expected {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        if len(g) != len(w) or not all(_same(x, y) for x, y in zip(g, w)):
            problems.append(f"row {i}: {dict(zip(q.output_names, g))} != "
                            f"{dict(zip(q.output_names, w))}")
            if len(problems) >= limit:
                break
    return "; ".join(problems) or None


# -- a pure-Python reference over rolled-up rows ----------------------------------------------
def _matches(f: Filter, v: Any) -> bool:
    if f.type == "in":
        return v in f.value
    if v is None:  # the nil table: only `!= x` would be true, and it is not used here
        return False
    return {"=": v == f.value, ">": v > f.value, ">=": v >= f.value, "<": v < f.value,
            "<=": v <= f.value}[f.type]


def reference(q: Query, rows: Iterable[dict[str, Any]]) -> list[Row]:
    """Evaluate `q` row by row over rolled-up row dicts (keys: at = interval start, the
    dimensions, the metrics, count). Slow and obvious, for small data sets."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for r in rows:
        if not all(_matches(f, r[f.column]) for f in q.filters):
            continue
        key = tuple(r[g.column] - r[g.column] % TRANSFORMS[g.transform] if g.transform
                    else r[g.column] for g in q.groups)
        acc = groups.setdefault(key, [0] * (len(q.aggs) + 1))
        for i, a in enumerate(q.aggs):
            acc[i] += r[a.column]
        acc[-1] += r["count"]
    if not q.groups and not groups:
        groups[()] = [0] * (len(q.aggs) + 1)
    out = []
    for key, acc in groups.items():
        vals = [s if a.type == "sum" else (s / acc[-1] if acc[-1] else None)
                for a, s in zip(q.aggs, acc)]
        out.append(dict(zip(q.output_names, (*key, *vals, acc[-1]))))
    return finish(q, out)


def finish(q: Query, rows: list[dict[str, Any]]) -> list[Row]:
    """Apply orderBy/limit to result dicts and normalise."""
    if q.order_by:
        for col, desc in reversed(q.order_by):
            rows.sort(key=lambda r, c=col: (r[c] is not None, r[c]), reverse=desc)
    if q.limit is not None:
        rows = rows[: q.limit]
    return normalize(q, rows)
