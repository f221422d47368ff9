"""CSV output (gumshoe/resultformat.py): header order, RFC 4180 quoting, nulls, numbers as
JSON writes them; read back with the stdlib csv module."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from gumshoe import jsonio
from gumshoe.query import parse_query
from gumshoe.resultformat import MEDIA_TYPE, csv_chunks, to_csv
from gumshoe.service import query_rows

from .helpers import make_db


@pytest.fixture(autouse=True)
def scan_kernels() -> Iterator[None]:
    yield  # no scan here: run once, not once per kernel


BIG = jsonio.dumps(1e30, newline=False).decode()  # as the JSON answer writes it (orjson: 1e30
# before 3.9, 1e+30 since)


def test_a_query_as_csv() -> None:
    db = make_db(dims=(("page", "string:uint16"), ("n", "float32")),
                 metrics=(("visits", "uint32"), ("score", "float64")))
    db.insert([
        {"at": 0, "page": 'say "hi", then\r\nleave', "n": 0.1, "visits": 3, "score": 1e30},
        {"at": 0, "page": "", "n": None, "visits": 1, "score": 0.5},
        {"at": 3600, "visits": 0},
    ])
    obj = {"aggregates": [{"column": "visits"}, {"type": "average", "column": "score",
                                                 "name": "avg score"}],
           "groupings": ["page", "n"],
           "postAggregations": [{"name": "per", "expression": "visits / rowCount"}]}
    query = parse_query(obj, db.schema)
    rows = query_rows(db, obj)
    text = to_csv(query, rows).decode()
    assert text.splitlines()[0] == "page,n,visits,avg score,per,rowCount"
    assert text == (
        "page,n,visits,avg score,per,rowCount\r\n"
        ",,0,0.0,0.0,1\r\n"  # nil page and n: empty fields; average of zeros: 0.0
        '"",,1,0.5,1.0,1\r\n'  # the empty string is quoted, so it differs from null
        f'"say ""hi"", then\r\nleave",0.1,3,{BIG},3.0,1\r\n'
    )
    back = list(csv.reader(io.StringIO(text, newline="")))
    assert back[3] == ['say "hi", then\r\nleave', "0.1", "3", BIG, "3.0", "1"]
    assert [r["page"] for r in rows] == [None, "", 'say "hi", then\r\nleave']
    assert MEDIA_TYPE.startswith("text/csv")


def test_numbers_render_as_in_json() -> None:
    db = make_db(metrics=(("m", "float64"), ("i", "uint64")))
    values = [0.1, -2.5e-08, 1e16, 123456789.125, -0.0]
    db.insert([{"at": k * 3600, "dim1": f"d{k}", "m": v, "i": 2**64 - 1} for k, v in
               enumerate(values)])
    obj: dict[str, Any] = {"aggregates": [{"column": "m"}, {"column": "i"}],
                           "groupings": ["dim1"]}
    rows = query_rows(db, obj)
    lines = to_csv(parse_query(obj, db.schema), rows).decode().split("\r\n")
    for row, line in zip(rows, lines[1:]):
        assert line == ",".join([row["dim1"], orjson.dumps(row["m"]).decode(), str(2**64 - 1),
                                 "1"])


def test_empty_results_give_the_header_only_and_chunks_join_up() -> None:
    db = make_db()
    obj = {"groupings": ["dim1"], "filters": [{"column": "dim1", "value": "none"}]}
    assert to_csv(parse_query(obj, db.schema), query_rows(db, obj)) == b"dim1,rowCount\r\n"
    db.insert([{"at": 0, "dim1": f"s{i:03}", "metric1": i} for i in range(25)])
    obj = {"groupings": ["dim1"], "aggregates": [{"column": "metric1"}]}
    query, rows = parse_query(obj, db.schema), query_rows(db, obj)
    chunks = list(csv_chunks(query, rows, chunk_rows=10))
    assert len(chunks) == 4  # header + 10 + 10 + 5
    assert b"".join(chunks) == to_csv(query, rows)
    assert b"".join(chunks).split(b"\r\n")[1] == b"s000,0,1"


def test_header_names_are_quoted_when_needed() -> None:
    db = make_db(metrics=(("metric1", "uint32"),))
    obj = {"aggregates": [{"column": "metric1", "name": 'a,"b"'}]}
    db.insert([{"at": 0, "metric1": 2}])
    assert to_csv(parse_query(obj, db.schema), query_rows(db, obj)) == (
        b'"a,""b""",rowCount\r\n2,1\r\n')
