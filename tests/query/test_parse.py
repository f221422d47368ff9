"""Query parsing and validation: every invalid query is a QueryError naming its part."""

from __future__ import annotations

import pytest

from gumshoe.errors import QueryError
from gumshoe.query import Compare, Logical, parse_query
from gumshoe.schema import Schema

from .helpers import make_db


@pytest.fixture(scope="module")
def schema() -> Schema:
    return make_db(dims=(("dim1", "string:uint32"), ("dim2", "uint8"), ("f", "float32")),
                   metrics=(("metric1", "uint32"), ("metric2", "float32"))).schema


def test_original_parse_example(schema: Schema) -> None:  # T15
    q = parse_query({"aggregates": [{"type": "sum", "name": "metric1", "column": "metric1"}],
                     "groupings": [{"column": "dim1", "name": "grouping-name"}],
                     "filters": [{"type": "!=", "column": "at", "value": 1}]}, schema)
    assert q.aggregates[0].type == "sum"
    assert q.groupings[0].name == "grouping-name"
    assert isinstance(q.filter, Compare) and q.filter.op == "!="


def test_default_names_and_several_groupings(schema: Schema) -> None:  # T16
    q = parse_query({"aggregates": [{"type": "sum", "column": "metric1"}],
                     "groupings": [{"column": "dim1"}, "dim2"]}, schema)
    assert q.aggregates[0].name == "metric1"
    assert [g.name for g in q.groupings] == ["dim1", "dim2"]


def test_keys_are_case_insensitive_and_type_defaults(schema: Schema) -> None:
    q = parse_query({"AGGREGATES": [{"Column": "metric1"}],
                     "Filters": [{"COLUMN": "dim2", "Value": 3}]}, schema)
    assert q.aggregates[0].type == "sum"
    assert isinstance(q.filter, Compare) and q.filter.op == "="


def test_empty_query_is_valid(schema: Schema) -> None:
    q = parse_query({}, schema)
    assert q.aggregates == () and q.groupings == () and q.filter is None


def test_several_filters_are_anded_and_compositions_parse(schema: Schema) -> None:
    q = parse_query({"filters": [
        {"column": "dim2", "type": ">", "value": 1},
        {"type": "or", "filters": [{"column": "dim1", "value": "a"},
                                   {"type": "not", "filter": {"column": "dim1", "value": None}}]},
    ]}, schema)
    assert isinstance(q.filter, Logical) and q.filter.op == "and"
    assert isinstance(q.filter.operands[1], Logical) and q.filter.operands[1].op == "or"


def test_canonical_json_round_trips(schema: Schema) -> None:
    obj = {"aggregates": [{"type": "average", "column": "metric1", "name": "avg"}],
           "groupings": [{"column": "at", "name": "t", "timeTransform": "day"}, "dim1"],
           "filters": [{"type": "in", "column": "dim1", "value": ["a", None]},
                       {"type": "not", "filter": {"type": "<", "column": "metric1",
                                                  "value": 3}}],
           "orderBy": [{"column": "avg", "descending": True}], "limit": 3}
    q = parse_query(obj, schema)
    assert parse_query(q.to_json(), schema) == q


@pytest.mark.parametrize(("query", "message"), [
    ([], "query: expected an object"),
    ({"aggregates": {}}, "aggregates: expected an array"),
    ({"aggregates": [{"column": "nope"}]}, "aggregates[0].column: unknown column 'nope'"),
    ({"aggregates": [{"column": "dim1"}]}, "aggregates[0]: 'dim1' is a dimension, not a metric"),
    ({"aggregates": [{"column": "metric1", "type": "count"}]}, "aggregates[0].type: bad aggregate"),
    ({"aggregates": [{"column": "metric1", "nme": "x"}]}, "aggregates[0]: unknown key 'nme'"),
    ({"aggregates": [{"column": "metric1"}, {"column": "metric1"}]},
     "aggregates[1].name: output name 'metric1' is already used"),
    ({"aggregates": [{"column": "metric1", "name": "rowCount"}]}, "'rowCount' is reserved"),
    ({"groupings": [5]}, "groupings[0]: invalid grouping 5"),
    ({"groupings": ["metric1"]}, "groupings[0]: 'metric1' is a metric"),
    ({"groupings": [{"column": "at", "timeTransform": "fortnight"}]},
     "groupings[0].timeTransform: bad time transform 'fortnight' (minute, hour, day, week, "
     "month, quarter or year)"),
    ({"groupings": [{"column": "dim1", "timeTransform": "day"}]},
     "groupings[0].timeTransform: cannot apply timestamp truncation to non-uint32 column "
     "'dim1' (string:uint32)"),
    ({"groupings": [{"column": "f", "timeTransform": "day"}]}, "non-uint32 column 'f' (float32)"),
    ({"filters": {}}, "filters: expected an array"),
    ({"filters": [5]}, "filters[0]: expected a filter object"),
    ({"filters": [{"column": "cuntry", "value": 1}]}, "filters[0].column: unknown column 'cuntry'"),
    ({"filters": [{"column": "dim2", "type": "like", "value": 1}]},
     "filters[0].type: 'like' is not a valid filter type"),
    ({"filters": [{"column": "dim1", "value": 5}]},
     "filters[0].value: 'dim1' is a string dimension; expected a string or null, got 5"),
    ({"filters": [{"column": "dim2", "value": "x"}]},
     "filters[0].value: 'dim2' is numeric; expected a number, got 'x'"),
    ({"filters": [{"column": "dim2", "value": True}]}, "expected a number, got true"),
    ({"filters": [{"column": "metric1", "value": None}]},
     "filters[0].value: null can only be compared with a dimension"),
    ({"filters": [{"column": "at", "value": None}]}, "'at' is the timestamp"),
    ({"filters": [{"column": "at", "value": "x"}]}, "expected a number"),
    ({"filters": [{"column": "dim2", "type": "in", "value": 5}]},
     "filters[0].value: 'in' needs an array, got 5"),
    ({"filters": [{"column": "dim1", "type": "in", "value": ["a", 5]}]},
     "filters[0].value[1].value: 'dim1' is a string dimension"),
    ({"filters": [{"column": "metric1", "type": "in", "value": [1, None]}]},
     "filters[0].value[1].value: null can only be compared"),
    ({"filters": [{"type": "and", "filters": [{"column": "x"}]}]},
     "filters[0].filters[0].column: unknown column 'x'"),
    ({"filters": [{"type": "not"}]}, "filters[0].filter: a 'not' filter needs one filter"),
    ({"filters": [{"type": "not", "filter": {"column": "dim2", "value": []}}]},
     "filters[0].filter.value"),
    ({"orderBy": [{"column": "nope"}]}, "orderBy[0].column: 'nope' is not an aggregate"),
    ({"orderBy": [{"column": []}]}, "orderBy[0].column: an array is not an aggregate"),
    ({"orderBy": [{"column": {}}]}, "orderBy[0].column: an object is not an aggregate"),
    ({"groupings": [{"column": "dim2", "timeTransform": "hour"}]},
     "cannot apply timestamp truncation to non-uint32 column"),
    ({"orderBy": [{"column": "rowCount", "descending": "yes"}]}, "orderBy[0].descending"),
    ({"limit": -1}, "limit: expected a non-negative integer"),
    ({"limit": 2.5}, "limit: expected a non-negative integer"),
    ({"aggregatez": []}, "query: unknown key 'aggregatez'"),
])
def test_invalid_queries_name_the_part(schema: Schema, query: object, message: str) -> None:
    with pytest.raises(QueryError) as e:
        parse_query(query, schema)
    assert message in str(e.value)


def test_deep_nesting_is_refused(schema: Schema) -> None:
    f: dict[str, object] = {"column": "dim2", "value": 1}
    for _ in range(40):
        f = {"type": "not", "filter": f}
    with pytest.raises(QueryError, match="nested too deeply"):
        parse_query({"filters": [f]}, schema)
