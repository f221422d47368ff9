"""The fast paths for insert bodies (the C scanner gumshoe._jsonl.scan_array, and msgspec): each
either declines (None) or yields exactly the batch the row-by-row validator yields, over random
schemas and valid and invalid bodies."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gumshoe import native, rowdecoder
from gumshoe.batch import Batch, Factor, parse_rows
from gumshoe.config import SchemaConfig, load_config
from gumshoe.errors import ClientError, InsertError
from gumshoe.jsonio import loads, parse_insert_body
from gumshoe.rowdecoder import RowDecoder
from gumshoe.schema import Schema

from ..strategies import invalid_batches, rows, schema_configs


def assert_same_batch(a: Batch, b: Batch) -> None:
    assert a.n == b.n
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert a.timestamps.dtype == b.timestamps.dtype
    for name, v in b.dims.items():
        got = a.dims[name]
        if isinstance(got, Factor):
            got = got.values(a.nils[name])
        if isinstance(v, list):
            assert got == v
        else:
            assert a.dims[name].dtype == v.dtype
            np.testing.assert_array_equal(a.dims[name], v)
    for name, v in b.nils.items():
        got = a.nils[name]
        assert (got is None or not got.any()) if v is None else np.array_equal(got, v)
    for name, v in b.metrics.items():
        assert a.metrics[name].dtype == v.dtype, name
        np.testing.assert_array_equal(a.metrics[name], v)
    assert a.identities.keys() == b.identities.keys()
    for name, (hashes, present) in b.identities.items():
        np.testing.assert_array_equal(a.identities[name][1], present)
        np.testing.assert_array_equal(a.identities[name][0], hashes)


def _body(data: Any, indent: int | None = None, ascii: bool = True) -> bytes | None:
    """JSON text of `data`; not `ascii`: non-ASCII strings as UTF-8, not as escapes (which the
    C scanner declines), where they are valid UTF-8."""
    try:
        return json.dumps(data, allow_nan=False, indent=indent, ensure_ascii=ascii).encode()
    except ValueError:
        return None  # NaN/inf: not JSON
    except UnicodeEncodeError:  # a lone surrogate: only as an escape
        return json.dumps(data, allow_nan=False, indent=indent).encode()


@contextlib.contextmanager
def scanner(on: bool) -> Iterator[None]:
    """The C scanner on (where built) or off: off, the msgspec path decides alone."""
    if on and native.jsonl is None:
        pytest.skip("gumshoe._jsonl is not built")
    old, rowdecoder.use_scan = rowdecoder.use_scan, on
    try:
        yield
    finally:
        rowdecoder.use_scan = old


PATHS = pytest.mark.parametrize("scan", [True, False], ids=["c-scanner", "msgspec"])


@st.composite
def bodies(draw: st.DrawFn) -> tuple[Schema, Any]:
    schema = Schema.from_config(draw(schema_configs(uniques=draw(st.booleans()))))
    if draw(st.booleans()):
        return schema, draw(rows(schema, max_size=20))
    return schema, draw(invalid_batches(schema)).rows


@PATHS
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=bodies(), indent=st.sampled_from([None, 0, 2]), ascii=st.booleans())
def test_fast_path_declines_or_agrees(scan: bool, case: tuple[Schema, Any],
                                      indent: int | None, ascii: bool) -> None:
    schema, data = case
    body = _body(data, indent, ascii)
    if body is None:
        return
    refused = None  # a fast path may refuse a body itself, with the validator's own error
    with scanner(scan):
        try:
            fast = RowDecoder(schema).decode(body)
        except ClientError as e:
            fast, refused = None, str(e)
    try:
        slow = parse_rows(schema, loads(body, "insert body", strict=False))
    except ClientError as e:
        assert fast is None, "the fast path accepted a body the validator rejects"
        assert refused in (None, str(e))
        return
    assert refused is None, f"the fast path refused a body the validator accepts: {refused}"
    if fast is not None:
        assert_same_batch(fast, slow)


@PATHS
def test_plain_valid_bodies_take_the_fast_path(scan: bool) -> None:
    schema = Schema.from_config(load_config(None).schema)
    body = orjson.dumps([{"at": 1_700_000_000, "name": "a", "country": None, "age": 30,
                          "visits": 2}, {"at": 1_700_000_001.5, "clicks": 1}])
    decoder = RowDecoder(schema)
    with scanner(scan):
        fast = decoder.decode(body)
        assert (decoder.scan(body) is not None) == (scan and native.jsonl is not None)
    assert fast is not None
    assert isinstance(fast.dims["name"], Factor) == scan
    assert_same_batch(fast, parse_rows(schema, orjson.loads(body)))
    assert fast.timestamps.tolist() == [1_700_000_000, 1_700_000_001]
    assert fast.metrics["visits"].tolist() == [2, 0]


@pytest.mark.parametrize("body", [
    b"", b"null", b"[]", b'{"at": 1}', b'[{"at": 1, "bogus": 2}]', b'[{"age": 1}]',
    b'[{"at": 1, "age": 256}]', b'[{"at": 1, "age": 2.0}]', b'[{"at": 1, "age": true}]',
    b'[{"at": -1}]', b'[{"at": 4294967296}]', b'[{"at": 18446744073709551616}]',
    b'[{"at": 1, "name": 5}]', b'[[[[[[]]]]]]',
])
def test_the_validator_decides_every_other_body(body: bytes) -> None:
    schema = Schema.from_config(load_config(None).schema)
    try:
        want: Any = parse_rows(schema, loads(body, "insert body", strict=False))
    except ClientError as e:
        want = e
    try:
        got: Any = parse_insert_body(body, schema)
    except Exception as e:  # noqa: BLE001
        got = e
    if isinstance(want, Exception):
        assert type(got) is type(want) and str(got) == str(want)
    else:
        assert_same_batch(got, want)


@pytest.mark.parametrize("body", [b'[{"at": 1, "name": "\xff\xfe"}]',
                                  b'[{"at": 1, "name": "\\ud800"}]'])
@PATHS
def test_bad_text_is_declined(scan: bool, body: bytes) -> None:
    schema = Schema.from_config(load_config(None).schema)
    with scanner(scan):
        assert RowDecoder(schema).decode(body) is None


@PATHS
def test_a_reserved_extreme_is_refused_as_the_validator_does(scan: bool) -> None:
    """0 stands for no value in a max:uint64 metric: each path refuses it with the validator's
    own error, naming the row (a hypothesis example of test_fast_path_declines_or_agrees)."""
    schema = Schema.from_config(SchemaConfig(100, 60, ("at", "uint32"), (),
                                             (("peak", "max:uint64"), ("visits", "uint8"))))
    body = b'[{"at": 1, "visits": 2}, {"at": 0.5, "peak": 0}]'
    with pytest.raises(InsertError) as want:
        parse_rows(schema, loads(body, "insert body", strict=False))
    with scanner(scan), pytest.raises(InsertError) as got:
        RowDecoder(schema).decode(body)
    assert str(got.value) == str(want.value) == ("rows[1].peak: 0 is reserved in a max:uint64 "
                                                  "metric (it stands for no value)")
