"""What a new user trips over in the first hour (issue 17), each now a clear answer: timestamps
in milliseconds (filters and inserts), timestamps far in the future (max_future), duplicate JSON
keys (insert rows on every decode path, and queries), --listen with a port out of range, and a
bad column type in the config."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gumshoe import batch as batch_module
from gumshoe.batch import check_future, parse_rows
from gumshoe.cli import parse_listen
from gumshoe.config import load_config, parse_config
from gumshoe.db import DB
from gumshoe.errors import ClientError, ConfigError, InsertError, QueryError
from gumshoe.jsonio import loads, parse_insert_body
from gumshoe.query import parse_query
from gumshoe.router import create_router_app
from gumshoe.rowdecoder import key_count
from gumshoe.schema import Schema
from gumshoe.server import create_app

from ..strategies import rows as row_batches
from ..strategies import schema_configs

with warnings.catch_warnings():  # starlette warns when it finds httpx rather than httpx2
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

CONFIG = load_config().replace(database_dir="MEMORY", retention_days=0)
SCHEMA = Schema.from_config(CONFIG.schema)
NOW = int(time.time())


@pytest.fixture(params=["C", "python"])
def row_paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a test with the C row gatherer and without it (the pure Python validator)."""
    if request.param == "python":
        monkeypatch.setattr(batch_module, "_rows_ext", None)


@pytest.fixture
def server() -> Iterator[TestClient]:
    db = DB(CONFIG)
    with TestClient(create_app(db, CONFIG, periodic_flush=False)) as c:
        yield c


# -- milliseconds ------------------------------------------------------------------------------
def test_a_timestamp_filter_in_milliseconds_is_a_400_saying_so() -> None:
    for f in ({"type": ">=", "column": "at", "value": 1_700_000_000_000},
              {"type": "in", "column": "at", "value": [1_700_000_000, 1_700_000_000_000]}):
        with pytest.raises(QueryError, match=r"beyond the range of the timestamp 'at' .*"
                                             r"milliseconds\? 1700000000000 ms is 1700000000 s"):
            parse_query({"filters": [f]}, SCHEMA)
    # seconds, and values no unit mistake explains (bounds of everything), are fine
    for value in (1_700_000_000, 2**32 - 1, 10**400, -5):
        parse_query({"filters": [{"type": "<", "column": "at", "value": value}]}, SCHEMA)


def test_an_insert_in_milliseconds_says_so(row_paths: None) -> None:
    body = orjson.dumps([{"at": NOW}, {"at": NOW * 1000, "visits": 1}])
    with pytest.raises(InsertError, match=r"rows\[1\]\.at: timestamp \d+ is out of range "
                                          r".*milliseconds\? divide by 1000"):
        parse_insert_body(body, SCHEMA)
    with pytest.raises(InsertError) as e:  # far beyond: no hint about units
        parse_insert_body(orjson.dumps([{"at": 10**16}]), SCHEMA)
    assert "milliseconds" not in str(e.value)


# -- the future ----------------------------------------------------------------------------------
def test_check_future_names_the_row_and_the_key() -> None:
    b = parse_rows(SCHEMA, [{"at": NOW}, {"at": NOW + 3600}, {"at": NOW + 2 * 86400}])
    check_future(b, "at", 86400 * 3, now=NOW)  # within 3 days: fine
    check_future(b, "at", 0, now=NOW)  # 0: no bound
    with pytest.raises(InsertError, match=r"rows\[2\]\.at: timestamp \d+ is 2\.0 days in the "
                                          r"future, more than max_future \(1\.0 days\)"):
        check_future(b, "at", 86400, now=NOW)
    taken = b.take(b.timestamps > NOW)  # errors name rows by their index in the request
    with pytest.raises(InsertError, match=r"rows\[2\]"):
        check_future(taken, "at", 86400, now=NOW)


def test_max_future_on_the_server_and_the_router(server: TestClient, tmp_path: Path) -> None:
    rows = [{"at": NOW, "visits": 1}, {"at": NOW + 400 * 86400, "visits": 1}]
    r = server.put("/insert", json=rows)
    assert r.status_code == 400
    assert r.json()["error"].startswith("rows[1].at: timestamp")
    assert "max_future" in r.json()["error"]
    assert server.post("/query", json={}).json()["results"][0]["rowCount"] == 0  # atomic
    assert server.put("/insert", json=rows[:1]).json()["inserted"] == 1
    # the router refuses before any shard is asked (these shards do not exist)
    with TestClient(create_router_app(CONFIG, ["127.0.0.1:1"])) as router:
        r = router.put("/insert", json=rows)
        assert r.status_code == 400 and "max_future" in r.json()["error"]
    # max_future = "0": any timestamp
    cfg = CONFIG.replace(max_future=0.0)
    with TestClient(create_app(DB(cfg), cfg, periodic_flush=False)) as c:
        assert c.put("/insert", json=rows).json() == {"inserted": 2, "rejected": 0}


def test_max_future_in_the_config() -> None:
    assert load_config().max_future == 86400
    assert parse_config('max_future = "0"').max_future == 0
    assert parse_config('max_future = "90m"').max_future == 5400
    with pytest.raises(ConfigError, match="max_future"):
        parse_config('max_future = "soon"')


# -- duplicate keys ------------------------------------------------------------------------------
def _row_text(pairs: list[tuple[str, Any]], spaced: bool) -> str:
    sep = " : " if spaced else ":"
    return "{" + ",".join(json.dumps(k) + sep + json.dumps(v) for k, v in pairs) + "}"


@st.composite
def bodies_with_maybe_a_duplicate(draw: st.DrawFn) -> tuple[Schema, bytes, tuple[int, str] | None]:
    schema = Schema.from_config(draw(schema_configs()))
    data = draw(row_batches(schema, min_size=1, max_size=12))
    pairs = [list(r.items()) for r in data]
    dup = None
    if draw(st.booleans()):
        i = draw(st.integers(0, len(pairs) - 1))
        k = draw(st.integers(0, len(pairs[i]) - 1))
        key, value = pairs[i][k]
        # the copy: the same value, another valid one, or null (which the last copy overrides)
        copy = draw(st.sampled_from([value, None] + [v for kk, v in pairs[i] if kk == key]))
        if key == schema.timestamp.name and copy is None:
            copy = value
        pairs[i].insert(draw(st.integers(0, len(pairs[i]))), (key, copy))
        dup = (i, key)
    spaced = draw(st.booleans())
    text = "[" + ",".join(_row_text(p, spaced) for p in pairs) + "]"
    return schema, text.encode(), dup


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(bodies_with_maybe_a_duplicate())
def test_duplicate_keys_in_insert_rows_are_refused(
        case: tuple[Schema, bytes, tuple[int, str] | None]) -> None:
    schema, body, dup = case
    for ext in (batch_module._rows_ext, None):  # the C gatherer and the Python validator
        saved = batch_module._rows_ext
        batch_module._rows_ext = ext
        try:
            if dup is None:
                assert parse_insert_body(body, schema).n > 0
            else:
                with pytest.raises(ClientError) as e:
                    parse_insert_body(body, schema)
                i, key = dup
                assert str(e.value).startswith(f"rows[{i}]: duplicate key {key!r}"), e.value
        finally:
            batch_module._rows_ext = saved


def test_duplicate_keys_fixed_cases(row_paths: None) -> None:
    cases = {  # body -> the error
        b'[{"at":1,"visits":1,"visits":2}]': "rows[0]: duplicate key 'visits'",
        b'[{"at":1},{"at":1,"visits":null,"visits":3}]': "rows[1]: duplicate key 'visits'",
        b'[{"at":1,"name":"a:b"},{"at":1,"name":null,"name":null}]':
            "rows[1]: duplicate key 'name'",
        b'[{"at":1,"name":"say \\"x\\": y"},{"at":1, "at" :2}]': "rows[1]: duplicate key 'at'",
        b'[{"at":1,"bogus":1,"bogus":2}]': "rows[0]: duplicate key 'bogus'",
    }
    for body, message in cases.items():
        with pytest.raises(ClientError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_insert_body(body, SCHEMA)
    for body in (b'[{"at":1,"name":"a:b","country":"c\\":d"}]', b'[{"at" : 1 , "visits" : 2}]',
                 b'[{"at":1,"name":"\\\\","country":"x:y"}]'):
        assert parse_insert_body(body, SCHEMA).n == 1


def test_duplicate_keys_in_queries(server: TestClient) -> None:
    with pytest.raises(ClientError, match=r"^query: duplicate key 'limit'"):
        loads(b'{"limit": 1, "limit": 2}', "query")
    r = server.post("/query", content=b'{"filters": [{"type": "=", "column": "name", '
                                      b'"value": "a", "value": "b"}]}')
    assert r.status_code == 400
    assert r.json() == {"error": "filters[0]: duplicate key 'value' (each key at most once "
                                 "per object)"}
    r = server.put("/insert", content=b'[{"at": 1700000000, "clicks": 1, "clicks": 2}]')
    assert r.status_code == 400 and r.json()["error"].startswith("rows[0]: duplicate key")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=':"\\ {}[],ab\n\t', max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(alphabet=':"\\ ab', max_size=4), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from([(",", ":"), (", ", ": "), (",", " : "), (",\n", " :\t")]))
def test_key_count_is_exact_or_declines(value: Any, separators: tuple[str, str]) -> None:
    body = json.dumps(value, separators=separators).encode()
    pairs: list[int] = []
    json.loads(body, object_pairs_hook=lambda p: pairs.append(len(p)) or {})
    keys = sum(pairs)
    assume(keys > 0)
    got = key_count(body, keys)
    assert got is None or got == keys
    if b'\\"' not in body:
        assert got == keys


# -- the command line and the config ----------------------------------------------------------
def test_listen_port_out_of_range() -> None:
    with pytest.raises(ConfigError, match=r"'localhost:99999': port 99999 out of range "
                                          r"\(0-65535\)"):
        parse_listen("localhost:99999")
    assert parse_listen("localhost:65535") == ("localhost", 65535)
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        parse_listen("localhost")


def test_a_bad_column_type_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"column 'age': bad type: uint7 \(valid types: uint8, "
                                          r"int8, .* float64, or string:uint8/uint16/uint32\)"):
        Schema.from_config(parse_config(
            '[schema]\ndimension_columns = [["age", "uint7"]]').schema)
    with pytest.raises(ConfigError, match=r"bad type: string \(valid types: .*float64, each also "
                                          r"as min:<type> or max:<type>, or uniques\)$"):
        Schema.from_config(parse_config('[schema]\nmetric_columns = [["m", "string"]]').schema)
