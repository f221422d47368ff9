"""The msgpack forms between router and shards: partials and validated batches."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import orjson
import pytest

from gumshoe import native, wire
from gumshoe.batch import Batch, Factor, parse_rows
from gumshoe.config import parse_config
from gumshoe.errors import InsertError
from gumshoe.partials import Partial
from gumshoe.schema import Schema
from gumshoe.sharding import shard_of

from ..http.harness import SCHEMA as HARNESS_SCHEMA

SCHEMA = Schema.from_config(parse_config(HARNESS_SCHEMA).schema)
ROWS = [{"at": 3600 * 5 + 7, "name": "Helo", "country": None, "age": 22, "visits": 3,
         "clicks": 2**31, "score": -0.5},
        {"at": 10, "name": "", "visits": 0}]


def test_batch_round_trip() -> None:
    batch = parse_rows(SCHEMA, ROWS)
    back = wire.decode_batch(SCHEMA, wire.encode_batch(batch))
    assert back.n == 2 and back.dims["name"] == ["Helo", ""]
    assert back.dims["country"] == [None, None]
    np.testing.assert_array_equal(back.timestamps, batch.timestamps)
    np.testing.assert_array_equal(back.nils["age"], [False, True])
    np.testing.assert_array_equal(back.metrics["clicks"], [2**31, 0])
    assert back.metrics["score"].dtype == np.float64


def _tampered(**changes: object) -> bytes:
    obj = msgpack.unpackb(wire.encode_batch(parse_rows(SCHEMA, ROWS)), raw=False)
    for path, value in changes.items():
        where = obj
        *parents, leaf = path.split("__")
        for p in parents:
            where = where[p]
        where[leaf] = value
    return msgpack.packb(obj, use_bin_type=True)


@pytest.mark.parametrize(("body", "message"), [
    (b"\x00garbage", "malformed batch"),
    (msgpack.packb([1, 2]), "not a gumshoe batch"),
    (msgpack.packb({"v": 1}), "malformed batch"),
    (_tampered(n=3), "timestamps must be 3 int64 values"),
    (_tampered(metrics__visits={"d": "<i8", "b": np.array([300, 0]).tobytes()}),
     "a value of 'visits' is out of range for uint8"),
    (_tampered(dims__age={"d": "<i8", "b": np.array([1, 2]).tobytes()}),
     "column 'age' must be 2 values of uint8"),
    (_tampered(dims__name={"s": ["a", 5]}), "column 'name' must be 2 strings or nulls"),
    (_tampered(ts={"d": "<i8", "b": np.array([-1, 0]).tobytes()}), "timestamp is out of range"),
    # a null string whose nil flag is 0 (was a 500), and a nil flag without a null
    (_tampered(dims__name={"s": [None, ""]}), "null values and the nil mask disagree"),
    (_tampered(nils__name=b"\x01\x00"), "null values and the nil mask disagree"),
    # nil-mask bytes other than 0/1 (answers contradicted each other)
    (_tampered(nils__age=b"\x00\x02"), "nil mask of 'age' holds a byte other than 0 or 1"),
    (_tampered(nils__age=b"\x00"), "nil mask of 'age' must have 2 entries"),
    # roll-up counts from the body: bounded, positive
    (_tampered(counts={"d": "<i8", "b": np.array([2**63 - 1, 1]).tobytes()}),
     "counts must be in"),
    (_tampered(counts={"d": "<i8", "b": np.array([0, 1]).tobytes()}), "counts must be in"),
    (_tampered(metrics__score={"d": "<f8", "b": np.array([np.nan, 0]).tobytes()}),
     "'score' is not finite"),
    (_tampered(dims={"bogus": 1}), "dims must name exactly the columns"),
    (_tampered(n=-1), "n must be a non-negative integer"),
    (_tampered(dims__name=5), "malformed batch"),
])
def test_bad_binary_batches_are_insert_errors(body: bytes, message: str) -> None:
    with pytest.raises(InsertError, match=message):
        wire.decode_batch(SCHEMA, body)


def test_partial_round_trip() -> None:
    p = Partial([np.array(["a", None], object), np.array([3, 0], np.uint8)],
                [np.array([False, True]), None], np.array([4, 1]),
                {"clicks": np.array([2**62, 1]), "score": np.array([0.5, -1.0])}, decoded=True)
    back = wire.decode_partial(wire.encode_partial(p))
    assert back.keys[0].tolist() == ["a", None] and back.keys[1].dtype == np.uint8
    assert back.nils[0].tolist() == [False, True] and back.nils[1] is None
    assert back.sums["clicks"].tolist() == [2**62, 1] and back.count.tolist() == [4, 1]


def test_shard_function_is_stable_and_keeps_keys_together() -> None:
    batch = parse_rows(SCHEMA, [{"at": 7200 + i, "name": f"n{i % 7}", "age": i % 3}
                                for i in range(2000)])
    starts = SCHEMA.interval_start(batch.timestamps)
    shards = shard_of(SCHEMA, starts, batch.dims, batch.nils, 3)
    assert sorted(set(shards.tolist())) == [0, 1, 2]
    by_key: dict[tuple[object, ...], int] = {}
    for i, s in enumerate(shards.tolist()):
        key = (int(starts[i]), batch.dims["name"][i], int(batch.dims["age"][i]))
        assert by_key.setdefault(key, s) == s
    # Pinned values: the function is a contract (gumtool balance and every router use it).
    one = parse_rows(SCHEMA, [{"at": 3600, "name": "Starbuck", "country": "US", "age": 21}])
    assert shard_of(SCHEMA, SCHEMA.interval_start(one.timestamps), one.dims, one.nils,
                    1000).tolist() == [PINNED]


PINNED = 904  # shard of that row among 1000 shards: change it only with a migration plan


def factorised(batch: Batch) -> Batch:
    """`batch` with its string columns as Factors, as the C scanner decodes them."""
    dims = {}
    for name, v in batch.dims.items():
        if isinstance(v, list):
            uniques = sorted({s for s in v if s is not None})
            index = {s: i for i, s in enumerate(uniques)}
            v = Factor(uniques, np.array([index.get(s, 0) for s in v], np.int32))
        dims[name] = v
    return dataclasses.replace(batch, dims=dims)


def test_factor_columns_shard_and_travel_as_lists_do() -> None:
    """A Factor column (the insert fast path's and the bulk loaders' form) shards as its
    strings do and travels as its distinct strings and codes (smaller than a string per row):
    the shard reads back the same strings per row."""
    rows = [{"at": 7200 + i, "name": f"n{i % 7}" if i % 5 else None, "age": i % 3}
            for i in range(500)]
    plain = parse_rows(SCHEMA, rows)
    fact = factorised(plain)
    starts = SCHEMA.interval_start(plain.timestamps)
    assert shard_of(SCHEMA, starts, fact.dims, fact.nils, 7).tolist() == \
        shard_of(SCHEMA, starts, plain.dims, plain.nils, 7).tolist()

    def strings(b: Batch) -> dict[str, list[object]]:
        got = wire.decode_batch(SCHEMA, wire.encode_batch(b))
        return {d.name: (v.values(got.nils[d.name]) if isinstance(v, Factor) else v)
                for d in SCHEMA.string_dimensions for v in [got.dims[d.name]]}

    assert strings(fact) == strings(plain)
    assert len(wire.encode_batch(fact)) < len(wire.encode_batch(plain))
    # the insert fast path hands the router and the funnel Factors: they must not notice
    from gumshoe.jsonio import parse_insert_body
    decoded = parse_insert_body(orjson.dumps(rows), SCHEMA)
    assert isinstance(decoded.dims["name"], Factor) == (native.jsonl is not None)
    assert strings(decoded) == strings(plain)


@pytest.mark.parametrize("codes, strings, message", [
    ([0, 5], ["a"], "a code is not one of its 1 strings"),
    ([0, -1], ["a"], "a code is not one of its 1 strings"),
    ([0, 0], ["a", 7], "the distinct strings must be strings"),
    ([0], ["a"], "must be 2 integer codes"),
])
def test_a_bad_factor_column_is_refused(codes: list[int], strings: list[object],
                                        message: str) -> None:
    batch = parse_rows(SCHEMA, [{"at": 7200, "name": "a"}, {"at": 7201, "name": "a"}])
    obj = msgpack.unpackb(wire.encode_batch(factorised(batch)), raw=False)
    obj["dims"]["name"] = {"f": strings, "c": wire._enc(np.array(codes, np.int32))}
    with pytest.raises(InsertError, match=message):
        wire.decode_batch(SCHEMA, msgpack.packb(obj, use_bin_type=True))


@pytest.mark.parametrize("grouped", [False, True])
def test_merging_shard_sums_never_wraps(grouped: bool) -> None:
    """The router adds shards' 64-bit sums: beyond the type it is an error, and large sums
    that cancel are exact."""
    from gumshoe.errors import QueryError
    from gumshoe.partials import merge

    def part(values: list[int], dtype: type) -> Partial:
        keys = [np.array(["a"] * len(values), object)] if grouped else []
        return Partial(keys, [None] * len(keys), np.ones(len(values), np.int64),
                       {"m": np.array(values, dtype)}, decoded=True)

    big = 2**62 + 5
    merged = merge([part([big], np.int64), part([big], np.int64), part([-big], np.int64),
                    part([-big + 3], np.int64)])
    assert merged.sums["m"].tolist() == [3] and merged.count.tolist() == [4]
    with pytest.raises(QueryError, match=r"the sum of 'm' \(18446744073709551616\) does not "
                                         "fit uint64"):
        merge([part([2**63], np.uint64), part([2**63], np.uint64)])
