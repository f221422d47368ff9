"""The archive's record (gumshoe/rawrecord.py) and GET /raw's parameters and renderings
(gumshoe/rawformat.py): round trips, the replay path's record equals the live one, nils,
counts, float32 values, CSV quoting, and every bad parameter named."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import numpy as np
import orjson
import pytest

from gumshoe.batch import parse_rows
from gumshoe.config import SchemaConfig, load_config
from gumshoe.db import DB
from gumshoe.errors import ClientError
from gumshoe.rawformat import (
    RawRequest,
    count_key,
    csv,
    header_columns,
    merge,
    ndjson,
    parse_request,
    union_columns,
)
from gumshoe.batch import Batch
from gumshoe.rawrecord import Encoded, concat, decode, encode_block, payload
from gumshoe.schema import Schema
from gumtool.reindex import to_batch

from .helpers import T0, accepted, sample_rows

SCHEMA_CONFIG = SchemaConfig(
    segment_size=10**6, interval_duration=3600, timestamp_column=("at", "uint32"),
    dimension_columns=(("name", "string:uint16"), ("country", "string:uint8"),
                       ("age", "uint8")),
    metric_columns=(("visits", "uint8"), ("clicks", "uint32"), ("score", "float64")))
SCHEMA = Schema.from_config(SCHEMA_CONFIG)


def encode_batch(schema: Schema, batch: Batch) -> Encoded | None:
    """A batch's record as a database with empty dictionaries logs it (every string new)."""
    dims: dict[str, np.ndarray] = {}
    new: dict[str, list[str]] = {}
    for d in schema.dimensions:
        values = batch.dims[d.name]
        if not d.is_string:
            dims[d.name] = values
            continue
        new[d.name] = list(dict.fromkeys(v for v in values if v is not None))
        index = {s: i for i, s in enumerate(new[d.name])}
        dims[d.name] = np.array([index.get(v, 0) for v in values], d.dtype)
    count = np.ones(batch.n, np.int64) if batch.counts is None else batch.counts
    return encode_block(schema, batch.timestamps, count, dims, batch.nils, batch.metrics,
                        {k: [] for k in new}, {}, new)


def rows_of(chunk_bytes: bytes) -> list[dict]:
    return [orjson.loads(line) for line in chunk_bytes.splitlines()]


def test_a_batch_round_trips_as_accepted() -> None:
    rows = sample_rows(500, 1)
    batch = parse_rows(SCHEMA, rows)
    enc = encode_batch(SCHEMA, batch)
    assert enc is not None and (enc.lo, enc.hi, enc.n) == (int(batch.timestamps.min()),
                                                           int(batch.timestamps.max()), 500)
    head, chunk = decode(payload(7, 123.5, "id-1", enc), 9)
    assert (head.wal, head.t, head.batch_id, head.ts_name) == (7, 123.5, "id-1", "at")
    assert head.names == ("name", "country", "age", "visits", "clicks", "score")
    assert chunk is not None and chunk.seq.tolist() == [9] * 500
    assert rows_of(b"".join(ndjson([chunk]))) == [accepted(r) for r in rows]
    assert encode_batch(SCHEMA, parse_rows(SCHEMA, [])) is None


def test_strings_come_from_the_dictionary_and_the_batch() -> None:
    """Codes below the dictionary's size are its strings, larger ones the strings the batch
    adds; only the distinct strings used are stored."""
    s = Schema.from_config(SchemaConfig(
        segment_size=10**6, interval_duration=3600, timestamp_column=("at", "uint32"),
        dimension_columns=(("name", "string:uint16"),), metric_columns=(("v", "uint8"),)))
    codes = np.array([0, 3, 2, 0, 3, 0], np.uint16)
    nil = np.array([False, False, False, False, False, True])
    enc = encode_block(s, np.arange(T0, T0 + 6), np.ones(6, np.int64), {"name": codes},
                       {"name": nil}, {"v": np.arange(6, dtype=np.int64)},
                       {"name": ["a", "b", "c", "unused later"]}, {"name": 3}, {"name": ["d"]})
    chunk = decode(payload(0, 0.0, None, enc), 1)[1]
    assert chunk is not None
    assert chunk.columns["name"].values.tolist() == ["a", "d", "c", "a", "d", None]
    assert encode_block(s, np.zeros(0, np.int64), np.ones(0, np.int64),
                        {"name": codes[:0]}, {"name": None}, {"v": np.zeros(0, np.int64)},
                        {"name": []}, {}, {}) is None


def test_values_as_accepted_float32_and_counts() -> None:
    s = Schema.from_config(SchemaConfig(
        segment_size=10**6, interval_duration=3600, timestamp_column=("at", "uint32"),
        dimension_columns=(("w", "float32"), ("_count", "string:uint8")),
        metric_columns=(("m", "float32"), ("n", "int64"))))
    batch = parse_rows(s, [{"at": T0 + 1.9, "w": 0.1, "m": 0.1, "n": -5},
                           {"at": T0, "_count": "", "n": 2**62}])
    batch.counts = np.array([1, 3], np.int64)
    enc = encode_batch(s, batch)
    chunk = decode(payload(0, 0.0, None, enc), 1)[1]
    assert chunk is not None
    key = count_key(["at", "w", "_count", "m", "n"])
    assert key == "__count"
    out = rows_of(b"".join(ndjson([chunk], key)))
    f32 = float(np.float32(0.1))  # a float32 column keeps the value it was rounded to
    assert out == [{"at": T0 + 1, "w": f32, "_count": None, "m": f32, "n": -5},
                   {"at": T0, "w": None, "_count": "", "m": 0.0, "n": 2**62, "__count": 3}]
    text = b"".join(csv([chunk], header_columns("at", ["w", "_count", "m", "n"], True), key))
    assert text.decode().split("\r\n") == [
        "at,w,_count,m,n,__count", f"{T0 + 1},{f32},,{f32},-5,1",
        f'{T0},,"",0.0,{2**62},3', ""]


def test_min_max_without_a_value_are_null_as_accepted() -> None:
    """A min/max row without a value holds its kind's identity; the record marks it nil, so
    the raw rows show null (and `gumtool reindex` rebuilds the identity)."""
    s = Schema.from_config(SchemaConfig(
        segment_size=10**6, interval_duration=3600, timestamp_column=("at", "uint32"),
        dimension_columns=(), metric_columns=(("lo", "min:int16"), ("hi", "max:float64"),
                                              ("v", "uint8"))))
    batch = parse_rows(s, [{"at": T0, "lo": -3, "hi": 2.5, "v": 1}, {"at": T0, "lo": None},
                           {"at": T0 + 1, "hi": -1.0}])
    chunk = decode(payload(0, 0.0, None, encode_batch(s, batch)), 1)[1]
    assert chunk is not None
    assert rows_of(b"".join(ndjson([chunk]))) == [
        {"at": T0, "lo": -3, "hi": 2.5, "v": 1}, {"at": T0, "lo": None, "hi": None, "v": 0},
        {"at": T0 + 1, "lo": None, "hi": -1.0, "v": 0}]
    rebuilt = to_batch(chunk, s)  # gumtool reindex: the stored values as inserted
    for m in s.metrics:
        assert rebuilt.metrics[m.name].tolist() == batch.metrics[m.name].tolist()


def test_csv_quotes_what_needs_quoting() -> None:
    rows = [{"at": T0, "name": 'a,"b"\nc', "country": None, "visits": 1}]
    chunk = decode(payload(0, 0.0, None, encode_batch(SCHEMA, parse_rows(SCHEMA, rows))), 1)[1]
    assert chunk is not None
    text = b"".join(csv([chunk], header_columns("at", list(chunk.columns), False))).decode()
    assert text == ('at,name,country,age,visits,clicks,score\r\n'
                    f'{T0},"a,""b""\nc",,,1,0,0.0\r\n')


def test_chunks_with_different_columns_concatenate() -> None:
    """Batches written under two schemas (a column added): the union, nil where absent."""
    other = Schema.from_config(SchemaConfig(
        segment_size=10**6, interval_duration=3600, timestamp_column=("at", "uint32"),
        dimension_columns=(("name", "string:uint16"), ("device", "uint8")),
        metric_columns=(("visits", "uint8"),)))
    a = decode(payload(0, 0, None, encode_batch(SCHEMA, parse_rows(SCHEMA, [
        {"at": T0, "name": "x", "age": 3, "visits": 1}]))), 1)[1]
    b = decode(payload(0, 0, None, encode_batch(other, parse_rows(other, [
        {"at": T0 + 1, "name": "y", "device": 2, "visits": 2}]))), 2)[1]
    assert a is not None and b is not None
    both = concat([a, b])
    assert list(both.columns) == ["name", "country", "age", "visits", "clicks", "score",
                                  "device"]
    assert rows_of(b"".join(ndjson([both]))) == [
        {"at": T0, "name": "x", "country": None, "age": 3, "visits": 1, "clicks": 0,
         "score": 0.0, "device": None},
        {"at": T0 + 1, "name": "y", "country": None, "age": None, "visits": 2, "clicks": None,
         "score": None, "device": 2}]


# -- parameters -----------------------------------------------------------------------------
NOW = 1_800_000_000.5


@pytest.mark.parametrize(("query", "expected"), [
    ([], RawRequest(-1, 1_800_000_000, "ndjson")),
    ([("gt", "1700000000"), ("lte", "1700003600.9")], RawRequest(1_700_000_000, 1_700_003_600,
                                                                  "ndjson")),
    ([("gt", "2023-11-14T22:13:20Z")], RawRequest(1_700_000_000, 1_800_000_000, "ndjson")),
    ([("gt", "2023-11-14T23:13:20+01:00"), ("format", "CSV")],
     RawRequest(1_700_000_000, 1_800_000_000, "csv")),
    ([("gt", "2023-11-14")], RawRequest(1_699_920_000, 1_800_000_000, "ndjson")),
    ([("gt", "1.5"), ("lte", "1e10")], RawRequest(1, 2**32, "ndjson")),
    ([("gt", "-100"), ("lte", "5")], RawRequest(-1, 5, "ndjson")),
])
def test_parameters(query: list[tuple[str, str]], expected: RawRequest) -> None:
    assert parse_request(query, NOW) == expected


@pytest.mark.parametrize(("query", "message"), [
    ([("gt", "yesterday")], "gt: expected an ISO 8601 time"),
    ([("lte", "2023-13-01")], "lte: expected an ISO 8601 time"),
    ([("lte", "")], "lte: expected"),
    ([("gt", "nan")], "gt: expected"),
    ([("gt", "5"), ("lte", "4")], "gt: '5' is after lte '4'"),
    ([("format", "json")], "format: unknown raw format 'json' (ndjson or csv)"),
    ([("gt", "1"), ("gt", "2")], "gt: given more than once"),
    ([("since", "1")], "unknown parameter 'since' (GET /raw takes gt, lte, format)"),
])
def test_bad_parameters_are_named(query: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(ClientError) as e:
        parse_request(query, NOW)
    assert str(e.value).startswith(message)
    assert e.value.status == 400


# -- the router's merge ---------------------------------------------------------------------
async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def test_merge_interleaves_streams_in_time_order() -> None:
    rng = np.random.default_rng(3)
    streams = []
    for i in range(3):
        ts = np.sort(rng.integers(0, 50, 200 + 50 * i))
        streams.append(b"".join(orjson.dumps({"at": int(t), "s": i, "k": k}) + b"\n"
                                for k, t in enumerate(ts)))
    streams.append(b"")  # a shard with nothing

    async def go() -> list[bytes]:
        out = []
        async for lines, rows in merge([_chunks(s, 37) for s in streams], "at", batch=64):
            assert [json.loads(x) for x in lines] == rows
            out += lines
        return out

    got = [json.loads(x) for x in asyncio.run(go())]
    expected = sorted((json.loads(x) for s in streams for x in s.splitlines()),
                      key=lambda r: (r["at"], r["s"], r["k"]))
    assert got == expected


def test_union_of_shard_columns() -> None:
    a = ('["at", "name", "_count", "__count"]', "__count")  # a column named _count
    b = ('["at", "name", "device"]', None)
    assert union_columns([a, b], "at") == (["at", "name", "_count", "device", "__count"],
                                           "__count")
    assert union_columns([b, b], "at") == (["at", "name", "device"], None)
    assert union_columns([], "at") == (["at"], None)
