"""`uniques` metrics (distinct counts) through the real server (issue #14, docs/storage.md §3):
identities of every JSON kind (5 == "5", null and missing = none), CSV/NDJSON inserts, the
400s, having/orderBy/postAggregations, zero-fill (0), SQL count(DISTINCT), /schema, more
distinct identities than a sparse sketch holds (an estimate, said in `approximate`), and the
same answers after restarts (the write-ahead log replayed, then segments reopened)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gumshoe.sketch import SPARSE_MAX

from .harness import T0, ServerProcess, loaded_server, write_config

H = 3600
SCHEMA = """
[schema]
segment_size = "1MB"
interval_duration = "1h"
timestamp_column = ["at", "uint32"]
dimension_columns = [["country", "string:uint8"]]
metric_columns = [["visits", "uint32"], ["visitors", "uniques"]]
"""
ROWS = [
    {"at": T0, "country": "US", "visits": 1, "visitors": "ann"},
    {"at": T0 + 60, "country": "US", "visits": 2, "visitors": 5},
    {"at": T0 + 120, "country": "US", "visits": 1, "visitors": "5"},  # the same as 5
    {"at": T0 + 2 * H, "country": "CA", "visits": 1, "visitors": None},  # no identity
    {"at": T0 + 3 * H, "country": "CA", "visits": 4},  # none either
    {"at": T0 + 3 * H, "country": "CA", "visits": 1, "visitors": "ann"},
    {"at": T0 + 3 * H + 5, "country": "US", "visits": 1, "visitors": "bob"},
]
WINDOW = [{"type": ">=", "column": "at", "value": T0},
          {"type": "<", "column": "at", "value": T0 + 4 * H}]
AGGS = [{"type": "uniques", "column": "visitors", "name": "visitors"}, {"column": "visits"}]
BY_COUNTRY = {"aggregates": AGGS, "groupings": ["country"], "filters": WINDOW}
WANT_BY_COUNTRY = [{"country": "CA", "visitors": 1, "visits": 6, "rowCount": 3},
                   {"country": "US", "visitors": 3, "visits": 5, "rowCount": 4}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with loaded_server(tmp_path_factory.mktemp("uniques"), ROWS, schema=SCHEMA) as proc:
        yield proc


def answer(server: ServerProcess, query: dict[str, Any]) -> dict[str, Any]:
    r = server.query(query)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_distinct_identities_per_group(server: ServerProcess) -> None:
    got = answer(server, BY_COUNTRY)
    assert got["results"] == WANT_BY_COUNTRY
    assert "approximate" not in got  # exact sparse answers are not approximate
    total = server.results({"aggregates": [{"column": "visitors"}]})  # no type: uniques
    assert total == [{"visitors": 3, "rowCount": 7}]  # ann, 5, bob over every group


def test_zero_fill_and_empty_answers_are_0(server: ServerProcess) -> None:
    nothing = {"aggregates": AGGS, "filters": [{"column": "country", "value": "FR"}]}
    assert server.results(nothing) == [{"visitors": 0, "visits": 0, "rowCount": 0}]
    hourly = {"aggregates": AGGS, "filters": WINDOW,
              "groupings": [{"column": "at", "timeTransform": "hour", "fill": True}]}
    assert [(r["visitors"], r["rowCount"]) for r in server.results(hourly)] == [
        (2, 3), (0, 0), (0, 1), (2, 3)]


@pytest.mark.parametrize("aggregate, message", [
    ({"type": "sum", "column": "visitors"}, "sum of 'visitors'"),
    ({"type": "average", "column": "visitors"}, "average of 'visitors'"),
    ({"type": "min", "column": "visitors"}, "min of 'visitors'"),
    ({"type": "uniques", "column": "visits"}, "uniques of 'visits'"),
])
def test_an_aggregate_the_kind_does_not_answer_is_a_400(server: ServerProcess,
                                                         aggregate: dict[str, Any],
                                                         message: str) -> None:
    r = server.query({"aggregates": [aggregate]})
    assert r.status_code == 400 and message in r.json()["error"], r.text


@pytest.mark.parametrize("query, part", [
    ({"filters": [{"column": "visitors", "value": "ann"}]}, "filters[0].column"),
    ({"groupings": ["visitors"]}, "groupings[0]"),
])
def test_a_uniques_column_cannot_be_filtered_or_grouped(server: ServerProcess,
                                                        query: dict[str, Any],
                                                        part: str) -> None:
    r = server.query({"aggregates": AGGS, **query})
    assert r.status_code == 400, r.text
    assert part in r.json()["error"] and "uniques metric" in r.json()["error"]


@pytest.mark.parametrize("value, got", [(1.5, "a number"), (True, "a boolean"),
                                        ([1], "an array")])
def test_a_bad_identity_is_a_400_and_changes_nothing(server: ServerProcess, value: Any,
                                                     got: str) -> None:
    before = server.results(BY_COUNTRY)
    r = server.insert([{"at": T0, "country": "US", "visitors": "x"},
                       {"at": T0, "country": "US", "visitors": value}])
    assert r.status_code == 400, r.text
    assert f"rows[1].visitors: expected a string or an integer identity (uniques), got {got}" \
        in r.json()["error"]
    assert server.results(BY_COUNTRY) == before


def test_having_order_by_and_post_aggregations(server: ServerProcess) -> None:
    q = {**BY_COUNTRY, "orderBy": [{"column": "visitors", "descending": True}],
         "postAggregations": [{"name": "per", "expression": "visits / visitors"}]}
    assert [(r["country"], r["per"]) for r in server.results(q)] == [("US", 5 / 3),
                                                                      ("CA", 6.0)]
    q["having"] = {"type": ">", "column": "visitors", "value": 1}
    assert [r["country"] for r in server.results(q)] == ["US"]


def test_sql_count_distinct(server: ServerProcess) -> None:
    r = server.client.post("/sql", content=f"SELECT country, count(DISTINCT visitors) AS v "
                           f"FROM events WHERE at >= {T0} AND at < {T0 + 4 * H} "
                           "GROUP BY country")
    assert r.status_code == 200, r.text
    assert [(x["country"], x["v"]) for x in r.json()["results"]] == [("CA", 1), ("US", 3)]


def test_schema_and_debug_rows_describe_the_kind(server: ServerProcess) -> None:
    schema = server.client.get("/schema").json()
    kinds = {m["name"]: (m["type"], m["kind"], m["aggregates"]) for m in schema["metrics"]}
    assert kinds["visitors"] == ("uniques", "uniques", ["uniques"])
    assert "uniques" in schema["aggregateTypes"]
    rows = server.client.get("/debug/rows").json()  # per interval and key: its distinct count
    assert [(r["RowMap"]["country"], r["RowMap"]["visitors"]) for r in rows] == [
        ("US", 2), ("CA", 0), ("US", 1), ("CA", 1)]  # keys in dictionary-code order


def test_csv_and_ndjson_identities_are_text(tmp_path: Any) -> None:
    proc = ServerProcess(write_config(tmp_path, "MEMORY", schema=SCHEMA),
                         tmp_path / "server.log").start()
    try:
        body = b"at,country,visitors\n%d,US,5\n%d,US,\n%d,US,ann\n" % (T0, T0, T0)
        r = proc.client.put("/insert", content=body, headers={"content-type": "text/csv"})
        assert r.status_code == 200, r.text
        nd = b'{"at": %d, "country": "US", "visitors": 5}\n{"at": %d, "visitors": "x"}\n' % (
            T0, T0)
        r = proc.client.put("/insert", content=nd,
                            headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 200, r.text
        got = proc.results({"aggregates": AGGS, "groupings": ["country"]})
        assert [(r["country"], r["visitors"], r["rowCount"]) for r in got] == [
            (None, 1, 1), ("US", 2, 4)]
    finally:
        assert proc.stop() == 0, proc.log_text()
        proc.client.close()


def test_many_identities_are_an_approximate_estimate(tmp_path: Any) -> None:
    proc = ServerProcess(write_config(tmp_path, "MEMORY", schema=SCHEMA),
                         tmp_path / "server.log").start()
    try:
        n = 3 * SPARSE_MAX
        rows = [{"at": T0 + i % 7200, "country": "US" if i % 4 else "CA", "visitors": f"v{i}"}
                for i in range(n)]
        for lo in range(0, n, 2000):
            assert proc.insert(rows[lo:lo + 2000]).status_code == 200
        got = answer(proc, {"aggregates": AGGS})
        assert got["approximate"] == ["visitors"]
        assert abs(got["results"][0]["visitors"] - n) < 0.03 * n
        by = answer(proc, {"aggregates": AGGS, "groupings": ["country"]})
        assert by["approximate"] == ["visitors"]  # US holds more than SPARSE_MAX
        ca, us = by["results"]
        assert ca["visitors"] == n // 4  # still sparse: exact
        assert abs(us["visitors"] - 3 * n // 4) < 0.03 * n
        # decided on the rows returned: without the estimated group, every answer is exact
        for cut in ({"having": {"column": "visitors", "type": "<", "value": SPARSE_MAX}},
                    {"orderBy": [{"column": "visitors"}], "limit": 1},
                    {"orderBy": [{"column": "visitors", "descending": True}], "offset": 1}):
            got = answer(proc, {"aggregates": AGGS, "groupings": ["country"], **cut})
            assert [r["country"] for r in got["results"]] == ["CA"], cut
            assert "approximate" not in got, cut
        got = answer(proc, {"aggregates": AGGS, "groupings": ["country"], "limit": 1,
                            "orderBy": [{"column": "visitors", "descending": True}]})
        assert got["approximate"] == ["visitors"] and got["results"][0]["country"] == "US"
        # zero-filled buckets answer an exact 0; the estimated bucket is still said
        got = answer(proc, {"aggregates": AGGS, "filters": [
            {"type": ">=", "column": "at", "value": T0 - 7200}],
            "groupings": [{"column": "at", "timeTransform": "hour", "fill": True}]})
        assert got["approximate"] == ["visitors"] and got["results"][0]["visitors"] == 0
        for fmt in ("csv", "stream"):  # said in every format, as a header
            r = proc.client.post("/query", params={"format": fmt}, json={"aggregates": AGGS})
            assert r.status_code == 200 and r.headers["Gumshoe-Approximate"] == "visitors"
        r = proc.client.post("/query", json={"aggregates": [{"column": "visits"}]})
        assert "Gumshoe-Approximate" not in r.headers and "approximate" not in r.json()
    finally:
        assert proc.stop() == 0, proc.log_text()
        proc.client.close()


def test_same_answers_after_restarts(tmp_path: Any) -> None:
    proc = ServerProcess(write_config(tmp_path, tmp_path / "db", schema=SCHEMA),
                         tmp_path / "server.log")
    proc.start()
    try:
        assert proc.insert(ROWS[:3]).status_code == 200
        proc.stop(sig=9)  # unflushed: the write-ahead log is replayed
        proc.start()
        assert proc.insert(ROWS[3:]).status_code == 200
        assert proc.results(BY_COUNTRY) == WANT_BY_COUNTRY
        assert proc.stop() == 0  # a clean stop flushes: segments are reopened
        proc.start()
        assert proc.results(BY_COUNTRY) == WANT_BY_COUNTRY
        late = {"at": T0 + 5, "country": "US", "visitors": "cy"}
        assert proc.insert([late]).status_code == 200  # on top of a flushed interval
        want = [WANT_BY_COUNTRY[0], {**WANT_BY_COUNTRY[1], "visitors": 4, "rowCount": 5}]
        assert proc.results(BY_COUNTRY) == want
        assert proc.stop() == 0
        proc.start()
        assert proc.results(BY_COUNTRY) == want
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            assert proc.stop() == 0, proc.log_text()
        proc.client.close()


def test_the_readme_example_runs_as_written(tmp_path: Any) -> None:
    """README: the [schema] of "Distinct counts" and its query in "Query language"."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    toml = re.search(r"\*\*Distinct counts \(`uniques`\)\.\*\*.*?```toml\n(.*?)```", readme,
                     re.DOTALL)
    query = re.search(r"distinct visitors per page:\s*`(.*?)`;", readme, re.DOTALL)
    assert toml is not None and query is not None
    proc = ServerProcess(write_config(tmp_path, "MEMORY", schema=toml.group(1)),
                         tmp_path / "server.log").start()
    try:
        rows = [{"at": T0, "page": "/", "views": 1, "visitors": "ann"},
                {"at": T0 + 1, "page": "/", "views": 1, "visitors": "bob"},
                {"at": T0 + 2, "page": "/", "views": 1, "visitors": "ann"},
                {"at": T0 + 3, "page": "/about", "views": 1}]
        assert proc.insert(rows).status_code == 200
        assert proc.results(json.loads(query.group(1).replace("\n  ", " "))) == [
            {"page": "/", "visitors": 2, "rowCount": 3},
            {"page": "/about", "visitors": 0, "rowCount": 1}]
    finally:
        assert proc.stop() == 0, proc.log_text()
        proc.client.close()
