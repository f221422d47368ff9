"""Row validation: a list of JSON row objects -> one columnar Batch, or an InsertError.

Imports schema, errors and native. The whole batch is checked before anything is applied; every
error names the row index and the column. Conversion runs per column through C-level iterators
(`map`, `np.array`), never a Python statement per row on the success path. When the C extension
`gumshoe._rows` is built, a valid batch takes its one-pass gather instead (~6x faster); it
declines anything unusual, so this module's Python code stays the only judge of a bad batch and
the reference the tests compare the extension with.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
import time
from typing import Any

import numpy as np

from . import native
from .errors import InsertError
from .kinds import fill
from .schema import Column, Schema
from .sketch import SketchColumn, hash_strings

_NoneType = type(None)
_NUMBER: frozenset[type] = frozenset((int, float))
_NUMBER_OR_NONE: frozenset[type] = frozenset((int, float, _NoneType))
_STRING_OR_NONE: frozenset[type] = frozenset((str, _NoneType))
_IDENTITY: frozenset[type] = frozenset((str, int, _NoneType))
TIMESTAMP_MAX = 2**32 - 1
_rows_ext = native.rows  # the C fast path, or None (tests set it to None for the Python path)


@dataclasses.dataclass(frozen=True, slots=True)
class Factor:
    """A string column given as distinct strings and a code per row (nil rows: any code),
    as bulk loaders have it: `Dictionary.encode` then works per distinct string, not per row.
    Indexing by positions (`Batch.take`) keeps the strings and takes the codes."""

    uniques: list[str]
    codes: np.ndarray  # integer codes into `uniques` (nil rows: 0)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, pos: np.ndarray) -> Factor:
        return Factor(self.uniques, self.codes[pos])

    def values(self, nil: np.ndarray | None) -> list[Any]:
        """The strings per row (None where `nil`), as a list: one gather in C, no loop."""
        if not self.uniques:
            return [None] * len(self.codes)
        out = np.array(self.uniques, dtype=object)[self.codes]
        if nil is not None:
            out[nil] = None
        return list(out.tolist())


@dataclasses.dataclass(slots=True)
class Batch:
    """A validated batch: numpy columns, strings not yet dictionary-encoded."""

    n: int
    timestamps: np.ndarray  # int64 Unix seconds
    dims: dict[str, Any]  # numeric: ndarray of the column dtype; string: list[str | None]
    # or a Factor (bulk loaders, and JSON bodies the C scanner decoded: rowdecoder.py)
    nils: dict[str, np.ndarray | None]  # per dimension, None when no row is nil
    metrics: dict[str, np.ndarray]  # the column's store dtype (int64 / uint64 / float64)
    counts: np.ndarray | None = None  # int64 roll-up counts; None means 1 per row
    row_index: np.ndarray | None = None  # each row's index in the request; None: 0..n-1
    # per `uniques` metric: (uint64 identity hash per row, bool: the row has an identity),
    # hashed once here (sketch.hash_strings); 0 where absent
    identities: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(
        default_factory=dict)
    # or, for a batch rolled up before it arrives (gumtool import), per `uniques` metric the
    # rows' sketches (several identities each); never sent over the router's wire
    sketches: dict[str, SketchColumn] = dataclasses.field(default_factory=dict)

    def take(self, index: np.ndarray) -> Batch:
        """The rows at `index` (a boolean mask or integer positions). Errors about the result
        still name the rows by their index in the original request (`row_index`)."""
        pos = np.flatnonzero(index) if index.dtype == bool else index
        dims = {k: (pick(v, pos) if isinstance(v, list) else v[pos])
                for k, v in self.dims.items()}
        return Batch(len(pos), self.timestamps[pos], dims,
                     {k: (None if v is None else v[pos]) for k, v in self.nils.items()},
                     {k: v[pos] for k, v in self.metrics.items()},
                     None if self.counts is None else self.counts[pos],
                     pos if self.row_index is None else self.row_index[pos],
                     {k: (h[pos], p[pos]) for k, (h, p) in self.identities.items()},
                     {k: col.take(pos) for k, col in self.sketches.items()})


def check_future(batch: Batch, ts_name: str, max_future: float,
                 now: float | None = None) -> None:
    """Refuse a batch with a row stamped more than `max_future` seconds after `now` (default:
    this machine's clock): an InsertError naming the row and the max_future key. 0: no check.
    A row is judged when it arrives; waiting in a funnel's spool only makes it less early."""
    if not max_future or batch.n == 0:
        return
    now = time.time() if now is None else now
    ahead = batch.timestamps > now + max_future
    if ahead.any():
        i = int(np.argmax(ahead))
        row = i if batch.row_index is None else int(batch.row_index[i])
        t = int(batch.timestamps[i])
        raise InsertError(f"rows[{row}].{ts_name}: timestamp {t} is {_span(t - now)} in the "
                          f"future, more than max_future ({_span(max_future)}) ahead of the "
                          "server's clock")


def _span(seconds: float) -> str:
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600),
                       ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} seconds"


def pick(values: list[Any], pos: np.ndarray) -> list[Any]:
    """values[pos] for a list, at C speed (itemgetter)."""
    if len(pos) == 0:
        return []
    if len(pos) == 1:
        return [values[int(pos[0])]]
    return list(operator.itemgetter(*pos.tolist())(values))


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _first(values: list[Any], allowed: frozenset[type]) -> int:
    return next(i for i, v in enumerate(values) if type(v) not in allowed)


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v).replace("True", "true").replace(
        "False", "false")


def _column_values(rows: list[dict[str, Any]], name: str) -> list[Any]:
    return list(map(dict.get, rows, itertools.repeat(name)))


def _fits_float(v: Any) -> bool:
    try:
        float(v)
    except OverflowError:
        return False
    return True


def _integers(obj: np.ndarray, col: Column, where: str) -> np.ndarray:
    """Object array of ints/integral floats -> the column's integer dtype, range-checked."""
    lo, hi = col.value_range
    target = np.uint64 if col.dtype == np.uint64 else np.int64
    try:
        arr = obj.astype(target)
    except OverflowError:
        arr = None
    if arr is None or (target is np.uint64 and obj.size and bool(np.any(obj < 0))):
        for i, v in enumerate(obj.tolist()):
            if not lo <= v <= hi:
                raise InsertError(f"rows[{i}].{col.name}: value {_fmt(v)} is out of range for "
                                  f"{col.type_name} [{lo}, {hi}]{where}") from None
        raise AssertionError("unreachable")
    if target is np.int64 and (lo > np.iinfo(np.int64).min or hi < np.iinfo(np.int64).max):
        bad = (arr < lo) | (arr > hi)
        if bad.any():
            i = int(np.argmax(bad))
            raise InsertError(f"rows[{i}].{col.name}: value {_fmt(obj[i])} is out of range for "
                              f"{col.type_name} [{lo}, {hi}]{where}")
    return arr


def _numbers(values: list[Any], col: Column, allow_nil: bool, where: str = ""
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert one column's JSON values. Returns (values in col dtype, nil mask or None)."""
    n = len(values)
    types = set(map(type, values))
    if not types <= _NUMBER_OR_NONE or (not allow_nil and _NoneType in types):
        i = _first(values, _NUMBER_OR_NONE if allow_nil else _NUMBER)
        raise InsertError(f"rows[{i}].{col.name}: expected a number, got "
                          f"{_json_type(values[i])}{where}")
    nil = None
    if types == {int} and col.dtype.kind != "f":
        try:
            arr = np.array(values, dtype=np.int64)
        except OverflowError:
            arr = _integers(np.array(values, dtype=object), col, where)
        else:
            lo, hi = col.value_range
            if n and (int(arr.min()) < lo or int(arr.max()) > hi):
                i = int(np.argmax((arr < lo) | (arr > hi)))
                raise InsertError(f"rows[{i}].{col.name}: value {values[i]} is out of range for "
                                  f"{col.type_name} [{lo}, {hi}]{where}")
        return arr.astype(col.dtype, copy=False), None
    obj = np.array(values, dtype=object)
    if _NoneType in types:
        nil = np.fromiter(map(operator.is_, values, itertools.repeat(None)), bool, n)
        obj[nil] = 0
        if not nil.any():
            nil = None
    if float in types or col.dtype.kind == "f":
        try:
            f = obj.astype(np.float64)
        except OverflowError:  # an integer beyond even float64
            i = next(i for i, v in enumerate(obj.tolist()) if not _fits_float(v))
            raise InsertError(f"rows[{i}].{col.name}: value {values[i]} is out of range for "
                              f"{col.type_name}{where}") from None
        finite = np.isfinite(f)
        if not finite.all():
            i = int(np.argmin(finite))
            raise InsertError(f"rows[{i}].{col.name}: value {values[i]} is not a finite "
                              f"number{where}")
        if col.dtype.kind == "f":
            # In range when it rounds to a finite value of the column type: the float32 maximum
            # printed shortest (3.4028235e+38) lies just above it and must read back.
            with np.errstate(over="ignore"):
                out = f.astype(col.dtype, copy=False)
            bad = ~np.isfinite(out)
            if bad.any():
                i = int(np.argmax(bad))
                raise InsertError(f"rows[{i}].{col.name}: value {values[i]} is out of range "
                                  f"for {col.type_name}{where}")
            return out, nil
        frac = f != np.floor(f)
        if frac.any():
            i = int(np.argmax(frac))
            raise InsertError(f"rows[{i}].{col.name}: value {values[i]} is not an integer "
                              f"(column type {col.type_name}){where}")
        if types <= {float, _NoneType} and float(np.abs(f).max(initial=0)) < 2**53:
            lo, hi = col.value_range
            bad = (f < lo) | (f > hi)
            if bad.any():
                i = int(np.argmax(bad))
                raise InsertError(f"rows[{i}].{col.name}: value {values[i]} is out of range "
                                  f"for {col.type_name} [{lo}, {hi}]{where}")
            return f.astype(col.dtype), nil
        obj = np.array([int(v) for v in obj.tolist()], dtype=object)
    return _integers(obj, col, where).astype(col.dtype, copy=False), nil


def _strings(values: list[Any], col: Column) -> tuple[list[Any], np.ndarray | None]:
    types = set(map(type, values))
    if not types <= _STRING_OR_NONE:
        i = _first(values, _STRING_OR_NONE)
        raise InsertError(f"rows[{i}].{col.name}: expected a string, got "
                          f"{_json_type(values[i])}")
    if _NoneType not in types:
        return values, None
    nil = np.fromiter(map(operator.is_, values, itertools.repeat(None)), bool, len(values))
    return values, nil


def identities(values: list[Any], col: Column, where: str = ""
               ) -> tuple[np.ndarray, np.ndarray]:
    """One `uniques` column's JSON values (a string or an integer per row; null or missing:
    no identity) -> (uint64 hashes, bool present), hashed once (sketch.hash_strings: 5 and
    "5" are one identity)."""
    types = set(map(type, values))
    if not types <= _IDENTITY:
        i = _first(values, _IDENTITY)
        raise InsertError(f"rows[{i}].{col.name}: expected a string or an integer identity "
                          f"(uniques), got {_json_type(values[i])}{where}")
    return hash_strings(values)


def _gather(schema: Schema, rows: list[Any]) -> Batch | None:
    """The batch through the C extension (see gumshoe/_rows.c), or None when it declines
    (always for a schema with `uniques` columns: their identities are Python's to hash)."""
    assert _rows_ext is not None
    if schema.uniques:
        return None
    n = len(rows)
    ts = np.empty(n, np.int64)
    spec: list[tuple[str, str, np.ndarray | None, np.ndarray | None]] = [
        (schema.timestamp.name, "timestamp", ts, None)]
    dims: dict[str, Any] = {}
    nils: dict[str, np.ndarray | None] = {}
    for col in schema.dimensions:
        nils[col.name] = np.empty(n, bool)
        if col.is_string:
            spec.append((col.name, "string", None, nils[col.name]))
        else:
            dims[col.name] = np.empty(n, col.dtype)
            spec.append((col.name, col.dtype.name, dims[col.name], nils[col.name]))
    metrics = {col.name: np.empty(n, col.store_dtype) for col in schema.metrics}
    metric_nils = {col.name: None if col.kind.is_sum else np.empty(n, bool)
                   for col in schema.metrics}  # min/max: no value is the kind's identity
    spec += [(col.name, col.dtype.name, metrics[col.name], metric_nils[col.name])
             for col in schema.metrics]
    out = _rows_ext.gather(rows, spec)
    if out is None:
        return None
    for col in schema.metrics:
        metrics[col.name] = fill(col.kind, col.dtype, col.name, metrics[col.name],
                                 metric_nils[col.name])
    nil_counts, strings = out
    strings = iter(strings)
    for col, nil_count in zip(schema.dimensions, nil_counts[1:]):
        if col.is_string:
            dims[col.name] = next(strings)
        if not nil_count:
            nils[col.name] = None
    return Batch(n, ts, dims, nils, metrics)


def parse_rows(schema: Schema, rows: Any) -> Batch:
    """Validate a JSON batch (a list of row objects) against `schema`.

    Parameters
    ----------
    schema : the table schema.
    rows : the decoded JSON body: a list of objects. ``None`` is an empty batch.

    Returns
    -------
    Batch with timestamps, numeric dimensions, string dimension values, nil masks and metrics.

    Raises
    ------
    InsertError naming the row index and column of the first problem.
    """
    if _rows_ext is not None and type(rows) is list and rows:
        batch = _gather(schema, rows)
        if batch is not None:
            return batch
    if rows is None:
        rows = []
    if not isinstance(rows, list):
        raise InsertError(f"insert body must be a JSON array of row objects, got "
                          f"{_json_type(rows)}")
    n = len(rows)
    if n and set(map(type, rows)) != {dict}:
        i = next(i for i, r in enumerate(rows) if type(r) is not dict)
        raise InsertError(f"rows[{i}]: expected a row object, got {_json_type(rows[i])}")
    known = {c.name for c in schema.columns}
    unknown = set().union(*rows) - known if n else set()
    if unknown:
        i, key = next((i, k) for i, r in enumerate(rows) for k in r if k not in known)
        raise InsertError(f"rows[{i}]: unknown column {key!r}")

    ts_col = schema.timestamp
    ts_values = _column_values(rows, ts_col.name)
    if n and None in ts_values:
        i = ts_values.index(None)
        raise InsertError(f"rows[{i}]: missing timestamp column {ts_col.name!r}"
                          if ts_col.name not in rows[i] else
                          f"rows[{i}].{ts_col.name}: timestamp must be a number, got null")
    types = set(map(type, ts_values))
    if not types <= _NUMBER:
        i = _first(ts_values, _NUMBER)
        raise InsertError(f"rows[{i}].{ts_col.name}: timestamp must be a number, got "
                          f"{_json_type(ts_values[i])}")
    if types == {int}:
        try:
            ts = np.array(ts_values, dtype=np.int64)
        except OverflowError:
            ts = np.array([min(max(v, -1), 2**32) for v in ts_values], dtype=np.int64)
    else:
        f = np.array(ts_values, dtype=np.float64)
        if not np.isfinite(f).all():
            i = int(np.argmin(np.isfinite(f)))
            raise InsertError(f"rows[{i}].{ts_col.name}: timestamp {ts_values[i]} is not finite")
        ts = np.floor(np.clip(f, -1, 2**32)).astype(np.int64)
    bad = (ts < 0) | (ts > TIMESTAMP_MAX)
    if n and bad.any():
        i = int(np.argmax(bad))
        v = ts_values[i]
        hint = ("; milliseconds? divide by 1000" if 0 <= v / 1000 <= TIMESTAMP_MAX and
                v > TIMESTAMP_MAX else "")
        raise InsertError(f"rows[{i}].{ts_col.name}: timestamp {v} is out of range "
                          f"[0, {TIMESTAMP_MAX}] (Unix seconds){hint}")

    dims: dict[str, Any] = {}
    nils: dict[str, np.ndarray | None] = {}
    for col in schema.dimensions:
        values = _column_values(rows, col.name)
        if col.is_string:
            dims[col.name], nils[col.name] = _strings(values, col)
        else:
            dims[col.name], nils[col.name] = _numbers(values, col, allow_nil=True)
    metrics: dict[str, np.ndarray] = {}
    for col in schema.metrics:
        values = _column_values(rows, col.name)
        arr, nil = _numbers(values, col, allow_nil=True)
        # nil metric: 0 in a sum, the kind's identity in a min/max
        metrics[col.name] = fill(col.kind, col.dtype, col.name,
                                 arr.astype(col.store_dtype, copy=False), nil)
    ids = {col.name: identities(_column_values(rows, col.name), col) for col in schema.uniques}
    return Batch(n, ts, dims, nils, metrics, identities=ids)
