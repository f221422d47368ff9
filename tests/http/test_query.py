"""POST /query through the real server: the JSON and stream formats of the original."""

from __future__ import annotations

import orjson
import pytest

from .harness import T0, ServerProcess

H = 3600
ROWS = [
    {"at": T0 + 1, "name": "Starbuck", "country": "USA", "clicks": 1, "visits": 1},
    {"at": T0 + 2, "name": "Starbuck", "country": "USA", "clicks": 2, "visits": 1},
    {"at": T0 + 3, "name": "Boomer", "country": "CAN", "clicks": 2, "visits": 1},
    {"at": T0 + H, "name": "Helo", "country": "USA", "clicks": 3, "visits": 1},
    {"at": T0 + H, "name": "Starbuck", "clicks": 4, "visits": 1, "score": 0.25},
]
# Other tests add rows far after T0 + 2h; the module's own data is read through this window.
WINDOW = [{"type": "<", "column": "at", "value": T0 + 2 * H}]
BY_NAME = {"aggregates": [{"type": "sum", "column": "clicks"}], "groupings": ["name"],
           "filters": WINDOW}


@pytest.fixture(scope="module")
def loaded(server: ServerProcess) -> ServerProcess:
    assert server.insert(ROWS).status_code == 200
    return server


def test_query_format_matches_the_original(loaded: ServerProcess) -> None:
    r = loaded.query(BY_NAME)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.content.startswith(b'{"duration_ms":')  # keys sorted, as the original
    assert r.content.endswith(b"\n")
    body = r.json()
    assert set(body) == {"duration_ms", "results"}
    assert isinstance(body["duration_ms"], int)
    assert body["results"] == [  # ordered by grouping value (string order)
        {"name": "Boomer", "clicks": 2, "rowCount": 1},
        {"name": "Helo", "clicks": 3, "rowCount": 1},
        {"name": "Starbuck", "clicks": 7, "rowCount": 3},
    ]


def test_empty_query_counts_rows(loaded: ServerProcess) -> None:
    assert loaded.query({"filters": WINDOW}).json()["results"] == [{"rowCount": 5}]


def test_inserted_rows_are_visible_to_the_next_query(server: ServerProcess) -> None:
    far = T0 + 5000 * H
    q = {"aggregates": [{"column": "clicks"}],
         "filters": [{"type": ">=", "column": "at", "value": far}]}
    before = server.query(q).json()["results"][0]
    assert server.insert([{"at": far, "clicks": 40}, {"at": far + 1, "clicks": 2}]).status_code \
        == 200
    after = server.query(q).json()["results"][0]
    assert (after["clicks"] - before["clicks"], after["rowCount"] - before["rowCount"]) == (42, 2)


def test_average_of_nothing_is_null_not_an_error(loaded: ServerProcess) -> None:
    r = loaded.query({"aggregates": [{"type": "average", "column": "score"}],
                      "filters": [{"column": "name", "value": "Nobody"}]})
    assert r.status_code == 200
    assert r.json()["results"] == [{"score": None, "rowCount": 0}]


def test_extensions_several_groupings_or_filter_order_and_limit(loaded: ServerProcess) -> None:
    q = {"aggregates": [{"column": "clicks", "name": "c"}],
         "groupings": ["country", {"column": "at", "timeTransform": "hour", "name": "hour"}],
         "filters": [{"type": "or", "filters": [{"column": "name", "value": "Helo"},
                                                {"column": "name", "value": "Boomer"}]}],
         "orderBy": [{"column": "c", "descending": True}], "limit": 1}
    assert loaded.query(q).json()["results"] == [
        {"country": "USA", "hour": T0 + H, "c": 3, "rowCount": 1}]


def test_stream_format(loaded: ServerProcess) -> None:
    r = loaded.client.post("/query", params={"format": "stream"}, json=BY_NAME)
    assert r.status_code == 200
    lines = r.content.split(b"\n")
    assert lines[-1] == b""  # every line ends with a newline
    header = orjson.loads(lines[0])
    assert list(header) == ["duration_ms", "num_rows"]
    assert header["num_rows"] == 3
    assert lines[0].startswith(b'{"duration_ms":')
    assert b" " not in lines[0]
    assert [orjson.loads(line) for line in lines[1:-1]] == loaded.query(BY_NAME).json()["results"]


def test_stream_of_many_rows_is_chunked(server: ServerProcess) -> None:
    far = T0 + 20_000 * H
    n = 2500  # more than two of the original's 1000-row stream flushes
    names = [f"user{i:05d}" for i in range(n)]
    assert server.insert([{"at": far, "name": name, "visits": 1} for name in names]
                         ).status_code == 200
    q = {"groupings": ["name"], "filters": [{"column": "at", "value": far}]}
    with server.client.stream("POST", "/query", params={"format": "stream"}, json=q) as r:
        assert r.status_code == 200
        assert r.headers.get("transfer-encoding") == "chunked"
        lines = list(r.iter_lines())
    assert orjson.loads(lines[0])["num_rows"] == n
    rows = [orjson.loads(line) for line in lines[1:] if line]
    assert rows == [{"name": name, "rowCount": 1} for name in names]


def test_an_unknown_format_is_a_400_naming_it(loaded: ServerProcess) -> None:
    # (the original silently answered JSON for any other format: a typo must not pass)
    r = loaded.client.post("/query", params={"format": "xml"}, json={"filters": WINDOW})
    assert r.status_code == 400
    assert r.json() == {"error": "format: unknown result format 'xml' (one of json, stream, "
                        "csv)"}


def test_query_errors_name_the_part_at_fault(loaded: ServerProcess) -> None:
    r = loaded.query({"groupings": ["cuntry"]})
    assert r.status_code == 400
    assert "groupings[0]" in r.json()["error"]
    assert "cuntry" in r.json()["error"]
    r = loaded.client.post("/query", params={"format": "stream"}, json={"groupings": ["x"]})
    assert r.status_code == 400  # validated before the stream starts: never a 200 + error
    assert list(r.json()) == ["error"]


def test_csv_format_has_the_output_names_as_header(loaded: ServerProcess) -> None:
    import csv
    import io

    q = {"groupings": ["name"], "aggregates": [{"column": "visits"},
                                               {"type": "average", "column": "clicks",
                                                "name": "avg"}],
         "filters": WINDOW}
    as_json = loaded.query(q).json()["results"]
    r = loaded.client.post("/query", params={"format": "csv"}, json=q)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(r.text)))
    assert table[0] == ["name", "visits", "avg", "rowCount"]
    assert len(table) == len(as_json) + 1
    for row, expected in zip(table[1:], as_json):
        assert row[0] == ("" if expected["name"] is None else expected["name"])
        assert int(row[1]) == expected["visits"] and int(row[3]) == expected["rowCount"]
