"""`having`: a filter over a query's outputs, evaluated on the final groups (vectorised).

Imports query (the AST) and filters (exact integer bounds, column-precision float values).
The rules are the filter language's: `nil = x` is false and `nil != x` true, ordered
comparisons with nil are false, `= null` / `in [null]` match nil; numbers compare exactly (an
integer sum against 2**53 + 1, a float against an integer beyond float precision); a value
compared with a float32 grouping means the float32 it would be stored as. Null outputs are
nil dimension values, averages of no rows and post-aggregations that are null.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .filters import int_bounds
from .query import Having, Logical, OutputCompare

Column = tuple[np.ndarray, np.ndarray | None]  # values, nil mask (None: no nil)
_NP_OPS: dict[str, Callable[[Any, Any], np.ndarray]] = {
    "=": np.equal, "!=": np.not_equal, ">": np.greater, ">=": np.greater_equal,
    "<": np.less, "<=": np.less_equal}
_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge,
    "<": operator.lt, "<=": operator.le}


def evaluate(h: Having, columns: Mapping[str, Column], n: int) -> np.ndarray:
    """The bool mask of the n groups that pass `h`."""
    if isinstance(h, OutputCompare):
        values, nil = columns[h.name]
        return _compare(h.op, values, nil, h.value, n)
    assert isinstance(h, Logical)
    masks = [evaluate(g, columns, n) for g in h.operands]
    if h.op == "not":
        return ~masks[0]
    if not masks:
        return np.full(n, h.op == "and")
    return functools.reduce(np.logical_and if h.op == "and" else np.logical_or, masks)


def _compare(op: str, values: np.ndarray, nil: np.ndarray | None, x: Any, n: int) -> np.ndarray:
    is_nil = np.zeros(n, bool) if nil is None else nil
    if op == "in":
        out = np.zeros(n, bool)
        for item in x:
            out |= _compare("=", values, nil, item, n)
        return out
    if x is None:  # = null matches nil, != null the rest; ordered comparisons: nothing
        return is_nil.copy() if op == "=" else ~is_nil if op == "!=" else np.zeros(n, bool)
    if values.dtype == object:  # strings: Python's (code point) order, group by group
        test = _PY_OPS[op]
        out = np.fromiter((v is not None and test(v, x) for v in values), bool, n)
    elif values.dtype.kind in "iu":
        out = _int_compare(op, values, x)
    else:
        out = _float_compare(op, values, x)
    if nil is not None:
        out = (out | nil) if op == "!=" else (out & ~nil)
    return out


def _int_compare(op: str, values: np.ndarray, x: int | float) -> np.ndarray:
    info = np.iinfo(values.dtype)
    b = int_bounds(op, x, int(info.min), int(info.max))
    if isinstance(b, bool):
        return np.full(len(values), b)
    lo, hi, negate = b
    m = (values >= values.dtype.type(lo)) & (values <= values.dtype.type(hi))
    return ~m if negate else m


def _float_compare(op: str, values: np.ndarray, x: int | float) -> np.ndarray:
    """values op x, exactly. float32 values (groupings) compare with x as stored in float32;
    float64 values with an integer x that no float64 equals compare with its neighbours."""
    try:
        xf = float(x)
    except OverflowError:
        xf = math.copysign(math.inf, x)
    if values.dtype == np.float32:
        with np.errstate(over="ignore"):
            return _NP_OPS[op](values, np.float32(xf))
    if isinstance(x, int) and xf != x:  # strictly between two floats
        below = xf if xf < x else math.nextafter(xf, -math.inf)
        above = math.nextafter(below, math.inf)
        if op in ("=", "!="):
            return np.full(len(values), op == "!=")
        if op in ("<", "<="):
            return values <= below
        return values >= above
    return _NP_OPS[op](values, xf)
