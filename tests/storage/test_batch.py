"""batch.py: whole-batch validation into columns; every error names rows[i] and the column."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gumshoe.batch import parse_rows
from gumshoe.config import SchemaConfig
from gumshoe.errors import InsertError
from gumshoe.schema import NUMERIC_TYPES, Schema
from tests import reference
from tests.strategies import invalid_batches, rows, schemas

ALL_TYPES = NUMERIC_TYPES + ("string:uint8", "string:uint16", "string:uint32")


def make(dims: Any = (), mets: Any = (("m", "uint8"),)) -> Schema:
    return Schema.from_config(SchemaConfig(10**6, 3600, ("at", "uint32"), tuple(dims),
                                           tuple(mets)))


WIDE = make(dims=[(f"d_{t}", t) for t in ALL_TYPES], mets=[(f"m_{t}", t) for t in NUMERIC_TYPES])


def rejects(schema: Schema, rows_: Any, *fragments: str) -> str:
    with pytest.raises(InsertError) as e:
        parse_rows(schema, rows_)
    msg = str(e.value)
    for f in fragments:
        assert f in msg, msg
    return msg


def check_batch(schema: Schema, raw: list[dict[str, Any]]) -> None:
    """The parsed batch holds exactly the reference's stored values, column by column."""
    b = parse_rows(schema, raw)
    assert b.n == len(raw) and b.counts is None
    assert b.timestamps.dtype == np.int64
    assert b.timestamps.tolist() == [reference.timestamp(r[schema.timestamp.name]) for r in raw]
    for d in schema.dimensions:
        expect = [reference.stored_value(d, r.get(d.name)) for r in raw]
        nil = b.nils[d.name]
        got_nil = [False] * len(raw) if nil is None else nil.tolist()
        assert got_nil == [v is None for v in expect], d.name
        values = b.dims[d.name]
        if d.is_string:
            assert [None if n else v for v, n in zip(values, got_nil)] == expect
        else:
            assert values.dtype == d.dtype
            got = values.tolist()
            assert [None if n else v for v, n in zip(got, got_nil)] == expect, d.name
            assert all(v == 0 for v, n in zip(got, got_nil) if n)  # nil cells hold 0
    for m in schema.metrics:
        arr = b.metrics[m.name]
        assert arr.dtype == m.store_dtype
        assert arr.tolist() == [reference.stored_metric(m, r.get(m.name)) for r in raw]


@given(st.data())
def test_valid_rows_parse_to_their_stored_values(data: st.DataObject) -> None:
    schema = data.draw(schemas())
    check_batch(schema, data.draw(rows(schema)))


@given(st.data())
def test_every_invalid_batch_names_row_and_column(data: st.DataObject) -> None:
    schema = data.draw(schemas())
    bad = data.draw(invalid_batches(schema))
    msg = rejects(schema, bad.rows, f"rows[{bad.index}]")
    if bad.column is not None:
        assert bad.column in msg


def test_missing_and_null_values() -> None:
    s = make(dims=[("s", "string:uint8"), ("n", "int16")], mets=[("m", "uint8"), ("f", "float32")])
    b = parse_rows(s, [{"at": 5}, {"at": 6, "s": None, "n": None, "m": None, "f": None},
                       {"at": 7, "s": "x", "n": -3, "m": 4, "f": 0.5}])
    assert b.nils["s"].tolist() == [True, True, False]
    assert b.nils["n"].tolist() == [True, True, False]
    assert b.dims["n"].tolist() == [0, 0, -3]
    assert b.metrics["m"].tolist() == [0, 0, 4]
    assert b.metrics["f"].tolist() == [0.0, 0.0, 0.5]
    b = parse_rows(s, [{"at": 1, "s": "x", "n": 0}])
    assert b.nils["s"] is None and b.nils["n"] is None  # no nil row: no mask


def test_empty_batches() -> None:
    s = make()
    assert parse_rows(s, []).n == 0
    assert parse_rows(s, None).n == 0


@pytest.mark.parametrize("body", [{"at": 1}, "rows", 5, True])
def test_body_must_be_an_array(body: Any) -> None:
    rejects(make(), body, "JSON array")


@pytest.mark.parametrize("bad", [None, 1, "x", [1], True])
def test_rows_must_be_objects(bad: Any) -> None:
    rejects(make(), [{"at": 1}, bad], "rows[1]", "expected a row object")


def test_timestamp_errors() -> None:
    s = make()
    rejects(s, [{"at": 1}, {"m": 1}], "rows[1]", "missing timestamp column 'at'")
    rejects(s, [{"at": None}], "rows[0].at", "got null")
    rejects(s, [{"at": 1}, {"at": "3"}], "rows[1].at", "a string")
    rejects(s, [{"at": True}], "rows[0].at", "a boolean")
    rejects(s, [{"at": -1}], "rows[0].at", "out of range")
    rejects(s, [{"at": 2**32}], "rows[0].at", "out of range")
    rejects(s, [{"at": 2**80}], "rows[0].at", "out of range")
    rejects(s, [{"at": 2**32 + 0.5}], "rows[0].at", "out of range")
    rejects(s, [{"at": math.nan}], "rows[0].at", "not finite")
    rejects(s, [{"at": -math.inf}], "rows[0].at", "not finite")


def test_timestamps_are_floored() -> None:
    b = parse_rows(make(), [{"at": 3599.9}, {"at": 0}, {"at": 2**32 - 1}, {"at": 2**32 - 0.5}])
    assert b.timestamps.tolist() == [3599, 0, 2**32 - 1, 2**32 - 1]


def test_unknown_column() -> None:
    rejects(make(), [{"at": 1}, {"at": 1, "bogus": 1}], "rows[1]", "unknown column 'bogus'")
    rejects(make(), [{"at": 1, "AT": 1}], "rows[0]", "'AT'")  # names are case-sensitive


def test_fractions_into_integer_columns_are_rejected() -> None:
    s = make(dims=[("age", "uint8")], mets=[("visits", "uint8")])
    rejects(s, [{"at": 1, "visits": 2.9}], "rows[0].visits", "2.9", "not an integer")
    rejects(s, [{"at": 1}, {"at": 1, "age": 1.2}], "rows[1].age", "not an integer")
    rejects(s, [{"at": 1, "visits": 1}, {"at": 1, "visits": 2.5}], "rows[1].visits")
    b = parse_rows(s, [{"at": 1, "age": 21.0, "visits": 3.0}])  # integral floats are fine
    assert b.dims["age"].tolist() == [21] and b.metrics["visits"].tolist() == [3]


def test_negative_into_unsigned_is_rejected() -> None:
    s = make(dims=[("age", "uint8")], mets=[("visits", "uint8")])
    rejects(s, [{"at": 1, "age": -1}], "rows[0].age", "-1", "out of range", "uint8 [0, 255]")
    rejects(s, [{"at": 1, "visits": 1}, {"at": 1, "visits": -1}], "rows[1].visits")
    rejects(s, [{"at": 1, "age": 256}], "rows[0].age", "256")
    rejects(s, [{"at": 1, "visits": 256.0}], "rows[0].visits", "out of range")


def test_booleans_are_not_numbers() -> None:
    s = make(dims=[("age", "uint8"), ("s", "string:uint8")], mets=[("visits", "uint8")])
    rejects(s, [{"at": 1, "age": True}], "rows[0].age", "expected a number", "a boolean")
    rejects(s, [{"at": 1, "visits": False}], "rows[0].visits", "a boolean")
    rejects(s, [{"at": 1, "s": True}], "rows[0].s", "expected a string", "a boolean")


@pytest.mark.parametrize(("value", "what"), [("5", "a string"), ([1], "an array"),
                                             ({"a": 1}, "an object")])
def test_wrong_types_for_numbers(value: Any, what: str) -> None:
    s = make(dims=[("age", "int32")], mets=[("visits", "float64")])
    rejects(s, [{"at": 1, "age": value}], "rows[0].age", what)
    rejects(s, [{"at": 1, "visits": value}], "rows[0].visits", what)


def test_numbers_for_string_dimensions() -> None:
    s = make(dims=[("name", "string:uint16")])
    rejects(s, [{"at": 1, "name": "ok"}, {"at": 1, "name": 5}], "rows[1].name",
            "expected a string", "a number")


@pytest.mark.parametrize(("type_name", "value"), [
    ("uint64", 2**64 - 1), ("uint64", 2**63), ("int64", -(2**63)), ("int64", 2**63 - 1),
    ("int64", 2**53 + 1), ("uint64", 2**53 + 1), ("uint32", 2**32 - 1), ("int8", -128)])
def test_big_integers_are_exact(type_name: str, value: int) -> None:
    s = make(dims=[("d", type_name)], mets=[("m", type_name)])
    b = parse_rows(s, [{"at": 1, "d": value, "m": value}, {"at": 2, "d": 0, "m": 1}])
    assert b.dims["d"].tolist() == [value, 0]
    assert b.metrics["m"].tolist() == [value, 1]
    # the same with a float elsewhere in the column: no detour through float64
    b = parse_rows(s, [{"at": 1, "d": value, "m": value}, {"at": 2, "d": 1.0, "m": 1.0}])
    assert b.dims["d"].tolist() == [value, 1]
    assert b.metrics["m"].tolist() == [value, 1]


@pytest.mark.parametrize(("type_name", "value"), [
    ("uint64", 2**64), ("int64", 2**63), ("int64", -(2**63) - 1), ("uint64", -1),
    ("uint64", 1e20), ("int64", -1e19), ("int32", 2**31), ("int16", -32769), ("uint64", 10**400)])
def test_integer_overflow_is_rejected(type_name: str, value: float) -> None:
    s = make(dims=[("d", type_name)], mets=[("m", type_name)])
    rejects(s, [{"at": 1, "d": 0}, {"at": 1, "d": value}], "rows[1].d", "out of range")
    rejects(s, [{"at": 1, "m": 0.0}, {"at": 1, "m": value}], "rows[1].m", "out of range")


def test_large_integral_float_is_exact() -> None:
    s = make(mets=[("m", "uint64")])
    assert parse_rows(s, [{"at": 1, "m": 1.8e19}]).metrics["m"].tolist() == [18 * 10**18]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("type_name", ["float32", "float64", "int32", "uint8"])
def test_non_finite_numbers_are_rejected(value: float, type_name: str) -> None:
    s = make(dims=[("d", type_name)], mets=[("m", type_name)])
    rejects(s, [{"at": 1, "d": value}], "rows[0].d", "not a finite number")
    rejects(s, [{"at": 1, "m": 1.5 if type_name.startswith("f") else 1}, {"at": 1, "m": value}],
            "rows[1].m")


@pytest.mark.parametrize("value", [1e39, -1e39, 10**39, -(10**39), 2**128])
def test_float32_range(value: float) -> None:
    s = make(dims=[("d", "float32")], mets=[("m", "float32")])
    rejects(s, [{"at": 1, "d": value}], "rows[0].d", "out of range")
    rejects(s, [{"at": 1, "m": 1}, {"at": 1, "m": value}], "rows[1].m", "out of range")


@pytest.mark.parametrize("value", [10**400, -(10**400)])
def test_integers_beyond_float64_into_float_columns(value: int) -> None:
    s = make(dims=[("d", "float64")], mets=[("m", "float64")])
    rejects(s, [{"at": 1, "d": value}], "rows[0].d", "out of range")
    rejects(s, [{"at": 1, "m": 1.5}, {"at": 1, "m": value}], "rows[1].m", "out of range")


def test_float_columns_take_ints_and_round_float32() -> None:
    s = make(dims=[("d", "float32")], mets=[("m", "float32"), ("g", "float64")])
    b = parse_rows(s, [{"at": 1, "d": 0.1, "m": 0.1, "g": 2**60 + 1}, {"at": 1, "d": 3, "m": 2}])
    assert b.dims["d"].dtype == np.float32
    assert b.dims["d"].tolist() == [reference.float32(0.1), 3.0]
    assert b.metrics["m"].tolist() == [reference.float32(0.1), 2.0]
    assert b.metrics["g"].tolist() == [float(2**60 + 1), 0.0]


def test_first_error_in_column_order() -> None:
    """Two bad rows: the error names one of them precisely (the first column checked)."""
    s = make(dims=[("age", "uint8")], mets=[("visits", "uint8")])
    msg = rejects(s, [{"at": 1, "visits": 300}, {"at": 1, "age": 300}])
    assert "rows[1].age" in msg or "rows[0].visits" in msg


def test_take_keeps_rows_and_masks() -> None:
    s = make(dims=[("s", "string:uint8"), ("n", "int8")], mets=[("m", "int32")])
    b = parse_rows(s, [{"at": i, "s": None if i % 2 else str(i), "n": i, "m": -i}
                       for i in range(6)])
    t = b.take(np.array([True, False, False, True, True, False]))
    assert t.n == 3 and t.timestamps.tolist() == [0, 3, 4]
    assert t.dims["s"][0] == "0" and t.dims["s"][2] == "4"
    assert t.nils["s"].tolist() == [False, True, False]
    assert t.dims["n"].tolist() == [0, 3, 4] and t.metrics["m"].tolist() == [0, -3, -4]
    t = b.take(np.array([5, 0]))
    assert t.timestamps.tolist() == [5, 0] and t.dims["s"][1] == "0"


def test_error_values_formatted_as_json() -> None:
    s = make(dims=[("s", "string:uint8")], mets=[("m", "uint8")])
    assert "a boolean" in rejects(s, [{"at": 1, "s": False}])
    assert "1000" in rejects(s, [{"at": 1, "m": 1000}])
