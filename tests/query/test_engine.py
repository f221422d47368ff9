"""The query engine on the original's test cases (reference §9) and our fixes of its faults."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gumshoe.db import DB
from gumshoe.errors import QueryError
from gumshoe.service import query_rows

from .helpers import hour, make_db


def q(db: DB, **query: Any) -> list[dict[str, Any]]:
    return query_rows(db, query)


def sum_metric1(db: DB, *filters: dict[str, Any]) -> int:
    rows = q(db, aggregates=[{"type": "sum", "column": "metric1"}], filters=list(filters))
    assert len(rows) == 1
    return rows[0]["metric1"]


@pytest.fixture(params=["memtable", "flushed", "split"])
def state(request: pytest.FixtureRequest) -> str:
    """Run each test on unflushed rows, flushed rows, and half of each."""
    return request.param


def load(db: DB, rows: list[dict[str, Any]], state: str) -> DB:
    if state == "split":
        db.insert(rows[: len(rows) // 2])
        db.flush()
        db.insert(rows[len(rows) // 2:])
    else:
        db.insert(rows)
        if state == "flushed":
            db.flush()
    return db


@pytest.fixture
def filter_db(state: str) -> DB:
    return load(make_db(), [{"at": 0, "dim1": "string1", "metric1": 1},
                            {"at": 0, "dim1": "string2", "metric1": 2}], state)


@pytest.fixture
def nil_db(state: str) -> DB:
    return load(make_db(), [{"at": 0, "dim1": "a", "metric1": 1},
                            {"at": 0, "dim1": "b", "metric1": 2},
                            {"at": 0, "dim1": None, "metric1": 4}], state)


def test_sums(state: str) -> None:  # T17
    db = load(make_db(metrics=(("metric1", "uint32"), ("metric2", "float32"))),
              [{"at": 0, "dim1": "string1", "metric1": 1, "metric2": 1},
               {"at": 0, "dim1": "string2", "metric1": 2, "metric2": 2}], state)
    assert q(db, aggregates=[{"column": "metric1"}, {"column": "metric2"}]) == [
        {"metric1": 3, "metric2": 3.0, "rowCount": 2}]


@pytest.mark.parametrize(("flt", "expected"), [  # T18, T19, T20
    ({"type": "=", "column": "metric1", "value": 2}, 2),
    ({"type": "=", "column": "dim1", "value": "string2"}, 2),
    ({"type": "=", "column": "at", "value": 0}, 3),
    ({"type": "=", "column": "at", "value": 1}, 0),
    ({"type": "=", "column": "metric1", "value": 3}, 0),
    ({"type": "=", "column": "dim1", "value": "non-existent"}, 0),
    ({"type": "<", "column": "metric1", "value": 2}, 1),
    ({"type": "<", "column": "at", "value": 10}, 3),
    ({"type": "<", "column": "metric1", "value": 1}, 0),
    ({"type": "in", "column": "metric1", "value": [2]}, 2),
    ({"type": "in", "column": "metric1", "value": [2, 1]}, 3),
    ({"type": "in", "column": "dim1", "value": ["string1"]}, 1),
    ({"type": "in", "column": "at", "value": [0, 10, 100]}, 3),
    ({"type": "in", "column": "metric1", "value": [3]}, 0),
    ({"type": "in", "column": "dim1", "value": ["non-existent"]}, 0),
    # Ours, where the original is wrong: != an unknown string matches every row.
    ({"type": "!=", "column": "dim1", "value": "non-existent"}, 3),
    # Exact numeric comparison: no truncation of 1.5 to 1.
    ({"type": ">", "column": "metric1", "value": 1.5}, 2),
    ({"type": ">=", "column": "metric1", "value": 1.5}, 2),
    ({"type": "<=", "column": "metric1", "value": 1.5}, 1),
    ({"type": "=", "column": "metric1", "value": 2.0}, 2),
    ({"type": "=", "column": "metric1", "value": 1.5}, 0),
    ({"type": ">", "column": "metric1", "value": -1}, 3),
    ({"type": "<", "column": "metric1", "value": 10**30}, 3),
])
def test_filters(filter_db: DB, flt: dict[str, Any], expected: int) -> None:
    assert sum_metric1(filter_db, flt) == expected


def test_group_by_string(state: str) -> None:  # T21, T22
    db = load(make_db(), [{"at": 0, "dim1": "string1", "metric1": 1},
                          {"at": 0, "dim1": "string1", "metric1": 2},
                          {"at": 0, "dim1": "string2", "metric1": 5}], state)
    assert q(db, aggregates=[{"column": "metric1"}],
             groupings=[{"column": "dim1", "name": "groupbykey"}]) == [
        {"groupbykey": "string1", "metric1": 3, "rowCount": 2},
        {"groupbykey": "string2", "metric1": 5, "rowCount": 1}]


def test_group_by_time_transform(state: str) -> None:  # T23
    db = load(make_db(), [{"at": 0, "dim1": "", "metric1": 0},
                          {"at": 172800, "dim1": "", "metric1": 10},
                          {"at": 172900, "dim1": "", "metric1": 12}], state)
    assert q(db, aggregates=[{"column": "metric1"}],
             groupings=[{"column": "at", "name": "groupbykey", "timeTransform": "day"}]) == [
        {"groupbykey": 0, "metric1": 0, "rowCount": 1},
        {"groupbykey": 172800, "metric1": 22, "rowCount": 2}]


def test_nil_values(nil_db: DB) -> None:  # T24-T27
    assert q(nil_db, aggregates=[{"column": "metric1"}]) == [{"metric1": 7, "rowCount": 3}]
    assert sum_metric1(nil_db, {"column": "dim1", "value": "a"}) == 1
    assert sum_metric1(nil_db, {"column": "dim1", "value": None}) == 4
    assert sum_metric1(nil_db, {"column": "dim1", "type": "in", "value": ["b", None]}) == 6
    assert q(nil_db, aggregates=[{"column": "metric1"}],
             groupings=[{"column": "dim1", "name": "groupbykey"}]) == [
        {"groupbykey": None, "metric1": 4, "rowCount": 1},
        {"groupbykey": "a", "metric1": 1, "rowCount": 1},
        {"groupbykey": "b", "metric1": 2, "rowCount": 1}]


@pytest.mark.parametrize(("flt", "expected"), [  # the nil table
    ({"column": "dim1", "type": "=", "value": "a"}, 1),
    ({"column": "dim1", "type": "!=", "value": "a"}, 6),
    ({"column": "dim1", "type": ">", "value": "a"}, 2),
    ({"column": "dim1", "type": "<=", "value": "b"}, 3),
    ({"column": "dim1", "type": "=", "value": None}, 4),
    ({"column": "dim1", "type": "!=", "value": None}, 3),
    ({"column": "dim1", "type": "<", "value": None}, 0),
    ({"column": "dim1", "type": "in", "value": []}, 0),
    ({"column": "dim1", "type": "in", "value": [None]}, 4),
    ({"type": "not", "filter": {"column": "dim1", "type": "=", "value": "a"}}, 6),
    ({"type": "or", "filters": [{"column": "dim1", "value": "a"},
                                {"column": "dim1", "value": None}]}, 5),
    ({"type": "and", "filters": []}, 7),
    ({"type": "or", "filters": []}, 0),
])
def test_nil_table(nil_db: DB, flt: dict[str, Any], expected: int) -> None:
    assert sum_metric1(nil_db, flt) == expected


def test_small_numeric_dimension_groups_nil_first(state: str) -> None:  # T28
    db = load(make_db(dims=(("dim1", "string:uint32"), ("dim2", "uint8"))),
              [{"at": 0, "dim2": 0, "metric1": 1}, {"at": 0, "dim2": 1, "metric1": 2},
               {"at": 0, "dim2": None, "metric1": 4}], state)
    assert q(db, aggregates=[{"column": "metric1"}],
             groupings=[{"column": "dim2", "name": "groupbykey"}]) == [
        {"groupbykey": None, "metric1": 4, "rowCount": 1},
        {"groupbykey": 0, "metric1": 1, "rowCount": 1},
        {"groupbykey": 1, "metric1": 2, "rowCount": 1}]


def test_sums_do_not_overflow_column_types(state: str) -> None:  # T29
    db = load(make_db(), [{"at": 0, "dim1": "string1", "metric1": 4294967295},
                          {"at": 0, "dim1": "string2", "metric1": 4294967295}], state)
    assert q(db, aggregates=[{"column": "metric1"}])[0]["metric1"] == 8589934590


def test_int64_sums_are_exact_beyond_2_53(state: str) -> None:
    big = 2**53 + 1
    db = load(make_db(metrics=(("metric1", "int64"),)),
              [{"at": 0, "dim1": f"s{i % 2}", "metric1": big} for i in range(6)], state)
    assert q(db, aggregates=[{"column": "metric1"}])[0]["metric1"] == 6 * big
    assert [r["metric1"] for r in q(db, aggregates=[{"column": "metric1"}],
                                    groupings=["dim1"])] == [3 * big, 3 * big]


@pytest.mark.parametrize("dtype", ["uint64", "int64"])
def test_a_sum_beyond_64_bits_is_an_error_not_a_wrapped_number(state: str, dtype: str) -> None:
    top = 2**64 - 1 if dtype == "uint64" else 2**63 - 1
    rows = [{"at": hour(i % 3), "dim1": f"s{i}", "metric1": top - i} for i in range(4)]
    rows += [{"at": 0, "dim1": "small", "metric1": 1}, {"at": 0, "dim1": "tiny", "metric1": 2}]
    db = load(make_db(metrics=(("metric1", dtype),)), rows, state)
    with pytest.raises(QueryError, match=r"aggregates\[0\]: the sum of 'metric1' \(\d+\) does "
                                         f"not fit {dtype}, the type its sums are kept in"):
        query_rows(db, {"aggregates": [{"column": "metric1", "type": "average", "name": "a"},
                                 {"column": "metric1"}]})
    # groups whose own sums fit are exact, beside a group that does not fit
    with pytest.raises(QueryError, match="does not fit"):
        query_rows(db, {"aggregates": [{"column": "metric1"}], "groupings": [{"column": "at"}]})
    rows = query_rows(db, {"aggregates": [{"column": "metric1"}], "groupings": ["dim1"]})
    assert {r["dim1"]: r["metric1"] for r in rows} == {
        **{f"s{i}": top - i for i in range(4)}, "small": 1, "tiny": 2}
    assert query_rows(db, {"aggregates": [{"column": "metric1"}],
                     "filters": [{"type": "in", "column": "dim1", "value": ["s3", "tiny"]}]}
                    ) == [{"metric1": top - 1, "rowCount": 2}]


def test_int64_sums_that_cancel_are_exact(state: str) -> None:
    big = 2**62 + 12345
    values = [big, big, big, -big, -big, -big, 7]  # partial sums leave int64; the total does not
    db = load(make_db(metrics=(("metric1", "int64"),)),
              [{"at": hour(i % 2), "dim1": f"s{i}", "metric1": v} for i, v in enumerate(values)],
              state)
    assert query_rows(db, {"aggregates": [{"column": "metric1"}]}) == [{"metric1": 7, "rowCount": 7}]
    assert query_rows(db, {"aggregates": [{"column": "metric1", "type": "average"}]}) == [
        {"metric1": 1.0, "rowCount": 7}]


def test_negative_small_int_grouping(state: str) -> None:  # the original crashed here
    db = load(make_db(dims=(("i8", "int8"),)),
              [{"at": 0, "i8": -5, "metric1": 1}, {"at": 0, "i8": 7, "metric1": 2},
               {"at": 0, "i8": -128, "metric1": 3}], state)
    assert q(db, groupings=["i8"]) == [{"i8": -128, "rowCount": 1}, {"i8": -5, "rowCount": 1},
                                       {"i8": 7, "rowCount": 1}]


@pytest.mark.parametrize("dtype", ["uint32", "int64", "uint64", "float64", "float32"])
def test_wide_numeric_groupings(state: str, dtype: str) -> None:
    values = [0, 3, 2**31 + 5] if dtype != "float32" else [0.5, 0.1, 1e6]
    if dtype == "int64":
        values = [-(2**62), 3, 2**62]
    if dtype == "uint64":
        values = [0, 3, 2**64 - 1]
    db = load(make_db(dims=(("d", dtype),)),
              [{"at": 0, "d": v, "metric1": 1} for v in values * 2] +
              [{"at": 0, "metric1": 1}], state)
    rows = q(db, groupings=["d"], aggregates=[{"column": "metric1"}])
    assert rows == [{"d": None, "metric1": 1, "rowCount": 1}] + [
        {"d": v, "metric1": 2, "rowCount": 2} for v in sorted(values)]


class TestConfigS:
    """Reference §9.1: the config-S data set, V2-V7 (our answers where the original errs)."""

    @pytest.fixture
    def db(self, state: str) -> DB:
        db = make_db(dims=(("name", "string:uint16"), ("country", "string:uint8"),
                           ("age", "uint8"), ("score", "int32")),
                     metrics=(("visits", "uint8"), ("clicks", "uint32"), ("ratio", "float32")))
        now = hour(1000) + 100
        return load(db, [
            {"at": now, "name": "Starbuck", "country": "USA", "age": 21, "visits": 1,
             "clicks": 1, "ratio": 0.5},
            {"at": now, "name": "Boomer", "country": "USA", "age": 22, "visits": 2, "clicks": 2},
            {"at": now - 3600, "name": "Helo", "country": "CAN", "age": 23, "visits": 3,
             "clicks": 3, "score": -5},
            {"at": now, "name": "Starbuck", "country": "USA", "age": 21, "visits": 200,
             "clicks": 1, "ratio": 0.25},
            {"at": now, "name": "Starbuck", "country": "USA", "age": 21, "visits": 100,
             "clicks": 1},
        ], state)

    def test_v2_aggregates(self, db: DB) -> None:
        assert q(db, aggregates=[{"type": "sum", "column": "clicks"},
                                 {"type": "average", "name": "avgVisits", "column": "visits"},
                                 {"type": "sum", "column": "ratio"}]) == [
            {"clicks": 8, "avgVisits": 61.2, "ratio": 0.75, "rowCount": 5}]

    def test_v3_v4_groupings(self, db: DB) -> None:
        assert q(db, aggregates=[{"column": "clicks"}], groupings=["country"]) == [
            {"country": "CAN", "clicks": 3, "rowCount": 1},
            {"country": "USA", "clicks": 5, "rowCount": 4}]
        assert q(db, aggregates=[{"column": "clicks"}],
                 groupings=[{"column": "at", "name": "t"}]) == [
            {"t": hour(999), "clicks": 3, "rowCount": 1},
            {"t": hour(1000), "clicks": 5, "rowCount": 4}]
        assert q(db, groupings=[{"column": "at", "name": "t", "timeTransform": "day"}]) == [
            {"t": hour(984), "rowCount": 5}]

    def test_v5_average_of_nothing_is_null(self, db: DB) -> None:
        assert q(db, aggregates=[{"type": "average", "column": "visits"}],
                 filters=[{"column": "name", "value": "nobody"}]) == [
            {"visits": None, "rowCount": 0}]

    def test_v6_empty_query(self, db: DB) -> None:
        assert q(db) == [{"rowCount": 5}]

    @pytest.mark.parametrize(("flt", "count"), [
        ({"column": "name", "type": "!=", "value": "nobody"}, 5),
        ({"column": "name", "type": "!=", "value": "Helo"}, 4),
        ({"column": "score", "type": "=", "value": None}, 4),
        ({"column": "score", "type": "!=", "value": None}, 1),
        ({"column": "score", "type": "<", "value": None}, 0),
        ({"column": "score", "type": "!=", "value": -5}, 4),
        ({"column": "score", "type": "<", "value": 0}, 1),
        ({"column": "score", "type": "in", "value": [None]}, 4),
        ({"column": "score", "type": "in", "value": []}, 0),
        ({"column": "name", "type": ">", "value": "Helo"}, 3),  # Starbuck (by string)
        ({"column": "name", "type": "<", "value": "Helo"}, 1),  # Boomer
        ({"column": "age", "type": ">", "value": 300}, 0),
        ({"column": "age", "type": ">", "value": -1}, 5),
        ({"column": "age", "type": ">=", "value": 21.5}, 2),
        ({"column": "clicks", "type": "=", "value": 1}, 0),  # rolled-up Starbuck has 3
        ({"column": "clicks", "type": "=", "value": 3}, 4),
        ({"column": "visits", "type": ">", "value": 255}, 3),  # 301: no uint8 wrap
        ({"column": "at", "type": ">=", "value": hour(1000)}, 4),
    ])
    def test_v7_filters(self, db: DB, flt: dict[str, Any], count: int) -> None:
        assert q(db, filters=[flt]) == [{"rowCount": count}]

    def test_several_groupings_order_by_and_limit(self, db: DB) -> None:
        rows = q(db, aggregates=[{"column": "visits"}], groupings=["country", "name"])
        assert [(r["country"], r["name"]) for r in rows] == [
            ("CAN", "Helo"), ("USA", "Boomer"), ("USA", "Starbuck")]
        top = q(db, aggregates=[{"column": "visits"}], groupings=["name"],
                orderBy=[{"column": "visits", "descending": True}], limit=2)
        assert top == [{"name": "Starbuck", "visits": 301, "rowCount": 3},
                       {"name": "Helo", "visits": 3, "rowCount": 1}]
        by_count = q(db, groupings=["name"], orderBy=["rowCount"], limit=1)
        assert by_count == [{"name": "Boomer", "rowCount": 1}]
        assert q(db, groupings=["name"], limit=0) == []

    def test_order_by_average_puts_nulls_last_when_descending(self, db: DB) -> None:
        rows = q(db, aggregates=[{"type": "average", "column": "ratio", "name": "r"}],
                 groupings=["name"], orderBy=[{"column": "r", "descending": True}])
        assert [r["name"] for r in rows] == ["Starbuck", "Boomer", "Helo"]


def test_group_limit_is_a_clear_error() -> None:
    db = make_db(dims=(("d", "uint32"),), max_groups=10)
    db.insert([{"at": 0, "d": i, "metric1": 1} for i in range(50)])
    with pytest.raises(QueryError, match="more than 10 groups"):
        query_rows(db, {"groupings": ["d"]})


def test_grouped_query_with_no_rows_is_empty_and_total_is_one_row() -> None:
    db = make_db()
    assert query_rows(db, {"groupings": ["dim1"]}) == []
    assert query_rows(db, {"aggregates": [{"column": "metric1"}]}) == [{"metric1": 0, "rowCount": 0}]


def test_rows_are_visible_at_once_and_many_intervals_scan_in_parallel() -> None:
    db = make_db(query_parallelism=2)
    rows = [{"at": hour(h), "dim1": f"s{h % 3}", "metric1": h} for h in range(48)]
    db.insert(rows)
    t0 = time.perf_counter()
    result = query_rows(db, {"aggregates": [{"column": "metric1"}],
                       "groupings": [{"column": "at", "timeTransform": "day", "name": "d"}]})
    assert time.perf_counter() - t0 < 30
    assert result == [{"d": 0, "metric1": sum(range(24)), "rowCount": 24},
                      {"d": 86400, "metric1": sum(range(24, 48)), "rowCount": 24}]
