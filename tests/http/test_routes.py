"""Every route of the original, against the real server process."""

from __future__ import annotations

import time
from typing import Any

import pytest

from .harness import T0, ServerProcess

H = 3600
ROWS = [
    {"at": T0 + 10, "name": "Starbuck", "country": "USA", "age": 30, "visits": 1, "clicks": 1,
     "score": 0.5},
    {"at": T0 + 20, "name": "Starbuck", "country": "USA", "age": 30, "visits": 2, "clicks": 2,
     "score": 1.0},
    {"at": T0 + 30, "name": "Boomer", "country": "CAN", "age": 25, "visits": 1, "clicks": 0},
    {"at": T0 - H + 5, "name": "Helo", "country": "USA", "visits": 1, "clicks": 3},
]


@pytest.fixture(scope="module")
def loaded(server: ServerProcess) -> ServerProcess:
    r = server.insert(ROWS)
    assert r.status_code == 200, r.text
    assert r.json() == {"inserted": 4, "rejected": 0}
    return server


def row(at: int, count: int, **values: Any) -> dict[str, Any]:
    base = {"at": at, "name": None, "country": None, "age": None, "visits": 0, "clicks": 0,
            "score": 0.0}
    return {"RowMap": {**base, **values}, "Count": count}


def test_root(server: ServerProcess) -> None:
    r = server.client.get("/")
    assert r.status_code == 200
    assert r.text == "Gumshoe is on the case!"
    assert r.headers["content-type"].startswith("text/plain")


def test_insert_answers_counts_as_json(server: ServerProcess) -> None:
    r = server.insert([])
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"inserted": 0, "rejected": 0}
    r = server.client.put("/insert", content=b"null")
    assert (r.status_code, r.json()) == (200, {"inserted": 0, "rejected": 0})


def test_debug_rows_shows_rolled_up_rows_at_once(loaded: ServerProcess) -> None:
    r = loaded.client.get("/debug/rows")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json()[:3] == [
        row(T0 - H, 1, name="Helo", country="USA", visits=1, clicks=3),
        row(T0, 2, name="Starbuck", country="USA", age=30, visits=3, clicks=3, score=1.5),
        row(T0, 1, name="Boomer", country="CAN", age=25, visits=1),
    ]


def test_debug_rows_is_capped_at_100(server: ServerProcess) -> None:
    far = T0 + 10_000 * H  # after every other test's interval
    r = server.insert([{"at": far, "age": i % 200, "visits": 1} for i in range(250)])
    assert r.status_code == 200, r.text
    assert len(server.client.get("/debug/rows").json()) == 100


def test_dimension_tables(loaded: ServerProcess) -> None:
    tables = loaded.client.get("/dimension_tables").json()
    assert set(tables) == {"name", "country"}  # numeric dimensions are omitted
    assert tables["name"][:3] == ["Starbuck", "Boomer", "Helo"]  # code (insertion) order
    assert tables["country"][:2] == ["USA", "CAN"]
    assert loaded.client.get("/dimension_tables/").json() == tables
    one = loaded.client.get("/dimension_tables/country")
    assert one.status_code == 200
    assert one.json() == tables["country"]


@pytest.mark.parametrize("name", ["age", "visits", "at", "nope"])
def test_dimension_table_of_a_non_string_dimension_is_400(loaded: ServerProcess,
                                                          name: str) -> None:
    r = loaded.client.get(f"/dimension_tables/{name}")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error.startswith(f"No such dimension: {name}")  # the original's words first
    if name != "nope":  # and why a known column has no dictionary
        assert "has no dictionary of strings" in error


def test_statusz(loaded: ServerProcess) -> None:
    status = loaded.client.get("/statusz").json()
    assert set(status) == {"LastUpdated", "OldestInterval"}
    assert status["LastUpdated"] >= T0 + 30
    assert status["OldestInterval"] == T0 - H


def test_metricz_html(loaded: ServerProcess) -> None:
    r = loaded.client.get("/metricz")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = r.text
    for part in ("<title>metricz</title>", "Config", "&quot;DatabaseDir&quot;",
                 "Dimension tables", "Stat totals", "Compression Ratio", "Intervals ("):
        assert part in page


def test_metricz_json(loaded: ServerProcess) -> None:
    data = loaded.client.get("/metricz", params={"format": "json"}).json()
    assert data["config"]["RetentionDays"] == 0
    assert data["config"]["Schema"]["IntervalDuration"] == "1h0m0s"
    assert data["dimension_tables"]["country"] >= 2
    totals = data["totals"]
    assert totals["logical_rows"] >= 4
    assert totals["intervals"] == len(data["intervals"]) >= 2
    starts = [iv["start"] for iv in data["intervals"]]
    assert starts == sorted(starts, reverse=True)  # most recent first


def test_prometheus_metrics(loaded: ServerProcess) -> None:
    r = loaded.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ("gumshoe_insert_rows_total{result=\"inserted\"}", "gumshoe_insert_batches_total",
                 "gumshoe_query_duration_seconds_bucket", "gumshoe_flush_duration_seconds_count",
                 "gumshoe_intervals ", "gumshoe_segments ", "gumshoe_rows ", "gumshoe_bytes ",
                 "gumshoe_dictionary_size{dimension=\"name\"}", "gumshoe_http_requests_total"):
        assert name in text, name
    inserted = next(line for line in text.splitlines()
                    if line.startswith('gumshoe_insert_rows_total{result="inserted"}'))
    assert float(inserted.split()[-1]) >= 4


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/whatever", 404),
    ("POST", "/insert", 405),
    ("GET", "/query", 405),
    ("PUT", "/statusz", 405),
])
def test_unknown_routes_and_methods_are_json_errors(server: ServerProcess, method: str,
                                                    path: str, status: int) -> None:
    r = server.client.request(method, path)
    assert r.status_code == status
    assert list(r.json()) == ["error"]


def test_every_request_is_logged(server: ServerProcess) -> None:
    server.client.get("/statusz", params={"probe": "logline"})
    for _ in range(50):  # the line is written just after the response: bounded wait
        if "GET /statusz?probe=logline 200" in server.log_text():
            break
        time.sleep(0.05)
    assert "GET /statusz?probe=logline 200" in server.log_text()
