"""Distinct-count sketches for the `uniques` metric kind (docs/storage.md §3, issue #14).

- Identity hashing: XXH64 (xxHash 64-bit, seed 0) of an identity's UTF-8 bytes; an integer is
  hashed as its decimal text, so `5` and `"5"` are one identity; None is no identity. The same
  value in every process, on every shard (`hash_strings`, `hash_ints`, `hash_array`).
- A sketch per rolled-up row: its sorted unique hashes while at most `SPARSE_MAX` (exact),
  else 2^14 one-byte HyperLogLog registers (index = top 14 bits, rank = leading zeros of the
  other 50 bits + 1), estimated by Ertl's improved raw estimator (2017; no bias tables).
- `SketchColumn`: a ragged column of such sketches (`lens`, `hashes`, `dense_rows`,
  `registers`), its union per group (roll-up, merge and query: one C kernel,
  gumshoe/_sketch.c, with a numpy path that the tests compare it with) and its estimates.

SPARSE_MAX = 2,048 hashes take 16 KiB, as many bytes as the registers: a dense row never takes
more room than the sparse row it replaces, and every count up to 2,048 is exact.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from . import native

P = 14
N_REGISTERS = 1 << P
Q = 64 - P  # bits of the hash that give a register's rank
SPARSE_MAX = 2048
PARALLEL_MIN = 1 << 16  # rows + hashes a union needs to run on more than one thread
_MASK64 = (1 << 64) - 1


# -- identity hashing ---------------------------------------------------------------------------
def _xxh64_py(data: bytes) -> int:
    """XXH64 with seed 0 in pure Python: the fallback without the C extension, and the tests'
    reference."""
    p1, p2, p3, p4, p5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                          0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5)

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (64 - r))) & _MASK64

    def rnd(acc: int, v: int) -> int:
        return rotl((acc + v * p2) & _MASK64, 31) * p1 & _MASK64

    n, i = len(data), 0
    if n >= 32:
        v = [(p1 + p2) & _MASK64, p2, 0, (-p1) & _MASK64]
        while i + 32 <= n:
            for lane in range(4):
                v[lane] = rnd(v[lane], int.from_bytes(data[i + 8 * lane:i + 8 * lane + 8],
                                                      "little"))
            i += 32
        h = (rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18)) & _MASK64
        for lane in range(4):
            h = ((h ^ rnd(0, v[lane])) * p1 + p4) & _MASK64
    else:
        h = p5
    h = (h + n) & _MASK64
    while i + 8 <= n:
        h ^= rnd(0, int.from_bytes(data[i:i + 8], "little"))
        h = (rotl(h, 27) * p1 + p4) & _MASK64
        i += 8
    if i + 4 <= n:
        h ^= int.from_bytes(data[i:i + 4], "little") * p1 & _MASK64
        h = (rotl(h, 23) * p2 + p3) & _MASK64
        i += 4
    while i < n:
        h ^= data[i] * p5 & _MASK64
        h = rotl(h, 11) * p1 & _MASK64
        i += 1
    h ^= h >> 33
    h = h * p2 & _MASK64
    h ^= h >> 29
    h = h * p3 & _MASK64
    return h ^ (h >> 32)


def _identity_bytes(i: int, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode("ascii")
    raise TypeError(f"item {i}: an identity must be a string or an integer, "
                    f"not {type(value).__name__}")


def hash_strings(values: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Identities (str or int; None = none) -> (uint64 hashes, bool present). The hash of an
    absent identity is 0. TypeError names the position of anything else."""
    items = values.tolist() if isinstance(values, np.ndarray) else values
    n = len(items)
    out = np.zeros(n, np.uint64)
    present = np.zeros(n, np.bool_)
    if native.sketch is not None:
        native.sketch.hash_objects(items, out, present.view(np.uint8))
        return out, present
    for i, v in enumerate(items):
        if v is not None:
            out[i] = _xxh64_py(_identity_bytes(i, v))
            present[i] = True
    return out, present


def hash_ints(values: np.ndarray) -> np.ndarray:
    """Integer identities -> uint64 hashes of their decimal text (as `hash_strings`)."""
    v = np.ascontiguousarray(values, np.int64)
    out = np.empty(len(v), np.uint64)
    if native.sketch is not None:
        native.sketch.hash_int64(v, out)
        return out
    for i, x in enumerate(v.tolist()):
        out[i] = _xxh64_py(str(x).encode("ascii"))
    return out


def hash_array(values: np.ndarray) -> np.ndarray:
    """A numpy 'U' or 'S' array (or a dictionary's strings) -> uint64 hashes, for hashing a
    dictionary-encoded column once per distinct string: `hash_array(strings)[codes]`. 'S'
    items are taken as UTF-8 bytes without their trailing NULs, as numpy stores them."""
    if values.dtype.kind == "U":
        values = np.char.encode(values, "utf-8")
    if values.dtype.kind != "S":
        hashes, present = hash_strings(values)
        if not present.all():
            raise TypeError(f"item {int(np.argmin(present))}: None is not a string")
        return hashes
    out = np.empty(len(values), np.uint64)
    width = values.dtype.itemsize
    if native.sketch is not None and width > 0:
        native.sketch.hash_fixed(np.ascontiguousarray(values).view(np.uint8), width, out)
        return out
    for i, b in enumerate(values.tolist()):
        out[i] = _xxh64_py(b)
    return out


# -- estimates ----------------------------------------------------------------------------------
def _ranks(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Register index and rank of each hash (rank: leading zeros of the low 50 bits + 1)."""
    h = hashes.astype(np.uint64, copy=False)
    index = (h >> np.uint64(Q)).astype(np.intp)
    rest = (h & np.uint64((1 << Q) - 1)).astype(np.float64)  # < 2**53: exact
    bits = np.frexp(rest)[1]  # bit length (0 for 0)
    return index, (Q + 1 - bits).astype(np.uint8)


def estimate_registers(registers: np.ndarray,
                       histograms: np.ndarray | None = None) -> np.ndarray:
    """(k, 2^14) registers -> k float estimates (Ertl 2017, the improved raw estimator), from
    their histograms (k, 52: how many registers hold each value) when given."""
    k = len(registers)
    if k == 0:
        return np.zeros(0)
    if histograms is not None:
        hist = histograms.astype(np.float64)
    elif native.sketch is not None:
        counts = np.empty((k, Q + 2), np.int64)
        native.sketch.histogram(np.ascontiguousarray(registers, np.uint8), counts)
        hist = counts.astype(np.float64)
    else:
        hist = np.bincount((np.arange(k, dtype=np.intp)[:, None] * (Q + 2)
                            + registers).ravel(), minlength=k * (Q + 2)
                           ).reshape(k, Q + 2).astype(np.float64)
    m = float(N_REGISTERS)
    z = m * _tau_safe(1.0 - hist[:, Q + 1] / m)
    for j in range(Q, 0, -1):
        z = 0.5 * (z + hist[:, j])
    x = hist[:, 0] / m
    with np.errstate(divide="ignore", invalid="ignore"):
        z = z + np.where(x == 1.0, np.inf, m * _sigma_safe(np.where(x == 1.0, 0.0, x)))
        return np.where(np.isinf(z), 0.0, m * m / (2.0 * math.log(2.0)) / z)


def _sigma_safe(x: np.ndarray) -> np.ndarray:
    """Ertl's sigma for x in [0, 1)."""
    y, z = 1.0, x.copy()
    for _ in range(64):
        x = x * x
        z = z + x * y
        y += y
    return z


def _tau_safe(x: np.ndarray) -> np.ndarray:
    """Ertl's tau for x in [0, 1] (0 at both ends)."""
    edge = (x == 0.0) | (x == 1.0)
    x = np.where(edge, 0.5, x)
    z, y = 1.0 - x, 1.0
    for _ in range(64):
        x = np.sqrt(x)
        y *= 0.5
        z = z - (1.0 - x) ** 2 * y
    return np.where(edge, 0.0, z / 3.0)


# -- the column ---------------------------------------------------------------------------------
def _narrow_lens(lens: np.ndarray) -> np.ndarray:
    top = int(lens.max()) if len(lens) else 0
    return lens.astype(np.uint8 if top <= 0xFF else np.uint16 if top <= 0xFFFF else np.uint32)


@dataclasses.dataclass(frozen=True, eq=False)
class SketchColumn:
    """N sketches: row i is `hashes[offsets[i]:offsets[i+1]]` (sorted, unique) with
    `lens[i]` = its size, or, for i in `dense_rows` (sorted, lens 0), the registers
    `registers[searchsorted(dense_rows, i)]`."""

    lens: np.ndarray  # narrow unsigned ints, one per row
    hashes: np.ndarray  # uint64
    dense_rows: np.ndarray  # int64, sorted
    registers: np.ndarray  # (len(dense_rows), 2^14) uint8

    @classmethod
    def empty(cls, n: int) -> SketchColumn:
        return cls(np.zeros(n, np.uint8), np.zeros(0, np.uint64), np.zeros(0, np.int64),
                   np.zeros((0, N_REGISTERS), np.uint8))

    @classmethod
    def from_identities(cls, group_ids: np.ndarray, hashes: np.ndarray,
                        n_groups: int) -> SketchColumn:
        """Sketches of n_groups rows from (row, hash) pairs: the roll-up path."""
        n = len(hashes)
        pairs = cls(np.ones(n, np.uint8), np.ascontiguousarray(hashes, np.uint64),
                    np.zeros(0, np.int64), np.zeros((0, N_REGISTERS), np.uint8))
        return pairs.union_rows(group_ids, n_groups)

    def __len__(self) -> int:
        return len(self.lens)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SketchColumn) and np.array_equal(self.lens, other.lens)
                and np.array_equal(self.hashes, other.hashes)
                and np.array_equal(self.dense_rows, other.dense_rows)
                and np.array_equal(self.registers, other.registers))

    __hash__ = None  # type: ignore[assignment]

    @property
    def nbytes(self) -> int:
        return int(self.lens.nbytes + self.hashes.nbytes + self.dense_rows.nbytes
                   + self.registers.nbytes)

    def native_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(lens, hashes, dense_rows, registers) as the C union reads them (contiguous, of its
        types), made once per column: a query's scan hands every block's column to one union
        call, and a segment's column outlives many queries."""
        cached = self.__dict__.get("_native")
        if cached is None:
            cached = (np.ascontiguousarray(self.lens),
                      np.ascontiguousarray(self.hashes, np.uint64),
                      np.ascontiguousarray(self.dense_rows, np.int64),
                      np.ascontiguousarray(self.registers, np.uint8))
            self.__dict__["_native"] = cached
        return cached

    def offsets(self) -> np.ndarray:
        """Row i's hashes are hashes[offsets[i]:offsets[i + 1]] (computed once per column)."""
        cached = self.__dict__.get("_offsets")
        if cached is None:
            cached = np.zeros(len(self.lens) + 1, np.int64)
            np.cumsum(self.lens, out=cached[1:])
            self.__dict__["_offsets"] = cached
        return cached

    def row_hashes(self, i: int) -> np.ndarray:
        """Row i's sparse hashes (empty for a dense row)."""
        off = self.offsets()
        return self.hashes[off[i]:off[i + 1]]

    # serialisation: the segment columns u:<metric>:len / :hash / :rows / :reg, and the wire
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"len": self.lens, "hash": self.hashes, "rows": self.dense_rows,
                "reg": self.registers.reshape(-1)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SketchColumn:
        lens = np.asarray(arrays["len"])
        hashes = np.asarray(arrays["hash"], np.uint64)
        rows = np.asarray(arrays["rows"], np.int64)
        reg = np.asarray(arrays["reg"], np.uint8)
        if (lens.dtype.kind != "u" or reg.size != len(rows) * N_REGISTERS
                or int(lens.sum(dtype=np.int64)) != len(hashes)
                or (len(rows) and (rows.min() < 0 or rows.max() >= len(lens)
                                   or np.any(np.diff(rows) <= 0) or np.any(lens[rows])))):
            raise ValueError("inconsistent sketch column arrays")
        return cls(lens, hashes, rows, reg.reshape(len(rows), N_REGISTERS))

    # selection and concatenation
    def take(self, rows: np.ndarray) -> SketchColumn:
        rows = np.asarray(rows, np.int64)
        lens = self.lens[rows]
        starts = self.offsets()[:-1][rows]
        total = int(lens.sum(dtype=np.int64))
        ends = np.cumsum(lens, dtype=np.int64)
        idx = np.repeat(starts - (ends - lens), lens) + np.arange(total, dtype=np.int64)
        pos = np.searchsorted(self.dense_rows, rows)
        pos_c = np.minimum(pos, max(len(self.dense_rows) - 1, 0))
        hit = (pos < len(self.dense_rows)) & (self.dense_rows[pos_c] == rows) \
            if len(self.dense_rows) else np.zeros(len(rows), np.bool_)
        return SketchColumn(_narrow_lens(lens), self.hashes[idx],
                            np.flatnonzero(hit).astype(np.int64), self.registers[pos[hit]])

    def keep(self, rows: np.ndarray) -> SketchColumn:
        """`take(rows)` for ascending rows outside which every row is empty (a union's groups
        that have rows): the hashes and registers are shared, not gathered."""
        rows = np.asarray(rows, np.int64)
        lens = self.lens[rows]
        dense = np.searchsorted(rows, self.dense_rows)
        if (not len(rows) or int(lens.sum(dtype=np.int64)) != len(self.hashes)
                or not np.array_equal(rows[np.minimum(dense, len(rows) - 1)], self.dense_rows)):
            return self.take(rows)
        kept = SketchColumn(_narrow_lens(lens), self.hashes, dense.astype(np.int64),
                            self.registers)
        if "_histograms" in self.__dict__:  # the same registers: the same histograms
            kept.__dict__["_histograms"] = self.__dict__["_histograms"]
        return kept

    def slice(self, lo: int, hi: int) -> SketchColumn:
        """Rows [lo, hi) as views (the hashes are contiguous: no gather, unlike `take`)."""
        hi = max(lo, min(hi, len(self.lens)))
        off = self.offsets()
        a, b = np.searchsorted(self.dense_rows, [lo, hi])
        return SketchColumn(self.lens[lo:hi], self.hashes[off[lo]:off[hi]],
                            self.dense_rows[a:b] - lo, self.registers[a:b])

    @staticmethod
    def concat(parts: Sequence[SketchColumn]) -> SketchColumn:
        if not parts:
            return SketchColumn.empty(0)
        starts = np.cumsum([0] + [len(p) for p in parts[:-1]])
        return SketchColumn(
            _narrow_lens(np.concatenate([p.lens.astype(np.int64) for p in parts])),
            np.concatenate([p.hashes for p in parts]),
            np.concatenate([p.dense_rows + s for p, s in zip(parts, starts)]).astype(np.int64),
            np.concatenate([p.registers for p in parts]))

    # union and estimates
    def union_rows(self, group_of_row: np.ndarray, n_groups: int) -> SketchColumn:
        """Row i joins group group_of_row[i]: the sketches of n_groups rows (roll-up, merge)."""
        return union(self, None, group_of_row, n_groups)

    def united(self, rows: np.ndarray | None = None) -> SketchColumn:
        """One sketch of rows `rows` (all when None) united: a total without groupings."""
        n = len(self) if rows is None else len(rows)
        return union(self, rows, np.zeros(n, np.int64), 1)

    def estimate(self) -> tuple[np.ndarray, np.ndarray]:
        """(per-row estimate float64, per-row is_exact bool): a sparse row's exact size, a
        dense row's register estimate."""
        est = self.lens.astype(np.float64)
        exact = np.ones(len(self.lens), np.bool_)
        est[self.dense_rows] = estimate_registers(self.registers,
                                                  self.__dict__.get("_histograms"))
        exact[self.dense_rows] = False
        return est, exact


def union(col: SketchColumn, rows: np.ndarray | None, groups: np.ndarray,
          n_groups: int) -> SketchColumn:
    """Rows `rows` of `col` (all rows when None; distinct positions; a bool mask is taken as
    its true positions) united per group: selected row i joins group groups[i] of n_groups.
    The result is mergeable (a partial); `.estimate()` gives the answers."""
    if rows is not None:
        rows = np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows.astype(np.int64)
    groups = np.ascontiguousarray(groups, np.int64)
    n_sel = len(col) if rows is None else len(rows)
    if len(groups) != n_sel:
        raise ValueError(f"union: {len(groups)} group ids for {n_sel} rows")
    if rows is None:
        keys = groups
    else:
        if len(rows) and (rows.min() < 0 or rows.max() >= len(col)):
            raise ValueError("union: a row or group index is out of range")
        keys = np.full(len(col), -1, np.int64)
        keys[rows] = groups
    return union_blocks([(col, keys)], n_groups)


KeyParts = tuple[int, Sequence[tuple[np.ndarray, int, int, np.ndarray | None]],
                 np.ndarray | None]
Keys = np.ndarray | int | KeyParts


def key_array(keys: Keys, n: int) -> np.ndarray:
    """A block's keys as an int64 array: from an array, one int, or (base, parts, mask):
    base + the sum over parts (codes, offset, stride, nil) of (codes - offset) * stride, 0
    where nil (the engine's mixed-radix group key), -1 where the bool mask (None: every row)
    leaves a row out."""
    if isinstance(keys, tuple):
        base, parts, mask = keys
        out = np.full(n, base, np.int64)
        for codes, offset, stride, nil in parts:
            add = (codes.astype(np.int64) - offset) * stride
            if nil is not None:
                add[nil] = 0
            out += add
        if mask is not None:
            out[~mask] = -1
        return out
    if np.ndim(keys) == 0:
        return np.full(n, keys, np.int64)
    return np.asarray(keys, np.int64)


def _native_keys(keys: Keys) -> Any:
    if type(keys) is int:  # a whole block under one key (the common case of a time series)
        return keys
    if isinstance(keys, tuple):
        base, parts, mask = keys
        return (int(base), [(np.ascontiguousarray(c), int(o), int(s),
                             None if nil is None else np.ascontiguousarray(nil, np.bool_))
                            for c, o, s, nil in parts],
                None if mask is None else np.ascontiguousarray(mask, np.bool_))
    return int(keys) if np.ndim(keys) == 0 else np.ascontiguousarray(keys, np.int64)


def union_blocks(parts: Sequence[tuple[SketchColumn, Keys]], n_groups: int,
                 executor: Executor | None = None, threads: int = 1,
                 histograms: bool = False) -> SketchColumn:
    """The rows of several sketch columns (a scan's blocks, read in place) united per group:
    per part, (column, keys) where keys gives each row's group in [0, n_groups) or -1 (left
    out), as an int64 array, one int for every row, or (base, parts, mask) of grouping codes
    (`key_array`; computed in C from the stored codes). The query kernel: the engine unites
    every selected block of a scan in one call, on up to `threads` threads of `executor` (the
    C union: runs of blocks, then ranges of groups, per thread; the same result as one
    thread's). `histograms`: a result to be estimated (a query's) gets its registers'
    histograms from the C union, made on its threads while they are in cache (`estimate`)."""
    return _union_blocks(parts, n_groups, None, executor, threads, histograms)[0]


def union_summing(parts: Sequence[tuple[SketchColumn, Keys]], n_groups: int,
                  weights: Sequence[np.ndarray], executor: Executor | None = None,
                  threads: int = 1, histograms: bool = False
                  ) -> tuple[SketchColumn, np.ndarray]:
    """`union_blocks`, and per group the int64 sum of its rows' weights (one integer array per
    part, one value per row: a block's roll-up counts), from the union's own pass over the
    keys: a query of uniques alone needs no pass of the sum kernel for its row counts."""
    if len(weights) != len(parts):
        raise ValueError("union: one weights array per part")
    united, sums = _union_blocks(parts, n_groups, weights, executor, threads, histograms)
    return united, sums if sums is not None else np.zeros(n_groups, np.int64)


def _union_blocks(parts: Sequence[tuple[SketchColumn, Keys]], n_groups: int,
                  weights: Sequence[np.ndarray] | None, executor: Executor | None = None,
                  threads: int = 1, histograms: bool = False
                  ) -> tuple[SketchColumn, np.ndarray | None]:
    if native.sketch is not None:
        blocks: list[tuple[Any, ...]]
        if weights is None:
            blocks = [(*c.native_arrays(), _native_keys(k)) for c, k in parts]
        else:
            blocks = [(*c.native_arrays(), _native_keys(k), np.ascontiguousarray(w))
                      for (c, k), w in zip(parts, weights)]
        out = _native_union(blocks, n_groups, executor, threads, histograms)
        united = SketchColumn(_narrow_lens(np.frombuffer(out[0], np.int64)),
                              np.frombuffer(out[1], np.uint64), np.frombuffer(out[2], np.int64),
                              np.frombuffer(out[3], np.uint8).reshape(-1, N_REGISTERS))
        if out[5] is not None:
            united.__dict__["_histograms"] = np.frombuffer(out[5], np.int64).reshape(-1, Q + 2)
        return united, (None if out[4] is None else np.frombuffer(out[4], np.int64))
    cols, keys = [], []
    for c, k in parts:
        block_keys = key_array(k, len(c))
        if len(block_keys) != len(c):
            raise ValueError("union: inconsistent sketch column or keys")
        if isinstance(k, tuple) and k[2] is None and len(c) and block_keys.min() < 0:
            raise ValueError("union: a key or dense row is out of range")  # no -1 unmasked
        cols.append(c)
        keys.append(block_keys)
    key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    if len(key) and (key.min() < -1 or key.max() >= n_groups):
        raise ValueError("union: a key or dense row is out of range")
    rows = np.flatnonzero(key >= 0)
    sums = None
    if weights is not None:
        w = [np.asarray(x) for x in weights]
        if any(x.dtype.kind not in "iub" or x.shape != (len(c),) for x, c in zip(w, cols)):
            raise ValueError("union: weights must be integers, one per row")
        sums = np.zeros(n_groups, np.int64)
        if w:
            np.add.at(sums, key[rows], np.concatenate(w).astype(np.int64)[rows])
    return _union_numpy(SketchColumn.concat(cols), None if len(rows) == len(key) else rows,
                        key[rows], n_groups), sums


def _native_union(blocks: list[tuple[Any, ...]], n_groups: int, executor: Executor | None,
                  threads: int, histograms: bool) -> Any:
    """The C union on `threads` threads of `executor`: the union itself is a task of the
    executor, and threads - 1 more tasks lend their threads to it as helpers (a Job: they take
    its units as it does). Helpers are queued after the union, so one waits only while its union
    runs, and a union never waits on a helper that has not started (it runs every unit left
    itself): no deadlock however busy the executor, and the query's work stays on its scan
    threads. Below PARALLEL_MIN rows + hashes, one thread: this one."""
    ext = native.sketch
    assert ext is not None
    work = sum(len(b[0]) + len(b[1]) for b in blocks)
    if executor is None or threads <= 1 or work < PARALLEL_MIN:
        return ext.union(blocks, n_groups, SPARSE_MAX, 1, None, histograms)
    job = ext.Job()
    try:
        united = executor.submit(ext.union, blocks, n_groups, SPARSE_MAX, threads, job,
                                 histograms)
        for _ in range(threads - 1):
            executor.submit(job.help)
        return united.result()
    finally:
        job.close()


def _union_numpy(col: SketchColumn, rows: np.ndarray | None, groups: np.ndarray,
                 n_groups: int) -> SketchColumn:
    if len(groups) and (groups.min() < 0 or groups.max() >= n_groups):
        raise ValueError("union: a row or group index is out of range")
    sel = col if rows is None else col.take(rows)
    lens = sel.lens.astype(np.int64)
    pair_group = np.repeat(groups, lens)
    order = np.lexsort((sel.hashes, pair_group))
    g, h = pair_group[order], sel.hashes[order]
    keep = np.ones(len(h), np.bool_)
    keep[1:] = (g[1:] != g[:-1]) | (h[1:] != h[:-1])
    g, h = g[keep], h[keep]
    counts = np.bincount(g, minlength=n_groups)
    dense = (counts > SPARSE_MAX)
    dense[groups[sel.dense_rows]] = True
    dense_groups = np.flatnonzero(dense).astype(np.int64)
    slot = np.full(n_groups, -1, np.int64)
    slot[dense_groups] = np.arange(len(dense_groups))
    registers = np.zeros((len(dense_groups), N_REGISTERS), np.uint8)
    if len(sel.dense_rows):
        np.maximum.at(registers, slot[groups[sel.dense_rows]], sel.registers)
    in_dense = dense[g]
    index, rank = _ranks(h[in_dense])
    np.maximum.at(registers, (slot[g[in_dense]], index), rank)
    counts[dense] = 0
    return SketchColumn(_narrow_lens(counts), h[~in_dense].copy(), dense_groups, registers)
