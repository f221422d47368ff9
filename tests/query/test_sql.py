"""SQL -> JSON query (gumshoe/sql.py): a table of statements and the JSON each must become, the
errors that name the construct and its position, and a differential test: random JSON queries
rendered as SQL give the same answers through the engine as the JSON itself."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gumshoe.config import SchemaConfig, load_config
from gumshoe.db import DB
from gumshoe.errors import ClientError, QueryError
from gumshoe.schema import Schema
from gumshoe.sql import SqlError, Translation, translate
from gumshoe.service import query_rows

from ..kernels import PATHS, use_kernels
from ..property.test_query_vs_reference import assert_rows_equal
from ..strategies import TIMESTAMP_BASES, queries, rows, schema_configs

NOW = 1_700_000_000
SCHEMA = Schema.from_config(SchemaConfig(
    1_000_000, 3600, ("at", "uint32"),
    (("name", "string:uint16"), ("country", "string:uint8"), ("age", "uint8"),
     ("with space", "string:uint8"), ("Upper", "uint8")),
    (("visits", "uint8"), ("clicks", "uint32"), ("score", "float64"))))


@pytest.fixture(autouse=True)
def scan_kernels() -> None:
    """Translation scans nothing; the differential test runs both kernels itself."""


def sql(text: str) -> dict[str, Any]:
    return translate(text, SCHEMA, now=NOW).query


def agg(kind: str, column: str, name: str | None = None) -> dict[str, Any]:
    return {"type": kind, "column": column, "name": name or column}


def cmp(op: str, column: str, value: Any) -> dict[str, Any]:
    return {"type": op, "column": column, "value": value}


F = "FROM events"
CASES: list[tuple[str, dict[str, Any]]] = [
    # -- the select list, aggregates and output names ---------------------------------------
    (f"SELECT count(*) {F}", {}),
    (f"SELECT COUNT(1) AS rowCount {F};", {}),
    (f"SELECT country, sum(clicks), avg(visits) {F} GROUP BY country",
     {"aggregates": [agg("sum", "clicks"), agg("average", "visits")],
      "groupings": ["country"]}),
    (f"SELECT sum(clicks) AS c, AVG(score) AS \"mean score\" {F}",
     {"aggregates": [agg("sum", "clicks", "c"), agg("average", "score", "mean score")]}),
    (f"SELECT min(clicks), max(clicks), sum(clicks) {F}",
     {"aggregates": [agg("min", "clicks"), agg("max", "clicks", "max_clicks"),
                     agg("sum", "clicks", "sum_clicks")]}),
    (f"SELECT count(DISTINCT visits), uniques(clicks) AS u, approx_count_distinct(score) {F}",
     {"aggregates": [agg("uniques", "visits"), agg("uniques", "clicks", "u"),
                     agg("uniques", "score")]}),
    (f"SELECT count(*) AS n, sum(clicks) {F}",
     {"aggregates": [agg("sum", "clicks")],
      "postAggregations": [{"name": "n", "expression": "rowCount"}]}),
    (f"SELECT sum(clicks) / sum(visits) AS ctr {F}",
     {"aggregates": [agg("sum", "clicks"), agg("sum", "visits")],
      "postAggregations": [{"name": "ctr", "expression": "clicks / visits"}]}),
    (f"SELECT sum(clicks) AS c, sum(clicks) / count(*) AS per_row {F}",
     {"aggregates": [agg("sum", "clicks", "c")],
      "postAggregations": [{"name": "per_row", "expression": "c / rowCount"}]}),
    (f"SELECT sum(clicks) AS \"all clicks\", 100 * sum(clicks) / (sum(visits) + 1) {F}",
     {"aggregates": [agg("sum", "clicks", "all clicks"), agg("sum", "clicks"),
                     agg("sum", "visits")],
      "postAggregations": [{"name": "100 * sum(clicks) / (sum(visits) + 1)",
                            "expression": "100 * clicks / (visits + 1)"}]}),
    (f"SELECT -sum(score) AS neg, sum(clicks) - (sum(visits) - 1.5e-3) AS d, "
     f"(max(score) - min(score)) * 2 AS spread {F}",
     {"aggregates": [agg("sum", "score"), agg("sum", "clicks"), agg("sum", "visits"),
                     agg("max", "score", "max_score"), agg("min", "score", "min_score")],
      "postAggregations": [{"name": "neg", "expression": "-score"},
                           {"name": "d", "expression": "clicks - (visits - 0.0015)"},
                           {"name": "spread", "expression": "(max_score - min_score) * 2"}]}),
    (f"SELECT avg(visits) AS a, sum(visits) {F}",
     {"aggregates": [agg("average", "visits", "a"), agg("sum", "visits")]}),
    # -- groupings ----------------------------------------------------------------------------
    (f"SELECT date_trunc('day', at) AS day, sum(clicks) {F} GROUP BY day",
     {"aggregates": [agg("sum", "clicks")],
      "groupings": [{"column": "at", "name": "day", "timeTransform": "day"}]}),
    (f"SELECT date_trunc('hour', at), country {F} GROUP BY 1, 2",
     {"groupings": [{"column": "at", "name": "at", "timeTransform": "hour"}, "country"]}),
    *[(f"SELECT date_trunc('{u}', at) AS t {F} GROUP BY t",
       {"groupings": [{"column": "at", "name": "t", "timeTransform": u}]})
      for u in ("minute", "week", "month", "quarter", "year")],
    (f"SELECT date_trunc('week', at, 'Europe/Berlin') AS w {F} GROUP BY 1",
     {"groupings": [{"column": "at", "name": "w", "timeTransform": "week",
                     "timeZone": "Europe/Berlin"}]}),
    (f"SELECT date_trunc('month', at AT TIME ZONE 'Asia/Kolkata') AS m {F} GROUP BY m",
     {"groupings": [{"column": "at", "name": "m", "timeTransform": "month",
                     "timeZone": "Asia/Kolkata"}]}),
    (f"SELECT date_trunc('day', at, 'UTC') AS d {F} GROUP BY d",
     {"groupings": [{"column": "at", "name": "d", "timeTransform": "day"}]}),
    (f"SELECT at, date_trunc('day', at) {F} GROUP BY at, date_trunc('day', at)",
     {"groupings": ["at", {"column": "at", "name": "at_day", "timeTransform": "day"}]}),
    (f"SELECT country AS c, sum(visits) {F} GROUP BY country, name",
     {"aggregates": [agg("sum", "visits")],
      "groupings": [{"column": "country", "name": "c"}, "name"]}),
    (f"SELECT sum(visits) {F} GROUP BY age", {"aggregates": [agg("sum", "visits")],
                                              "groupings": ["age"]}),
    (f"SELECT DISTINCT country, name {F}", {"groupings": ["country", "name"]}),
    (f"SELECT e.country, \"with space\", upper {F} AS e GROUP BY 1, 2, 3",
     {"groupings": ["country", "with space", "Upper"]}),
    # -- WHERE ----------------------------------------------------------------------------------
    (f"SELECT count(*) {F} WHERE country = 'US' AND age >= 21 AND clicks < 5",
     {"filters": [cmp("=", "country", "US"), cmp(">=", "age", 21), cmp("<", "clicks", 5)]}),
    (f"SELECT count(*) {F} WHERE age <> 3 AND age != 4 AND 18 < age AND 2.5 >= score",
     {"filters": [cmp("!=", "age", 3), cmp("!=", "age", 4), cmp(">", "age", 18),
                  cmp("<=", "score", 2.5)]}),
    (f"SELECT count(*) {F} WHERE country = 'US' OR (age > 1 AND NOT name = 'x')",
     {"filters": [{"type": "or", "filters": [
         cmp("=", "country", "US"),
         {"type": "and", "filters": [cmp(">", "age", 1),
                                     {"type": "not", "filter": cmp("=", "name", "x")}]}]}]}),
    (f"SELECT count(*) {F} WHERE country IN ('US', 'CA', NULL) AND age NOT IN (1, 2)",
     {"filters": [cmp("in", "country", ["US", "CA", None]),
                  {"type": "not", "filter": cmp("in", "age", [1, 2])}]}),
    (f"SELECT count(*) {F} WHERE age BETWEEN 18 AND 25 AND score NOT BETWEEN -1 AND 1",
     {"filters": [cmp(">=", "age", 18), cmp("<=", "age", 25),
                  {"type": "not", "filter": {"type": "and", "filters": [
                      cmp(">=", "score", -1), cmp("<=", "score", 1)]}}]}),
    (f"SELECT count(*) {F} WHERE country IS NULL OR name IS NOT NULL",
     {"filters": [{"type": "or", "filters": [cmp("=", "country", None),
                                             cmp("!=", "name", None)]}]}),
    (f"SELECT count(*) {F} WHERE name LIKE 'Star%' AND name LIKE '%buc%' AND name LIKE 'Boomer'",
     {"filters": [cmp("prefix", "name", "Star"), cmp("contains", "name", "buc"),
                  cmp("=", "name", "Boomer")]}),
    (f"SELECT count(*) {F} WHERE name ILIKE 'star%' AND name NOT ILIKE '%BUC%'",
     {"filters": [{**cmp("prefix", "name", "star"), "caseInsensitive": True},
                  {"type": "not", "filter": {**cmp("contains", "name", "BUC"),
                                             "caseInsensitive": True}}]}),
    (f"SELECT count(*) {F} WHERE name LIKE '%buck' AND name LIKE 'S_a%' AND name LIKE '%'",
     {"filters": [cmp("regex", "name", "(?s)^.*buck\\Z"), cmp("regex", "name", "(?s)^S.a.*\\Z"),
                  cmp("prefix", "name", "")]}),
    (f"SELECT count(*) {F} WHERE name LIKE '50\\%%' AND name LIKE 'a!_b%' ESCAPE '!'",
     {"filters": [cmp("prefix", "name", "50%"), cmp("prefix", "name", "a_b")]}),
    (f"SELECT count(*) {F} WHERE name LIKE 'a.b+c%d'",
     {"filters": [cmp("regex", "name", "(?s)^a\\.b\\+c.*d\\Z")]}),
    (f"SELECT count(*) {F} WHERE name ~ '^S.*k$' AND name ~* 'boom' AND name !~ 'x'",
     {"filters": [cmp("regex", "name", "^S.*k$"),
                  {**cmp("regex", "name", "boom"), "caseInsensitive": True},
                  {"type": "not", "filter": cmp("regex", "name", "x")}]}),
    (f"SELECT count(*) {F} WHERE REGEXP_LIKE(name, 'a|b') AND regexp_like(country, 'us', 'i')",
     {"filters": [cmp("regex", "name", "a|b"),
                  {**cmp("regex", "country", "us"), "caseInsensitive": True}]}),
    (f"SELECT count(*) {F} WHERE at >= TIMESTAMP '2023-11-14 00:00:00' "
     "AND at < '2023-11-15T02:00:00+02:00' AND at > '2023-11-13'::timestamp",
     {"filters": [cmp(">=", "at", 1699920000), cmp("<", "at", 1700006400),
                  cmp(">", "at", 1699833600)]}),
    (f"SELECT count(*) {F} WHERE at >= now() - INTERVAL '1 hour' "
     "AND at < CURRENT_TIMESTAMP + INTERVAL '2 days' AND at > 1699990000",
     {"filters": [cmp(">=", "at", NOW - 3600), cmp("<", "at", NOW + 2 * 86400),
                  cmp(">", "at", 1699990000)]}),
    (f"SELECT count(*) {F} WHERE score = -0.5 AND clicks = 9007199254740993 AND score < 1e30",
     {"filters": [cmp("=", "score", -0.5), cmp("=", "clicks", 9007199254740993),
                  cmp("<", "score", 1e30)]}),
    (f"SELECT count(*) {F} WHERE name = 'it''s' AND \"with space\" = ''",
     {"filters": [cmp("=", "name", "it's"), cmp("=", "with space", "")]}),
    # -- HAVING ---------------------------------------------------------------------------------
    (f"SELECT country, sum(clicks) AS c {F} GROUP BY country HAVING c > 10",
     {"aggregates": [agg("sum", "clicks", "c")], "groupings": ["country"],
      "having": cmp(">", "c", 10)}),
    (f"SELECT country {F} GROUP BY country HAVING sum(clicks) > 10 AND count(*) >= 2",
     {"aggregates": [agg("sum", "clicks")], "groupings": ["country"],
      "having": {"type": "and", "filters": [cmp(">", "clicks", 10),
                                            cmp(">=", "rowCount", 2)]}}),
    (f"SELECT country {F} GROUP BY country HAVING sum(clicks) / sum(visits) > 0.5 "
     "OR 3 > avg(score) OR country IN ('US', 'CA') OR avg(score) IS NULL",
     {"aggregates": [agg("sum", "clicks"), agg("sum", "visits"), agg("average", "score")],
      "groupings": ["country"],
      "postAggregations": [{"name": "sum(clicks) / sum(visits)",
                            "expression": "clicks / visits"}],
      "having": {"type": "or", "filters": [
          cmp(">", "sum(clicks) / sum(visits)", 0.5), cmp("<", "score", 3),
          cmp("in", "country", ["US", "CA"]), cmp("=", "score", None)]}}),
    (f"SELECT country AS c, sum(clicks) AS s {F} GROUP BY 1 HAVING country != 'US' "
     "AND s BETWEEN 1 AND 9 AND NOT s / 2 < 1",
     {"aggregates": [agg("sum", "clicks", "s")], "groupings": [{"column": "country",
                                                               "name": "c"}],
      "postAggregations": [{"name": "s / 2", "expression": "s / 2"}],
      "having": {"type": "and", "filters": [
          cmp("!=", "c", "US"), cmp(">=", "s", 1), cmp("<=", "s", 9),
          {"type": "not", "filter": cmp("<", "s / 2", 1)}]}}),
    # -- ORDER BY, LIMIT, OFFSET -----------------------------------------------------------------
    (f"SELECT country, sum(clicks) {F} GROUP BY 1 ORDER BY 2 DESC, country LIMIT 5 OFFSET 10",
     {"aggregates": [agg("sum", "clicks")], "groupings": ["country"],
      "orderBy": [{"column": "clicks", "descending": True}, {"column": "country"}],
      "limit": 5, "offset": 10}),
    (f"SELECT country AS c {F} GROUP BY c ORDER BY count(*) DESC, country, max(score) "
     "LIMIT ALL",
     {"aggregates": [agg("max", "score")], "groupings": [{"column": "country", "name": "c"}],
      "orderBy": [{"column": "rowCount", "descending": True}, {"column": "c"},
                  {"column": "score"}]}),
    (f"SELECT date_trunc('day', at) AS d, sum(clicks) / sum(visits) AS ctr {F} GROUP BY d "
     "ORDER BY ctr DESC, date_trunc('day', at), sum(clicks) / sum(visits) "
     "FETCH FIRST 3 ROWS ONLY",
     {"aggregates": [agg("sum", "clicks"), agg("sum", "visits")],
      "groupings": [{"column": "at", "name": "d", "timeTransform": "day"}],
      "postAggregations": [{"name": "ctr", "expression": "clicks / visits"}],
      "orderBy": [{"column": "ctr", "descending": True}, {"column": "d"},
                  {"column": "ctr"}], "limit": 3}),
    (f"SELECT count(*) {F} OFFSET 2", {"offset": 2}),
]


@pytest.mark.parametrize(("text", "want"), CASES, ids=[c[0][:70] for c in CASES])
def test_sql_becomes_this_json(text: str, want: dict[str, Any]) -> None:
    got = translate(text, SCHEMA, now=NOW)
    assert got == Translation(want, explain=False)
    json.dumps(got.query, allow_nan=False)  # plain JSON: nothing but dicts, lists, scalars


def test_explain_returns_the_json_query_to_show() -> None:
    text = "SELECT country, sum(clicks) FROM events GROUP BY country"
    want = translate(text, SCHEMA).query
    for prefix in ("EXPLAIN ", "explain\n  ", "  Explain "):
        assert translate(prefix + text, SCHEMA) == Translation(want, explain=True)


def test_time_filters_default_to_now() -> None:
    text = "SELECT count(*) FROM events WHERE at > now() - INTERVAL '1 hour'"
    before = time.time()
    value = translate(text, SCHEMA).query["filters"][0]["value"]
    assert math.floor(before) - 3600 <= value <= time.time() - 3600


ERRORS: list[tuple[str, str, tuple[int, int] | None]] = [
    (f"SELECT * {F}", "SELECT * is not supported", (1, 8)),
    (f"SELECT country,\n  cuntry {F} GROUP BY 1, 2", "unknown column 'cuntry'", (2, 3)),
    ("SELECT sum(clicks) FROM visits", "unknown table 'visits'", (1, 25)),
    ("SELECT sum(clicks) FROM db.events", "unknown table", None),
    (f"SELECT sum(clicks) {F} JOIN users ON true", "a join is not supported", (1, 37)),
    (f"SELECT sum(clicks) {F}, users", "a join is not supported", None),
    ("SELECT sum(x) FROM (SELECT 1 AS x) t", "a subquery or table function in FROM", None),
    (f"SELECT count(*) {F} WHERE country IN (SELECT c FROM t)", "IN (subquery)", (1, 35)),
    (f"SELECT count(*) {F} WHERE age = (SELECT 1)", "a subquery is not supported", None),
    (f"SELECT count(*) {F} WHERE EXISTS (SELECT 1)", "a subquery is not supported", None),
    (f"SELECT sum(clicks) OVER (PARTITION BY country) {F}", "a window function", (1, 8)),
    (f"SELECT sum(clicks) {F} UNION SELECT sum(visits) {F}", "UNION is not supported", None),
    (f"WITH x AS (SELECT 1) SELECT sum(clicks) {F}", "WITH", None),
    ("INSERT INTO events VALUES (1)", "INSERT is not supported", None),
    ("DELETE FROM events", "DELETE is not supported", None),
    (f"SELECT country, sum(clicks) {F}", "country is neither grouped nor aggregated", (1, 8)),
    (f"SELECT name, count(*) {F} GROUP BY country",
     "name is neither grouped nor aggregated (add it to GROUP BY", (1, 8)),
    (f"SELECT count(*) {F} GROUP BY clicks", "'clicks' is a metric", (1, 38)),
    (f"SELECT lower(name) {F} GROUP BY 1", "the function lower() is not supported", (1, 8)),
    (f"SELECT stddev(clicks) {F}", "the function stddev() is not supported", None),
    (f"SELECT count(name) {F}", "count(column) is not supported", (1, 8)),
    (f"SELECT sum(DISTINCT clicks) {F}", "sum(DISTINCT ...) is not supported", None),
    (f"SELECT sum(age) {F}", "sum(): 'age' is the dimension, not a metric", (1, 12)),
    (f"SELECT sum(clicks * 2) {F}", "sum() takes a metric column", None),
    (f"SELECT sum(clicks) FILTER (WHERE age > 1) {F}", "FILTER", None),
    (f"SELECT count(*) {F} WHERE sum(clicks) > 1",
     "an aggregate in WHERE: filter aggregates with HAVING", (1, 35)),
    (f"SELECT count(*) {F} WHERE country = NULL", "use IS NULL", None),
    (f"SELECT count(*) {F} WHERE age = 'x'", "'age' is numeric", (1, 41)),
    (f"SELECT count(*) {F} WHERE country = 5", "'country' is a string dimension", None),
    (f"SELECT count(*) {F} WHERE clicks IS NULL", "only dimensions can be NULL", None),
    (f"SELECT count(*) {F} WHERE age LIKE '1%'", "LIKE needs a string dimension", None),
    (f"SELECT count(*) {F} WHERE name ~ '('", "bad regular expression '('", None),
    (f"SELECT count(*) {F} WHERE name = country", "comparing two columns", None),
    (f"SELECT count(*) {F} WHERE lower(name) = 'x'", "expected a column of events", None),
    (f"SELECT count(*) {F} WHERE at > 'yesterday'", "'yesterday' is not a time", None),
    (f"SELECT count(*) {F} WHERE at > now() - INTERVAL '1 month'", "INTERVAL", None),
    (f"SELECT count(*) {F} WHERE TRUE", "is not supported in WHERE", None),
    (f"SELECT date_trunc('second', at) {F} GROUP BY 1", "unit 'second' is not supported",
     None),
    (f"SELECT date_trunc('day', at, 'Mars/Olympus') {F} GROUP BY 1",
     "unknown time zone 'Mars/Olympus'", None),
    (f"SELECT date_trunc('day', age) {F} GROUP BY 1", "date_trunc needs the timestamp column",
     None),
    (f"SELECT sum(clicks) AS x, sum(visits) AS x {F}", "the output name 'x' is used twice",
     None),
    (f"SELECT sum(clicks) AS rowCount {F}", "reserved for count(*)", None),
    (f"SELECT sum(clicks) % 2 {F}", "the operator MOD is not supported", None),
    (f"SELECT sum(clicks) / age {F} GROUP BY age", "'age' must be aggregated here", None),
    (f"SELECT 1 {F}", "a constant in the select list", (1, 8)),
    (f"SELECT country {F} GROUP BY country HAVING clicks > 1",
     "'clicks' is neither grouped nor an output name", None),
    (f"SELECT country {F} GROUP BY country HAVING sum(clicks) > sum(visits)",
     "HAVING compares an output", None),
    (f"SELECT country {F} GROUP BY country ORDER BY 3", "ORDER BY 3: expected a select item "
     "number from 1 to 1", None),
    (f"SELECT country {F} GROUP BY ROLLUP (country)", "GROUP BY ROLLUP is not supported", None),
    (f"SELECT count(*) {F} LIMIT -1", "LIMIT takes a non-negative integer", None),
    (f"SELECT count(*) {F} LIMIT 'x'", "LIMIT takes a non-negative integer", None),
    ("SELECT sum(clicks)", "a FROM clause is needed", None),
    (f"SELECT count(*) {F} WHERE", "syntax error near 'WHERE'", (1, 29)),
    (f"SELECT count(*) {F} WHERE name = 'unterminated", "cannot read the SQL", None),
    (f"SELECT count(*) {F}; SELECT 1", "one statement at a time", None),
    ("", "no SQL statement", None),
    (f"EXPLAIN ANALYZE SELECT count(*) {F}", "EXPLAIN ANALYZE is not supported", (1, 1)),
]


@pytest.mark.parametrize(("text", "message", "position"), ERRORS,
                         ids=[e[0][:70] for e in ERRORS])
def test_sql_outside_the_subset_is_a_400_naming_it(text: str, message: str,
                                                   position: tuple[int, int] | None) -> None:
    with pytest.raises(SqlError) as info:
        translate(text, SCHEMA, now=NOW)
    err = info.value
    assert message in str(err)
    assert isinstance(err, QueryError)
    assert isinstance(err, ClientError)
    assert err.status == 400
    if position is not None:
        assert (err.line, err.column) == position, str(err)
        assert str(err).startswith(f"line {position[0]}, column {position[1]}: ")


_WORDS = ["SELECT", "FROM", "events", "WHERE", "GROUP", "BY", "HAVING", "ORDER", "LIMIT",
          "OFFSET", "AND", "OR", "NOT", "IN", "LIKE", "ILIKE", "IS", "NULL", "BETWEEN", "AS",
          "EXPLAIN", "DISTINCT", "count(*)", "sum(", "avg(", "date_trunc(", "'day'", "at",
          "country", "clicks", "name", "(", ")", ",", "=", "<>", "<", ">=", "~", "/", "*", "-",
          "1", "2.5", "'x'", "'%a%'", ";", "OVER", "JOIN", "UNION", "(SELECT", "::timestamp",
          "INTERVAL", "'1 hour'", "now()", "AT TIME ZONE", "'Europe/Berlin'", "\"", "'"]


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=80),
                 st.lists(st.sampled_from(_WORDS), max_size=25).map(" ".join)))
def test_any_text_is_a_translation_or_a_sql_error(text: str) -> None:
    """No input makes translate raise anything but SqlError (the server's 400)."""
    try:
        got = translate(text, SCHEMA, now=NOW)
    except SqlError as e:
        message = str(e)
        assert message
    else:
        json.dumps(got.query, allow_nan=False)


def test_deep_nesting_is_a_sql_error() -> None:
    with pytest.raises(SqlError, match=r"nested too deeply|syntax error|cannot read"):
        translate(f"SELECT count(*) FROM events WHERE {'(' * 5000}age = 1{')' * 5000}", SCHEMA)
    with pytest.raises(SqlError):
        translate("SELECT count(*) FROM events WHERE " + " AND ".join(
            f"NOT (age = {i}" for i in range(3000)) + ")" * 3000, SCHEMA)


# -- differential: JSON queries rendered as SQL give the same answers ---------------------------
def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return repr(v)


def _keys(obj: dict[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in obj.items()}


def _expressible(f: dict[str, Any]) -> bool:
    """SQL has no form for an ordered comparison with NULL (the JSON matches nothing)."""
    f = _keys(f)
    kind = f.get("type", "=")
    if kind in ("and", "or"):
        return all(_expressible(g) for g in f["filters"])
    if kind == "not":
        return _expressible(f["filter"])
    return not (f.get("value") is None and kind not in ("=", "!=", "in"))


_LIKE_ESCAPE = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_"})


@st.composite
def _where(draw: st.DrawFn, f: dict[str, Any], schema: Schema,
           outputs: dict[str, str] | None = None) -> str:
    """A filter as SQL. With `outputs` (output name -> how SQL may name it) it is a HAVING
    condition over output names, else a WHERE condition over columns."""
    f = _keys(f)
    kind = f.get("type", "=")
    if kind in ("and", "or"):
        return "(" + f" {kind.upper()} ".join(draw(_where(g, schema, outputs))
                                              for g in f["filters"]) + ")"
    if kind == "not":
        return f"NOT ({draw(_where(f['filter'], schema, outputs))})"
    if outputs is None:
        col = _ident(f["column"])
    else:
        col = draw(st.sampled_from(["count(*)", _ident("rowCount")])) if (
            f["column"] == "rowCount") else outputs[f["column"]]
    value = f["value"]
    if kind in ("prefix", "contains"):
        like = "ILIKE" if f.get("caseinsensitive") else "LIKE"
        pattern = value.translate(_LIKE_ESCAPE)
        pattern = pattern + "%" if kind == "prefix" else "%" + pattern + "%"
        return f"{col} {like} {_literal(pattern)}"
    if kind == "regex":
        ci = bool(f.get("caseinsensitive"))
        if draw(st.booleans()):
            return f"{col} {'~*' if ci else '~'} {_literal(value)}"
        return f"REGEXP_LIKE({col}, {_literal(value)}{', ' + _literal('i') if ci else ''})"
    if kind == "in":
        return f"{col} IN ({', '.join(_literal(v) for v in value)})"
    if value is None:
        return f"{col} IS {'NOT ' if kind == '!=' else ''}NULL"
    text = _literal(value)
    ts = schema.timestamp.name
    if outputs is None and f["column"] == ts and isinstance(value, int) and draw(st.booleans()):
        when = datetime.datetime.fromtimestamp(value, datetime.UTC)
        text = f"TIMESTAMP '{when:%Y-%m-%d %H:%M:%S}'"
    if kind == "!=":
        kind = draw(st.sampled_from(["!=", "<>"]))
    if draw(st.booleans()):  # the constant first: the operator flips
        flipped = {">": "<", ">=": "<=", "<": ">", "<=": ">="}.get(kind, kind)
        return f"{text} {flipped} {col}"
    return f"{col} {kind} {text}"


# the tokens of a post-aggregation expression: a quoted name, a (dotted) name, anything else
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_.]*|\d+(?:\.\d*)?(?:e[+-]?\d+)?'
                    r"|\.\d+(?:e[+-]?\d+)?|\S", re.IGNORECASE)


def _expression_names(expression: str) -> list[str]:
    out = []
    for tok in _TOKEN.findall(expression):
        if tok.startswith('"'):
            out.append(re.sub(r"\\(.)", r"\1", tok[1:-1]))
        elif tok[0].isalpha() or tok[0] == "_":
            out.append(tok)
    return out


def _sql_expression(expression: str, names: dict[str, str]) -> str:
    """A post-aggregation's expression as SQL: output names replaced by the aggregate
    arithmetic they stand for (`names`: output name -> SQL)."""
    parts = []
    for tok in _TOKEN.findall(expression):
        if tok.startswith('"'):
            parts.append(names[re.sub(r"\\(.)", r"\1", tok[1:-1])])
        elif tok[0].isalpha() or tok[0] == "_":
            parts.append(names[tok])
        else:
            parts.append(tok)
    sql = " ".join(parts)
    if not any(n in sql for n in ("sum(", "avg(", "count(*)")):
        sql = f"({sql}) + 0 * count(*)"  # only numbers: SQL needs an aggregate in it
    return sql


@st.composite
def as_sql(draw: st.DrawFn, query: dict[str, Any], schema: Schema) -> str:
    """`query` (from tests/strategies.py) written as SQL, in one of several equivalent ways:
    groupings with date_trunc and time zones, aggregates, post-aggregations as arithmetic on
    the aggregates, string matching as LIKE/ILIKE/~/REGEXP_LIKE, HAVING, ORDER BY, LIMIT and
    OFFSET. Only for queries `_sql_writes` accepts."""
    q = _keys(query)
    select: list[str] = []
    group_by: list[str] = []
    outputs: dict[str, int] = {}  # output name -> select item number
    arithmetic: dict[str, str] = {"rowCount": "count(*)"}  # output name -> SQL in expressions
    for g in q.get("groupings") or []:
        g = {"column": g} if isinstance(g, str) else _keys(g)
        name = g.get("name", g["column"])
        expr = _ident(g["column"])
        if g.get("timetransform"):
            unit = _literal(g["timetransform"])
            zone = g.get("timezone")
            if zone is None:
                expr = f"date_trunc({unit}, {expr})"
            elif draw(st.booleans()):
                expr = f"date_trunc({unit}, {expr}, {_literal(zone)})"
            else:
                expr = f"date_trunc({unit}, {expr} AT TIME ZONE {_literal(zone)})"
        aliased = name != g["column"] or draw(st.booleans())
        select.append(f"{expr} AS {_ident(name)}" if aliased else expr)
        outputs[name] = len(select)
        way = draw(st.sampled_from(["ordinal", "alias", "expression"]))
        group_by.append(str(len(select)) if way == "ordinal" else
                        _ident(name) if way == "alias" and aliased else expr)
    for a in q.get("aggregates") or []:
        a = _keys(a)
        func = {"average": "avg", "min": "min", "max": "max"}.get(a.get("type", "sum"), "sum")
        name = a.get("name", a["column"])
        item = f"{func}({_ident(a['column'])})"
        arithmetic[name] = item
        select.append(f"{item} AS {_ident(name)}" if name != a["column"] or draw(st.booleans())
                      else item)
        outputs[name] = len(select)
    for p in q.get("postaggregations") or []:
        p = _keys(p)
        expr = _sql_expression(p["expression"], arithmetic)
        arithmetic[p["name"]] = f"({expr})"
        select.append(f"{expr} AS {_ident(p['name'])}")
        outputs[p["name"]] = len(select)
    if not select or draw(st.booleans()):
        select.append(draw(st.sampled_from(["count(*)", 'count(*) AS "rowCount"', "COUNT(1)"])))
        outputs["rowCount"] = len(select)
    text = f"SELECT {', '.join(select)} FROM events"
    filters = q.get("filters") or []
    if filters:
        text += " WHERE " + " AND ".join(draw(_where(f, schema)) for f in filters)
    if group_by:
        text += " GROUP BY " + ", ".join(group_by)
    having = q.get("having")
    if having is not None:
        names = {n: _ident(n) for n in outputs}
        text += " HAVING " + " AND ".join(
            draw(_where(h, schema, names)) for h in (having if isinstance(having, list)
                                                     else [having]))
    order = []
    for o in q.get("orderby") or []:
        o = _keys(o)
        ref = (str(outputs[o["column"]]) if o["column"] in outputs and draw(st.booleans()) else
               draw(st.sampled_from(["count(*)", '"rowCount"'])) if o["column"] == "rowCount"
               else _ident(o["column"]))
        order.append(ref + (" DESC" if o.get("descending") else draw(st.sampled_from(
            ["", " ASC"]))))
    if order:
        text += " ORDER BY " + ", ".join(order)
    if q.get("limit") is not None:
        text += f" LIMIT {q['limit']}"
    if q.get("offset") is not None:
        text += f" OFFSET {q['offset']}"
    return text + draw(st.sampled_from(["", ";"]))


def _sql_writes(query: dict[str, Any], schema: Schema) -> bool:
    """Whether SQL can say what `query` says: not zero-fill (no SQL form), date_trunc of
    the timestamp only, and post-aggregations over aggregates and rowCount only (SQL's
    expressions are aggregate arithmetic: a grouping in one is a grouping of its own); an
    aggregate used in one needs a plain name (sql.py names the aggregate of an expression
    itself unless a selected one has a name an expression can use)."""
    q = _keys(query)
    for g in q.get("groupings") or []:
        if isinstance(g, dict):
            g = _keys(g)
            if g.get("fill") or (g.get("timetransform") and
                                 g["column"] != schema.timestamp.name):
                return False
    usable = {"rowCount"} | {
        n for a in q.get("aggregates") or []
        if (n := _keys(a).get("name", _keys(a)["column"])).isidentifier()}
    for p in q.get("postaggregations") or []:
        p = _keys(p)
        if not set(_expression_names(p["expression"])) <= usable:
            return False
        usable.add(p["name"])
    having = q.get("having")
    return having is None or all(_expressible(h) for h in (
        having if isinstance(having, list) else [having]))


@st.composite
def sql_cases(draw: st.DrawFn) -> tuple[SchemaConfig, list[dict[str, Any]],
                                        list[tuple[dict[str, Any], str]]]:
    sc = draw(schema_configs())
    schema = Schema.from_config(sc)
    base = draw(st.sampled_from(TIMESTAMP_BASES))
    data = draw(rows(schema, base=base, max_size=40))
    qs = draw(st.lists(queries(schema, base=base), min_size=1, max_size=4))
    pairs = []
    for q in qs:
        assume(all(_expressible(f) for f in _keys(q).get("filters") or []))
        assume(_sql_writes(q, schema))
        pairs.append((q, draw(as_sql(q, schema))))
    return sc, data, pairs


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.filter_too_much])
@given(sql_cases())
def test_sql_answers_equal_json_answers(
        case: tuple[SchemaConfig, list[dict[str, Any]], list[tuple[dict[str, Any], str]]]
) -> None:
    sc, data, pairs = case
    cfg = load_config().replace(database_dir="MEMORY", retention_days=0)
    db = DB(cfg.replace(schema=dataclasses.replace(sc)))
    db.insert(data[: len(data) // 2])
    db.flush()
    db.insert(data[len(data) // 2:])
    for q, text in pairs:
        translated = translate(text, db.schema).query
        for _, kernels in PATHS:
            with use_kernels(kernels):
                assert_rows_equal(query_rows(db, translated), query_rows(db, q))


def test_the_readme_examples_translate() -> None:
    """The SQL in README's "Look at your data" is valid for the default schema, and the error
    it shows is the one translate gives."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
    section = readme.split("## Look at your data", 1)[1].split("\n## ", 1)[0]
    schema = Schema.from_config(load_config().schema)
    statements = [" ".join(s.split()) for s in re.findall(
        r'(?:-d|gumshoe query) "((?:EXPLAIN )?SELECT[^"]*)"', section)]
    statements += re.findall(r'c\.(?:query|query_df|explain)\("((?:EXPLAIN )?SELECT[^"]*)"\)',
                             section)
    assert len(statements) >= 6
    for text in statements:
        if "cuntry" in text:
            with pytest.raises(SqlError) as info:
                translate(text, schema)
            assert str(info.value) in section
        else:
            translate(text, schema)
