"""The #14 query-language additions through the real server: having, post-aggregations,
offset, calendar buckets in time zones, zero-fill, string matching, and their 400s."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .harness import T0, ServerProcess, loaded_server

H = 3600
DAY = 86400
ROWS = [
    {"at": T0, "name": "Starbuck", "country": "US", "clicks": 4, "visits": 2},
    {"at": T0 + 60, "name": "Starfish", "country": "CA", "clicks": 1, "visits": 1},
    {"at": T0 + 2 * H, "name": "Boomer", "country": "US", "clicks": 0, "visits": 3},
    {"at": T0 + 3 * H, "name": "helo", "country": None, "clicks": 6, "visits": 2},
    {"at": T0 + 3 * H, "country": "CA", "clicks": 2, "visits": 1},
]
WINDOW = [{"type": ">=", "column": "at", "value": T0},
          {"type": "<", "column": "at", "value": T0 + 4 * H}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose max_groups is small enough to refuse a large zero-fill."""
    with loaded_server(tmp_path_factory.mktemp("server"), ROWS, max_groups=1000) as proc:
        yield proc


def test_post_aggregations_having_order_and_offset(server: ServerProcess) -> None:
    q = {"aggregates": [{"column": "clicks"}, {"column": "visits"}],
         "groupings": ["country"], "filters": WINDOW,
         "postAggregations": [{"name": "ctr", "expression": "clicks / visits"}],
         "having": {"type": "<", "column": "ctr", "value": 2},  # not None's 6 / 2
         "orderBy": [{"column": "ctr", "descending": True}]}
    assert server.results(q) == [
        {"country": "CA", "clicks": 3, "visits": 2, "ctr": 1.5, "rowCount": 2},
        {"country": "US", "clicks": 4, "visits": 5, "ctr": 0.8, "rowCount": 2},
    ]
    assert server.results({**q, "limit": 1, "offset": 1}) == [
        {"country": "US", "clicks": 4, "visits": 5, "ctr": 0.8, "rowCount": 2}]
    zero = {**q, "postAggregations": [{"name": "ctr", "expression": "clicks / (visits - 5)"}],
            "having": {"column": "ctr", "value": None}}
    assert server.results(zero) == [
        {"country": "US", "clicks": 4, "visits": 5, "ctr": None, "rowCount": 2}]


def test_calendar_day_in_a_zone_with_zero_fill(server: ServerProcess) -> None:
    q = {"groupings": [{"column": "at", "name": "h", "timeTransform": "hour",
                        "timeZone": "Asia/Kathmandu", "fill": True}],
         "aggregates": [{"column": "clicks"}], "filters": WINDOW}
    # Kathmandu is at +05:45: its hours start at :15 UTC, so T0 (a UTC hour) is in the one
    # that began at T0 - 45 minutes; the window's intervals are T0 .. T0 + 3h.
    assert server.results(q) == [
        {"h": T0 - 45 * 60, "clicks": 5, "rowCount": 2},
        {"h": T0 + 15 * 60, "clicks": 0, "rowCount": 0},
        {"h": T0 + H + 15 * 60, "clicks": 0, "rowCount": 1},
        {"h": T0 + 2 * H + 15 * 60, "clicks": 8, "rowCount": 2},
    ]
    week = server.results({"groupings": [{"column": "at", "name": "w",
                                           "timeTransform": "week"}], "filters": WINDOW})
    assert len(week) == 1 and (T0 - week[0]["w"]) < 7 * DAY and (week[0]["w"] // DAY + 3) % 7 \
        == 0  # a Monday, 00:00 UTC


def test_string_matching(server: ServerProcess) -> None:
    q = {"groupings": ["name"], "filters": [{"type": "prefix", "column": "name",
                                             "value": "Star"}]}
    assert server.results(q) == [{"name": "Starbuck", "rowCount": 1},
                                  {"name": "Starfish", "rowCount": 1}]
    q["filters"] = [{"type": "regex", "column": "name", "value": "^h|^b",
                     "caseInsensitive": True}]
    assert [r["name"] for r in server.results(q)] == ["Boomer", "helo"]
    q["filters"] = [{"type": "not", "filter": {"type": "contains", "column": "name",
                                               "value": "o"}}]
    assert [r["name"] for r in server.results(q)] == [None, "Starbuck", "Starfish"]


@pytest.mark.parametrize(("query", "message"), [
    ({"filters": [{"type": "regex", "column": "name", "value": "(unclosed"}]},
     "filters[0].value: bad regex '(unclosed'"),
    ({"filters": [{"type": "regex", "column": "name", "value": "(a+)+$"}]},
     "filters[0].value: regex '(a+)+$' repeats a group"),
    ({"filters": [{"type": "prefix", "column": "age", "value": "1"}]},
     "filters[0].column: 'age' is a numeric dimension"),
    ({"groupings": [{"column": "at", "timeTransform": "day", "timeZone": "Moon/Tycho"}]},
     "groupings[0].timeZone: unknown time zone 'Moon/Tycho'"),
    ({"groupings": [{"column": "at", "timeTransform": "fortnight"}]},
     "groupings[0].timeTransform: bad time transform 'fortnight'"),
    ({"postAggregations": [{"name": "x", "expression": "clicks +"}]},
     "postAggregations[0].expression: expression ends early: expected a number, a name or "
     "'(' at position 8 in 'clicks +'"),
    ({"having": {"column": "clicks", "type": ">", "value": 1}},
     "having.column: 'clicks' is not an output of this query"),
    ({"offset": -3}, "offset: expected a non-negative integer"),
    ({"groupings": [{"column": "at", "timeTransform": "minute", "fill": True}],
      "filters": [{"type": ">", "column": "at", "value": T0 - 100 * H}]},
     "groupings[0].fill: zero-fill would produce"),
])
def test_bad_additions_are_400s_naming_the_part(server: ServerProcess, query: dict[str, Any],
                                                 message: str) -> None:
    r = server.query(query)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]
    assert list(r.json()) == ["error"]


def test_a_refused_fill_names_max_groups(server: ServerProcess) -> None:
    r = server.query({"groupings": [{"column": "at", "fill": True}],
                      "filters": [{"type": ">=", "column": "at", "value": T0 - 2000 * H}]})
    assert r.status_code == 400
    assert "more than max_groups (1000)" in r.json()["error"]
