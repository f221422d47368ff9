"""block.py: the vectorised roll-up against the reference, key encodings, block plumbing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gumshoe.block import Block, concat, dense_codes, empty_block, group_key, rollup
from gumshoe.config import SchemaConfig
from gumshoe.dictionary import Dictionary
from gumshoe.schema import Schema
from tests import reference
from tests.storage.contents import add_row, block_rows, encode, strings_of
from tests.strategies import rows, schemas


def make(dims: Any = (), mets: Any = (("m", "uint8"),)) -> Schema:
    return Schema.from_config(SchemaConfig(10**6, 3600, ("at", "uint32"), tuple(dims),
                                           tuple(mets)))


def key_order(schema: Schema, block: Block) -> list[tuple[Any, ...]]:
    """Per row, the sort key the roll-up orders by: per dimension (not nil, code or value)."""
    out = []
    for i in range(block.n):
        k = []
        for d in schema.dimensions:
            nil = block.nils[d.name]
            is_nil = nil is not None and bool(nil[i])
            k.append((not is_nil, 0 if is_nil else block.dims[d.name][i].item()))
        out.append(tuple(k))
    return out


def rolled_by_interval(schema: Schema, raw: list[dict[str, Any]], pieces: int = 1
                       ) -> tuple[reference.Table, list[tuple[int, Block]], dict[str, Dictionary]]:
    """Roll up raw rows per interval through `rollup`, feeding each interval's rows as
    `pieces` blocks (rolled first when pieces > 1, to exercise counts > 1)."""
    dictionaries: dict[str, Dictionary] = {}
    block, starts = encode(schema, raw, dictionaries)
    table: reference.Table = {}
    results = []
    for start in sorted(set(starts.tolist())):
        part = block.take(starts == start)
        chunks = [part.take(np.arange(i, part.n, pieces)) for i in range(pieces)]
        if pieces > 1:
            chunks = [rollup(schema, [c]) for c in chunks]
        out = rollup(schema, chunks)
        results.append((start, out))
        for key, entry in block_rows(schema, out, strings_of(dictionaries)):
            assert (start, key) not in table, "a key appears twice in a rolled-up block"
            add_row(table, (start, key), entry, schema)
    return table, results, dictionaries


@given(st.data())
def test_rollup_matches_reference(data: st.DataObject) -> None:
    schema = data.draw(schemas())
    raw = data.draw(rows(schema, max_size=60))
    pieces = data.draw(st.integers(1, 3))
    table, results, _ = rolled_by_interval(schema, raw, pieces)
    assert table == reference.rollup(schema, raw)
    for _start, out in results:
        order = key_order(schema, out)
        assert order == sorted(order) and len(set(order)) == len(order)  # key order, once
        assert out.logical_rows == int(out.count.sum()) and out.count.min() >= 1


def test_nil_and_zero_are_different_keys() -> None:
    schema = make(dims=[("age", "uint8"), ("s", "string:uint8"), ("f", "float64")])
    raw = [{"at": 0, "age": 0, "m": 1}, {"at": 0, "age": None, "m": 2}, {"at": 0, "m": 4},
           {"at": 0, "age": 0, "s": "", "f": 0.0, "m": 8}, {"at": 0, "age": 0, "s": "", "m": 16}]
    table, _, _ = rolled_by_interval(schema, raw)
    assert table == {
        (0, (0, None, None)): {"count": 1, "m": 1},
        (0, (None, None, None)): {"count": 2, "m": 6},
        (0, (0, "", 0.0)): {"count": 1, "m": 8},
        (0, (0, "", None)): {"count": 1, "m": 16},
    }


def test_uint8_metric_rolled_up_300_times_holds_300() -> None:
    schema = make(dims=[("d", "uint8")], mets=[("visits", "uint8")])
    out = rollup(schema, [encode(schema, [{"at": 0, "d": 1, "visits": 1}] * 300)[0]])
    assert out.n == 1 and out.count.tolist() == [300] and out.metrics["visits"].tolist() == [300]
    big = rollup(schema, [encode(schema, [{"at": 0, "d": 1, "visits": 255}] * 300)[0]])
    assert big.metrics["visits"].tolist() == [255 * 300]


@pytest.mark.parametrize("dims", [(), (("d", "uint8"),)])
def test_integer_sums_are_exact_beyond_2_53(dims: Any) -> None:
    schema = make(dims=dims, mets=[("i", "int64"), ("u", "uint64"), ("s", "uint32")])
    raw = [{"at": 0, "d": 1, "i": 2**53 + 1, "u": 2**53 + 1, "s": 1}] * 3
    raw += [{"at": 0, "d": 2, "i": -(2**52) - 1, "u": 1, "s": 2**32 - 1}] * 5
    if not dims:
        raw = [{k: v for k, v in r.items() if k != "d"} for r in raw]
    table, _, _ = rolled_by_interval(schema, raw)
    assert table == reference.rollup(schema, raw)
    if dims:
        assert table[(0, (1,))] == {"count": 3, "i": 3 * (2**53 + 1), "u": 3 * (2**53 + 1),
                                    "s": 3}
    d = {"d": 1} if dims else {}
    raw = [{"at": 0, "u": 2**63, **d}, {"at": 0, "u": 2**63 - 1, **d}]
    assert rollup(schema, [encode(schema, raw)[0]]).metrics["u"].tolist() == [2**64 - 1]


def test_float_sums_add_in_row_order() -> None:
    """1e16 + 1 + 1 (row order) is 1e16 in float64; any other grouping of the same rows
    would give 1e16 + 2. The roll-up must not depend on how rows were sorted."""
    schema = make(dims=[("d", "uint8")], mets=[("f", "float64")])
    raw = [{"at": 0, "d": 1, "f": 1e16}, {"at": 0, "d": 2, "f": 5.0},
           {"at": 0, "d": 1, "f": 1.0}, {"at": 0, "d": 1, "f": 1.0}]
    out = rollup(schema, [encode(schema, raw)[0]])
    assert out.metrics["f"].tolist() == [(1e16 + 1.0) + 1.0, 5.0]


@pytest.mark.parametrize(("type_name", "values"), [
    ("int8", [127, -128, None, None, 127]),
    ("int16", [-32768, 32767, None, 0]),
    ("int64", [-(2**63), -(2**63) + 1, None, -(2**63)]),
    ("int64", [2**63 - 1, 2**63 - 3, None]),
    ("uint64", [2**64 - 1, 2**64 - 2, None, 2**64 - 1]),
    ("uint64", [2**63 - 1, 2**63, 2**63 + 1, 0]),
    ("uint64", [0, 2**64 - 1, None]),  # wide range: the unique() path
    ("int64", [-(2**63), 2**63 - 1, None, 0]),
    ("float32", [0.0, -0.0, None, 3.4028234663852886e38, -3.4028234663852886e38, 1e-45]),
    ("float64", [0.0, -0.0, 5e-324, None, 1.7976931348623157e308, 0.1, 0.1]),
])
def test_boundary_dimension_values(type_name: str, values: list[Any]) -> None:
    schema = make(dims=[("d", type_name)])
    raw = [{"at": 0, "d": v, "m": 1} for v in values]
    table, _, _ = rolled_by_interval(schema, raw)
    assert table == reference.rollup(schema, raw)


def test_dense_codes() -> None:
    codes, card = dense_codes(np.array([5, 7, 5, 0], np.uint16), np.array([0, 0, 0, 1], bool))
    assert codes.tolist() == [1, 3, 1, 0] and card == 4  # offset from the minimum, nil -> 0
    codes, card = dense_codes(np.array([0.5, -1.0, 0.5], np.float32), None)
    assert codes.tolist() == [2, 1, 2] and card == 3  # floats: rank among distinct values
    codes, card = dense_codes(np.array([0, 10**12], np.int64), None)
    assert codes.tolist() == [1, 2] and card == 3  # a wide range: rank
    codes, card = dense_codes(np.zeros(3, np.int8), np.ones(3, bool))
    assert codes.tolist() == [0, 0, 0] and card == 1  # all nil


def test_group_key_overflow_returns_none() -> None:
    n = 4
    parts = [(np.arange(n, dtype=np.int64), 2**20) for _ in range(3)]
    key, size = group_key(parts, n)
    assert size == 2**60 and key.tolist() == [i * 2**40 + i * 2**20 + i for i in range(n)]
    assert group_key(parts + [(np.zeros(n, np.int64), 8)], n) is None  # 2**63 > int64 max


def test_wide_key_space_uses_the_lexsort_fallback() -> None:
    """Four uint16 dimensions spanning 0..65535 (65537 codes each with nil) and two far-apart
    int64 ones: the mixed-radix key cannot fit int64, so the lexsort path runs."""
    dims = [(f"u{i}", "uint16") for i in range(4)] + [("i0", "int64"), ("i1", "int64")]
    schema = make(dims=dims, mets=[("m", "uint32")])
    rng = np.random.default_rng(7)
    pools = {name: [0, 65535, 1, 2] if t == "uint16" else
             rng.integers(-(2**62), 2**62, size=5).tolist() for name, t in dims}
    raw = []
    for _ in range(400):
        r: dict[str, Any] = {"at": 0, "m": int(rng.integers(0, 2**32))}
        for name, pool in pools.items():
            j = int(rng.integers(0, len(pool) + 1))
            if j < len(pool):
                r[name] = pool[j]
        raw.append(r)
    block = encode(schema, raw)[0]
    parts = [dense_codes(block.dims[d.name], block.nils[d.name]) for d in schema.dimensions]
    assert group_key(parts, block.n) is None  # the fallback really runs
    table, results, _ = rolled_by_interval(schema, raw)
    assert table == reference.rollup(schema, raw)
    assert len(table) < len(raw)  # rows did collapse
    order = key_order(schema, results[0][1])
    assert order == sorted(order)


def test_schema_without_dimensions_collapses_everything() -> None:
    schema = make(mets=[("m", "int32"), ("f", "float64")])
    raw = [{"at": 0, "m": -5, "f": 0.5}, {"at": 10, "m": 7}, {"at": 20, "f": 0.25}]
    out = rollup(schema, [encode(schema, raw)[0]])
    assert out.n == 1 and out.count.tolist() == [3]
    assert out.metrics["m"].tolist() == [2] and out.metrics["f"].tolist() == [0.75]


def test_trivial_inputs() -> None:
    schema = make(dims=[("s", "string:uint8")])
    assert rollup(schema, []).n == 0
    assert rollup(schema, [empty_block(schema), empty_block(schema)]).n == 0
    one = encode(schema, [{"at": 0, "s": "x", "m": 3}])[0]
    out = rollup(schema, [empty_block(schema), one])
    assert out.n == 1 and out.metrics["m"].tolist() == [3]


def test_rollup_is_associative() -> None:
    schema = make(dims=[("s", "string:uint8"), ("n", "int8")], mets=[("m", "int16")])
    dictionaries: dict[str, Dictionary] = {}
    raw = [{"at": 0, "s": s, "n": n, "m": m} for s in ("a", "b", None) for n in (1, None, -1)
           for m in (1, -3)]
    a = encode(schema, raw[:7], dictionaries)[0]
    b = encode(schema, raw[5:], dictionaries)[0]
    whole = rollup(schema, [a, b])
    nested = rollup(schema, [rollup(schema, [a]), rollup(schema, [b])])
    strings = strings_of(dictionaries)
    assert block_rows(schema, whole, strings) == block_rows(schema, nested, strings)


def test_concat_take_slice_keep_nil_masks() -> None:
    schema = make(dims=[("s", "string:uint8"), ("n", "uint16")])
    d: dict[str, Dictionary] = {}
    a = encode(schema, [{"at": 0, "s": "x", "n": 1, "m": 1}, {"at": 0, "s": "y", "m": 2}], d)[0]
    b = encode(schema, [{"at": 0, "n": 3, "m": 3}], d)[0]
    assert a.nils["s"] is None and b.nils["s"] is not None
    c = concat(schema, [a, empty_block(schema), b])
    assert c.n == 3 and c.nils["s"].tolist() == [False, False, True]
    assert c.nils["n"].tolist() == [False, True, False]
    assert c.metrics["m"].tolist() == [1, 2, 3]
    assert concat(schema, [a]) is a
    assert c.slice(0, 2).nils["s"] is None  # no nil in the slice: no mask
    assert c.slice(1, 10).n == 2 and c.slice(1, 10).nils["s"].tolist() == [False, True]
    t = c.take(np.array([2, 0]))
    assert t.n == 2 and t.metrics["m"].tolist() == [3, 1] and t.nils["s"].tolist() == [True, False]
    assert c.take(np.array([True, False, True])).n == 2
    assert c.logical_rows == 3
