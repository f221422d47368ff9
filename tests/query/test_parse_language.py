"""Parsing the #14 additions: having, postAggregations, offset, calendar transforms with time
zones, zero-fill, string matching. Keys are case-insensitive, unknown keys are errors, every
invalid part is a QueryError naming it, and the canonical JSON carries everything."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gumshoe.errors import QueryError
from gumshoe.expression import BinOp, Ref
from gumshoe.query import Logical, Match, OutputCompare, parse_query
from gumshoe.schema import Schema

from .helpers import make_db


@pytest.fixture(autouse=True)
def scan_kernels() -> Iterator[None]:
    yield  # parsing only: run once, not once per kernel


@pytest.fixture(scope="module")
def schema() -> Schema:
    return make_db(dims=(("dim1", "string:uint32"), ("dim2", "uint8"), ("f", "float32"),
                         ("u", "uint32")),
                   metrics=(("metric1", "uint32"), ("metric2", "float32"))).schema


FULL = {
    "aggregates": [{"column": "metric1", "name": "clicks"},
                   {"type": "average", "column": "metric2", "name": "avg"}],
    "groupings": [{"column": "at", "name": "week", "timeTransform": "week",
                   "timeZone": "Europe/Berlin", "fill": True}, "dim1",
                  {"column": "u", "timeTransform": "month", "timeZone": "Asia/Kathmandu"}],
    "filters": [{"type": "prefix", "column": "dim1", "value": "/blog/"},
                {"type": "regex", "column": "dim1", "value": "^a.*z$", "caseInsensitive": True},
                {"type": "not", "filter": {"type": "contains", "column": "dim1", "value": "x"}}],
    "postAggregations": [{"name": "ctr", "expression": "clicks / rowCount"},
                         {"name": "pct", "expression": "-(ctr * 100) + avg / 2"}],
    "having": {"type": "and", "filters": [{"type": ">", "column": "ctr", "value": 0.5},
                                          {"type": "in", "column": "dim1",
                                           "value": ["a", None]}]},
    "orderBy": [{"column": "pct", "descending": True}],
    "limit": 10, "offset": 20,
}


def test_everything_parses_and_round_trips(schema: Schema) -> None:
    q = parse_query(FULL, schema)
    week, dim1, u = q.groupings
    assert (week.transform, week.time_zone, week.fill) == ("week", "Europe/Berlin", True)
    assert week.interval == schema.interval_duration and q.fill is week
    assert (dim1.transform, dim1.time_zone, dim1.fill) == (None, "UTC", False)
    assert (u.transform, u.time_zone) == ("month", "Asia/Kathmandu")
    assert isinstance(q.filter, Logical)
    m = q.filter.operands[1]
    assert isinstance(m, Match) and (m.op, m.value, m.case_insensitive) == ("regex", "^a.*z$",
                                                                            True)
    ctr, pct = q.post_aggregations
    assert ctr.expr == BinOp("/", Ref("clicks"), Ref("rowCount"))
    assert pct.source == "-(ctr * 100) + avg / 2"
    assert isinstance(q.having, Logical)
    assert q.having.operands[0] == OutputCompare(">", "ctr", 0.5)
    assert (q.limit, q.offset) == (10, 20)
    assert q.output_names() == ["week", "dim1", "u", "clicks", "avg", "ctr", "pct", "rowCount"]
    again = parse_query(q.to_json(), schema)
    assert again == q
    assert again.to_json() == q.to_json()


def test_canonical_json_leaves_defaults_out(schema: Schema) -> None:
    j = parse_query({"groupings": [{"column": "at", "timeTransform": "DAY",
                                    "timeZone": "UTC", "fill": False}],
                     "filters": [{"type": "prefix", "column": "dim1", "value": "a",
                                  "caseInsensitive": False}], "offset": 0}, schema).to_json()
    assert j["groupings"] == [{"column": "at", "name": "at", "timeTransform": "day"}]
    assert j["filters"] == [{"type": "prefix", "column": "dim1", "value": "a"}]
    assert "offset" not in j and "having" not in j and "postAggregations" not in j


def test_keys_are_case_insensitive(schema: Schema) -> None:
    q = parse_query({"AGGREGATES": [{"column": "metric1"}],
                     "GROUPINGS": [{"COLUMN": "at", "TIMETRANSFORM": "Month",
                                    "TimeZone": "America/St_Johns", "FILL": True}],
                     "Filters": [{"TYPE": "Contains", "COLUMN": "dim1", "VALUE": "a",
                                  "CASEINSENSITIVE": True}],
                     "PostAggregations": [{"NAME": "x", "EXPRESSION": "metric1 * 2"}],
                     "HAVING": [{"TYPE": ">=", "COLUMN": "x", "VALUE": 2}],
                     "OFFSET": 3}, schema)
    assert q.groupings[0].transform == "month" and q.groupings[0].fill
    assert isinstance(q.filter, Match) and q.filter.case_insensitive
    assert q.post_aggregations[0].name == "x" and q.offset == 3
    assert q.having == Logical("and", (OutputCompare(">=", "x", 2),))


def test_having_may_use_every_output_name(schema: Schema) -> None:
    q = parse_query({"aggregates": [{"column": "metric1"}], "groupings": ["dim1", "dim2"],
                     "postAggregations": [{"name": "p", "expression": "1"}],
                     "having": {"type": "or", "filters": [
                         {"column": "metric1", "value": 1}, {"column": "dim1", "value": "a"},
                         {"column": "dim2", "type": "<", "value": 3},
                         {"column": "p", "value": None},
                         {"column": "rowCount", "type": "!=", "value": 0}]}}, schema)
    assert isinstance(q.having, Logical) and len(q.having.operands) == 5


def test_post_aggregations_see_earlier_ones_and_quoted_names(schema: Schema) -> None:
    q = parse_query({"aggregates": [{"column": "metric1", "name": "a-b"}],
                     "groupings": ["dim2"],
                     "postAggregations": [{"name": "x", "expression": '"a-b" * dim2'},
                                          {"name": "y y", "expression": "x - rowCount"},
                                          {"name": "z", "expression": '"y y" / 2'}],
                     "orderBy": ["z"]}, schema)
    assert [p.name for p in q.post_aggregations] == ["x", "y y", "z"]
    assert q.order_by[0].name == "z"


@pytest.mark.parametrize(("query", "message"), [
    # having
    ({"having": {"column": "nope", "value": 1}},
     "having.column: 'nope' is not an output of this query"),
    ({"aggregates": [{"column": "metric1"}], "having": {"column": "metric1", "value": "x"}},
     "having.value: 'metric1' is numeric; expected a number or null, got 'x'"),
    ({"groupings": ["dim1"], "having": {"column": "dim1", "value": 5}},
     "having.value: 'dim1' is a string grouping; expected a string or null, got 5"),
    ({"having": {"type": "prefix", "column": "rowCount", "value": "a"}},
     "having.type: 'prefix' is not a valid filter type"),
    ({"having": {"type": "in", "column": "rowCount", "value": 1}},
     "having.value: 'in' needs an array, got 1"),
    ({"having": {"type": "and", "filters": [{"column": "rowCount", "valu": 1}]}},
     "having.filters[0]: unknown key 'valu'"),
    ({"having": {"type": "not"}}, "having.filter: a 'not' filter needs one filter"),
    ({"having": [{"column": "rowCount", "value": True}]}, "having[0].value"),
    ({"having": 5}, "having: expected a filter object, got 5"),
    ({"having": {"column": "rowCount", "value": 1, "x": 1}}, "having: unknown key 'x'"),
    # post-aggregations
    ({"postAggregations": {}}, "postAggregations: expected an array"),
    ({"postAggregations": [{"expression": "1"}]},
     "postAggregations[0].name: a post-aggregation needs a name"),
    ({"postAggregations": [{"name": "x"}]}, "postAggregations[0].expression: expected an "
                                            "expression string"),
    ({"postAggregations": [{"name": "x", "expression": "1", "typo": 1}]},
     "postAggregations[0]: unknown key 'typo'"),
    ({"postAggregations": [{"name": "rowCount", "expression": "1"}]}, "'rowCount' is reserved"),
    ({"aggregates": [{"column": "metric1"}],
      "postAggregations": [{"name": "metric1", "expression": "1"}]},
     "postAggregations[0].name: output name 'metric1' is already used by aggregates[0]"),
    ({"postAggregations": [{"name": "x", "expression": "rowCount / (rowCount"}]},
     "postAggregations[0].expression: missing ')' for the '(' at position 11 in "
     "'rowCount / (rowCount'"),
    ({"postAggregations": [{"name": "x", "expression": "rowCount / clicks"}]},
     "postAggregations[0].expression: unknown name 'clicks' at position 11 in "
     "'rowCount / clicks'"),
    ({"postAggregations": [{"name": "x", "expression": "y"}, {"name": "y", "expression": "1"}]},
     "postAggregations[0].expression: unknown name 'y' at position 0"),
    ({"postAggregations": [{"name": "x", "expression": "x + 1"}]},
     "postAggregations[0].expression: unknown name 'x'"),
    ({"groupings": ["dim1"], "postAggregations": [{"name": "x", "expression": "dim1 * 2"}]},
     "postAggregations[0].expression: 'dim1' at position 0 in 'dim1 * 2' is a string grouping"),
    ({"postAggregations": [{"name": "x", "expression": "rowCount ** 2"}]},
     "postAggregations[0].expression: unexpected '*'"),
    ({"postAggregations": [{"name": "x", "expression": "__import__('os')"}]},
     "postAggregations[0].expression: unexpected '('"),
    ({"postAggregations": [{"name": "x", "expression": "1e999"}]}, "out of range"),
    ({"postAggregations": [{"name": "x", "expression": "(" * 70 + "1" + ")" * 70}]},
     "nested too deeply"),
    ({"postAggregations": [{"name": "x", "expression": "1+" * 1001 + "1"}]},
     "expression longer than 2000 characters"),
    ({"orderBy": ["nope"]}, "orderBy[0].column: 'nope' is not an aggregate, grouping or "
                            "post-aggregation name"),
    # offset
    ({"offset": -1}, "offset: expected a non-negative integer, got -1"),
    ({"offset": "3"}, "offset: expected a non-negative integer, got '3'"),
    ({"offset": True}, "offset: expected a non-negative integer, got true"),
    # calendar, time zones, fill
    ({"groupings": [{"column": "at", "timeTransform": "day", "timeZone": "Mars/Olympus"}]},
     "groupings[0].timeZone: unknown time zone 'Mars/Olympus'"),
    ({"groupings": [{"column": "at", "timeTransform": "day", "timeZone": "../etc/passwd"}]},
     "groupings[0].timeZone: unknown time zone '../etc/passwd'"),
    ({"groupings": [{"column": "at", "timeTransform": "day", "timeZone": 5}]},
     "groupings[0].timeZone: expected an IANA time zone name"),
    ({"groupings": [{"column": "at", "timeZone": "Europe/Berlin"}]},
     "groupings[0].timeZone: a time zone needs a timeTransform"),
    ({"groupings": [{"column": "dim2", "timeTransform": "week"}]},
     "groupings[0].timeTransform: cannot apply timestamp truncation to non-uint32 column "
     "'dim2' (uint8)"),
    ({"groupings": [{"column": "at", "fill": "yes"}]},
     "groupings[0].fill: expected true or false, got 'yes'"),
    ({"groupings": [{"column": "u", "timeTransform": "day", "fill": True}]},
     "groupings[0].fill: zero-fill applies to the timestamp column 'at' only, not 'u'"),
    ({"groupings": [{"column": "at", "fill": True},
                    {"column": "at", "name": "d", "timeTransform": "day", "fill": True}]},
     "groupings[1].fill: only one grouping may be zero-filled"),
    ({"groupings": [{"column": "at", "timezone": "UTC", "tz": "UTC"}]},
     "groupings[0]: unknown key 'tz'"),
    # string matching
    ({"filters": [{"type": "prefix", "column": "dim2", "value": "1"}]},
     "filters[0].column: 'dim2' is a numeric dimension; 'prefix' matches string dimensions "
     "only"),
    ({"filters": [{"type": "contains", "column": "metric1", "value": "1"}]},
     "filters[0].column: 'metric1' is the metric; 'contains' matches string dimensions only"),
    ({"filters": [{"type": "regex", "column": "at", "value": "1"}]},
     "filters[0].column: 'at' is the timestamp"),
    ({"filters": [{"type": "prefix", "column": "dim1", "value": None}]},
     "filters[0].value: 'prefix' needs a string, got null"),
    ({"filters": [{"type": "prefix", "column": "dim1", "value": ["a"]}]},
     "filters[0].value: 'prefix' needs a string, got an array"),
    ({"filters": [{"type": "regex", "column": "dim1", "value": "(unclosed"}]},
     "filters[0].value: bad regex '(unclosed': missing ), unterminated subpattern"),
    ({"filters": [{"type": "not", "filter": {"type": "regex", "column": "dim1",
                                             "value": "a**"}}]},
     "filters[0].filter.value: bad regex 'a**'"),
    ({"filters": [{"type": "regex", "column": "dim1", "value": "^(a+)+$"}]},
     "filters[0].value: regex '^(a+)+$' repeats a group that holds an unbounded repeat"),
    ({"filters": [{"type": "regex", "column": "dim1", "value": "a" * 1001}]},
     "filters[0].value: regex longer than 1000 characters"),
    ({"filters": [{"type": "contains", "column": "dim1", "value": "a",
                   "caseInsensitive": "yes"}]},
     "filters[0].caseInsensitive: expected true or false, got 'yes'"),
    ({"filters": [{"type": "prefix", "column": "dim1", "value": "a", "values": "b"}]},
     "filters[0]: unknown key 'values'"),
])
def test_invalid_additions_name_the_part(schema: Schema, query: object, message: str) -> None:
    with pytest.raises(QueryError) as e:
        parse_query(query, schema)
    assert message in str(e.value)
