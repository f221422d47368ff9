"""SQL -> the JSON query language: a SELECT over the one table `events`, parsed by sqlglot.

Tier of query.py: imports schema and errors (and sqlglot), never numpy kernels, storage or the
web stack. `translate(text, schema)` returns the JSON query dict that `POST /query` accepts (and
whether the statement was `EXPLAIN`); anything outside the subset is a SqlError (400) naming
the construct and, where sqlglot records it, its line and column. This module owns the
statement (clauses, the select list, GROUP BY, ORDER BY, LIMIT/OFFSET); sqlexpr.py columns,
constants, aggregates and output names; sqlfilters.py WHERE and HAVING.

The mapping, in short (README "Look at your data" has examples):
- `col` / `date_trunc('day', at[, 'Europe/Berlin'])` in GROUP BY -> groupings (`timeTransform`,
  `timeZone`); a select item that is neither grouped nor aggregated is an error.
- `sum avg min max uniques count(DISTINCT m) approx_count_distinct` -> aggregates; `count(*)`
  is `rowCount` (always in the results); arithmetic on aggregates -> postAggregations.
- Output names follow aliases; an unaliased aggregate is named after its column, as in the
  JSON language (`max_clicks` when that name is taken), an unaliased expression by its text.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError, TokenError

from .schema import Schema
from .sqlexpr import DIALECT, ROW_COUNT, TABLE, Context, SqlError
from .sqlfilters import having_filter, where_filters

__all__ = ["DIALECT", "TABLE", "SqlError", "Translation", "translate"]
# The Select arguments this subset understands; any other one that is set is refused by name.
_CLAUSES = {"expressions": None, "from": None, "from_": None, "where": None, "group": None,
            "having": None, "order": None, "limit": None, "offset": None, "distinct": None,
            "joins": "a join", "with": "WITH (a common table expression)",
            "with_": "WITH (a common table expression)", "windows": "WINDOW",
            "qualify": "QUALIFY", "laterals": "LATERAL", "pivots": "PIVOT",
            "into": "SELECT INTO", "locks": "FOR UPDATE", "sample": "TABLESAMPLE"}


@dataclasses.dataclass(frozen=True, slots=True)
class Translation:
    """What a SQL statement means: `query` is the JSON query (a dict ready for `POST /query`);
    `explain` is true for `EXPLAIN SELECT ...` (answer with the query, do not run it)."""

    query: dict[str, Any]
    explain: bool = False


def translate(text: str, schema: Schema, *, now: float | None = None) -> Translation:
    """Translate one SQL statement over `events` into the JSON query language.

    Parameters
    ----------
    text
        One `SELECT` statement, optionally prefixed by `EXPLAIN` (a trailing `;` is fine).
    schema
        The table's columns: names are checked and typed against it.
    now
        Unix seconds used for `now()` / `CURRENT_TIMESTAMP` (default: the current time).

    Returns
    -------
    Translation
        The JSON query dict and whether the statement was `EXPLAIN`.

    Raises
    ------
    SqlError
        A syntax error, a construct outside the subset, or a column not in the schema; the
        message names it and its line and column where sqlglot records them.
    """
    try:
        text, explain = _strip_explain(text)
        statement = _parse(text)
        return Translation(_Statement(Context(text, schema, now)).run(statement), explain)
    except RecursionError:
        raise SqlError("the SQL is nested too deeply") from None
    except SqlglotError as e:  # anything sqlglot refuses that _parse did not name
        raise SqlError(f"cannot read the SQL: {e}") from None


def _strip_explain(text: str) -> tuple[str, bool]:
    """Blank out a leading EXPLAIN keyword (found by sqlglot's tokenizer), keeping offsets."""
    try:
        tokens = sqlglot.Dialect.get_or_raise(DIALECT).tokenize(text)
    except TokenError as e:
        raise SqlError(f"cannot read the SQL: {e}") from None
    if not tokens or tokens[0].text.upper() != "EXPLAIN":
        return text, False
    t = tokens[0]
    words = tokens[1].text.split(None, 1) if len(tokens) > 1 else []
    rest = words[0].upper() if words else ""
    if rest in ("ANALYZE", "VERBOSE") or rest.startswith("("):
        raise SqlError(f"EXPLAIN {rest} is not supported (EXPLAIN SELECT ... shows the JSON "
                       "query)", t.line, t.col - len(t.text) + 1)
    return text[:t.start] + " " * (t.end + 1 - t.start) + text[t.end + 1:], True


def _parse(text: str) -> exp.Select:
    try:
        statements = [s for s in sqlglot.parse(text, read=DIALECT) if s is not None]
    except ParseError as e:
        err = e.errors[0] if e.errors else {}
        desc = re.sub(r"<class '(?:\w+\.)*(\w+)'>", lambda m: m.group(1).upper(),
                      err.get("description") or str(e))
        highlight = err.get("highlight") or ""
        line, col = err.get("line"), err.get("col")
        near = f" near {highlight!r}" if highlight else ""
        if isinstance(col, int) and highlight:
            col = max(1, col - len(highlight) + 1)
        raise SqlError(f"syntax error{near}: {desc}", line, col) from None
    except TokenError as e:
        raise SqlError(f"cannot read the SQL: {e}") from None
    if not statements:
        raise SqlError("no SQL statement (expected SELECT ... FROM events)")
    if len(statements) > 1:
        raise SqlError("one statement at a time, please (found "
                       f"{len(statements)} separated by ';')")
    statement = statements[0]
    if not isinstance(statement, exp.Select):
        kind = statement.key.upper()
        if isinstance(statement, exp.Command):
            kind = str(statement.this).upper()
        raise SqlError(f"{kind} is not supported: only SELECT ... FROM {TABLE} (or EXPLAIN "
                       "SELECT ...)")
    return statement


class _Statement:
    """Translates one SELECT: the clauses in order, collecting the JSON query's parts."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def run(self, select: exp.Select) -> dict[str, Any]:
        ctx = self.ctx
        self._check_clauses(select)
        self._check_from(select)
        items = self._select_items(select)
        groups = self._group_keys(select, items)
        self._groupings(items, groups)
        for alias, node in items:  # bare aggregates first: expressions then reuse their names
            if ctx.is_aggregate_call(node):
                ctx.add_select_aggregate(node, alias)
        for alias, node in items:
            if not ctx.is_aggregate_call(node) and ctx.contains_aggregate(node):
                ctx.add_select_expression(node, alias)
        where = select.args.get("where")
        filters = where_filters(ctx, where.this) if where is not None else []
        having_node = select.args.get("having")
        having = having_filter(ctx, having_node.this) if having_node is not None else None
        order = self._order_by(select, items)
        limit, offset = self._limit_offset(select)
        query: dict[str, Any] = {}
        if ctx.aggregates:
            query["aggregates"] = ctx.aggregates
        if ctx.groupings:
            query["groupings"] = ctx.groupings
        if filters:
            query["filters"] = filters
        if ctx.post_aggregations:
            query["postAggregations"] = ctx.post_aggregations
        if having is not None:
            query["having"] = having
        if order:
            query["orderBy"] = order
        if limit is not None:
            query["limit"] = limit
        if offset is not None:
            query["offset"] = offset
        return query

    # -- FROM and the clause list -----------------------------------------------------------
    def _check_clauses(self, select: exp.Select) -> None:
        for key, value in select.args.items():
            if value in (None, [], False):
                continue
            if key not in _CLAUSES:
                raise self.ctx.error(f"{key.upper()} is not supported", value)
            what = _CLAUSES[key]
            if what is not None:
                node = value[0] if isinstance(value, list) else value
                raise self.ctx.error(f"{what} is not supported: the one table is {TABLE}", node)
        distinct = select.args.get("distinct")
        if distinct is not None and distinct.args.get("on") is not None:
            raise self.ctx.error("DISTINCT ON is not supported", distinct)

    def _check_from(self, select: exp.Select) -> None:
        ctx = self.ctx
        source = select.args.get("from") or select.args.get("from_")
        if source is None:
            raise SqlError(f"a FROM clause is needed: SELECT ... FROM {TABLE}")
        table = source.this
        if not isinstance(table, exp.Table):
            raise ctx.error(f"a subquery or table function in FROM is not supported (the one "
                            f"table is {TABLE})", table)
        if table.args.get("db") or table.args.get("catalog") or table.name != TABLE:
            raise ctx.error(f"unknown table {table.sql(dialect=DIALECT)!r}: the one table is "
                            f"{TABLE}", table)
        alias = table.args.get("alias")
        if alias is not None and alias.args.get("columns"):
            raise ctx.error("column aliases on the table are not supported", alias)
        ctx.table_names = {TABLE} | ({alias.name} if alias is not None else set())

    # -- SELECT ------------------------------------------------------------------------------
    def _select_items(self, select: exp.Select) -> list[tuple[str | None, exp.Expression]]:
        """(alias or None, expression) per select item; aliases reserved as output names."""
        ctx = self.ctx
        items: list[tuple[str | None, exp.Expression]] = []
        for node in select.expressions:
            alias = None
            if isinstance(node, exp.Alias):
                alias, node = node.alias, node.this
            if isinstance(node, exp.Star) or (isinstance(node, exp.Column)
                                              and isinstance(node.this, exp.Star)):
                raise ctx.error("SELECT * is not supported: gumshoe answers aggregate queries; "
                                "name the groupings and aggregates (e.g. SELECT country, "
                                "sum(clicks) FROM events GROUP BY country)", node)
            if alias is not None:
                if alias == ROW_COUNT and not ctx.is_row_count(node):
                    raise ctx.error(f"the output name {ROW_COUNT!r} is reserved for count(*)",
                                    node)
                if alias in ctx.aliases:
                    raise ctx.error(f"the output name {alias!r} is used twice", node)
                ctx.aliases[alias] = node
                if alias != ROW_COUNT:
                    ctx.used.add(alias)
            items.append((alias, node))
        return items

    def _group_keys(self, select: exp.Select,
                    items: list[tuple[str | None, exp.Expression]]) -> list[Any]:
        ctx = self.ctx
        group = select.args.get("group")
        keys: list[Any] = []
        if group is not None:
            for key, value in group.args.items():
                if key != "expressions" and value not in (None, [], False):
                    raise ctx.error(f"GROUP BY {key.upper().replace('_', ' ')} is not "
                                    "supported", value[0] if isinstance(value, list) else value)
            for node in group.expressions:
                key = self._group_key(node, items)
                if key not in keys:
                    keys.append(key)
        elif select.args.get("distinct") is not None and not any(
                ctx.contains_aggregate(node) for _, node in items):
            keys = [ctx.group_key(node) for _, node in items]  # SELECT DISTINCT a, b
        return keys

    def _group_key(self, node: exp.Expression,
                   items: list[tuple[str | None, exp.Expression]]) -> Any:
        ctx = self.ctx
        if isinstance(node, (exp.Rollup, exp.Cube, exp.GroupingSets)):
            kind = {exp.Rollup: "ROLLUP", exp.Cube: "CUBE"}.get(type(node), "GROUPING SETS")
            raise ctx.error(f"GROUP BY {kind} is not supported", node)
        if isinstance(node, exp.Literal) and not node.is_string:
            i = self._ordinal(node, len(items), "GROUP BY")
            item = items[i][1]
            if ctx.contains_aggregate(item):
                raise ctx.error(f"GROUP BY {i + 1} refers to an aggregate", node)
            return ctx.group_key(item)
        if isinstance(node, exp.Column) and not node.table:
            target = ctx.aliases.get(node.name)  # an output name first (GROUP BY day)
            if target is not None and not ctx.contains_aggregate(target):
                return ctx.group_key(target)
            if target is not None and ctx.column_or_none(node) is None:
                raise ctx.error(f"GROUP BY {node.name} refers to an aggregate", node)
        return ctx.group_key(node)

    def _groupings(self, items: list[tuple[str | None, exp.Expression]],
                   keys: list[Any]) -> None:
        ctx = self.ctx
        named: dict[Any, list[str | None]] = {k: [] for k in keys}
        for alias, node in items:
            if ctx.contains_aggregate(node):
                continue
            if isinstance(node, (exp.Literal, exp.Null, exp.Boolean)) or (
                    isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal)):
                raise ctx.error("a constant in the select list is not supported", node)
            key = ctx.group_key(node)
            if key not in named:
                col = key.column
                hint = ("add it to GROUP BY" if keys else f"add GROUP BY {col}")
                raise ctx.error(f"{node.sql(dialect=DIALECT)} is neither grouped nor "
                                f"aggregated ({hint}, or aggregate it)", node)
            if alias not in named[key]:
                named[key].append(alias)
        for key in keys:
            aliases = named[key] or [None]
            if len(aliases) > 1 and None in aliases:
                aliases.remove(None)
            for alias in aliases:
                ctx.add_grouping(key, alias)

    # -- ORDER BY, LIMIT, OFFSET ----------------------------------------------------------------
    def _order_by(self, select: exp.Select,
                  items: list[tuple[str | None, exp.Expression]]) -> list[dict[str, Any]]:
        ctx = self.ctx
        order = select.args.get("order")
        out: list[dict[str, Any]] = []
        if order is None:
            return out
        for o in order.expressions:
            node = o.this
            if isinstance(node, exp.Literal) and not node.is_string:
                alias, item = items[self._ordinal(node, len(items), "ORDER BY")]
                name = alias if alias is not None else ctx.output_ref(item)
            else:
                name = ctx.output_ref(node)
            entry: dict[str, Any] = {"column": name}
            if o.args.get("desc"):
                entry["descending"] = True
            out.append(entry)
        return out

    def _limit_offset(self, select: exp.Select) -> tuple[int | None, int | None]:
        ctx = self.ctx
        limit = offset = None
        node = select.args.get("limit")
        if isinstance(node, exp.Fetch):
            if node.args.get("limit_options") is not None and (
                    node.args["limit_options"].args.get("percent")
                    or node.args["limit_options"].args.get("with_ties")):
                raise ctx.error("FETCH ... PERCENT / WITH TIES is not supported", node)
            limit = self._count(node.args.get("count"), "FETCH FIRST", node)
        elif node is not None:
            limit = self._count(node.args.get("expression") or node.this, "LIMIT", node)
        node = select.args.get("offset")
        if node is not None:
            offset = self._count(node.args.get("expression") or node.this, "OFFSET", node)
        return limit, offset

    def _ordinal(self, node: exp.Literal, n: int, clause: str) -> int:
        """`GROUP BY 2` / `ORDER BY 2`: the 0-based select item index."""
        text = str(node.this)
        if not text.isdigit() or not 1 <= int(text) <= n:
            raise self.ctx.error(f"{clause} {text}: expected a select item number from 1 to "
                                 f"{n}", node)
        return int(text) - 1

    def _count(self, node: exp.Expression | None, clause: str,
               parent: exp.Expression) -> int | None:
        if isinstance(node, exp.Var) and node.name.upper() == "ALL":
            return None  # LIMIT ALL
        if isinstance(node, exp.Literal) and not node.is_string and str(node.this).isdigit():
            return int(node.this)
        raise self.ctx.error(f"{clause} takes a non-negative integer", node or parent)
