"""The C fast path of parse_rows (gumshoe/_rows.c): on any batch, valid or not, parse_rows gives
exactly what its pure-Python path gives (the same Batch, dtypes and nil masks included, or the
same error), and it takes the fast path for every valid batch the row strategies draw."""

from __future__ import annotations

import enum
import math
import os
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gumshoe import batch, native
from gumshoe.batch import Batch, parse_rows
from gumshoe.config import SchemaConfig
from gumshoe.schema import NUMERIC_TYPES, Column, Schema

from ..strategies import invalid_batches, rows, schemas, value_pool

NATIVE = batch._rows_ext is not None
needs_native = pytest.mark.skipif(not NATIVE, reason="gumshoe._rows is not loaded")


def test_the_extension_is_loaded() -> None:
    if os.environ.get("GUMSHOE_NATIVE") == "0":
        assert batch._rows_ext is None
        return
    assert native.rows is not None, ("gumshoe._rows is not built: the build needs a C compiler "
                                     "(pip install -e .); set GUMSHOE_NATIVE=0 to test the "
                                     "numpy path")
    assert batch._rows_ext is native.rows


def python_path(schema: Schema, raw: Any) -> Any:
    """parse_rows without the extension: the Batch, or the exception it raises."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch, "_rows_ext", None)
        return outcome(schema, raw)


def outcome(schema: Schema, raw: Any) -> Any:
    try:
        return parse_rows(schema, raw)
    except Exception as e:  # noqa: BLE001  every exception must match, not only InsertError
        return e


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes: -0.0 is not 0.0, and nil cells must hold the same 0."""
    return (type(a) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
            and a.tobytes() == b.tobytes())


def assert_identical(got: Batch, want: Batch) -> None:
    assert got.n == want.n
    assert same_array(got.timestamps, want.timestamps)
    assert got.dims.keys() == want.dims.keys() and got.nils.keys() == want.nils.keys()
    for name, v in want.dims.items():
        if isinstance(v, list):
            assert type(got.dims[name]) is list and got.dims[name] == v, name
            assert all(a is b for a, b in zip(got.dims[name], v)), name  # the same objects
        else:
            assert same_array(got.dims[name], v), name
    for name, v in want.nils.items():
        assert (got.nils[name] is None) if v is None else same_array(got.nils[name], v), name
    assert got.metrics.keys() == want.metrics.keys()
    for name, v in want.metrics.items():
        assert same_array(got.metrics[name], v), name
    assert got.counts is None and want.counts is None
    assert got.row_index is None and want.row_index is None


def assert_same_outcome(schema: Schema, raw: Any) -> Any:
    want = python_path(schema, raw)
    got = outcome(schema, raw)
    if isinstance(want, Exception):
        assert type(got) is type(want) and str(got) == str(want), (got, want)
    else:
        assert isinstance(got, Batch), got
        assert_identical(got, want)
    return want


# -- odd values ----------------------------------------------------------------------------

class IntKind(enum.IntEnum):
    three = 3


class Text(str):
    pass


class Real(float):
    pass


def odd_values(col: Column | None) -> list[Any]:
    """Values at and beyond every boundary parse_rows checks, valid and not."""
    out: list[Any] = [None, True, False, "5", "", [1], [[1, [2]]], {"a": 1}, {}, (1,),
                      math.nan, math.inf, -math.inf, 10**400, -(10**400), 2**128, 2**64,
                      2**64 - 1, 2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 2**53 + 1,
                      float(2**53 + 2), float(2**63), float(2**64), -float(2**63), 1.8e19,
                      -0.0, 0.5, -0.5, 2.5, 2.9, 1e39, -1e39, 10**39, 3.4028235e38,
                      3.4028235677973366e38, 3.402823669e38, 1.7976931348623157e308, 2.0**-149,
                      1e-46, 255, 256, 255.0, 256.0, -1, -128, -129, 127, 128, 32767, 32768,
                      -32769, 65535, 65536, 2**31, -(2**31) - 1, 2**32 - 1, 2**32, 2**32 - 0.5,
                      4294967295.0, 4294967296.0, IntKind.three, Text("a"), Real(1.0),
                      np.int64(3), np.float64(1.0), b"bytes"]
    if col is not None:
        lo, hi = col.value_range
        out += [lo, hi] if col.dtype.kind == "f" else [lo, hi, lo - 1, hi + 1, float(lo)]
    return out


def timestamp_values() -> list[Any]:
    return [0, 1, -1, -0.0, -0.5, 0.5, 1_700_000_000, 1_700_000_000.75, 2**32 - 1,
            2**32 - 0.5, 2**32, 4294967295.0, 4294967296.0, 2**63, 2**64, 10**400, math.nan,
            math.inf, None, True, "1", 1e300, IntKind.three, Real(5.5)]


def fresh(name: str) -> str:
    """A str equal to `name` that is another object (rows built by other code)."""
    return str(bytearray(name, "utf-8"), "utf-8")


@st.composite
def messy_rows(draw: st.DrawFn, schema: Schema) -> list[Any]:
    """A batch whose rows mix valid values with odd ones, shuffled key orders, key objects
    that are equal to the column names but not the same object, extra keys and non-rows."""
    ts = schema.timestamp
    out: list[Any] = []
    odd = draw(st.integers(0, 30))  # percent of odd values: often none, for valid batches
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.integers(0, 99))
        if kind == 0:
            out.append(draw(st.sampled_from([None, 1, "row", [], [{"at": 1}], True,
                                             (("at", 1),)])))
            continue
        row: dict[Any, Any] = {}
        for col in draw(st.permutations(schema.columns)):
            key = fresh(col.name) if draw(st.integers(0, 9)) == 0 else col.name
            if draw(st.integers(0, 99)) < odd:
                if col is ts and draw(st.booleans()):
                    continue  # missing timestamp
                pool = timestamp_values() if col is ts else odd_values(col)
                row[key] = draw(st.sampled_from(pool))
            elif col is ts:
                row[key] = draw(st.sampled_from(timestamp_values()[:10]))
            elif draw(st.integers(0, 9)) == 0:
                continue  # missing
            elif col.is_string:
                row[key] = draw(st.sampled_from(["", "a", "Ünï", "日本", None]))
            else:
                v = draw(st.sampled_from(value_pool(col) + [None]))
                row[key] = float(v) if isinstance(v, int) and draw(st.booleans()) else v
        if kind == 1:
            row[draw(st.sampled_from(["bogus", "", "AT", 1, None, (1,)]))] = 1
        elif kind == 2 and row:
            key, value = row.popitem()
            row[Text(key)] = value  # a str subclass key, equal to the name
        elif kind == 3:
            row = dict(row)  # a copy: another dict, other key table
        out.append(row)
    return out


settings_ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@needs_native
@settings_
@given(st.data())
def test_valid_batches_take_the_fast_path(data: st.DataObject) -> None:
    schema = data.draw(schemas())
    raw = data.draw(rows(schema, min_size=1))
    fast = batch._gather(schema, raw)
    assert fast is not None, "the fast path declined a valid batch"
    assert_identical(fast, python_path(schema, raw))


@needs_native
@settings_
@given(st.data())
def test_invalid_batches_fail_alike(data: st.DataObject) -> None:
    schema = data.draw(schemas())
    bad = data.draw(invalid_batches(schema))
    assert isinstance(assert_same_outcome(schema, bad.rows), Exception)


@needs_native
@settings_
@given(st.data())
def test_messy_batches_agree(data: st.DataObject) -> None:
    schema = data.draw(schemas())
    raw = data.draw(messy_rows(schema))
    snapshot = repr(raw)
    assert_same_outcome(schema, raw)
    assert repr(raw) == snapshot  # the rows are not touched


WIDE = Schema.from_config(SchemaConfig(
    10**6, 3600, ("at", "uint32"),
    tuple((f"d_{t}", t) for t in (*NUMERIC_TYPES, "string:uint8", "string:uint32")),
    tuple((f"m_{t}", t) for t in NUMERIC_TYPES)))


@needs_native
@pytest.mark.parametrize("column", WIDE.columns, ids=lambda c: c.name)
def test_every_odd_value_in_every_column(column: Column) -> None:
    good = {"at": 1_700_000_000, "d_uint8": 3, "d_string:uint8": "x", "m_float32": 0.5}
    values = timestamp_values() if column is WIDE.timestamp else odd_values(column)
    accepted = 0
    for value in values:
        for raw in ([{**good, column.name: value}], [good, {**good, column.name: value}, good]):
            accepted += not isinstance(assert_same_outcome(WIDE, raw), Exception)
    assert accepted  # some of them are valid


@needs_native
@pytest.mark.parametrize("raw", [
    [{"at": 1}, None], [None], [{"at": 1}, [("at", 1)]], [{"at": 1, "bogus": 1}],
    [{"m_uint8": 1}], [{"at": 1, 1: 2}], [{"at": 1, None: 2}], [{"at": 1}, {"AT": 1}],
    [{"at": 1}] * 3, [{Text("at"): 1, "m_uint8": 2}],
])
def test_odd_rows(raw: list[Any]) -> None:
    assert_same_outcome(WIDE, raw)


class Impostor:
    """A key with the hash of a column name that equals nothing: an unknown column."""

    def __hash__(self) -> int:
        return hash("at")

    def __eq__(self, other: object) -> bool:
        return False

    def __repr__(self) -> str:
        return "Impostor()"


@needs_native
def test_keys_that_are_not_str_are_unknown_columns() -> None:
    assert isinstance(assert_same_outcome(WIDE, [{"at": 1, Impostor(): 2}]), Exception)
    assert isinstance(assert_same_outcome(WIDE, [{Impostor(): 2, "at": 1}]), Exception)


@needs_native
def test_list_and_dict_subclasses_fall_back() -> None:
    class Rows(list):  # type: ignore[type-arg]
        pass

    class Row(dict):  # type: ignore[type-arg]
        pass

    assert_same_outcome(WIDE, Rows([{"at": 1}]))
    assert_same_outcome(WIDE, [Row(at=1)])
    assert batch._gather(WIDE, [Row(at=1)]) is None


@needs_native
def test_keys_equal_but_not_identical() -> None:
    """A key cache matches keys by identity; different key objects in any order still match,
    and a key at a position that held another column in the previous row is looked up."""
    at, s, m = fresh("at"), fresh("d_string:uint8"), fresh("m_int64")
    assert at == "at" and at is not "at"  # noqa: F632
    raw = [{"at": 1, "d_string:uint8": "x", "m_int64": 5}, {at: 2, s: "y", m: 6},
           {m: 7, at: 3}, {s: None, "at": 4}, {"m_int64": 8, "at": 5, "d_string:uint8": "z"}]
    fast = batch._gather(WIDE, raw)
    assert fast is not None
    assert_identical(fast, python_path(WIDE, raw))
    assert fast.metrics["m_int64"].tolist() == [5, 6, 7, 0, 8]
    assert fast.dims["d_string:uint8"] == ["x", "y", None, None, "z"]
    assert fast.nils["d_string:uint8"].tolist() == [False, False, True, True, False]


@needs_native
def test_benchmark_shaped_rows_take_the_fast_path() -> None:
    schema = Schema.from_config(SchemaConfig(
        10**6, 3600, ("at", "uint32"),
        (("name", "string:uint16"), ("country", "string:uint8"), ("device", "uint8")),
        (("visits", "uint8"), ("clicks", "uint16"), ("bytes", "uint32"))))
    raw = [{"at": 1_767_225_600 + i, "name": f"/page/{i % 7}", "country": None if i % 5 else
            "US", "device": i % 10, "visits": 1, "clicks": i % 3, "bytes": 200 + i}
           for i in range(1000)]
    fast = batch._gather(schema, raw)
    assert fast is not None
    assert_identical(fast, python_path(schema, raw))
    assert fast.nils["name"] is None and fast.nils["device"] is None
    assert fast.nils["country"].sum() == 800


@needs_native
def test_the_extension_checks_its_arguments() -> None:
    gather = batch._rows_ext.gather
    n = 2
    raw = [{"at": 1}, {"at": 2}]
    assert gather(raw, [("at", "timestamp", np.empty(n, np.int64), None)]) == ((0,), ())
    with pytest.raises(TypeError):
        gather((), [])
    with pytest.raises(ValueError, match="kind"):
        gather(raw, [("at", "int128", np.empty(n, np.int64), None)])
    with pytest.raises(ValueError, match="len"):
        gather(raw, [("at", "timestamp", np.empty(n + 1, np.int64), None)])
    with pytest.raises(ValueError, match="wrong type"):
        gather(raw, [("at", "timestamp", np.empty(n, np.int32), None)])
    with pytest.raises(ValueError, match="wrong type"):
        gather(raw, [("x", "uint64", np.empty(n, np.int64), None)])
    with pytest.raises(ValueError, match="bool"):
        gather(raw, [("x", "int8", np.empty(n, np.int8), np.empty(n, np.int16))])
    with pytest.raises(ValueError, match="no output"):
        gather(raw, [("x", "string", np.empty(n, np.int8), None)])
    with pytest.raises(TypeError):
        gather(raw, [(Text("at"), "timestamp", np.empty(n, np.int64), None)])
    with pytest.raises(ValueError):  # read-only output
        out = np.empty(n, np.int64)
        out.flags.writeable = False
        gather(raw, [("at", "timestamp", out, None)])
