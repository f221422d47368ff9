"""Filter programs (gumshoe/filters.py): the C evaluator in the scan kernel and the numpy
`evaluate` against an independent model, on random programs; and the kernel's guards.

The engine tests and the differential property test check what programs filters compile to
(the nil table, exact bounds, string order) through both evaluators; this module checks the
evaluators themselves at the edges: every integer type at its extremes, NaN and infinities,
tables shorter than the codes, nil rows, nested and/or/not, blocks across 1024-row chunks.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gumshoe import filters
from gumshoe.filters import AND, FCMP, LUT, MASK, NOT, OR, RANGE

INT_TYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64, np.uint64,
             np.bool_]
FLOAT_OPS = [np.equal, np.not_equal, np.greater, np.greater_equal, np.less, np.less_equal]


@pytest.fixture(scope="module", autouse=True)
def scan_kernels() -> None:
    """Overrides the per-kernel parametrisation of tests/query: both evaluators run here."""


def _bounds(dtype: np.dtype) -> tuple[int, int]:
    if dtype == np.bool_:
        return 0, 1
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


@st.composite
def leaves(draw: st.DrawFn, n: int, rng: np.random.Generator) -> tuple[Any, ...]:
    kind = draw(st.sampled_from([RANGE, LUT, FCMP, MASK]))
    if kind == MASK:
        return (MASK, rng.random(n) < 0.5, 0, 0, 0, None, False)
    nil = (rng.random(n) < 0.3) if draw(st.booleans()) else None
    nil_result = draw(st.booleans())
    if kind == FCMP:
        dtype = np.dtype(draw(st.sampled_from([np.float32, np.float64])))
        pool = np.array([0.0, -0.0, 1.5, -2.25, 1e30, np.inf, -np.inf, np.nan, 0.1], dtype)
        # mostly values from the pool, so that v == x happens (x is a pool value too)
        values = rng.normal(0, 3, n).astype(dtype) if draw(st.integers(0, 3)) == 0 else \
            rng.choice(pool, n)
        x = float(draw(st.sampled_from([0.0, 1.5, -2.25, 0.1, float("inf"), float("-inf")])))
        x = float(dtype.type(x))  # filters.py rounds x to the column's precision
        return (FCMP, values, draw(st.integers(0, 5)), x, 0, nil, nil_result)
    dtype = np.dtype(draw(st.sampled_from(INT_TYPES)))
    lo, hi = _bounds(dtype)
    if draw(st.booleans()):  # the whole range, extremes included
        values = rng.integers(lo, hi, n, dtype=np.int64 if lo < 0 else np.uint64,
                              endpoint=True).astype(dtype)
        values[: min(n, 2)] = [lo, hi][: min(n, 2)]
    else:
        values = rng.integers(max(lo, -3), min(hi, 20) + 1, n).astype(dtype)
    if kind == LUT:
        table = rng.random(draw(st.integers(0, 30))) < 0.5
        return (LUT, values, table, 0, 0, nil, nil_result)
    edges = [lo, lo + 1, hi - 1, hi, 0, 1, 5, min(hi, 20)]
    a, b = sorted(min(max(draw(st.sampled_from(edges)), lo), hi) for _ in range(2))
    return (RANGE, values, a, b, draw(st.booleans()), nil, nil_result)


@st.composite
def programs(draw: st.DrawFn) -> tuple[int, list[tuple[Any, ...]]]:
    n = draw(st.integers(0, 2600))  # crosses the kernel's 1024-row chunks
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    prog: list[tuple[Any, ...]] = []

    def tree(depth: int) -> None:
        if depth == 0 or draw(st.integers(0, 2)) == 0:
            prog.append(draw(leaves(n, rng)))
            return
        op = draw(st.sampled_from([AND, OR, NOT]))
        if op == NOT:
            tree(depth - 1)
            prog.append((NOT, 0))
            return
        k = draw(st.integers(1, 3))
        for _ in range(k):
            tree(depth - 1)
        prog.append((op, k))

    tree(3)
    return n, prog


def model(n: int, prog: list[tuple[Any, ...]]) -> np.ndarray:
    """Each leaf row by row in Python integers and floats: no numpy comparison semantics."""
    stack: list[np.ndarray] = []
    for op in prog:
        if op[0] in (AND, OR):
            parts = stack[-op[1]:]
            del stack[-op[1]:]
            stack.append(np.array([all(p[i] for p in parts) if op[0] == AND else
                                   any(p[i] for p in parts) for i in range(n)], bool))
            continue
        if op[0] == NOT:
            stack.append(~stack.pop())
            continue
        kind, values, a, b, negate, nil, nil_result = op
        vals = values.tolist()
        if kind == MASK:
            m = [bool(v) for v in vals]
        elif kind == RANGE:
            m = [(a <= int(v) <= b) != bool(negate) for v in vals]
        elif kind == LUT:
            m = [bool(a[v]) if 0 <= v < len(a) else False for v in map(int, vals)]
        else:
            m = [bool(FLOAT_OPS[a](float(v), b)) for v in vals]
        if nil is not None:
            m = [bool(nil_result) if nl else x for x, nl in zip(m, nil.tolist())]
        stack.append(np.array(m, bool).reshape(n))
    assert len(stack) == 1
    return stack[0]


def kernel_mask(kernels: ModuleType, n: int, prog: list[tuple[Any, ...]]) -> np.ndarray:
    """The C evaluator's mask, read back through a group key per row (k = n)."""
    acc = np.zeros(max(n, 1), np.int64)
    kernels.accumulate(0, max(n, 1), [(np.arange(n, dtype=np.int64), 0, 1, None)], prog,
                       [np.ones(n, np.int64)], [acc])
    return acc[:n].astype(bool)


@settings(max_examples=200, deadline=None)
@given(programs())
def test_numpy_evaluator_matches_the_model(case: tuple[int, list[Any]]) -> None:
    n, prog = case
    np.testing.assert_array_equal(filters.evaluate(prog).reshape(n), model(n, prog))


@settings(max_examples=200, deadline=None)
@given(programs())
def test_c_evaluator_matches_the_model(kernels: ModuleType, case: tuple[int, list[Any]]) -> None:
    n, prog = case
    want = model(n, prog)
    np.testing.assert_array_equal(kernel_mask(kernels, n, prog), want)
    # the same program on the plain-sum path (no grouping), with values to sum
    values = np.arange(n, dtype=np.int64) * 3 + 1
    acc = np.zeros(1, np.int64)
    kernels.accumulate(0, 1, [], prog, [values], [acc])
    assert acc[0] == values[want].sum()


def test_program_and_mask_agree_on_a_small_case(kernels: ModuleType) -> None:
    v = np.array([0, 5, 10, 255, 7], np.uint8)
    nil = np.array([False, False, True, False, False])
    prog = [(RANGE, v, 5, 10, False, nil, True), (LUT, v, np.array([1, 0, 0, 0, 0, 1], bool),
                                                  0, 0, None, False), (OR, 2)]
    assert kernel_mask(kernels, 5, prog).tolist() == [True, True, True, False, True]
    assert filters.evaluate(prog).tolist() == [True, True, True, False, True]


@pytest.mark.parametrize("bad", [
    "short_values", "unbalanced", "too_many_operands", "lo_above_hi", "bound_outside_type",
    "float_range", "int_fcmp", "bad_fop", "wide_nil", "unknown_kind", "not_a_tuple", "empty",
])
def test_accumulate_refuses_bad_programs(kernels: ModuleType, bad: str) -> None:
    v = np.array([1, 2, 3], np.uint8)
    leaf: tuple[Any, ...] = (RANGE, v, 1, 2, False, None, False)
    prog: list[Any] = [leaf]
    if bad == "short_values":
        prog = [(RANGE, v[:2], 1, 2, False, None, False)]
    elif bad == "unbalanced":
        prog = [leaf, leaf]
    elif bad == "too_many_operands":
        prog = [leaf, (AND, 2)]
    elif bad == "lo_above_hi":
        prog = [(RANGE, v, 3, 2, False, None, False)]
    elif bad == "bound_outside_type":
        prog = [(RANGE, v.astype(np.int64), -1, 2**63, False, None, False)]
    elif bad == "float_range":
        prog = [(RANGE, v.astype(np.float64), 1, 2, False, None, False)]
    elif bad == "int_fcmp":
        prog = [(FCMP, v, 0, 1.0, 0, None, False)]
    elif bad == "bad_fop":
        prog = [(FCMP, v.astype(np.float64), 6, 1.0, 0, None, False)]
    elif bad == "wide_nil":
        prog = [(RANGE, v, 1, 2, False, v.astype(np.int64), False)]
    elif bad == "unknown_kind":
        prog = [(9, v, 1, 2, False, None, False)]
    elif bad == "not_a_tuple":
        prog = [[RANGE, v, 1, 2, False, None, False]]
    elif bad == "empty":
        prog = []
    acc = np.zeros(1, np.int64)
    with pytest.raises((ValueError, OverflowError, TypeError)):
        kernels.accumulate(0, 1, [], prog, [np.ones(3, np.int64)], [acc])
    assert acc[0] == 0
