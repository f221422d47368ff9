"""Every error path of the real server answers with one shape: a 4xx status and
`{"error": "<message naming the part at fault>"}` as application/json. Bad input never gets a
500 and never changes anything."""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
import pytest

from .harness import T0, ServerProcess


class Case(NamedTuple):
    method: str
    path: str
    body: bytes | None
    status: int
    fragment: str  # must appear in the error message
    headers: dict[str, str] = {}  # noqa: RUF012 (never mutated)


def js(obj: Any) -> bytes:
    return orjson.dumps(obj)


ROW = {"at": T0, "name": "Apollo", "visits": 1}
DEEP = b"[" * 200_000 + b"]" * 200_000
DEEP_QUERY = (b'{"filters":[' + b'{"type":"not","filter":' * 300 + b'{"column":"age","value":1}'
              + b"}" * 300 + b"]}")

CASES = {
    # -- PUT /insert: the body -------------------------------------------------------------
    "insert-empty-body": Case("PUT", "/insert", b"", 400, "empty body"),
    "insert-garbage": Case("PUT", "/insert", b"garbage", 400, "invalid JSON"),
    "insert-truncated": Case("PUT", "/insert", b'[{"at": 1', 400, "invalid JSON"),
    "insert-trailing-garbage": Case("PUT", "/insert", b"[] []", 400, "invalid JSON"),
    "insert-object": Case("PUT", "/insert", js(ROW), 400, "JSON array"),
    "insert-string": Case("PUT", "/insert", b'"rows"', 400, "JSON array"),
    "insert-number": Case("PUT", "/insert", b"7", 400, "JSON array"),
    "insert-deep-nesting": Case("PUT", "/insert", DEEP, 400, "nested too deeply"),
    "insert-nan-literal": Case("PUT", "/insert", b'[{"at": 1, "visits": NaN}]', 400,
                               "invalid JSON"),
    "insert-huge-number": Case("PUT", "/insert", b'[{"at": 1, "visits": 1e400}]', 400,
                               "invalid JSON"),
    "insert-bad-utf8": Case("PUT", "/insert", b'[{"at": 1, "name": "\xff\xfe"}]', 400,
                            "invalid JSON"),
    "insert-lone-surrogate": Case("PUT", "/insert", b'[{"at": 1, "name": "\\ud800"}]', 400,
                                  "invalid JSON"),
    # -- PUT /insert: the rows (atomic: the valid first row is not applied either) -----------
    "insert-row-not-object": Case("PUT", "/insert", js([ROW, 5]), 400, "rows[1]"),
    "insert-unknown-column": Case("PUT", "/insert", js([ROW, {"at": T0, "bogus": 1}]), 400,
                                  "rows[1]"),
    "insert-missing-timestamp": Case("PUT", "/insert", js([ROW, {"visits": 1}]), 400,
                                     "rows[1]"),
    "insert-null-row": Case("PUT", "/insert", js([None]), 400, "rows[0]"),
    "insert-metric-string": Case("PUT", "/insert", js([ROW, {"at": T0, "visits": "1"}]), 400,
                                 "rows[1].visits"),
    "insert-metric-overflow": Case("PUT", "/insert", js([ROW, {"at": T0, "visits": 300}]), 400,
                                   "rows[1].visits"),
    "insert-fraction-into-int": Case("PUT", "/insert", js([ROW, {"at": T0, "age": 2.5}]), 400,
                                     "rows[1].age"),
    "insert-number-into-string": Case("PUT", "/insert", js([ROW, {"at": T0, "name": 5}]), 400,
                                      "rows[1].name"),
    "insert-negative-timestamp": Case("PUT", "/insert", js([ROW, {"at": -1}]), 400,
                                      "rows[1].at"),
    "insert-timestamp-string": Case("PUT", "/insert", js([ROW, {"at": "now"}]), 400,
                                    "rows[1].at"),
    "insert-batch-id-too-long": Case("PUT", "/insert", js([ROW]), 400, "X-Batch-Id",
                                     {"X-Batch-Id": "x" * 257}),
    "insert-batch-id-control-char": Case("PUT", "/insert", js([ROW]), 400, "X-Batch-Id",
                                         {"X-Batch-Id": "a\tb"}),
    # -- POST /query -----------------------------------------------------------------------
    "query-empty-body": Case("POST", "/query", b"", 400, "empty body"),
    "query-garbage": Case("POST", "/query", b"{aggregates}", 400, "invalid JSON"),
    "query-array": Case("POST", "/query", b"[]", 400, "JSON object"),
    "query-null": Case("POST", "/query", b"null", 400, "JSON object"),
    "query-deep-nesting": Case("POST", "/query", DEEP_QUERY, 400, "nested too deeply"),
    "query-unknown-grouping": Case("POST", "/query", js({"groupings": ["cuntry"]}), 400,
                                   "groupings[0]"),
    "query-aggregate-on-dimension": Case(
        "POST", "/query", js({"aggregates": [{"type": "sum", "column": "age"}]}), 400,
        "aggregates[0]"),
    "query-bad-aggregate-type": Case(
        "POST", "/query", js({"aggregates": [{"type": "count", "column": "visits"}]}), 400,
        "aggregates[0]"),
    "query-bad-filter-type": Case(
        "POST", "/query", js({"filters": [{"type": "like", "column": "name", "value": "A"}]}),
        400, "filters[0]"),
    "query-unknown-filter-column": Case(
        "POST", "/query", js({"filters": [{"column": "nope", "value": 1}]}), 400, "filters[0]"),
    "query-bad-time-transform": Case(
        "POST", "/query", js({"groupings": [{"column": "at", "timeTransform": "fortnight"}]}), 400,
        "groupings[0]"),
    "query-aggregates-not-a-list": Case("POST", "/query", js({"aggregates": 5}), 400,
                                        "aggregates"),
    "query-stream-invalid": Case("POST", "/query?format=stream", js({"groupings": [1]}), 400,
                                 "groupings[0]"),
    # -- read-only routes, unknown routes and methods ----------------------------------------
    "dimension-table-numeric": Case("GET", "/dimension_tables/age", None, 400,
                                    "No such dimension: age"),
    "dimension-table-unknown": Case("GET", "/dimension_tables/nope", None, 400,
                                    "No such dimension: nope"),
    "unknown-route": Case("GET", "/nope", None, 404, "/nope"),
    "insert-wrong-method": Case("POST", "/insert", js([ROW]), 405, "POST"),
    "query-wrong-method": Case("GET", "/query", None, 405, "GET"),
}


@pytest.fixture(scope="module")
def seeded(server: ServerProcess) -> ServerProcess:
    assert server.insert([{"at": T0, "name": "Starbuck", "visits": 2}]).status_code == 200
    return server


def state(server: ServerProcess) -> tuple[Any, ...]:
    c = server.client
    return (c.get("/debug/rows").json(), c.get("/dimension_tables").json(),
            c.post("/query", json={"aggregates": [{"column": "visits"}]}).json()["results"])


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_error_shape(seeded: ServerProcess, case: Case) -> None:
    before = state(seeded)
    r = seeded.client.request(case.method, case.path, content=case.body,
                              headers={"content-type": "application/json", **case.headers})
    assert r.status_code == case.status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["error"]
    assert isinstance(body["error"], str)
    assert case.fragment in body["error"]
    assert state(seeded) == before  # nothing partial was applied
    assert seeded.client.get("/").status_code == 200  # and the server keeps serving


def test_no_error_left_a_trace_in_the_dictionaries(seeded: ServerProcess) -> None:
    for case in CASES.values():
        if case.path == "/insert":
            seeded.client.request(case.method, case.path, content=case.body,
                                  headers=case.headers)
    assert seeded.client.get("/dimension_tables/name").json() == ["Starbuck"]
