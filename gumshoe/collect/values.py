"""Columns of text -> a validated Batch: the typing shared by CSV bodies, beacon query strings,
URL templates and queue items.

Imports batch, schema and errors. Every value is a string typed by its schema column: an empty
string is nil (dimensions), 0 (metrics) or the arrival time (the timestamp, also when the
column is absent); the timestamp takes Unix seconds or an ISO 8601 date or date-time (UTC
unless it says otherwise). Conversion runs per column through C-level iterators (`map(int,
...)`, numpy), never a Python statement per row on the success path; only a failing column is
walked value by value, to name the first bad value with the caller's `where` ("line 3, column
visits", "parameter visits").
"""

from __future__ import annotations

import datetime
import itertools
import math
import operator
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from ..batch import TIMESTAMP_MAX, Batch
from ..errors import InsertError
from ..kinds import fill
from ..schema import Column, Schema
from ..sketch import hash_strings

_INT64_MAX, _INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min
Where = Callable[[int, str], str]  # (row index, column name) -> "line 3, column visits"


def _empty_mask(values: Sequence[str], n: int) -> np.ndarray | None:
    if "" not in values:
        return None
    return np.fromiter(map(operator.not_, values), bool, n)


def _filled(values: Sequence[str], empty: np.ndarray | None, fill: str) -> Sequence[str]:
    if empty is None:
        return values
    obj = np.array(values, dtype=object)
    obj[empty] = fill
    return obj.tolist()


def _c_parse(values: Sequence[str], dtype: type) -> np.ndarray | None:
    """Decimal numbers parsed by numpy's C text reader (~3x faster than `map(int, ...)`), or
    None when any value is not exactly one plain number (the callers' exact paths decide)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns, and stops, at text it cannot read
        try:
            arr: np.ndarray = np.fromstring(",".join(values), dtype=dtype, sep=",")
        except (ValueError, DeprecationWarning):
            return None
    if len(arr) != len(values):
        return None
    if dtype is np.int64 and len(arr) and (arr.max() == _INT64_MAX or arr.min() == _INT64_MIN):
        return None  # numpy clamps what overflows: let the exact path judge these
    return arr


def _first_failing(values: Sequence[str], convert: Callable[[str], object]) -> int:
    for i, v in enumerate(values):  # the error path only
        try:
            convert(v)
        except (ValueError, OverflowError):
            return i
    raise AssertionError("no failing value")


def _integers(values: Sequence[str], col: Column, where: Where) -> np.ndarray:
    """Strings -> the column's integer dtype, range-checked ("3", "-1", "2.0"; not "2.5")."""
    lo, hi = col.value_range
    fast = None if col.dtype == np.uint64 else _c_parse(values, np.int64)
    if fast is not None and (not len(fast) or (lo <= int(fast.min()) and int(fast.max()) <= hi)):
        return fast.astype(col.dtype, copy=False)
    try:
        ints = list(map(int, values))
    except ValueError:
        try:
            floats = np.array(list(map(float, values)), dtype=np.float64)
        except ValueError:
            i = _first_failing(values, float)
            raise InsertError(f"{where(i, col.name)}: {values[i]!r} is not a number") from None
        bad = ~np.isfinite(floats) | (floats != np.floor(floats))
        if bad.any():
            i = int(np.argmax(bad))
            raise InsertError(f"{where(i, col.name)}: value {values[i]!r} is not an integer "
                              f"(column type {col.type_name})") from None
        ints = list(map(int, floats.tolist()))
    try:
        arr = np.array(ints, dtype=np.uint64 if col.dtype == np.uint64 else np.int64)
    except OverflowError:
        i = next(i for i, v in enumerate(ints) if not lo <= v <= hi)
        raise InsertError(f"{where(i, col.name)}: value {values[i]!r} is out of range for "
                          f"{col.type_name} [{lo}, {hi}]") from None
    if len(arr) and (int(arr.min()) < lo or int(arr.max()) > hi):
        i = int(np.argmax((arr < lo) | (arr > hi)))
        raise InsertError(f"{where(i, col.name)}: value {values[i]!r} is out of range for "
                          f"{col.type_name} [{lo}, {hi}]")
    return arr.astype(col.dtype, copy=False)


def _floats(values: Sequence[str], col: Column, where: Where) -> np.ndarray:
    try:
        arr = _c_parse(values, np.float64)
        if arr is None:
            arr = np.array(list(map(float, values)), dtype=np.float64)
    except ValueError:
        i = _first_failing(values, float)
        raise InsertError(f"{where(i, col.name)}: {values[i]!r} is not a number") from None
    with np.errstate(over="ignore"):
        out = arr.astype(col.dtype, copy=False)
    bad = ~np.isfinite(out)
    if bad.any():
        i = int(np.argmax(bad))
        what = "is not a finite number" if not np.isfinite(arr[i]) else (
            f"is out of range for {col.type_name}")
        raise InsertError(f"{where(i, col.name)}: value {values[i]!r} {what}")
    return out


def numbers(values: Sequence[str], col: Column, where: Where
            ) -> tuple[np.ndarray, np.ndarray | None]:
    """One numeric column: (values in the column dtype, nil mask of the empty ones or None)."""
    n = len(values)
    empty = _empty_mask(values, n)
    filled = _filled(values, empty, "0")
    if col.dtype.kind == "f":
        return _floats(filled, col, where), empty
    return _integers(filled, col, where), empty


def strings(values: Sequence[str]) -> tuple[list[str | None], np.ndarray | None]:
    """One string column: (values with None for the empty ones, nil mask or None)."""
    n = len(values)
    empty = _empty_mask(values, n)
    if empty is None:
        return list(values), None
    obj = np.array(values, dtype=object)
    obj[empty] = None
    return obj.tolist(), empty


def parse_time(text: str) -> int:
    """One ISO 8601 date or date-time -> Unix seconds (UTC when no offset is given).

    Raises ValueError."""
    t = datetime.datetime.fromisoformat(text.strip())
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.UTC)
    return int(t.timestamp() // 1)


def timestamps(values: Sequence[str], name: str, now: int, where: Where) -> np.ndarray:
    """The timestamp column: Unix seconds, or ISO dates; empty -> `now`."""
    n = len(values)
    empty = _empty_mask(values, n)
    if empty is None:
        ts = _times(values, name, where, lambda i: i)
    else:
        ts = np.full(n, now, np.int64)
        pos = np.flatnonzero(~empty)
        given = list(itertools.compress(values, (~empty).tolist()))
        ts[pos] = _times(given, name, where, lambda i: int(pos[i]))
    bad = (ts < 0) | (ts > TIMESTAMP_MAX)
    if bad.any():
        i = int(np.argmax(bad))
        raise InsertError(f"{where(i, name)}: timestamp {values[i]!r} is out of range "
                          f"[0, {TIMESTAMP_MAX}] (Unix seconds)")
    return ts


def _one_time(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        f = float(text)
    except ValueError:
        return parse_time(text)
    if not math.isfinite(f):
        raise ValueError("not finite")
    return max(-1, min(int(f // 1), 2**32))


def _times(values: Sequence[str], name: str, where: Where, row: Callable[[int], int]
           ) -> np.ndarray:
    """Non-empty timestamps: integers, floats (floored) or ISO dates, each column parsed in one
    C pass when it is all of one kind (numpy parses offset-free dates); otherwise value by
    value, which also names a bad one (`row` maps its index back to the caller's row)."""
    fast = _c_parse(values, np.int64)
    if fast is not None:
        return fast
    try:
        return np.array(list(map(int, values)), dtype=np.int64)
    except (ValueError, OverflowError):
        pass
    try:
        f = np.array(list(map(float, values)), dtype=np.float64)
        if np.isfinite(f).all():
            return np.floor(np.clip(f, -1, 2**32)).astype(np.int64)
    except ValueError:
        pass
    if not any(map(str.isdigit, values)):  # numpy would read "7" as the year 7
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # numpy warns on (and ignores) a UTC offset
                dt = np.array(values, dtype="datetime64[s]")
            if not np.isnat(dt).any():
                return dt.astype(np.int64)
        except (ValueError, UserWarning, DeprecationWarning):
            pass
    out = np.empty(len(values), np.int64)
    for i, v in enumerate(values):  # mixed kinds, dates with offsets, or a bad value to name
        try:
            out[i] = _one_time(v)
        except (ValueError, OverflowError):
            raise InsertError(f"{where(row(i), name)}: timestamp {v!r} is neither Unix seconds "
                              "nor an ISO 8601 date (2015-01-01 or 2015-01-01T10:00:00Z)"
                              ) from None
    return out


def text_batch(schema: Schema, columns: dict[str, Sequence[str]], n: int, now: int,
               where: Where) -> Batch:
    """A Batch from columns of text (each a sequence of n strings). Columns the schema lacks
    must have been refused by the caller; absent ones are all empty."""
    given = columns.get(schema.timestamp.name)
    ts = (np.full(n, now, np.int64) if given is None
          else timestamps(given, schema.timestamp.name, now, where))
    dims: dict[str, object] = {}
    nils: dict[str, np.ndarray | None] = {}
    for col in schema.dimensions:
        values = columns.get(col.name)
        if values is None:
            dims[col.name] = [None] * n if col.is_string else np.zeros(n, col.dtype)
            nils[col.name] = np.ones(n, bool) if n else None
        elif col.is_string:
            dims[col.name], nils[col.name] = strings(values)
        else:
            dims[col.name], nils[col.name] = numbers(values, col, where)
    metrics: dict[str, np.ndarray] = {}
    for col in schema.metrics:
        values = columns.get(col.name)
        if values is None:
            metrics[col.name] = col.kind.empty(n, col.store_dtype)
        else:  # min/max: no value is the kind's identity
            arr, nil = numbers(values, col, where)
            metrics[col.name] = fill(col.kind, col.dtype, col.name,
                                     arr.astype(col.store_dtype, copy=False), nil)
    ids: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for col in schema.uniques:  # a text identity is a string ("5" and 5 are one); empty: none
        values = columns.get(col.name)
        ids[col.name] = hash_strings([None] * n if values is None else strings(values)[0])
    return Batch(n, ts, dims, nils, metrics, identities=ids)


def check_columns(schema: Schema, names: Sequence[str], what: Callable[[str], str]) -> None:
    """Refuse names that are not columns, or repeated ones: `what(name)` says where."""
    seen: set[str] = set()
    for name in names:
        if schema.column(name) is None:
            raise InsertError(f"{what(name)}: unknown column")
        if name in seen:
            raise InsertError(f"{what(name)}: column given twice")
        seen.add(name)
