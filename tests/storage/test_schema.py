"""schema.py: column types and dtypes, row size, persistence and the equivalence check."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from gumshoe.config import SchemaConfig, load_config
from gumshoe.errors import ConfigError, SchemaMismatchError
from gumshoe.schema import Schema, sum_dtype
from tests.strategies import schema_configs


def make(dims=(("name", "string:uint16"),), mets=(("visits", "uint8"),), ts=("at", "uint32"),
         segment_size=10**6, interval=3600) -> Schema:
    return Schema.from_config(SchemaConfig(segment_size, interval, ts, tuple(dims), tuple(mets)))


def test_default_schema() -> None:
    s = Schema.from_config(load_config().schema)
    assert s.timestamp.name == "at" and s.timestamp.role == "timestamp"
    assert [d.name for d in s.dimensions] == ["name", "country", "age"]
    assert [d.name for d in s.string_dimensions] == ["name", "country"]
    assert s.column("country").capacity == 256
    assert s.column("name").capacity == 65536
    assert s.column("age").dtype == np.uint8 and not s.column("age").is_string
    assert s.column("nope") is None
    # count 8 + name 2+1 + country 1+1 + age 1+1 + two metrics stored as int64
    assert s.row_bytes == 8 + 3 + 2 + 2 + 8 + 8
    assert s.rows_per_segment == 10**6 // s.row_bytes


@pytest.mark.parametrize(("type_name", "store"), [
    ("uint8", np.int64), ("int8", np.int64), ("uint16", np.int64), ("int16", np.int64),
    ("uint32", np.int64), ("int32", np.int64), ("int64", np.int64), ("uint64", np.uint64),
    ("float32", np.float64), ("float64", np.float64)])
def test_metrics_are_stored_in_a_wide_sum_dtype(type_name: str, store: type) -> None:
    s = make(mets=(("m", type_name),))
    m = s.column("m")
    assert m.dtype == np.dtype(type_name)
    assert m.store_dtype == store == sum_dtype(np.dtype(type_name))


@pytest.mark.parametrize(("type_name", "lo", "hi"), [
    ("uint8", 0, 255), ("int8", -128, 127), ("uint16", 0, 65535), ("int16", -32768, 32767),
    ("uint32", 0, 2**32 - 1), ("int32", -(2**31), 2**31 - 1), ("uint64", 0, 2**64 - 1),
    ("int64", -(2**63), 2**63 - 1)])
def test_integer_value_ranges(type_name: str, lo: int, hi: int) -> None:
    d = make(dims=(("d", type_name),)).column("d")
    assert d.value_range == (lo, hi)
    assert d.store_dtype == np.dtype(type_name)  # dimensions keep their declared type


def test_float_value_range() -> None:
    d = make(dims=(("d", "float32"),)).column("d")
    assert d.value_range == (-3.4028234663852886e38, 3.4028234663852886e38)
    assert d.is_float


@pytest.mark.parametrize(("base", "capacity"), [("uint8", 256), ("uint16", 65536),
                                                  ("uint32", 2**32)])
def test_string_dimension_codes(base: str, capacity: int) -> None:
    d = make(dims=(("s", f"string:{base}"),)).column("s")
    assert d.is_string and d.dtype == np.dtype(base) and d.capacity == capacity
    assert d.type_name == f"string:{base}"


def test_schema_without_dimensions() -> None:
    s = make(dims=())
    assert s.dimensions == () and s.row_bytes == 16


@pytest.mark.parametrize("name", ["a/b", "/", "nul\0", "x" * 201])
def test_names_unusable_in_file_names_are_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match="column name must not"):
        make(dims=((name, "string:uint8"),))


def test_unusual_names_are_fine() -> None:
    s = make(dims=(("with space", "string:uint8"), ("ünï.x-y", "int8"), ("..", "uint8")))
    assert [d.name for d in s.dimensions] == ["with space", "ünï.x-y", ".."]


def test_row_must_fit_a_segment() -> None:
    with pytest.raises(ConfigError, match="cannot hold one row"):
        make(mets=tuple((f"m{i}", "uint64") for i in range(20)), segment_size=100)
    s = make(dims=(), mets=(("m", "uint64"),), segment_size=100)
    assert s.rows_per_segment == 6


@given(schema_configs())
def test_json_round_trip(sc: SchemaConfig) -> None:
    s = Schema.from_config(sc)
    again = Schema.from_json(s.to_json())
    assert again == s
    s.check_same(again)
    assert again.row_bytes == s.row_bytes


def test_check_same_reports_each_difference() -> None:
    base = make(dims=(("name", "string:uint16"), ("age", "uint8")),
                mets=(("visits", "uint8"), ("clicks", "uint32")))
    cases = {
        "timestamp column is at:uint32, config has ts:uint32": make(
            dims=(("name", "string:uint16"), ("age", "uint8")),
            mets=(("visits", "uint8"), ("clicks", "uint32")), ts=("ts", "uint32")),
        "dimension columns are [name:string:uint16, age:uint8], config has "
        "[name:string:uint16, age:uint16]": make(
            dims=(("name", "string:uint16"), ("age", "uint16")),
            mets=(("visits", "uint8"), ("clicks", "uint32"))),
        "metric columns are [visits:uint8, clicks:uint32], config has [visits:uint8]": make(
            dims=(("name", "string:uint16"), ("age", "uint8")), mets=(("visits", "uint8"),)),
        "config has [visits:uint8, clicks:uint32, extra:uint8]": make(
            dims=(("name", "string:uint16"), ("age", "uint8")),
            mets=(("visits", "uint8"), ("clicks", "uint32"), ("extra", "uint8"))),
        "segment size is 1000000, config has 2000000": make(
            dims=(("name", "string:uint16"), ("age", "uint8")),
            mets=(("visits", "uint8"), ("clicks", "uint32")), segment_size=2 * 10**6),
        "interval duration is 3600s, config has 60s": make(
            dims=(("name", "string:uint16"), ("age", "uint8")),
            mets=(("visits", "uint8"), ("clicks", "uint32")), interval=60),
    }
    for fragment, other in cases.items():
        with pytest.raises(SchemaMismatchError) as e:
            base.check_same(other, hint=" (use `gumtool migrate`)")
        assert fragment in str(e.value)
        assert "gumtool migrate" in str(e.value)


def test_interval_start_is_epoch_aligned() -> None:
    s = make(interval=3600)
    ts = np.array([0, 1, 3599, 3600, 7199, 2**32 - 1], dtype=np.int64)
    assert s.interval_start(ts).tolist() == [0, 0, 0, 3600, 3600, 2**32 - 1 - (2**32 - 1) % 3600]
    weekly = make(interval=7 * 86400)
    assert weekly.interval_start(np.array([0, 604800 + 5])).tolist() == [0, 604800]
