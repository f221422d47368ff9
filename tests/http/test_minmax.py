"""min:<type> / max:<type> metrics through the real server (issue #14, docs/storage.md §2):
every insert path, null over no rows, the 400s, having/orderBy/postAggregations, metric
filters, CSV output, SQL, /schema, /debug/rows, and the same answers after a restart (the
write-ahead log replayed, then segments reopened)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import T0, ServerProcess, loaded_server, write_config

H = 3600
SCHEMA = """
[schema]
segment_size = "1MB"
interval_duration = "1h"
timestamp_column = ["at", "uint32"]
dimension_columns = [["country", "string:uint8"]]
metric_columns = [["visits", "uint32"], ["fastest", "min:uint32"], ["slowest", "max:float64"],
                  ["lo", "min:int64"], ["hi", "max:uint64"]]
"""
ROWS = [
    {"at": T0, "country": "US", "visits": 1, "fastest": 30, "slowest": 1.5, "lo": -5, "hi": 7},
    {"at": T0 + 60, "country": "US", "visits": 2, "fastest": 10, "slowest": 0.25, "lo": 3,
     "hi": 2},
    {"at": T0 + 2 * H, "country": "CA", "visits": 1, "fastest": None},  # no min/max values
    {"at": T0 + 3 * H, "country": "CA", "visits": 4, "fastest": 5, "slowest": -2.5, "lo": 100,
     "hi": 9},
]
WINDOW = [{"type": ">=", "column": "at", "value": T0},
          {"type": "<", "column": "at", "value": T0 + 4 * H}]
AGGS = [{"type": "min", "column": "fastest"}, {"type": "max", "column": "slowest"},
        {"column": "lo"}, {"column": "hi"}, {"column": "visits"}]  # no type: the kind's own
BY_COUNTRY = {"aggregates": AGGS, "groupings": ["country"], "filters": WINDOW}
WANT_BY_COUNTRY = [
    {"country": "CA", "fastest": 5, "slowest": -2.5, "lo": 100, "hi": 9, "visits": 5,
     "rowCount": 2},
    {"country": "US", "fastest": 10, "slowest": 1.5, "lo": -5, "hi": 7, "visits": 3,
     "rowCount": 2},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with loaded_server(tmp_path_factory.mktemp("minmax"), ROWS, schema=SCHEMA) as proc:
        yield proc


def test_min_and_max_per_group(server: ServerProcess) -> None:
    assert server.results(BY_COUNTRY) == WANT_BY_COUNTRY


def test_null_over_no_rows_and_no_values(server: ServerProcess) -> None:
    nothing = {"aggregates": AGGS, "filters": [{"column": "country", "value": "FR"}]}
    assert server.results(nothing) == [{"fastest": None, "slowest": None, "lo": None,
                                         "hi": None, "visits": 0, "rowCount": 0}]
    # hour 1 has no rows (zero-fill), hour 2 one row without min/max values
    hourly = {"aggregates": AGGS, "filters": WINDOW,
              "groupings": [{"column": "at", "timeTransform": "hour", "fill": True}]}
    got = server.results(hourly)
    assert [r["at"] for r in got] == [T0, T0 + H, T0 + 2 * H, T0 + 3 * H]
    assert [(r["fastest"], r["slowest"], r["lo"], r["hi"], r["visits"], r["rowCount"])
            for r in got] == [(10, 1.5, -5, 7, 3, 2), (None, None, None, None, 0, 0),
                              (None, None, None, None, 1, 1), (5, -2.5, 100, 9, 4, 1)]


@pytest.mark.parametrize("aggregate, message", [
    ({"type": "sum", "column": "fastest"}, "aggregates[0]: sum of 'fastest' (min:uint32)"),
    ({"type": "average", "column": "slowest"}, "aggregates[0]: average of 'slowest'"),
    ({"type": "max", "column": "fastest"}, "aggregates[0]: max of 'fastest'"),
    ({"type": "min", "column": "visits"}, "aggregates[0]: min of 'visits' (uint32)"),
    ({"type": "max", "column": "visits"}, "not the inputs"),
])
def test_an_aggregate_the_kind_does_not_answer_is_a_400(server: ServerProcess,
                                                         aggregate: dict[str, Any],
                                                         message: str) -> None:
    r = server.query({"aggregates": [aggregate]})
    assert r.status_code == 400 and message in r.json()["error"], r.text


@pytest.mark.parametrize("body, content_type", [
    ([{"at": T0, "country": "US", "hi": 0}], None),
    ([{"at": T0, "country": "US", "lo": 2**63 - 1}], None),
    (b"at,country,hi\n%d,US,0\n" % T0, "text/csv"),
    (b'{"at": %d, "lo": 9223372036854775807}\n' % T0, "application/x-ndjson"),
])
def test_the_reserved_identity_is_a_400_and_changes_nothing(server: ServerProcess, body: Any,
                                                            content_type: str | None) -> None:
    before = server.results(BY_COUNTRY)
    if content_type is None:
        r = server.insert(body)
    else:
        r = server.client.put("/insert", content=body, headers={"content-type": content_type})
    assert r.status_code == 400, r.text
    assert "reserved" in r.json()["error"] and ("hi" in r.json()["error"]
                                                or "lo" in r.json()["error"])
    assert server.results(BY_COUNTRY) == before


def test_csv_and_ndjson_inserts_keep_the_extremes(tmp_path: Any) -> None:
    proc = ServerProcess(write_config(tmp_path, "MEMORY", schema=SCHEMA),
                         tmp_path / "server.log").start()
    try:
        csv_body = b"at,country,fastest,slowest\n%d,US,7,\n%d,US,3,2.5\n" % (T0, T0 + 1)
        r = proc.client.put("/insert", content=csv_body, headers={"content-type": "text/csv"})
        assert r.status_code == 200, r.text
        nd = b'{"at": %d, "country": "US", "fastest": 9, "slowest": 4}\n{"at": %d}\n' % (T0, T0)
        r = proc.client.put("/insert", content=nd,
                            headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 200, r.text
        got = proc.results({"aggregates": AGGS, "groupings": ["country"]})
        assert got == [{"country": None, "fastest": None, "slowest": None, "lo": None,
                        "hi": None, "visits": 0, "rowCount": 1},
                       {"country": "US", "fastest": 3, "slowest": 4.0, "lo": None,
                        "hi": None, "visits": 0, "rowCount": 3}]
    finally:
        assert proc.stop() == 0, proc.log_text()
        proc.client.close()


def test_having_order_by_and_post_aggregations_on_min_max(server: ServerProcess) -> None:
    q = {**BY_COUNTRY, "orderBy": [{"column": "fastest", "descending": True}],
         "postAggregations": [{"name": "spread", "expression": "hi - lo"}],
         "having": {"type": "<", "column": "fastest", "value": 20}}
    got = server.results(q)
    assert [(r["country"], r["spread"]) for r in got] == [("US", 12.0), ("CA", -91.0)]
    hourly = {"aggregates": AGGS, "filters": WINDOW, "groupings": ["at"],
              "orderBy": [{"column": "fastest"}]}  # null (no value) orders first
    assert [r["fastest"] for r in server.results(hourly)] == [None, 5, 10]
    assert [r["at"] for r in server.results({**hourly, "having": {
        "type": "=", "column": "fastest", "value": None}})] == [T0 + 2 * H]


def test_metric_filters_test_each_intervals_extreme(server: ServerProcess) -> None:
    q = {"aggregates": AGGS, "groupings": ["at"]}
    below = server.results({**q, "filters": [{"type": "<", "column": "fastest", "value": 20}]})
    assert [r["at"] for r in below] == [T0, T0 + 3 * H]
    # a row without a value behaves as a nil dimension: != matches it, ordered ops do not
    other = server.results({**q, "filters": [{"type": "!=", "column": "fastest", "value": 5}]})
    assert [r["at"] for r in other] == [T0, T0 + 2 * H]
    high = server.results({**q, "filters": [{"type": ">", "column": "slowest", "value": 0}]})
    assert [r["at"] for r in high] == [T0]


def test_csv_results_leave_null_empty(server: ServerProcess) -> None:
    q = {"aggregates": AGGS, "groupings": ["at"], "filters": WINDOW}
    r = server.client.post("/query", params={"format": "csv"}, json=q)
    assert r.status_code == 200, r.text
    table = list(csv.reader(io.StringIO(r.text)))
    assert table[0] == ["at", "fastest", "slowest", "lo", "hi", "visits", "rowCount"]
    assert table[2] == [str(T0 + 2 * H), "", "", "", "", "1", "1"]
    assert table[1][1:3] == ["10", "1.5"]


def test_sql_min_and_max(server: ServerProcess) -> None:
    r = server.client.post("/sql", content=f"SELECT country, MIN(fastest) AS fastest, "
                           f"max(slowest) AS slowest FROM events WHERE at >= {T0} AND "
                           f"at < {T0 + 4 * H} GROUP BY country")
    assert r.status_code == 200, r.text
    assert [(x["country"], x["fastest"], x["slowest"]) for x in r.json()["results"]] == [
        ("CA", 5, -2.5), ("US", 10, 1.5)]
    r = server.client.post("/sql", content="SELECT sum(fastest) FROM events")
    assert r.status_code == 400 and "sum of 'fastest'" in r.json()["error"], r.text


def test_schema_and_debug_rows_show_the_kinds(server: ServerProcess) -> None:
    schema = server.client.get("/schema").json()
    kinds = {m["name"]: (m["type"], m["kind"], m["aggregates"]) for m in schema["metrics"]}
    assert kinds["visits"] == ("uint32", "sum", ["sum", "average"])
    assert kinds["fastest"] == ("min:uint32", "min", ["min"])
    assert kinds["slowest"] == ("max:float64", "max", ["max"])
    assert schema["aggregateTypes"] == ["sum", "average", "min", "max"]
    fastest = [r["RowMap"]["fastest"] for r in server.client.get("/debug/rows").json()]
    assert fastest == [10, None, 5]  # per interval and key: no value is null


def test_same_answers_after_restarts(tmp_path: Any) -> None:
    proc = ServerProcess(write_config(tmp_path, tmp_path / "db", schema=SCHEMA),
                         tmp_path / "server.log")
    proc.start()
    try:
        assert proc.insert(ROWS[:2]).status_code == 200
        proc.stop(sig=9)  # unflushed: the write-ahead log is replayed
        proc.start()
        assert proc.insert(ROWS[2:]).status_code == 200
        assert proc.results(BY_COUNTRY) == WANT_BY_COUNTRY
        assert proc.stop() == 0  # a clean stop flushes: segments are reopened
        proc.start()
        assert proc.results(BY_COUNTRY) == WANT_BY_COUNTRY
        late = {"at": T0 + 5, "country": "US", "fastest": 1, "slowest": 99.0}
        assert proc.insert([late]).status_code == 200  # on top of a flushed interval
        want = [dict(WANT_BY_COUNTRY[0]),
                {**WANT_BY_COUNTRY[1], "fastest": 1, "slowest": 99.0, "rowCount": 3}]
        assert proc.results(BY_COUNTRY) == want
        assert proc.stop() == 0
        proc.start()
        assert proc.results(BY_COUNTRY) == want
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            assert proc.stop() == 0, proc.log_text()
        proc.client.close()


def test_the_readme_example_runs_as_written(tmp_path: Any) -> None:
    """README: the [schema] of "Min and max metrics" and the query of "Query language"."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    toml = re.search(r"\*\*Min and max metrics\.\*\*.*?```toml\n(.*?)```", readme, re.DOTALL)
    query = re.search(r"the fastest and slowest load per page:\s*`(.*?)`;", readme, re.DOTALL)
    assert toml is not None and query is not None
    proc = ServerProcess(write_config(tmp_path, "MEMORY", schema=toml.group(1)),
                         tmp_path / "server.log").start()
    try:
        rows = [{"at": T0, "page": "/", "views": 1, "fastest_ms": 120, "slowest_ms": 120},
                {"at": T0 + 1, "page": "/", "views": 1, "fastest_ms": 80, "slowest_ms": 80},
                {"at": T0 + 2, "page": "/about", "views": 1}]
        assert proc.insert(rows).status_code == 200
        assert proc.results(json.loads(query.group(1).replace("\n  ", " "))) == [
            {"page": "/", "views": 2, "fastest_ms": 80, "slowest_ms": 120, "rowCount": 2},
            {"page": "/about", "views": 1, "fastest_ms": None, "slowest_ms": None,
             "rowCount": 1}]
    finally:
        assert proc.stop() == 0, proc.log_text()
        proc.client.close()
