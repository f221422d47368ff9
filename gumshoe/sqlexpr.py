"""SQL expressions -> JSON query parts: columns, constants, filters, aggregates and output names.

Tier of query.py: imports schema and errors (and sqlglot). `Context` holds what one statement's
translation has collected so far (groupings, aggregates, post-aggregations and their output
names) and turns sqlglot expression trees into the JSON query language's forms: WHERE into
`filters` (comparisons, in, and/or/not, prefix/contains/regex, null checks), HAVING into
`having`, aggregate calls into `aggregates`, arithmetic on aggregates into `postAggregations`.
sql.py walks the statement and calls it.

Filters keep gumshoe's nil rules, not SQL's three-valued logic: `country != 'US'` matches rows
whose country is nil, as the JSON filter does (README "Query language").
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import math
import re
import time
import zoneinfo
from typing import Any

from sqlglot import exp

from .errors import QueryError
from .schema import Column, Schema

TABLE = "events"
DIALECT = "postgres"
ROW_COUNT = "rowCount"
TIME_UNITS = ("minute", "hour", "day", "week", "month", "quarter", "year")
_AGG_CLASSES: dict[type[exp.Expression], str] = {
    exp.Sum: "sum", exp.Avg: "average", exp.Min: "min", exp.Max: "max",
    exp.ApproxDistinct: "uniques"}
SQL_FUNCTION = {"sum": "sum", "average": "avg", "min": "min", "max": "max",
                "uniques": "uniques"}
COMPARE: dict[type[exp.Expression], str] = {
    exp.EQ: "=", exp.NEQ: "!=", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}
FLIP = {"=": "=", "!=": "!=", ">": "<", ">=": "<=", "<": ">", "<=": ">="}
_ARITHMETIC: dict[type[exp.Expression], tuple[str, int]] = {
    exp.Add: ("+", 1), exp.Sub: ("-", 1), exp.Mul: ("*", 2), exp.Div: ("/", 2)}
_INTERVAL_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
_SAFE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # referable in a post-aggregation
_INT = re.compile(r"[+-]?\d+\Z")


class SqlError(QueryError):
    """SQL outside the subset or wrong for the schema; the message names the construct and,
    when known, where it starts (`line 1, column 8: unknown column 'cuntry'`)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.line = line
        self.column = column
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(f"{where}{message}")


@dataclasses.dataclass(frozen=True, slots=True)
class GroupKey:
    """What a grouping groups by: a column, truncated to `unit` in time zone `zone`."""

    column: str
    unit: str | None = None
    zone: str | None = None


AggKey = tuple[str, str | None]  # (JSON aggregate type or rowCount, metric column)


def unparen(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


def number(text: str) -> int | float:
    """A SQL numeric literal: an int when integral in form (exact beyond 2**53), else float."""
    return int(text) if _INT.match(text) else float(text)


def number_text(v: int | float) -> str:
    """A number for a post-aggregation expression, never in exponent form."""
    if isinstance(v, int) or not math.isfinite(v):
        return str(v)
    text = repr(v)
    return format(decimal.Decimal(text), "f") if "e" in text or "E" in text else text


def _snippet(node: exp.Expression) -> str:
    text = node.sql(dialect=DIALECT)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(node: exp.Expression) -> str:
    """The construct `node` is, in words a SQL user knows."""
    if isinstance(node, (exp.Subquery, exp.Select, exp.Exists)):
        return "a subquery"
    if isinstance(node, exp.Window):
        return "a window function (OVER)"
    if isinstance(node, exp.Filter):
        return "an aggregate FILTER clause"
    if isinstance(node, exp.Anonymous):
        return f"the function {node.name}()"
    if isinstance(node, exp.Func):
        return f"the function {type(node).sql_names()[0].lower()}()"
    if isinstance(node, exp.Binary):
        return f"the operator {type(node).__name__.upper()}"
    return f"{type(node).__name__} ({_snippet(node)})"


class Context:
    """One statement's translation state and the expression rules (see the module doc)."""

    def __init__(self, text: str, schema: Schema, now: float | None = None) -> None:
        self.text = text
        self.schema = schema
        self.now = time.time() if now is None else now
        self.table_names = {TABLE}
        self.aliases: dict[str, exp.Expression] = {}  # select-list aliases -> expressions
        self.used: set[str] = {ROW_COUNT}  # output names taken
        self.aggregates: list[dict[str, Any]] = []
        self.agg_names: dict[AggKey, str] = {}
        self.safe_agg_names: dict[AggKey, str] = {}
        self.post_aggregations: list[dict[str, Any]] = []
        self.post_names: dict[str, str] = {}  # display text -> output name
        self.groupings: list[Any] = []
        self.group_names: dict[GroupKey, str] = {}

    # -- errors ------------------------------------------------------------------------------
    def error(self, message: str, node: exp.Expression | None) -> SqlError:
        """A SqlError at `node`'s position (its first descendant sqlglot located)."""
        if node is not None:
            for n in node.walk():
                start = (n.meta or {}).get("start") if isinstance(n, exp.Expression) else None
                if isinstance(start, int):
                    line = self.text.count("\n", 0, start) + 1
                    column = start - (self.text.rfind("\n", 0, start) + 1) + 1
                    return SqlError(message, line, column)
        return SqlError(message)

    def unsupported(self, node: exp.Expression, where: str) -> SqlError:
        return self.error(f"{describe(node)} is not supported {where}", node)

    # -- columns -------------------------------------------------------------------------------
    def column_or_none(self, node: exp.Column) -> Column | None:
        if node.args.get("db") is not None or node.args.get("catalog") is not None:
            raise self.error(f"unknown table in {_snippet(node)}: the one table is {TABLE}",
                             node)
        if node.table and node.table not in self.table_names:
            raise self.error(f"unknown table {node.table!r} in {_snippet(node)}: the one table "
                             f"is {TABLE}", node)
        col = self.schema.column(node.name)
        if col is None and not node.this.args.get("quoted"):
            matches = [c for c in self.schema.columns if c.name.lower() == node.name.lower()]
            col = matches[0] if len(matches) == 1 else None
        return col

    def column(self, node: exp.Expression) -> Column:
        if not isinstance(node, exp.Column) or isinstance(node.this, exp.Star):
            raise self.error(f"expected a column of {TABLE}, got {_snippet(node)}", node)
        col = self.column_or_none(node)
        if col is None:
            names = ", ".join(c.name for c in self.schema.columns)
            raise self.error(f"unknown column {node.name!r} (the columns of {TABLE}: {names})",
                             node)
        return col

    # -- output names ---------------------------------------------------------------------------
    def unique_name(self, *preferred: str) -> str:
        for name in preferred:
            if name not in self.used:
                return name
        n = 2
        while f"{preferred[-1]}_{n}" in self.used:
            n += 1
        return f"{preferred[-1]}_{n}"

    # -- groupings -------------------------------------------------------------------------------
    def group_key(self, node: exp.Expression) -> GroupKey:
        node = unparen(node)
        if isinstance(node, exp.Column):
            col = self.column(node)
            if col.role == "metric":
                raise self.error(f"{col.name!r} is a metric: group by the timestamp or a "
                                 "dimension, and aggregate metrics (sum, avg, min, max, "
                                 "uniques)", node)
            return GroupKey(col.name)
        if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)):
            return self._date_trunc(node)
        raise self.unsupported(node, "as a grouping (a column or date_trunc('day', "
                               f"{self.schema.timestamp.name}))")

    def _date_trunc(self, node: exp.Expression) -> GroupKey:
        unit_node = node.args.get("unit")
        unit = unit_node.name.lower() if unit_node is not None else ""
        if unit not in TIME_UNITS:
            raise self.error(f"date_trunc unit {unit!r} is not supported (one of "
                             f"{', '.join(TIME_UNITS)})", node)
        target, zone = node.this, node.args.get("zone")
        if isinstance(target, exp.AtTimeZone):
            if zone is not None:
                raise self.error("date_trunc with both AT TIME ZONE and a zone argument", node)
            target, zone = target.this, target.args.get("zone")
        col = self.column(unparen(target))
        if col.role != "timestamp":
            raise self.error(f"date_trunc needs the timestamp column "
                             f"{self.schema.timestamp.name!r}, not {col.name!r}", node)
        zone_name = None
        if zone is not None:
            if not (isinstance(zone, exp.Literal) and zone.is_string):
                raise self.error("a time zone must be a string such as 'Europe/Berlin'", zone)
            zone_name = zone.this
            try:
                zoneinfo.ZoneInfo(zone_name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise self.error(f"unknown time zone {zone_name!r} (an IANA name such as "
                                 "'Europe/Berlin')", zone) from None
            if zone_name.upper() in ("UTC", "ETC/UTC"):
                zone_name = None  # the default: keep the query valid for servers before #14
        return GroupKey(col.name, unit, zone_name)

    def add_grouping(self, key: GroupKey, alias: str | None) -> None:
        name = alias or self.unique_name(key.column, *(
            [f"{key.column}_{key.unit}"] if key.unit else []))
        self.used.add(name)
        self.group_names.setdefault(key, name)
        if key.unit is None and name == key.column:
            self.groupings.append(key.column)
            return
        g: dict[str, Any] = {"column": key.column, "name": name}
        if key.unit is not None:
            g["timeTransform"] = key.unit
        if key.zone is not None:
            g["timeZone"] = key.zone
        self.groupings.append(g)

    # -- aggregates --------------------------------------------------------------------------------
    def aggregate_key(self, node: exp.Expression) -> AggKey | None:
        """The aggregate `node` calls, or None when it is not an aggregate call."""
        if isinstance(node, (exp.Window, exp.Filter)):
            raise self.unsupported(node, "(gumshoe computes one aggregate per group)")
        if isinstance(node, exp.Count):
            arg = node.this
            if isinstance(arg, exp.Star) or (isinstance(arg, exp.Literal) and not arg.is_string
                                             and arg.this == "1"):
                return (ROW_COUNT, None)
            if isinstance(arg, exp.Distinct):
                if len(arg.expressions) != 1:
                    raise self.error("count(DISTINCT ...) takes one metric column", node)
                return ("uniques", self._metric(arg.expressions[0], "count(DISTINCT ...)"))
            raise self.error("count(column) is not supported: count(*) counts rows, "
                             "count(DISTINCT column) distinct values", node)
        kind = _AGG_CLASSES.get(type(node))
        if kind is None and isinstance(node, exp.Anonymous) and node.name.lower() == "uniques":
            kind = "uniques"
            if len(node.expressions) != 1:
                raise self.error("uniques() takes one metric column", node)
            return (kind, self._metric(node.expressions[0], "uniques()"))
        if kind is None:
            if isinstance(node, exp.AggFunc):
                raise self.error(f"{describe(node)} is not supported (aggregates: sum, avg, "
                                 "min, max, count(*), count(DISTINCT m), uniques)", node)
            return None
        arg = node.this
        if isinstance(arg, exp.Distinct):
            raise self.error(f"{SQL_FUNCTION[kind]}(DISTINCT ...) is not supported", node)
        if node.expressions:
            raise self.error(f"{SQL_FUNCTION[kind]}() takes one metric column", node)
        return (kind, self._metric(arg, f"{SQL_FUNCTION[kind]}()"))

    def _metric(self, node: exp.Expression, func: str) -> str:
        node = unparen(node)
        if not isinstance(node, exp.Column):
            raise self.error(f"{func} takes a metric column, not {_snippet(node)}", node)
        col = self.column(node)
        if col.role != "metric":
            raise self.error(f"{func}: {col.name!r} is the {col.role}, not a metric", node)
        return col.name

    def is_aggregate_call(self, node: exp.Expression) -> bool:
        return self.aggregate_key(unparen(node)) is not None

    def is_row_count(self, node: exp.Expression) -> bool:
        key = self.aggregate_key(unparen(node))
        return key is not None and key[0] == ROW_COUNT

    def contains_aggregate(self, node: exp.Expression) -> bool:
        return any(self.aggregate_key(n) is not None for n in node.walk()
                   if isinstance(n, exp.Expression))

    def _emit_aggregate(self, key: AggKey, name: str) -> str:
        self.aggregates.append({"type": key[0], "column": key[1], "name": name})
        self.used.add(name)
        self.agg_names.setdefault(key, name)
        if _SAFE_NAME.match(name):
            self.safe_agg_names.setdefault(key, name)
        return name

    def _auto_name(self, key: AggKey, safe: bool = False) -> str:
        kind, col = key
        assert col is not None
        fallback = f"{SQL_FUNCTION[kind]}_{col}"
        if safe:
            fallback = re.sub(r"\W", "_", fallback, flags=re.ASCII)
            return self.unique_name(*([col] if _SAFE_NAME.match(col) else []), fallback)
        return self.unique_name(col, fallback)

    def add_select_aggregate(self, node: exp.Expression, alias: str | None) -> None:
        key = self.aggregate_key(unparen(node))
        assert key is not None
        if key[0] == ROW_COUNT:  # always in the results; an alias is a post-aggregation
            if alias is not None and alias != ROW_COUNT:
                self._add_post(alias, ROW_COUNT, "count(*)")
            return
        self._emit_aggregate(key, alias or self._auto_name(key))

    def aggregate_ref(self, key: AggKey, safe: bool) -> str:
        """The output name of aggregate `key`, added (hidden) when the query lacks it; `safe`:
        a name a post-aggregation expression can refer to."""
        if key[0] == ROW_COUNT:
            return ROW_COUNT
        names = self.safe_agg_names if safe else self.agg_names
        if key in names:
            return names[key]
        return self._emit_aggregate(key, self._auto_name(key, safe))

    # -- post-aggregations ---------------------------------------------------------------------
    def _add_post(self, name: str, expression: str, display: str) -> str:
        self.post_aggregations.append({"name": name, "expression": expression})
        self.used.add(name)
        self.post_names.setdefault(display, name)
        return name

    def add_select_expression(self, node: exp.Expression, alias: str | None) -> None:
        expression, display, _ = self.render(node, outputs=False)
        self._add_post(alias or self.unique_name(display), expression, display)

    def render(self, node: exp.Expression, outputs: bool) -> tuple[str, str, int]:
        """(post-aggregation expression, display text, precedence) of arithmetic on aggregates.
        `outputs`: bare names may refer to output names (HAVING, ORDER BY)."""
        node = unparen(node)
        key = self.aggregate_key(node)
        if key is not None:
            display = "count(*)" if key[0] == ROW_COUNT else f"{SQL_FUNCTION[key[0]]}({key[1]})"
            return self.aggregate_ref(key, safe=True), display, 3
        if isinstance(node, exp.Literal) and not node.is_string:
            text = number_text(number(node.this))
            return text, text, 3
        if isinstance(node, exp.Neg):
            e, d, p = self.render(node.this, outputs)
            if p < 3 or e.startswith("-"):
                e, d = f"({e})", f"({d})"
            return f"-{e}", f"-{d}", 3
        op = _ARITHMETIC.get(type(node))
        if op is not None:
            sym, prec = op
            le, ld, lp = self.render(node.this, outputs)
            re_, rd, rp = self.render(node.expression, outputs)
            if lp < prec:
                le, ld = f"({le})", f"({ld})"
            if rp <= prec:
                re_, rd = f"({re_})", f"({rd})"
            return f"{le} {sym} {re_}", f"{ld} {sym} {rd}", prec
        if isinstance(node, exp.Column) and not node.table:
            target = self.aliases.get(node.name)
            if outputs and target is not None and self.contains_aggregate(target):
                if not _SAFE_NAME.match(node.name):
                    raise self.error(f"the output name {node.name!r} cannot be used in an "
                                     "expression (use letters, digits and _)", node)
                return node.name, node.name, 3
            col = self.column(node)
            raise self.error(f"{col.name!r} must be aggregated here (e.g. sum({col.name}))",
                             node)
        raise self.unsupported(node, "in arithmetic on aggregates (+ - * / of aggregates and "
                               "numbers)")

    def output_ref(self, node: exp.Expression) -> str:
        """The output name `node` denotes in ORDER BY or HAVING (added when missing)."""
        node = unparen(node)
        if isinstance(node, exp.Column) and not node.table and node.name in self.aliases:
            return node.name
        if isinstance(node, exp.Column):
            col = self.column_or_none(node)
            if col is not None and GroupKey(col.name) in self.group_names:
                return self.group_names[GroupKey(col.name)]
            if not node.table and node.name in self.used:
                return node.name
            col = self.column(node)
            raise self.error(f"{col.name!r} is neither grouped nor an output name: group by it "
                             "or aggregate it", node)
        if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)):
            group = self._date_trunc(node)
            if group not in self.group_names:
                raise self.error(f"{_snippet(node)} is not grouped: add it to GROUP BY", node)
            return self.group_names[group]
        key = self.aggregate_key(node)
        if key is not None:
            return self.aggregate_ref(key, safe=False)
        if self.contains_aggregate(node) or any(
                isinstance(n, exp.Column) and not n.table and n.name in self.aliases
                and self.contains_aggregate(self.aliases[n.name]) for n in node.walk()):
            expression, display, _ = self.render(node, outputs=True)
            if display in self.post_names:
                return self.post_names[display]
            return self._add_post(self.unique_name(display), expression, display)
        raise self.unsupported(node, "here (expected an output name, a grouped column or an "
                               "aggregate)")

    # -- constants ----------------------------------------------------------------------------
    def constant(self, node: exp.Expression, col: Column | None) -> Any:
        """A constant's value; strings compared with the timestamp column are ISO dates."""
        node = unparen(node)
        is_time = col is not None and col.role == "timestamp"
        if isinstance(node, exp.Null):
            return None
        if isinstance(node, exp.Literal):
            if not node.is_string:
                return number(node.this)
            return self._time(node.this, node) if is_time else node.this
        if isinstance(node, exp.Neg):
            v = self.constant(node.this, None)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise self.error(f"cannot negate {_snippet(node.this)}", node)
            return -v
        if isinstance(node, exp.Cast) and node.to.is_type("timestamp", "timestamptz", "date"):
            inner = unparen(node.this)
            if isinstance(inner, exp.Literal) and inner.is_string:
                return self._time(inner.this, inner)
        if isinstance(node, exp.CurrentTimestamp) or (
                isinstance(node, exp.Anonymous) and node.name.lower() == "now"):
            return math.floor(self.now)
        if isinstance(node, (exp.Add, exp.Sub)) and isinstance(node.expression, exp.Interval):
            base = self.constant(node.this, col)
            if not isinstance(base, (int, float)) or isinstance(base, bool):
                raise self.error(f"INTERVAL arithmetic needs a time, not {_snippet(node.this)}",
                                 node)
            delta = self._interval(node.expression)
            return math.floor(base + delta if isinstance(node, exp.Add) else base - delta)
        if isinstance(node, exp.Column):
            raise self.error(f"comparing two columns is not supported ({_snippet(node)}): "
                             "compare a column with a constant", node)
        if isinstance(node, exp.Boolean):
            raise self.error("TRUE/FALSE are not values of any column", node)
        raise self.unsupported(node, "as a value (numbers, 'strings', NULL, TIMESTAMP "
                               "'...', now() - INTERVAL '1 hour')")

    def _time(self, text: str, node: exp.Expression) -> int:
        try:
            t = datetime.datetime.fromisoformat(text.strip())
        except ValueError:
            raise self.error(f"{text!r} is not a time (use ISO 8601, e.g. "
                             "'2024-05-01 12:00:00', UTC unless an offset is given, or "
                             "Unix seconds)", node) from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.UTC)
        return math.floor(t.timestamp())

    def _interval(self, node: exp.Interval) -> float:
        unit_node = node.args.get("unit")
        unit = unit_node.name.lower().rstrip("s") if unit_node is not None else ""
        amount = unparen(node.this)
        text = amount.this if isinstance(amount, exp.Literal) else None
        if unit not in _INTERVAL_SECONDS or text is None or not re.fullmatch(
                r"[+-]?\d+(\.\d+)?", text.strip()):
            raise self.error(f"INTERVAL {_snippet(node)} is not supported (a number of "
                             "seconds, minutes, hours, days or weeks)", node)
        return float(text) * _INTERVAL_SECONDS[unit]
