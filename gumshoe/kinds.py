"""Metric kinds (docs/storage.md §2): how a metric column's values are kept and combined.

Imports errors only (numpy). A metric column's kind comes from its config type: a plain
numeric type is a `sum`, `min:<numeric>` a `min`, `max:<numeric>` a `max`, `uniques` a distinct count (a
sketch per rolled-up row, kept apart from the numeric metrics: `Schema.uniques`). Every path that
combines rolled-up values (roll-up, scan, merge of partials on a shard and in the router)
asks the column's Kind for its reduction instead of switching on names, so a new kind is one
more Kind here (and its storage).

A `min`/`max` row without the value holds the kind's identity (min: the type's maximum or
+inf; max: its minimum or -inf), so every reduction is a plain ufunc reduction. In a 64-bit
declared type that identity is a value an input could hold: it is reserved (`reserved`),
and `fill` refuses it naming the row.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .errors import InsertError


def wide_dtype(dtype: np.dtype) -> np.dtype:
    """The 64-bit type of `dtype`'s family: float64, uint64 for uint64, else int64."""
    if dtype.kind == "f":
        return np.dtype(np.float64)
    if dtype == np.uint64:
        return np.dtype(np.uint64)
    return np.dtype(np.int64)


@dataclasses.dataclass(frozen=True, slots=True)
class Kind:
    """One metric kind: `ufunc` combines two rolled-up values (add, minimum, maximum);
    `aggregates` are the query aggregate types it answers."""

    name: str
    ufunc: np.ufunc
    aggregates: tuple[str, ...]

    @property
    def is_sum(self) -> bool:
        return self.name == "sum"

    @property
    def is_sketch(self) -> bool:
        return self.name == "uniques"

    def identity(self, store: np.dtype) -> Any:
        """The value of a row (or group) that saw no input, in the stored type `store`."""
        if self.name == "sum":
            return store.type(0)
        if store.kind == "f":
            return store.type(np.inf if self.name == "min" else -np.inf)
        info = np.iinfo(store)
        return store.type(info.max if self.name == "min" else info.min)

    def reserved(self, declared: np.dtype) -> Any:
        """The one input value of a 64-bit integer type that is the identity, else None."""
        if self.name == "sum" or declared.kind == "f" or declared.itemsize < 8:
            return None
        return self.identity(declared)

    def empty(self, n: int, store: np.dtype) -> np.ndarray:
        """n groups that saw no input."""
        return np.full(n, self.identity(store), store)

    def reduceat(self, a: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Per run of rows starting at `starts`: the combined value (min/max; sums are
        reduced by the callers' overflow-aware paths)."""
        return self.ufunc.reduceat(a, starts)

    def total(self, a: np.ndarray) -> np.ndarray:
        """All of `a` combined, as a one-element array of its dtype."""
        if not len(a):
            return self.empty(1, a.dtype)
        return self.ufunc.reduce(a, keepdims=True)

    def scatter(self, out: np.ndarray, key: np.ndarray, values: np.ndarray) -> None:
        """out[key[i]] = combine(out[key[i]], values[i]) for every i (min/max only)."""
        self.ufunc.at(out, key, values.astype(out.dtype, copy=False))

    def fill_missing(self, values: np.ndarray, missing: np.ndarray | None) -> np.ndarray:
        """`values` with the identity of their dtype where `missing` (a min/max's rows without
        a value, e.g. after a cast to another type)."""
        if missing is None or not missing.any():
            return values
        values = values.copy()
        values[missing] = self.identity(values.dtype)
        return values

    def missing(self, out: np.ndarray) -> np.ndarray | None:
        """Where a min/max group saw no input (its value is the identity), else None. Values
        are kept in a 64-bit type of their family (wide_dtype), and a segment may store a
        column narrower, in the narrowest type of the same signedness that holds its values:
        the identity is the 64-bit type's, found in a narrow column only where it fits there
        (a max:uint64's 0), never the narrow type's own extreme (-128 in an int8 is a value:
        it read as missing, and a filter `= -128` on a `max:int8` matched no flushed row)."""
        if self.name == "sum":
            return None
        if out.dtype.kind in "iu" and out.dtype.itemsize < 8:
            identity = int(self.identity(np.dtype(out.dtype.kind + "8")))
            info = np.iinfo(out.dtype)
            if not info.min <= identity <= info.max:
                return None
            return out == identity
        return out == self.identity(out.dtype)


SUM = Kind("sum", np.add, ("sum", "average"))
MIN = Kind("min", np.minimum, ("min",))
MAX = Kind("max", np.maximum, ("max",))
# distinct counts (docs/storage.md §3): a row holds a sketch (sketch.SketchColumn), not a
# value; sketches combine by sketch.union, never by `ufunc` (bitwise_or stands in, unused)
UNIQUES = Kind("uniques", np.bitwise_or, ("uniques",))
KINDS = {k.name: k for k in (SUM, MIN, MAX, UNIQUES)}
PREFIXED = (MIN, MAX)  # kinds written `<kind>:<numeric type>` in a config


def parse_type(type_name: str) -> tuple[Kind, str]:
    """(kind, numeric type) of a metric type as written in a config (`uniques`: no numeric
    type; its rows hold identity hashes, uint64)."""
    if type_name == "uniques":
        return UNIQUES, "uint64"
    for kind in PREFIXED:
        prefix = kind.name + ":"
        if type_name.startswith(prefix):
            return kind, type_name[len(prefix):]
    return SUM, type_name


def fill(kind: Kind, declared: np.dtype, name: str, values: np.ndarray,
         nil: np.ndarray | None) -> np.ndarray:
    """Stored values of one batch column (already in its stored type) with the kind's
    identity where `nil`; raises InsertError naming the first row that holds the reserved
    value. A sum is returned as it is (a nil sum adds 0)."""
    if kind.is_sum:
        return values
    reserved = kind.reserved(declared)
    if reserved is not None and len(values):
        bad = values == reserved
        if nil is not None:
            bad &= ~nil
        if bad.any():
            i = int(np.argmax(bad))
            raise InsertError(f"rows[{i}].{name}: {int(reserved)} is reserved in a "
                              f"{kind.name}:{declared.name} metric (it stands for no value)")
    if nil is not None and nil.any():
        values = values.copy() if not values.flags.writeable else values
        values[nil] = kind.identity(values.dtype)
    return values
