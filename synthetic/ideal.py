"""Pure-numpy "ideal" kernels: the least work numpy needs for each core path, as anchors.

- `parse`: a list of row dicts -> numpy columns (no validation; every string already known).
- `rollup`: one interval's rows -> rolled-up rows (dense bincount when the key space is small,
  else sort + reduceat).
- `Table` + `run`: each benchmark query over the same rolled-up rows gumshoe stored, laid out
  the ideal way: one contiguous array per column for the whole table, in time order, nil folded
  into its own dictionary code, interval row offsets for time pruning and time grouping; work
  split in cache-sized chunks over `threads` threads (numpy releases the GIL).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from .data import N_COUNTRIES, N_DEVICES, N_NAMES, Columns
from .queries import TRANSFORMS, Query, Row, finish

CHUNK = 1 << 18  # rows per thread task
SUB_CHUNK = 1 << 16  # rows per numpy pass inside a task (temporaries stay in cache)
_EXACT = 2.0 ** 53  # float64 sums (bincount) are exact below this


# -- ingest ---------------------------------------------------------------------------------------
def parse(rows: list[dict[str, Any]], name_code: dict[str, int],
          country_code: dict[Any, int]) -> dict[str, np.ndarray]:
    """Row dicts -> columns, the minimum: one C-level pass per column, strings by dict lookup."""
    n = len(rows)
    g = operator.itemgetter
    out = {"at": np.fromiter(map(g("at"), rows), np.int64, n),
           "name": np.fromiter(map(name_code.__getitem__, map(g("name"), rows)), np.int64, n),
           "country": np.fromiter(map(country_code.__getitem__, map(g("country"), rows)),
                                  np.int64, n)}
    for c in ("device", "visits", "clicks", "bytes"):
        out[c] = np.array(list(map(g(c), rows)), np.int64)
    return out


@dataclasses.dataclass
class Rolled:
    """Rolled-up rows of one interval, in generator codes, ordered by (name, country, device)."""

    name: np.ndarray
    country: np.ndarray
    device: np.ndarray
    count: np.ndarray
    metrics: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return len(self.count)


_K_COUNTRY = N_COUNTRIES + 1
_KEYS = N_NAMES * _K_COUNTRY * N_DEVICES


def rollup(c: Columns) -> Rolled:
    """Roll up the rows of one interval (all of `c` is in the same interval)."""
    key = (c.name.astype(np.intp) * _K_COUNTRY + c.country) * N_DEVICES + c.device
    if c.n * 4 >= _KEYS:  # dense: a bincount over the whole key space, no sort
        count = np.bincount(key, minlength=_KEYS)
        nz = np.flatnonzero(count)
        sums = {m: np.bincount(key, weights=v, minlength=_KEYS)[nz].astype(np.int64)
                for m, v in c.metrics.items()}
        count = count[nz]
    else:
        order = np.argsort(key)
        sk = key[order]
        starts = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1])))
        nz = sk[starts]
        count = np.diff(np.append(starts, c.n))
        sums = {m: np.add.reduceat(v[order], starts) for m, v in c.metrics.items()}
    device = nz % N_DEVICES
    rest = nz // N_DEVICES
    return Rolled(rest // _K_COUNTRY, rest % _K_COUNTRY, device, count.astype(np.int64), sums)


# -- queries --------------------------------------------------------------------------------------
@dataclasses.dataclass
class Table:
    """The rolled-up table, ideal layout. `cols` maps every column name to one array; string
    and nil-able dimensions hold codes with nil folded in as code `cards[name] - 1`."""

    n: int
    starts: np.ndarray  # interval starts, ascending
    offsets: np.ndarray  # row offset of each interval, plus n
    cols: dict[str, np.ndarray]
    cards: dict[str, int]  # code range of each dimension (radix for group keys)
    decode: dict[str, Callable[[np.ndarray], list[Any]]]  # codes -> values (nil -> None)
    encode: dict[str, Callable[[Any], int | None]]  # filter value -> code (None: unknown)


def _string_decoder(strings: list[str]) -> Callable[[np.ndarray], list[Any]]:
    arr = np.array([*strings, None], dtype=object)
    return lambda codes: arr[codes].tolist()


def table_from_snapshot(snap: Any) -> Table:
    """Concatenate a fully rolled-up gumshoe snapshot into an ideal Table."""
    schema = snap.schema
    starts, sizes, blocks = [], [], []
    for iv in snap.intervals:
        if not iv.fully_rolled_up:
            raise ValueError(f"interval {iv.start} has unflushed rows; flush first")
        bl = [b for b in iv.blocks if b.n]
        starts.append(iv.start)
        sizes.append(sum(b.n for b in bl))
        blocks.extend(bl)
    n = int(sum(sizes))
    cols: dict[str, np.ndarray] = {
        "count": np.concatenate([b.count for b in blocks]) if blocks else np.zeros(0, np.int64)}
    cards: dict[str, int] = {}
    decode: dict[str, Callable[[np.ndarray], list[Any]]] = {}
    encode: dict[str, Callable[[Any], int | None]] = {}
    for d in schema.dimensions:
        codes = np.concatenate([b.dims[d.name] for b in blocks])
        nil = np.concatenate([np.zeros(b.n, bool) if b.nils[d.name] is None else b.nils[d.name]
                              for b in blocks])
        if d.is_string:
            strings = snap.strings(d.name).tolist()
            card = len(strings) + 1
            decode[d.name] = _string_decoder(strings)
            index = {s: i for i, s in enumerate(strings)}
            encode[d.name] = lambda v, index=index, card=card: (card - 1 if v is None
                                                                 else index.get(v))
        else:
            card = int(codes.max(initial=0)) + 2
            decode[d.name] = lambda c, card=card: [None if v == card - 1 else v
                                                   for v in c.tolist()]
            encode[d.name] = lambda v, card=card: card - 1 if v is None else v
        dtype = np.min_scalar_type(card - 1)
        folded = codes.astype(dtype)
        folded[nil] = card - 1
        cols[d.name] = folded
        cards[d.name] = card
    for m in schema.metrics:
        cols[m.name] = np.concatenate([b.metrics[m.name] for b in blocks])
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    return Table(n, np.array(starts, np.int64), offsets, cols, cards, decode, encode)


def _ranges(tbl: Table, q: Query) -> list[tuple[Any, int, int]]:
    """(time group key, row start, row stop) work units: intervals pruned by the timestamp
    filters, grouped by the time grouping (contiguous, the table is in time order), chunked."""
    keep = np.ones(len(tbl.starts), bool)
    for f in q.filters:
        if f.column == "at":
            s = tbl.starts
            keep &= {"=": s == f.value, ">": s > f.value, ">=": s >= f.value,
                     "<": s < f.value, "<=": s <= f.value}.get(
                f.type, np.isin(s, f.value) if f.type == "in" else keep)
    tg = next((g for g in q.groups if g.column == "at"), None)
    if tg is None:
        tkey = np.zeros(len(tbl.starts), np.int64)
    else:
        step = TRANSFORMS.get(tg.transform or "", 1)
        tkey = tbl.starts - tbl.starts % step
    units = []
    idx = np.flatnonzero(keep)
    if len(idx):  # runs of consecutive kept intervals with the same time key
        cut = np.flatnonzero((np.diff(idx) != 1) | (np.diff(tkey[idx]) != 0)) + 1
        for run in np.split(idx, cut):
            lo, hi = int(tbl.offsets[run[0]]), int(tbl.offsets[run[-1] + 1])
            key = int(tkey[run[0]]) if tg is not None else None
            units.extend((key, a, min(a + CHUNK, hi)) for a in range(lo, hi, CHUNK))
    return units


def run(q: Query, tbl: Table, pool: Executor | None = None) -> list[Row]:
    """Evaluate `q` over `tbl`; returns normalised rows."""
    row_filters = []
    for f in q.filters:
        if f.column == "at":
            continue
        col = tbl.cols[f.column]
        if f.column in tbl.encode and f.type in ("in", "="):  # codes through a look-up table
            lut = np.zeros(tbl.cards[f.column], bool)
            codes = [tbl.encode[f.column](v) for v in (f.value if f.type == "in" else [f.value])]
            lut[[c for c in codes if c is not None]] = True
            row_filters.append((f.column, lut.__getitem__))
            continue
        if isinstance(f.value, str) or (f.column in tbl.encode and col.dtype.kind == "f"):
            raise NotImplementedError(f"ideal kernel: filter {f}")
        ops = {"=": operator.eq, ">": operator.gt, ">=": operator.ge, "<": operator.lt,
               "<=": operator.le}
        op, v = ops[f.type], f.value
        row_filters.append((f.column, lambda a, op=op, v=v: op(a, v)))
    dim_groups = [g for g in q.groups if g.column != "at"]
    K = 1
    for g in dim_groups:
        K *= tbl.cards[g.column]
    sums = [a.column for a in q.aggs] + ["count"]

    group_cols = [g.column for g in dim_groups]

    def piece(a: int, b: int) -> np.ndarray:
        """Sums over rows a..b: cache-sized temporaries, explicit casts (np.bincount's own
        conversion of narrow keys and int64 weights is several times slower)."""
        idx = None
        if row_filters:
            mask = None
            for name, fn in row_filters:
                m = fn(tbl.cols[name][a:b])
                mask = m if mask is None else mask & m
            if not dim_groups:  # masked sums: integer dot products with the 0/1 mask
                mi = mask.astype(np.int64)
                return np.array([int(np.dot(tbl.cols[c][a:b], mi)) for c in sums], object)
            idx = np.flatnonzero(mask)

        def col(c: str) -> np.ndarray:
            v = tbl.cols[c][a:b]
            return v if idx is None else v.take(idx)

        if not dim_groups:
            return np.array([int(col(c).sum()) for c in sums], object)
        key = col(group_cols[0]).astype(np.intp)
        for c in group_cols[1:]:
            key *= tbl.cards[c]
            key += col(c)
        return np.stack([np.bincount(key, weights=col(c).astype(np.float64), minlength=K)
                         for c in sums])

    def partial(unit: tuple[Any, int, int]) -> tuple[Any, np.ndarray]:
        tkey, a, b = unit
        acc = piece(a, min(a + SUB_CHUNK, b))
        for lo in range(a + SUB_CHUNK, b, SUB_CHUNK):
            acc = acc + piece(lo, min(lo + SUB_CHUNK, b))
        return tkey, acc

    units = _ranges(tbl, q)
    parts = list(pool.map(partial, units)) if pool is not None else list(map(partial, units))
    acc: dict[Any, np.ndarray] = {}
    for tkey, p in parts:
        acc[tkey] = acc[tkey] + p if tkey in acc else p
    rows: list[dict[str, Any]] = []
    names = q.output_names
    tg = next((g for g in q.groups if g.column == "at"), None)
    for tkey in sorted(acc):
        p = acc[tkey]
        if not dim_groups:
            vals = p.tolist()
            if tg is not None and vals[-1] == 0:
                continue
            rows.append(_row(q, names, [tkey] if tg else [], vals))
            continue
        if float(p.max(initial=0)) >= _EXACT:
            raise OverflowError("ideal kernel sums exceed 2**53; use integer accumulation")
        nz = np.flatnonzero(p[-1])
        group_vals: list[list[Any]] = []
        rest = nz
        for g in reversed(dim_groups):
            card = tbl.cards[g.column]
            group_vals.append(tbl.decode[g.column](rest % card))
            rest = rest // card
        group_vals.reverse()
        sums_t = p[:, nz].astype(np.int64).T.tolist()
        by_name = {g.name: v for g, v in zip(dim_groups, group_vals)}
        for i, vals in enumerate(sums_t):
            gv = [tkey if g.column == "at" else by_name[g.name][i] for g in q.groups]
            rows.append(_row(q, names, gv, vals))
    if not q.groups and not rows:
        rows.append(_row(q, names, [], [0] * len(sums)))
    return finish(q, rows)


def _row(q: Query, names: list[str], group_vals: list[Any], sums: list[int]) -> dict[str, Any]:
    count = sums[-1]
    vals = [s if a.type == "sum" else (s / count if count else None)
            for a, s in zip(q.aggs, sums)]
    return dict(zip(names, (*group_vals, *vals, count)))


# -- flush ----------------------------------------------------------------------------------------
def flush(tbl: Table, directory: Any, rows: int = 1_000_000, fsync: bool = True) -> float:
    """Seconds to write `rows` rolled-up rows (one file per column, fsync'd, then the
    directory): the floor under a flush of that many rows, roll-up not included."""
    import os
    import time
    from pathlib import Path

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rows = min(rows, tbl.n)
    t = time.perf_counter()
    for name, col in tbl.cols.items():
        with open(d / f"{name}.col", "wb") as f:
            f.write(memoryview(np.ascontiguousarray(col[:rows])))
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    if fsync:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - t
    for p in d.glob("*.col"):
        p.unlink()
    return seconds
