"""SQL WHERE and HAVING -> the JSON query language's filters.

Tier of query.py: imports sqlexpr (the translation Context), schema and errors (and sqlglot).
WHERE compares schema columns with constants: `= != <> < <= > >=`, IN, BETWEEN, IS [NOT] NULL,
LIKE/ILIKE (`'abc%'` -> prefix, `'%abc%'` -> contains, any other pattern -> an anchored regex),
`~`, `~*`, REGEXP_LIKE (-> regex), combined with AND/OR/NOT. HAVING compares output names
(aliases, groupings, aggregates, arithmetic on aggregates, count(*)) with constants.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlglot import exp

from .schema import Column
from .sqlexpr import COMPARE, FLIP, Context, unparen

Filter = dict[str, Any]


def _flatten(node: exp.Expression, kind: type[exp.Expression]) -> list[exp.Expression]:
    node = unparen(node)
    if isinstance(node, kind):
        return _flatten(node.this, kind) + _flatten(node.expression, kind)
    return [node]


def where_filters(ctx: Context, node: exp.Expression) -> list[Filter]:
    """The WHERE condition as the JSON query's top-level (ANDed) `filters` list."""
    out: list[Filter] = []
    for part in _flatten(node, exp.And):
        f = _filter(ctx, part, _where_leaf, "in WHERE")
        out += f["filters"] if f.get("type") == "and" else [f]
    return out


def having_filter(ctx: Context, node: exp.Expression) -> Filter:
    """The HAVING condition as one JSON filter over output names."""
    return _filter(ctx, node, _having_leaf, "in HAVING")


Leaf = Callable[[Context, exp.Expression], "Filter | None"]


def _filter(ctx: Context, node: exp.Expression, leaf: Leaf, where: str) -> Filter:
    node = unparen(node)
    if isinstance(node, (exp.And, exp.Or)):
        kind = "and" if isinstance(node, exp.And) else "or"
        out: list[Filter] = []
        for part in _flatten(node, type(node)):
            f = _filter(ctx, part, leaf, where)
            out += f["filters"] if f.get("type") == kind else [f]  # BETWEEN inside AND
        return {"type": kind, "filters": out}
    if isinstance(node, exp.Not):
        return {"type": "not", "filter": _filter(ctx, node.this, leaf, where)}
    found = leaf(ctx, node)
    if found is None:
        raise ctx.unsupported(node, f"{where} (comparisons, IN, BETWEEN, IS NULL, LIKE, ~, "
                              "AND, OR, NOT)")
    return found


# -- WHERE ------------------------------------------------------------------------------------
def _where_leaf(ctx: Context, node: exp.Expression) -> Filter | None:
    if ctx.contains_aggregate(node):
        raise ctx.error("an aggregate in WHERE: filter aggregates with HAVING", node)
    op = COMPARE.get(type(node))
    if op is not None:
        col_node, value_node = node.this, node.expression
        if not isinstance(unparen(col_node), exp.Column):
            col_node, value_node, op = value_node, col_node, FLIP[op]
        col = ctx.column(unparen(col_node))
        value = ctx.constant(value_node, col)
        if value is None:
            raise ctx.error(f"{col.name} {op} NULL is never true in SQL: use IS NULL or IS NOT "
                            "NULL", node)
        return {"type": op, "column": col.name, "value": _check(ctx, col, value, value_node)}
    if isinstance(node, exp.Is):
        col = ctx.column(unparen(node.this))
        if not isinstance(node.expression, exp.Null):
            raise ctx.unsupported(node, "(IS NULL and IS NOT NULL are)")
        if col.role != "dimension":
            raise ctx.error(f"{col.name!r} is the {col.role}: only dimensions can be NULL", node)
        return {"type": "!=" if node.args.get("negate") else "=", "column": col.name,
                "value": None}
    if isinstance(node, exp.In):
        if node.args.get("query") is not None or node.args.get("unnest") is not None:
            raise ctx.error("IN (subquery) is not supported: list the values", node)
        col = ctx.column(unparen(node.this))
        values = [_check(ctx, col, ctx.constant(v, col), v) for v in node.expressions]
        return {"type": "in", "column": col.name, "value": values}
    if isinstance(node, exp.Between):
        col = ctx.column(unparen(node.this))
        low, high = node.args["low"], node.args["high"]
        return {"type": "and", "filters": [
            {"type": ">=", "column": col.name, "value": _bound(ctx, col, low)},
            {"type": "<=", "column": col.name, "value": _bound(ctx, col, high)}]}
    if isinstance(node, exp.Escape) and isinstance(node.this, (exp.Like, exp.ILike)):
        esc = node.expression
        if not (isinstance(esc, exp.Literal) and esc.is_string and len(esc.this) == 1):
            raise ctx.error("ESCAPE takes one character", esc)
        return _like(ctx, node.this, esc.this)
    if isinstance(node, (exp.Like, exp.ILike)):
        return _like(ctx, node, "\\")
    if isinstance(node, (exp.RegexpLike, exp.RegexpILike)):
        return _regex(ctx, node)
    return None


def _bound(ctx: Context, col: Column, node: exp.Expression) -> Any:
    value = ctx.constant(node, col)
    if value is None:
        raise ctx.error("BETWEEN NULL is never true in SQL", node)
    return _check(ctx, col, value, node)


def _check(ctx: Context, col: Column, value: Any, node: exp.Expression) -> Any:
    """`value` if it can be compared with `col` (the JSON language's typing), else an error."""
    if value is None:
        if col.role != "dimension":
            raise ctx.error(f"{col.name!r} is the {col.role}: only dimensions can be NULL",
                            node)
    elif col.is_string:
        if not isinstance(value, str):
            raise ctx.error(f"{col.name!r} is a string dimension: compare it with a 'string', "
                            f"not {value!r}", node)
    elif not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ctx.error(f"{col.name!r} is numeric: compare it with a number, not {value!r}",
                        node)
    return value


def _string_column(ctx: Context, node: exp.Expression, what: str) -> Column:
    col = ctx.column(unparen(node))
    if not col.is_string:
        raise ctx.error(f"{what} needs a string dimension; {col.name!r} is {col.type_name}",
                        node)
    return col


def _pattern(ctx: Context, node: exp.Expression, what: str) -> str:
    node = unparen(node)
    if not (isinstance(node, exp.Literal) and node.is_string):
        raise ctx.error(f"{what} needs a 'string' pattern, not {node.sql()}", node)
    return str(node.this)


def _like(ctx: Context, node: exp.Like | exp.ILike, escape: str) -> Filter:
    """LIKE/ILIKE: 'abc' -> =, 'abc%' -> prefix, '%abc%' -> contains, else an anchored regex."""
    what = "ILIKE" if isinstance(node, exp.ILike) else "LIKE"
    col = _string_column(ctx, node.this, what)
    pattern = _pattern(ctx, node.expression, what)
    parts: list[str] = []  # literal runs, "%" and "_"
    literal: list[str] = []
    chars = iter(pattern)
    for c in chars:
        if c == escape:
            literal.append(next(chars, escape))
        elif c in "%_":
            if literal:
                parts.append("".join(literal))
                literal = []
            if not (c == "%" and parts and parts[-1] == "%"):
                parts.append(c)
        else:
            literal.append(c)
    if literal:
        parts.append("".join(literal))
    wild = [p in ("%", "_") for p in parts]
    ci = isinstance(node, exp.ILike)
    f: Filter
    if not any(wild) and not ci:
        f = {"type": "=", "column": col.name, "value": parts[0] if parts else ""}
    elif parts == ["%"]:
        f = {"type": "prefix", "column": col.name, "value": ""}
    elif len(parts) == 2 and wild == [False, True] and parts[1] == "%":
        f = {"type": "prefix", "column": col.name, "value": parts[0]}
    elif len(parts) == 3 and wild == [True, False, True] and parts[0] == parts[2] == "%":
        f = {"type": "contains", "column": col.name, "value": parts[1]}
    else:
        body = "".join(".*" if p == "%" else "." if p == "_" else re.escape(p) for p in parts)
        f = {"type": "regex", "column": col.name, "value": f"(?s)^{body}\\Z"}
    if ci:
        f["caseInsensitive"] = True
    if node.args.get("negate"):
        return {"type": "not", "filter": f}
    return f


def _regex(ctx: Context, node: exp.RegexpLike | exp.RegexpILike) -> Filter:
    col = _string_column(ctx, node.this, "a regular expression match")
    pattern = _pattern(ctx, node.expression, "a regular expression match")
    ci = isinstance(node, exp.RegexpILike)
    flag = node.args.get("flag")
    if flag is not None:
        flags = _pattern(ctx, flag, "REGEXP_LIKE's flags")
        if set(flags) - {"i", "c"}:
            raise ctx.error(f"REGEXP_LIKE flags {flags!r} are not supported ('i': ignore case, "
                            "'c': match case)", flag)
        ci = flags[-1] == "i" if flags else ci  # the last of i/c wins
    try:
        re.compile(pattern)
    except re.error as e:
        raise ctx.error(f"bad regular expression {pattern!r}: {e}", node.expression) from None
    f: Filter = {"type": "regex", "column": col.name, "value": pattern}
    if ci:
        f["caseInsensitive"] = True
    return f


# -- HAVING -----------------------------------------------------------------------------------
def _is_constant(node: exp.Expression) -> bool:
    node = unparen(node)
    return isinstance(node, (exp.Literal, exp.Null, exp.Boolean)) or (
        isinstance(node, exp.Neg) and _is_constant(node.this))


def _having_leaf(ctx: Context, node: exp.Expression) -> Filter | None:
    op = COMPARE.get(type(node))
    if op is not None:
        ref_node, value_node = node.this, node.expression
        if _is_constant(ref_node) and not _is_constant(value_node):
            ref_node, value_node, op = value_node, ref_node, FLIP[op]
        if not _is_constant(value_node):
            raise ctx.error("HAVING compares an output (an aggregate, an alias, a grouped "
                            "column) with a constant", node)
        value = ctx.constant(value_node, None)
        if value is None:
            raise ctx.error(f"{op} NULL is never true in SQL: use IS NULL", node)
        return {"type": op, "column": ctx.output_ref(ref_node), "value": value}
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        return {"type": "!=" if node.args.get("negate") else "=",
                "column": ctx.output_ref(node.this), "value": None}
    if isinstance(node, exp.In) and node.args.get("query") is None:
        return {"type": "in", "column": ctx.output_ref(node.this),
                "value": [ctx.constant(v, None) for v in node.expressions]}
    if isinstance(node, exp.Between):
        name = ctx.output_ref(node.this)
        return {"type": "and", "filters": [
            {"type": ">=", "column": name, "value": ctx.constant(node.args["low"], None)},
            {"type": "<=", "column": name, "value": ctx.constant(node.args["high"], None)}]}
    return None
