"""Zero-fill: every time bucket of a query's time range, for every combination of the other
groupings present, on the final groups (vectorised).

Imports query, block, timebuckets and errors. The time range is that of interval starts (a
timestamp filter compares interval starts): each side comes from the timestamp filters when
they bound it, else from the data's extent (the first and last interval the query scanned,
`Partial.extent`, a union over shards through the router). The range is cut to whole
intervals, then every bucket from the one holding its first interval start to the one holding
its last is emitted (without timeTransform: every interval start). Missing groups get zero
sums and rowCount 0 (so averages are null), and min/max their kind's identity (null).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import timebuckets
from .block import dense_codes, group_key
from .errors import QueryError
from .kinds import SUM, Kind
from .query import Compare, Filter, Logical, Match, Query

UINT32_MAX = 2**32 - 1
DEFAULT_LIMIT = 10_000_000  # rows a fill may emit when no max_groups is given
Bounds = tuple[int | None, int | None]  # None: unbounded on that side
EMPTY: Bounds = (1, 0)
_NEGATED = {"=": "!=", "!=": "=", "<": ">=", ">=": "<", ">": "<=", "<=": ">", "in": "not in"}


def time_bounds(f: Filter | None, timestamp: str, negate: bool = False) -> Bounds:
    """Bounds on the interval starts that can pass filter f (a superset: only comparisons of
    the timestamp column narrow it; (1, 0) when none can)."""
    if f is None or isinstance(f, Match):
        return None, None
    if isinstance(f, Compare):
        if f.column.name != timestamp:
            return None, None
        return _compare_bounds(_NEGATED[f.op] if negate else f.op, f.value)
    assert isinstance(f, Logical)
    if f.op == "not":
        return time_bounds(f.operands[0], timestamp, not negate)
    parts = [time_bounds(g, timestamp, negate) for g in f.operands]
    if (f.op == "and") != negate:  # intersection
        los = [lo for lo, _ in parts if lo is not None]
        his = [hi for _, hi in parts if hi is not None]
        return (max(los) if los else None), (min(his) if his else None)
    parts = [p for p in parts if not _empty(p)]  # union (hull)
    if not parts:
        return EMPTY
    lo_s, hi_s = [lo for lo, _ in parts], [hi for _, hi in parts]
    return (None if None in lo_s else min(x for x in lo_s if x is not None),
            None if None in hi_s else max(x for x in hi_s if x is not None))


def _empty(b: Bounds) -> bool:
    return b[0] is not None and b[1] is not None and b[0] > b[1]


def _whole(v: int | float) -> bool:
    """Can an interval start (a uint32) equal v?"""
    return (isinstance(v, int) or v.is_integer()) and 0 <= v <= UINT32_MAX


def _compare_bounds(op: str, x: Any) -> Bounds:
    if op in ("!=", "not in"):
        return None, None
    if op == "in":
        whole = [int(v) for v in x if _whole(v)]
        return (min(whole), max(whole)) if whole else EMPTY
    if op == "=":
        return (int(x), int(x)) if _whole(x) else EMPTY
    if op == ">=":
        return math.ceil(x), None
    if op == ">":
        return math.floor(x) + 1, None
    if op == "<=":
        return None, math.floor(x)
    return None, math.ceil(x) - 1  # "<"


def fill_range(query: Query, extent: tuple[int, int] | None) -> tuple[int, int] | None:
    """The first and last interval start of the fill's time range, or None (no range)."""
    g = query.fill
    assert g is not None
    lo, hi = time_bounds(query.filter, g.column.name)
    if lo is None:
        lo = None if extent is None else extent[0]
    if hi is None:
        hi = None if extent is None else extent[1]
    if lo is None or hi is None:
        return None
    step = g.interval
    lo = -(-max(lo, 0) // step) * step  # interval starts are multiples of the duration
    hi = min(hi, UINT32_MAX) // step * step
    return (lo, hi) if lo <= hi else None


def _buckets(query: Query, rng: tuple[int, int] | None, combos: int, limit: int,
             where: str) -> np.ndarray:
    g = query.fill
    assert g is not None
    if rng is None:
        return np.zeros(0, np.int64)
    lo, hi = rng
    exact = g.transform is None
    bound = (hi - lo) // g.interval + 1 if exact else timebuckets.max_buckets(
        lo, hi, g.transform)  # type: ignore[arg-type]
    if combos * bound > limit and (exact or bound > 2 * limit + 100):
        raise _too_many(where, limit, combos * bound if exact else None)
    if exact:
        return np.arange(lo, hi + 1, g.interval, dtype=np.int64)
    return timebuckets.bucket_range(lo, hi, g.transform, g.time_zone)  # type: ignore[arg-type]


def _too_many(where: str, limit: int, rows: int | None) -> QueryError:
    count = f"{rows} rows" if rows is not None else "too many rows"
    return QueryError(f"{where}: zero-fill would produce {count}, more than max_groups "
                      f"({limit}); narrow the time range or use a coarser timeTransform")


def zero_fill(query: Query, keys: list[np.ndarray], nils: list[np.ndarray | None],
              count: np.ndarray, sums: dict[str, np.ndarray], extent: tuple[int, int] | None,
              max_groups: int | None, kinds: dict[str, Kind] | None = None
              ) -> tuple[list[np.ndarray], list[np.ndarray | None], np.ndarray,
                         dict[str, np.ndarray]]:
    """The groups with every missing (bucket, other groupings) combination added as zeros
    (min/max columns of `kinds`: their identity, so they answer null)."""
    kinds = kinds or {}
    gi = next(i for i, g in enumerate(query.groupings) if g.fill)
    where = f"groupings[{gi}].fill"
    limit = DEFAULT_LIMIT if max_groups is None else max_groups
    n = len(count)
    others = [i for i in range(len(keys)) if i != gi]
    if others and n == 0:
        return keys, nils, count, sums  # no combination of the other groupings is present
    if others:
        combo, first = _combinations([keys[i] for i in others], [nils[i] for i in others])
    else:
        combo, first = np.zeros(n, np.int64), np.zeros(1, np.int64)
    n_combos = len(first)
    times = keys[gi].astype(np.int64, copy=False)
    buckets = np.union1d(_buckets(query, fill_range(query, extent), n_combos, limit, where),
                         times)
    nb = len(buckets)
    total = n_combos * nb
    if total > limit:
        raise _too_many(where, limit, total)
    if total == n:
        return keys, nils, count, sums
    pos = combo * nb + np.searchsorted(buckets, times)
    out_keys: list[np.ndarray] = []
    out_nils: list[np.ndarray | None] = []
    for i, (k, nil) in enumerate(zip(keys, nils)):
        if i == gi:
            out_keys.append(np.tile(buckets, n_combos).astype(k.dtype, copy=False))
            out_nils.append(None)
        else:
            out_keys.append(np.repeat(k[first], nb))
            out_nils.append(None if nil is None else np.repeat(nil[first], nb))
    return out_keys, out_nils, _place(count, pos, total), {
        c: _place(v, pos, total, kinds.get(c, SUM)) for c, v in sums.items()}


def _place(values: np.ndarray, pos: np.ndarray, total: int, kind: Kind = SUM) -> np.ndarray:
    out = kind.empty(total, values.dtype)
    out[pos] = values
    return out


def _combinations(keys: list[np.ndarray], nils: list[np.ndarray | None]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(combination number of each group, index of one group of each combination)."""
    n = len(keys[0])
    parts = []
    for k, nil in zip(keys, nils):
        if k.dtype == object and nil is not None and nil.any():
            k = k.copy()
            k[nil] = ""  # nil is told apart by the nil code (0), not by the value
        parts.append(dense_codes(k, nil))
    packed = group_key(parts, n)
    if packed is not None:
        _, first, combo = np.unique(packed[0], return_index=True, return_inverse=True)
        return combo.astype(np.int64), first
    stacked = np.stack([c for c, _ in parts], axis=1)
    _, first, combo = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
    return combo.reshape(-1).astype(np.int64), first
