"""The #14 query-language additions through the engine, hand-checked: having, post-aggregations,
offset, calendar buckets in time zones, zero-fill, string matching. (Random queries against the
naive reference are in tests/property/; these pin the exact answers.)"""

from __future__ import annotations

from typing import Any

import pytest

from gumshoe.db import DB
from gumshoe.errors import QueryError
from gumshoe.service import query_rows

from .helpers import hour, make_db

DAY = 86400
# 2024-03-31: Berlin switches to summer time at 01:00 UTC; 2024-03-29 was a Friday.
MAR29 = 1711670400  # 2024-03-29 00:00 UTC


@pytest.fixture(params=["memtable", "flushed", "split"])
def state(request: pytest.FixtureRequest) -> str:
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


def q(db: DB, **query: Any) -> list[dict[str, Any]]:
    return query_rows(db, query)


TWO = (("page", "string:uint16"), ("country", "string:uint8"))
CLICKS = (("visits", "uint32"), ("clicks", "uint64"))


@pytest.fixture
def web(state: str) -> DB:
    """Visits and clicks per page and country over 3 hours."""
    rows = [
        {"at": hour(0), "page": "/blog/a", "country": "US", "visits": 10, "clicks": 2},
        {"at": hour(0), "page": "/blog/b", "country": "DE", "visits": 4, "clicks": 3},
        {"at": hour(1), "page": "/Blog/C", "country": "US", "visits": 6, "clicks": 0},
        {"at": hour(1), "page": "/home", "country": None, "visits": 0, "clicks": 0},
        {"at": hour(2), "page": None, "country": "DE", "visits": 5, "clicks": 5},
        {"at": hour(2), "page": "/blog/a", "country": "US", "visits": 2, "clicks": 1},
    ]
    return load(make_db(dims=TWO, metrics=CLICKS), rows, state)


# -- having -------------------------------------------------------------------------------------

BY_COUNTRY = {"aggregates": [{"column": "clicks"}, {"column": "visits"},
                             {"type": "average", "column": "visits", "name": "avg"}],
              "groupings": ["country"]}


@pytest.mark.parametrize(("having", "countries"), [
    ({"column": "clicks", "type": ">", "value": 3}, ["DE"]),
    ({"column": "clicks", "type": ">=", "value": 3}, ["US", "DE"]),
    ({"column": "clicks", "type": "<=", "value": 3}, [None, "US"]),
    ({"column": "clicks", "type": "<", "value": 3}, [None]),
    ({"column": "clicks", "type": "=", "value": 3}, ["US"]),
    ({"column": "clicks", "type": "=", "value": 3.5}, []),
    ({"column": "clicks", "type": "<", "value": 3.5}, [None, "US"]),
    ({"column": "clicks", "value": -1, "type": ">"}, [None, "DE", "US"]),
    ({"column": "clicks", "value": 2**64 + 5, "type": "<"}, [None, "DE", "US"]),
    ({"column": "rowCount", "type": "in", "value": [1, 2]}, [None, "DE"]),
    ({"column": "avg", "type": ">", "value": 5}, ["US"]),
    ({"column": "country", "value": None}, [None]),
    ({"column": "country", "type": "!=", "value": "US"}, [None, "DE"]),  # nil != x is true
    ({"column": "country", "type": "<", "value": "US"}, ["DE"]),  # ordered: nil never
    ({"column": "country", "type": "in", "value": ["US", None]}, [None, "US"]),
    ({"type": "not", "filter": {"column": "country", "value": "US"}}, [None, "DE"]),
    ({"type": "or", "filters": [{"column": "rowCount", "value": 1},
                                {"column": "clicks", "value": 3}]}, [None, "US"]),
    ([{"column": "rowCount", "type": ">", "value": 1}, {"column": "visits", "value": 9}],
     ["DE"]),
])
def test_having(web: DB, having: Any, countries: list[str | None]) -> None:
    rows = q(web, **BY_COUNTRY, having=having)
    assert sorted(r["country"] or "" for r in rows) == sorted(c or "" for c in countries)


def test_having_on_a_null_average_and_after_merging(state: str) -> None:
    # the same key in unflushed and flushed rows: having sees the merged group (rowCount 2)
    db = load(make_db(), [{"at": 0, "dim1": "x", "metric1": 1},
                          {"at": 0, "dim1": "x", "metric1": 1},
                          {"at": 0, "dim1": "y", "metric1": 5}], state)
    assert q(db, aggregates=[{"column": "metric1"}], groupings=["dim1"],
             having={"column": "rowCount", "value": 2}) == [
        {"dim1": "x", "metric1": 2, "rowCount": 2}]
    none = q(db, aggregates=[{"type": "average", "column": "metric1", "name": "a"}],
             filters=[{"column": "dim1", "value": "nope"}])
    assert none == [{"a": None, "rowCount": 0}]
    assert q(db, aggregates=[{"type": "average", "column": "metric1", "name": "a"}],
             filters=[{"column": "dim1", "value": "nope"}],
             having={"column": "a", "value": None}) == none
    assert q(db, aggregates=[{"type": "average", "column": "metric1", "name": "a"}],
             filters=[{"column": "dim1", "value": "nope"}],
             having={"column": "a", "type": ">", "value": -1}) == []


def test_having_compares_64_bit_sums_exactly(state: str) -> None:
    big = 2**53
    db = load(make_db(metrics=(("metric1", "int64"),)),
              [{"at": 0, "dim1": "a", "metric1": big}, {"at": 0, "dim1": "b", "metric1": big},
               {"at": 0, "dim1": "b", "metric1": 1}], state)
    base = {"aggregates": [{"column": "metric1"}], "groupings": ["dim1"]}
    assert [r["dim1"] for r in q(db, **base, having={"column": "metric1", "type": ">",
                                                     "value": big})] == ["b"]
    assert [r["dim1"] for r in q(db, **base, having={"column": "metric1",
                                                     "value": big + 1})] == ["b"]
    assert [r["dim1"] for r in q(db, **base, having={"column": "metric1",
                                                     "value": float(big)})] == ["a"]


# -- post-aggregations, orderBy, offset ----------------------------------------------------------

def test_post_aggregations(web: DB) -> None:
    rows = q(web, aggregates=[{"column": "clicks"}, {"column": "visits"}],
             groupings=["country"],
             postAggregations=[{"name": "ctr", "expression": "clicks / visits"},
                               {"name": "pct", "expression": "ctr * 100"},
                               {"name": "neg", "expression": "-(rowCount - 1) * 2"}],
             orderBy=[{"column": "ctr", "descending": True}])
    assert rows == [
        {"country": "DE", "clicks": 8, "visits": 9, "ctr": 8 / 9, "pct": 8 / 9 * 100,
         "neg": -2.0, "rowCount": 2},
        {"country": "US", "clicks": 3, "visits": 18, "ctr": 3 / 18, "pct": 3 / 18 * 100,
         "neg": -4.0, "rowCount": 3},
        {"country": None, "clicks": 0, "visits": 0, "ctr": None, "pct": None, "neg": -0.0,
         "rowCount": 1},  # 0 / 0: null, and null sorts last when descending
    ]
    assert list(rows[0]) == ["country", "clicks", "visits", "ctr", "pct", "neg", "rowCount"]


def test_post_aggregation_in_having_and_without_groupings(web: DB) -> None:
    post = [{"name": "ctr", "expression": "clicks / visits"}]
    agg = [{"column": "clicks"}, {"column": "visits"}]
    assert q(web, aggregates=agg, postAggregations=post, groupings=["country"],
             having={"column": "ctr", "type": ">", "value": 0.5}) == [
        {"country": "DE", "clicks": 8, "visits": 9, "ctr": 8 / 9, "rowCount": 2}]
    assert q(web, aggregates=agg, postAggregations=post) == [
        {"clicks": 11, "visits": 27, "ctr": 11 / 27, "rowCount": 6}]
    assert q(web, aggregates=agg, postAggregations=post,
             having={"column": "ctr", "type": "<", "value": 0.1}) == []


def test_offset_pages_through_the_ordered_result(web: DB) -> None:
    base = {"aggregates": [{"column": "visits"}], "groupings": ["page", "country"],
            "orderBy": [{"column": "visits", "descending": True}]}
    everything = q(web, **base)
    assert len(everything) == 5
    pages = [q(web, **base, limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    assert pages[0] + pages[1] + pages[2] == everything
    assert q(web, **base, offset=3) == everything[3:]
    assert q(web, **{**base, "orderBy": []}, offset=1, limit=1) == [
        q(web, **{**base, "orderBy": []})[1]]


# -- calendar buckets and time zones ------------------------------------------------------------

@pytest.fixture
def days(state: str) -> DB:
    """One row per 6 hours from 2024-03-29 00:00 UTC to 2024-04-02 18:00 UTC."""
    rows = [{"at": MAR29 + i * 6 * 3600, "dim1": "x", "metric1": 1} for i in range(20)]
    return load(make_db(), rows, state)


def test_days_in_berlin_across_the_dst_change(days: DB) -> None:
    rows = q(days, groupings=[{"column": "at", "name": "d", "timeTransform": "day",
                               "timeZone": "Europe/Berlin"}])
    # Berlin midnight: 23:00 UTC the day before until 2024-03-31, then 22:00 UTC.
    assert [(r["d"], r["rowCount"]) for r in rows] == [
        (MAR29 - 3600, 4), (MAR29 + DAY - 3600, 4), (MAR29 + 2 * DAY - 3600, 4),
        (MAR29 + 3 * DAY - 7200, 4), (MAR29 + 4 * DAY - 7200, 4)]
    utc = q(days, groupings=[{"column": "at", "name": "d", "timeTransform": "day"}])
    assert [r["d"] for r in utc] == [MAR29 + k * DAY for k in range(5)]


def test_weeks_months_quarters_years(days: DB) -> None:
    def buckets(unit: str, zone: str = "UTC") -> list[tuple[int, int]]:
        rows = q(days, groupings=[{"column": "at", "name": "t", "timeTransform": unit,
                                   "timeZone": zone}])
        return [(r["t"], r["rowCount"]) for r in rows]

    monday = MAR29 - 4 * DAY  # Monday 2024-03-25
    assert buckets("week") == [(monday, 12), (monday + 7 * DAY, 8)]
    assert buckets("week", "America/New_York") == [(monday + 4 * 3600, 13),
                                                   (monday + 7 * DAY + 4 * 3600, 7)]
    assert buckets("month") == [(1709251200, 12), (1711929600, 8)]  # March, April
    assert buckets("quarter", "Asia/Kolkata") == [(1704047400, 12), (1711909800, 8)]
    # Lord Howe is at +11 (summer time) on 1 January
    assert buckets("year", "Australia/Lord_Howe") == [(1704067200 - 11 * 3600, 20)]


def test_a_time_transform_of_a_uint32_dimension_in_a_zone(state: str) -> None:
    db = load(make_db(dims=(("seen", "uint32"),)),
              [{"at": 0, "seen": MAR29 + 3600 * h} for h in (0, 5, 6, 30)] + [{"at": 0}], state)
    rows = q(db, groupings=[{"column": "seen", "timeTransform": "day",
                             "timeZone": "Asia/Kathmandu"}])
    start = MAR29 - (5 * 3600 + 45 * 60)  # local midnight at +05:45
    assert [(r["seen"], r["rowCount"]) for r in rows] == [
        (None, 1), (start, 3), (start + DAY, 1)]


# -- zero-fill ----------------------------------------------------------------------------------

@pytest.fixture
def sparse(state: str) -> DB:
    rows = [{"at": hour(1), "dim1": "a", "metric1": 3}, {"at": hour(4), "dim1": "b",
                                                         "metric1": 4},
            {"at": hour(4) + 5, "dim1": "a", "metric1": 1}]
    return load(make_db(), rows, state)


def test_fill_over_the_datas_extent(sparse: DB) -> None:
    rows = q(sparse, aggregates=[{"column": "metric1"},
                                 {"type": "average", "column": "metric1", "name": "avg"}],
             groupings=[{"column": "at", "name": "h", "timeTransform": "hour", "fill": True}])
    assert rows == [
        {"h": hour(1), "metric1": 3, "avg": 3.0, "rowCount": 1},
        {"h": hour(2), "metric1": 0, "avg": None, "rowCount": 0},
        {"h": hour(3), "metric1": 0, "avg": None, "rowCount": 0},
        {"h": hour(4), "metric1": 5, "avg": 2.5, "rowCount": 2},
    ]


def test_fill_over_the_filters_range_for_every_combination(sparse: DB) -> None:
    rows = q(sparse, aggregates=[{"column": "metric1"}],
             groupings=["dim1", {"column": "at", "name": "h", "fill": True}],
             filters=[{"type": ">=", "column": "at", "value": hour(0)},
                      {"type": "<", "column": "at", "value": hour(3)}])
    assert [(r["dim1"], r["h"], r["metric1"], r["rowCount"]) for r in rows] == [
        ("a", hour(0), 0, 0), ("a", hour(1), 3, 1), ("a", hour(2), 0, 0)]
    # b is present in the whole result, not in this range: no combination, no rows for it
    rows = q(sparse, aggregates=[{"column": "metric1"}],
             groupings=["dim1", {"column": "at", "name": "h", "fill": True}],
             filters=[{"type": ">", "column": "at", "value": hour(2) + 0.5}])
    assert [(r["dim1"], r["h"], r["rowCount"]) for r in rows] == [
        ("a", hour(3), 0), ("a", hour(4), 1), ("b", hour(3), 0), ("b", hour(4), 1)]


def test_fill_with_nothing_matching(sparse: DB) -> None:
    window = [{"type": ">=", "column": "at", "value": hour(10)},
              {"type": "<=", "column": "at", "value": hour(12)}]
    assert q(sparse, groupings=[{"column": "at", "fill": True}], filters=window) == [
        {"at": hour(h), "rowCount": 0} for h in (10, 11, 12)]
    assert q(sparse, groupings=[{"column": "at", "fill": True}, "dim1"], filters=window) == []
    # one side unbounded, and nothing scanned there: no range, nothing to fill
    assert q(sparse, groupings=[{"column": "at", "fill": True}],
             filters=[{"type": ">=", "column": "at", "value": hour(10)}]) == []


def test_fill_comes_before_having_order_and_limit(sparse: DB) -> None:
    rows = q(sparse, aggregates=[{"column": "metric1"}],
             groupings=[{"column": "at", "name": "h", "fill": True}],
             having={"column": "rowCount", "value": 0},
             orderBy=[{"column": "h", "descending": True}], limit=1)
    assert rows == [{"h": hour(3), "metric1": 0, "rowCount": 0}]


def test_fill_in_a_zone_by_day(state: str) -> None:
    db = load(make_db(), [{"at": MAR29 + 12 * 3600, "dim1": "x", "metric1": 1},
                          {"at": MAR29 + 3 * DAY + 12 * 3600, "dim1": "x", "metric1": 1}],
              state)
    rows = q(db, groupings=[{"column": "at", "name": "d", "timeTransform": "day",
                             "timeZone": "Europe/Berlin", "fill": True}])
    assert [(r["d"], r["rowCount"]) for r in rows] == [
        (MAR29 - 3600, 1), (MAR29 + DAY - 3600, 0), (MAR29 + 2 * DAY - 3600, 0),
        (MAR29 + 3 * DAY - 7200, 1)]


def test_a_fill_larger_than_max_groups_is_refused() -> None:
    db = make_db(max_groups=100)
    db.insert([{"at": 0, "dim1": "a"}, {"at": hour(200), "dim1": "b"}])
    with pytest.raises(QueryError, match=r"groupings\[0\].fill: zero-fill would produce 201 "
                                         r"rows, more than max_groups \(100\)"):
        query_rows(db, {"groupings": [{"column": "at", "fill": True}]})
    with pytest.raises(QueryError, match=r"groupings\[1\].fill: .* more than max_groups"):
        query_rows(db, {"groupings": ["dim1", {"column": "at", "timeTransform": "minute",
                                         "fill": True}]})
    assert len(query_rows(db, {"groupings": [{"column": "at", "timeTransform": "day",
                                        "fill": True}]})) == 9


# -- string matching ----------------------------------------------------------------------------

@pytest.mark.parametrize(("flt", "pages"), [
    ({"type": "prefix", "value": "/blog/"}, ["/blog/a", "/blog/b"]),
    ({"type": "prefix", "value": "/blog/", "caseInsensitive": True},
     ["/Blog/C", "/blog/a", "/blog/b"]),
    ({"type": "prefix", "value": ""}, ["/Blog/C", "/blog/a", "/blog/b", "/home"]),
    ({"type": "contains", "value": "o"}, ["/Blog/C", "/blog/a", "/blog/b", "/home"]),
    ({"type": "contains", "value": "C"}, ["/Blog/C"]),
    ({"type": "contains", "value": "c", "caseInsensitive": True}, ["/Blog/C"]),
    ({"type": "regex", "value": "^/[a-z]+/[ab]$"}, ["/blog/a", "/blog/b"]),
    ({"type": "regex", "value": "B"}, ["/Blog/C"]),
    ({"type": "regex", "value": "^/blog", "caseInsensitive": True},
     ["/Blog/C", "/blog/a", "/blog/b"]),
    ({"type": "regex", "value": "zzz"}, []),
])
def test_string_matching(web: DB, flt: dict[str, Any], pages: list[str]) -> None:
    rows = q(web, groupings=["page"], filters=[{**flt, "column": "page"}])
    assert [r["page"] for r in rows] == pages  # nil never matches


def test_not_a_match_includes_nil(web: DB) -> None:
    rows = q(web, groupings=["page"],
             filters=[{"type": "not", "filter": {"type": "prefix", "column": "page",
                                                 "value": "/blog/"}}])
    assert [r["page"] for r in rows] == [None, "/Blog/C", "/home"]


def test_matching_sees_strings_added_after_an_earlier_query(state: str) -> None:
    db = load(make_db(), [{"at": 0, "dim1": "apple"}, {"at": 0, "dim1": "banana"}], state)
    flt = [{"type": "contains", "column": "dim1", "value": "an"}]
    assert q(db, groupings=["dim1"], filters=flt) == [{"dim1": "banana", "rowCount": 1}]
    db.insert([{"at": 0, "dim1": "mango"}, {"at": 0, "dim1": "kiwi"}])
    assert [r["dim1"] for r in q(db, groupings=["dim1"], filters=flt)] == ["banana", "mango"]
    assert q(db, filters=[{"type": "contains", "column": "dim1", "value": "AN",
                           "caseInsensitive": True}]) == [{"rowCount": 2}]


def test_matching_within_and_or(web: DB) -> None:
    rows = q(web, aggregates=[{"column": "visits"}],
             filters=[{"type": "or", "filters": [
                 {"type": "prefix", "column": "page", "value": "/home"},
                 {"type": "and", "filters": [{"type": "regex", "column": "page", "value": "a$"},
                                             {"column": "country", "value": "US"}]}]}])
    assert rows == [{"visits": 12, "rowCount": 3}]


def test_fill_with_huge_filter_values(sparse: DB) -> None:
    huge = 10**400  # beyond float64: compared exactly, no overflow
    assert q(sparse, groupings=[{"column": "at", "fill": True}],
             filters=[{"type": "in", "column": "at", "value": [huge, hour(2)]}]) == [
        {"at": h, "rowCount": 0} for h in (hour(2),)]
    rows = q(sparse, groupings=[{"column": "at", "timeTransform": "year", "fill": True}],
             filters=[{"type": "<", "column": "at", "value": huge},
                      {"type": ">", "column": "at", "value": -huge}])
    # the range is cut to what a uint32 timestamp can hold: 1970 to 2106
    assert len(rows) == 137 and rows[0] == {"at": 0, "rowCount": 3}
    assert rows[-1] == {"at": 4291747200, "rowCount": 0}
    assert q(sparse, groupings=[{"column": "at", "fill": True}],
             filters=[{"column": "at", "value": huge}]) == []
