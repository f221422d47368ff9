"""The fused C scan kernel (gumshoe/_kernels.c) against a numpy model of it, plus its guards."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gumshoe.kinds import MAX, MIN, SUM

from ..kernels import BUILT

CODE_TYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64, np.uint64]


@pytest.fixture(scope="module", autouse=True)
def scan_kernels() -> None:
    """Overrides the per-kernel parametrisation of tests/query: this module tests the C kernel."""


def test_the_extension_is_built() -> None:
    assert BUILT is not None or os.environ.get("GUMSHOE_NATIVE") == "0", (
        "gumshoe._kernels is not built: `pip install -e .` needs a C compiler (gcc). "
        "Set GUMSHOE_NATIVE=0 to test the numpy path alone.")


def model(base: int, k: int, parts: list[Any], mask: np.ndarray | None,
          columns: list[np.ndarray], ops: bytes | None = None) -> list[np.ndarray]:
    n = len(columns[0])
    key = np.full(n, base, np.int64)
    for codes, offset, stride, nil in parts:
        c = (codes.astype(np.int64) - offset) * stride
        if nil is not None:
            c[nil] = 0
        key += c
    sel = np.ones(n, bool) if mask is None else mask
    out = []
    for i, col in enumerate(columns):
        kind = KINDS[(ops or bytes(len(columns)))[i]]
        acc = kind.empty(k, acc_dtype(col))
        kind.ufunc.at(acc, key[sel], col[sel].astype(acc.dtype))
        out.append(acc)
    return out


KINDS = {0: SUM, 1: MIN, 2: MAX}  # the kernel's ops


def acc_dtype(col: np.ndarray) -> np.dtype:
    """Sums of a column: float64, int64 for signed integers, uint64 for unsigned ones (segments
    store integer sums in the narrowest type that holds them)."""
    return np.dtype({"f": np.float64, "i": np.int64, "u": np.uint64}[col.dtype.kind])


@st.composite
def calls(draw: st.DrawFn) -> tuple[Any, ...]:
    n = draw(st.integers(0, 3000))  # crosses the kernel's 1024-row chunks
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    parts, cards = [], []
    for _ in range(draw(st.integers(0, 3))):
        dtype = np.dtype(draw(st.sampled_from(CODE_TYPES)))
        lo = -5 if dtype.kind == "i" else 0
        card = draw(st.integers(2, 40))  # code 0 is nil, values lo.. are codes 1..card-1
        offset = lo - 1
        codes = rng.integers(lo, lo + card - 1, n).astype(dtype)
        nil = (rng.random(n) < 0.2) if draw(st.booleans()) else None
        parts.append([codes, offset, nil])
        cards.append(card)
    time_card = draw(st.integers(1, 4))
    time_code = draw(st.integers(0, time_card - 1))
    k = time_card
    for c in cards:
        k *= c
    stride = k // time_card
    base = time_code * stride
    full = []
    for (codes, offset, nil), card in zip(parts, cards):
        stride //= card
        full.append((codes, offset, stride, nil))
    mask = None
    if draw(st.booleans()):
        mask = rng.random(n) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    columns = [rng.integers(0, 50, n).astype(np.int64),
               rng.integers(-2**62, 2**62, n).astype(np.int64),  # wraps like numpy
               rng.integers(0, 2**64 - 1, n, dtype=np.uint64),
               rng.normal(0, 1e6, n), rng.integers(0, 9, n).astype(np.int64),
               rng.integers(0, 256, n).astype(np.uint8), rng.integers(-128, 128, n).astype(np.int8),
               rng.integers(-2**15, 2**15, n).astype(np.int16),
               rng.integers(0, 2**16, n).astype(np.uint16),
               rng.integers(-2**31, 2**31, n).astype(np.int32),
               rng.integers(0, 2**32, n).astype(np.uint32)]
    # any order and number: the kernel fuses runs of three integer columns
    columns = draw(st.permutations(columns))[:draw(st.integers(1, len(columns)))]
    return base, k, full, mask, columns


@settings(max_examples=150)
@given(calls())
def test_accumulate_matches_the_numpy_model(kernels: ModuleType, call: tuple[Any, ...]) -> None:
    base, k, parts, mask, columns = call
    accs = [np.zeros(k, acc_dtype(c)) for c in columns]
    kernels.accumulate(base, k, parts, mask, columns, accs)
    for got, want in zip(accs, model(base, k, parts, mask, columns)):
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-3)
        else:
            np.testing.assert_array_equal(got, want)


@settings(max_examples=150)
@given(calls(), st.data())
def test_accumulate_min_max_matches_the_numpy_model(kernels: ModuleType, call: tuple[Any, ...],
                                                    data: st.DataObject) -> None:
    """Min/max columns (ops 1, 2) among sums, in any order, from their kinds' identities."""
    base, k, parts, mask, columns = call
    ops = bytes(data.draw(st.lists(st.sampled_from([0, 1, 2]), min_size=len(columns),
                                   max_size=len(columns))))
    accs = [KINDS[op].empty(k, acc_dtype(c)) for op, c in zip(ops, columns)]
    kernels.accumulate(base, k, parts, mask, columns, accs, ops)
    for got, want, op in zip(accs, model(base, k, parts, mask, columns, ops), ops):
        if got.dtype.kind == "f" and op == 0:
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-3)
        else:
            np.testing.assert_array_equal(got, want)


def test_accumulate_refuses_bad_ops(kernels: ModuleType) -> None:
    part = [(np.array([0, 1], np.uint8), 0, 1, None)]
    col, acc = np.array([1, 2], np.int64), np.zeros(2, np.int64)
    for ops in (b"\3", b"\1\1"):
        with pytest.raises(ValueError):
            kernels.accumulate(0, 2, part, None, [col], [acc], ops)


def test_accumulate_adds_to_what_is_there(kernels: ModuleType) -> None:
    acc = np.array([10, 20], np.int64)
    kernels.accumulate(0, 2, [(np.array([0, 1, 1], np.uint8), 0, 1, None)], None,
                       [np.array([1, 2, 3], np.int64)], [acc])
    assert acc.tolist() == [11, 25]
    kernels.accumulate(1, 2, [], np.array([True, False, True]),
                       [np.array([1, 2, 3], np.int64)], [acc])
    assert acc.tolist() == [11, 29]


def test_accumulate_works_on_read_only_arrays(kernels: ModuleType) -> None:
    codes = np.array([0, 1], np.uint8)
    col = np.array([5, 6], np.int64)
    codes.flags.writeable = False
    col.flags.writeable = False
    acc = np.zeros(2, np.int64)
    kernels.accumulate(0, 2, [(codes, 0, 1, None)], None, [col], [acc])
    assert acc.tolist() == [5, 6]


@pytest.mark.parametrize("bad", [
    "key_too_big", "negative_key", "base_out_of_range", "acc_type", "acc_length",
    "column_length", "float_codes", "mask_length", "read_only_acc", "strided", "no_columns",
    "narrow_acc_sign", "float32_column", "bool_column",
])
def test_accumulate_refuses_bad_arguments(kernels: ModuleType, bad: str) -> None:
    codes = np.array([0, 1, 2], np.uint8)
    col = np.array([1, 2, 3], np.int64)
    acc = np.zeros(3, np.int64)
    args: list[Any] = [0, 3, [(codes, 0, 1, None)], None, [col], [acc]]
    if bad == "key_too_big":
        args[1], args[5] = 2, [np.zeros(2, np.int64)]
    elif bad == "negative_key":
        args[2] = [(codes, 1, 1, None)]
    elif bad == "base_out_of_range":
        args[0], args[2] = 3, []
    elif bad == "acc_type":
        args[5] = [np.zeros(3, np.float64)]
    elif bad == "acc_length":
        args[5] = [np.zeros(4, np.int64)]
    elif bad == "column_length":
        args[4] = [col[:2]]
    elif bad == "float_codes":
        args[2] = [(codes.astype(np.float64), 0, 1, None)]
    elif bad == "mask_length":
        args[3] = np.ones(2, bool)
    elif bad == "read_only_acc":
        acc.flags.writeable = False
    elif bad == "strided":
        args[4] = [np.arange(6, dtype=np.int64)[::2]]
    elif bad == "no_columns":
        args[4], args[5] = [], []
    elif bad == "narrow_acc_sign":  # an unsigned column sums into uint64, not int64
        args[4] = [col.astype(np.uint8)]
    elif bad == "float32_column":
        args[4] = [col.astype(np.float32)]
    elif bad == "bool_column":
        args[4] = [col > 1]
    before = acc.copy()
    with pytest.raises((ValueError, BufferError)):
        kernels.accumulate(*args)
    assert (acc == before).all() or bad in ("key_too_big", "negative_key")


@settings(max_examples=60)
@given(st.sampled_from(CODE_TYPES), st.integers(0, 3000), st.integers(0, 300),
       st.integers(0, 2**32 - 1))
def test_lookup_matches_numpy_indexing(kernels: ModuleType, dtype: Any, n: int, size: int,
                                       seed: int) -> None:
    rng = np.random.default_rng(seed)
    lut = rng.random(size) < 0.5
    top = min(max(size, 1), int(np.iinfo(dtype).max) + 1)  # codes are never negative
    codes = rng.integers(0, top, n).astype(dtype)
    out = np.empty(n, bool)
    kernels.lookup(lut, codes, out)
    want = lut[codes] if size else np.zeros(n, bool)
    np.testing.assert_array_equal(out, want)


def test_lookup_gives_false_outside_the_table(kernels: ModuleType) -> None:
    out = np.empty(4, bool)
    kernels.lookup(np.array([True, True]), np.array([0, 1, 2, -1], np.int16), out)
    assert out.tolist() == [True, True, False, False]
    with pytest.raises(ValueError):
        kernels.lookup(np.array([True]), np.array([0.5]), np.empty(1, bool))
    with pytest.raises(ValueError):
        kernels.lookup(np.array([True]), np.array([0], np.uint8), np.empty(2, bool))
