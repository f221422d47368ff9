"""Body formats and text typing (collect/values.py, formats.py, templates.py, enrich.py):
CSV and NDJSON give the very batch PUT /insert's JSON gives for the same rows; errors name
the line and column; templates and enrichment."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gumshoe import jsonio, native, rowdecoder
from gumshoe.batch import Batch, Factor
from gumshoe.collect.enrich import Enricher, agent, url_host, url_path
from gumshoe.collect.formats import UnsupportedFormat, parse_body, parse_csv, parse_ndjson
from gumshoe.collect.templates import ItemTemplate, RouteTemplate
from gumshoe.config import CollectRoute, EnrichConfig, parse_config
from gumshoe.errors import ConfigError, InsertError
from gumshoe.schema import Schema
from tests.http.harness import SCHEMA, sample_rows

S = Schema.from_config(parse_config(SCHEMA).schema)
NOW = 1_700_000_123


def same(a: Batch, b: Batch) -> None:
    assert a.n == b.n
    assert a.timestamps.tolist() == b.timestamps.tolist()
    for d in S.dimensions:
        na = np.zeros(a.n, bool) if a.nils[d.name] is None else a.nils[d.name]
        nb = np.zeros(b.n, bool) if b.nils[d.name] is None else b.nils[d.name]
        assert na.tolist() == nb.tolist(), d.name
        va, vb = a.dims[d.name], b.dims[d.name]
        va = va.values(a.nils[d.name]) if isinstance(va, Factor) else va
        vb = vb.values(b.nils[d.name]) if isinstance(vb, Factor) else vb
        if d.is_string:
            assert list(va) == list(vb), d.name
        else:
            assert np.asarray(va)[~na].tolist() == np.asarray(vb)[~nb].tolist(), d.name
    for m in S.metrics:
        assert a.metrics[m.name].tolist() == b.metrics[m.name].tolist(), m.name
        assert a.metrics[m.name].dtype == b.metrics[m.name].dtype


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)  # \r\n line ends: the writer then quotes a lone \r in a value
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r[c] for c in columns])
    return buf.getvalue().encode()


@pytest.mark.parametrize("seed", range(4))
def test_csv_and_ndjson_equal_json(seed: int) -> None:
    rows = [r for r in sample_rows(300, seed) if r.get("name") != ""]  # CSV: empty is nil
    for r in rows:
        r.setdefault("visits", 0)
        r.setdefault("clicks", 0)
    reference = jsonio.parse_insert_body(orjson.dumps(rows), S)
    columns = ["at", "name", "country", "age", "visits", "clicks", "score"]
    same(parse_csv(to_csv(rows, columns), S, NOW), reference)
    same(parse_ndjson(b"\n".join(map(orjson.dumps, rows)) + b"\n\n", S, NOW), reference)


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 255),
                          st.integers(0, 2**32 - 1), st.text(min_size=1, max_size=5),
                          st.floats(-1e300, 1e300)), max_size=30))
def test_csv_of_random_values(values: list[tuple[int, int, int, str, float]]) -> None:
    rows = [{"at": a, "visits": v, "clicks": c, "name": n, "score": f}
            for a, v, c, n, f in values]
    reference = jsonio.parse_insert_body(orjson.dumps(rows), S)
    body = to_csv([{**r, "score": repr(r["score"])} for r in rows],
                  ["at", "visits", "clicks", "name", "score"])
    same(parse_csv(body, S, NOW), reference)


@pytest.mark.parametrize("seed", range(6))
def test_ndjson_scanner_equals_the_reference_path(seed: int) -> None:
    """The C scanner's NDJSON (rows without a time get NOW) against the Python path."""
    if native.jsonl is None:
        pytest.skip("gumshoe._jsonl is not built")
    rows = sample_rows(400, seed)
    for r in rows:  # no escapes (the scanner declines them)
        if r.get("name") == "line\nbreak":
            r["name"] = "line break"
    with_nulls = b"\n".join(map(orjson.dumps, rows)) + b"\n"
    for i, r in enumerate(rows):  # rows without their time; and no null (then a missing time
        if i % (seed + 2) == 0:   # and a null one cannot be told apart: declined)
            del r["at"]
        if r.get("country", "") is None:
            del r["country"]
    without_times = b"\n".join(map(orjson.dumps, rows)) + b"\n"
    for body in (with_nulls, without_times):
        scanned = jsonio.scan_ndjson_body(body, S, NOW)
        assert scanned is not None
        rowdecoder.use_scan = False
        try:
            reference = parse_ndjson(body, S, NOW)
        finally:
            rowdecoder.use_scan = True
        same(scanned, reference)
    assert scanned.timestamps.tolist().count(NOW) >= len(rows) // (seed + 2)
    # declined to the reference path: a blank line, a null time
    assert jsonio.scan_ndjson_body(body + b"\n" + body, S, NOW) is None
    assert jsonio.scan_ndjson_body(b'{"at": null}\n', S, NOW) is None
    with pytest.raises(InsertError):
        parse_ndjson(b'{"at": null}\n', S, NOW)


def test_missing_timestamps_get_the_arrival_time() -> None:
    b = parse_csv(b"visits,at\n1,\n2,1700000000\n3,2023-11-14T22:13:20Z\n", S, NOW)
    assert b.timestamps.tolist() == [NOW, 1_700_000_000, 1_700_000_000]
    b = parse_ndjson(b'{"visits": 1}\n{"visits": 2, "at": 5}\n', S, NOW)
    assert b.timestamps.tolist() == [NOW, 5]
    b = parse_csv(b"name\nx\n", S, NOW)
    assert b.timestamps.tolist() == [NOW] and b.dims["name"] == ["x"]


def test_empty_fields_are_nil_or_zero() -> None:
    b = parse_csv(b"name,age,visits,score\n,,,\nx,3,4,1.5\n", S, NOW)
    assert b.dims["name"] == [None, "x"]
    assert b.nils["name"].tolist() == [True, False]  # type: ignore[union-attr]
    assert b.nils["age"].tolist() == [True, False]  # type: ignore[union-attr]
    assert b.metrics["visits"].tolist() == [0, 4]
    assert b.metrics["score"].tolist() == [0.0, 1.5]


@pytest.mark.parametrize(("body", "message"), [
    (b"at,visits\n1,2\n3,300\n", ("line 3, column visits: value '300' is out of range for "
                                 "uint8 [0, 255]")),
    (b"at,cuntry\n1,US\n", "line 1, column cuntry: unknown column"),
    (b"visits,visits\n1,2\n", "line 1, column visits: column given twice"),
    (b"at,visits\n1,2\n3\n", "line 3: expected 2 fields (as the header), got 1"),
    (b"at,visits\n1,2\n\n\nyesterday,1\n", ("line 5, column at: timestamp 'yesterday' is "
                                           "neither Unix seconds nor an ISO 8601 date")),
    (b'name,visits\n"a\nb",1\nc,1.5\n', "line 4, column visits: value '1.5' is not an integer"),
    (b"clicks\n-1\n", "line 2, column clicks: value '-1' is out of range for uint32"),
    (b"score\nnan\n", "line 2, column score: value 'nan' is not a finite number"),
    (b"age\n9223372036854775808\n", ("line 2, column age: value '9223372036854775808' is out "
                                    "of range")),
    (b"at\n99999999999\n", "line 2, column at: timestamp '99999999999' is out of range"),
    (b'visits\n"1\n', "bad CSV"),
    (b"name\n\xff\n", "line 2: not valid UTF-8"),
])
def test_csv_errors_name_line_and_column(body: bytes, message: str) -> None:
    with pytest.raises(InsertError) as e:
        parse_csv(body, S, NOW)
    assert message in str(e.value)


@pytest.mark.parametrize(("body", "message"), [
    (b'{"visits": 1}\n\n{"visits": 300}\n', ("line 3, column visits: value 300 is out of "
                                            "range for uint8")),
    (b'{"visits": 1}\n[1]\n', "line 2: expected a JSON object"),
    (b'{"visits": 1}\n{"visits":\n', "line 2: invalid JSON"),
    (b'{"cuntry": "US"}\n', "line 1: unknown column 'cuntry'"),
    (b"[" * 100_000, "nested too deeply"),
])
def test_ndjson_errors_name_the_line(body: bytes, message: str) -> None:
    with pytest.raises(InsertError) as e:
        parse_ndjson(body, S, NOW)
    assert message in str(e.value)


def test_content_types() -> None:
    assert parse_body(b"visits\n1\n", "text/csv; charset=utf-8", S, NOW).n == 1
    assert parse_body(b'{"visits":1}', "application/x-ndjson", S, NOW).n == 1
    assert parse_body(b'[{"at":1,"visits":1}]', "application/json", S, NOW).n == 1
    assert parse_body(b"visits\n1\n2\n", None, S, NOW).n == 2
    with pytest.raises(UnsupportedFormat):
        parse_body(b"x", "application/xml", S, NOW)


def test_item_template() -> None:
    t = ItemTemplate("{age}/{name}/{at:date}/{clicks}", S, "f")
    b = t.batch(["0/btn_click/2015-01-01/15", "3/a-b/2015-01-02T01:00:00/2"], NOW,
                lambda i, c: f"item {i}")
    assert b.dims["name"] == ["btn_click", "a-b"]
    assert b.timestamps.tolist() == [1420070400, 1420160400]
    assert b.metrics["clicks"].tolist() == [15, 2]
    for bad in ("nope", "3/a/b/2015-01-01/1"):  # a value cannot hold the separator
        with pytest.raises(InsertError, match="item 1: "):
            t.batch(["0/x/2015-01-01/1", bad], NOW, lambda i, c: f"item {i}")
    with pytest.raises(InsertError, match="item 0, column clicks"):
        t.batch(["0/x/2015-01-01/-1"], NOW, lambda i, c: f"item {i}, column {c}")
    with pytest.raises(ConfigError, match="not a column"):
        ItemTemplate("{appid}/{name}", S, "f")
    with pytest.raises(ConfigError, match="only the timestamp"):
        ItemTemplate("{name:date}", S, "f")


def test_route_template() -> None:
    t = RouteTemplate(CollectRoute("/add_event/{age}/{name}/{visits}", (("country", "ws"),)),
                      S, 0)
    assert t.columns == ["age", "name", "visits"] and t.fixed == {"country": "ws"}
    with pytest.raises(ConfigError, match="not a column"):
        RouteTemplate(CollectRoute("/e/{appid}"), S, 0)
    with pytest.raises(ConfigError, match="also a placeholder"):
        RouteTemplate(CollectRoute("/e/{name}", (("name", "x"),)), S, 0)
    for shadowing in ("/{name}/x", "/query/{name}", "//{name}"):
        with pytest.raises(ConfigError, match="fixed segment other than the built-in"):
            RouteTemplate(CollectRoute(shadowing), S, 0)


CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
IPAD = "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15"
BOT = "Googlebot/2.1 (+http://www.google.com/bot.html)"


def test_user_agents() -> None:
    assert agent(CHROME) == ("Chrome", "Windows", "desktop")
    assert agent(IPHONE) == ("Mobile Safari", "iOS", "mobile")
    assert agent(IPAD).device == "tablet"
    assert agent(BOT).device == "bot"
    assert agent("") == ("", "", "")


def test_urls() -> None:
    assert url_host("https://a.example:8443/x?q=1") == "a.example"
    assert url_host("a.example/x") == "a.example"
    assert url_path("https://a.example/x/y?q#f") == "/x/y"
    assert url_path("https://a.example") == "/"
    assert url_path("/p?q") == "/p"


def test_enricher() -> None:
    e = Enricher(EnrichConfig(browser="name", page="country", host_of=()), S)
    event = {"visits": "1"}
    e.apply(event, {"user-agent": CHROME, "referer": "https://shop.example/cart?id=3"})
    assert event == {"visits": "1", "name": "Chrome", "country": "/cart"}
    event = {"name": "mine"}
    e.apply(event, {"user-agent": CHROME})
    assert event["name"] == "mine"
    e = Enricher(EnrichConfig(host_of=("name",), path_of=("country",)), S)
    event = {"name": "https://ref.example/a", "country": "https://x.example/p?q"}
    e.apply(event, {})
    assert event == {"name": "ref.example", "country": "/p"}
    with pytest.raises(ConfigError, match="not a string dimension"):
        Enricher(EnrichConfig(browser="age"), S)
