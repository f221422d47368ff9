"""One record of the raw archive: an accepted batch as it was accepted, and `RawChunk`, the
columns of raw rows that readers move around.

Imports batch (pick) and schema. A record's payload (inside a write-ahead-log frame, `wal.frame`) is

    u32 head length | head (msgpack map) | body (zstd frame of a msgpack map)

The head is small and uncompressed, so a reader can index a file without decompressing it:
`v` (format), `wal` (the write-ahead-log sequence number of the batch; 0 without a log),
`t` (arrival: the wall-clock time the batch was applied), `id` (its batch id or nil), `n`
(rows), `lo`/`hi` (the smallest and largest row timestamp), `ts` (the timestamp column's name),
`cols` (the other columns' names, in order) and `counted` (rows carry roll-up counts). A record
with `n` = 0 is a marker (`payload(..., None)`): it carries only a `wal` number.

The body holds the rows "as accepted": after validation and conversion to the column types,
before roll-up, made from what the write-ahead log records (`encode_block`), so a batch
archived live and one archived again from the log at recovery are the same. Timestamps are
Unix seconds (a float timestamp was floored); a string dimension is its dictionary codes, the
distinct codes and their strings (strings cost once per distinct value; decoded, each row gets
its string, None for nil); numeric dimensions are their column's dtype with a nil mask; metrics
are in their 64-bit sum types, a nil metric being 0 (a min/max: its kind's identity, with a
nil mask), a float32 metric the float32 value it was rounded to; `count` only for batches whose
rows carry roll-up counts (pre-rolled-up binary batches, as `gumtool import --url` sends).
Integer arrays are narrowed before compression (the values minus their minimum in the smallest
unsigned type that holds them).
"""

from __future__ import annotations

import dataclasses
import struct
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
import numpy as np
import zstandard

from .batch import pick
from .schema import Schema
from .sketch import SketchColumn

FORMAT = 1
HEAD_LENGTH = struct.Struct("<I")
LEVEL = 1  # zstd level: ~1 ms per 10k rows, ~10 bytes a row for the synthetic data set
_NARROW = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))
_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    c = getattr(_local, "c", None)
    if c is None:  # one per thread: a compressor is not safe to share between threads
        c = _local.c = zstandard.ZstdCompressor(level=LEVEL)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


# -- arrays -------------------------------------------------------------------------------------
def _pack(a: np.ndarray) -> list[Any]:
    """[dtype, bytes], or for integers of a small range [dtype, bytes of (a - min) in a narrower
    unsigned type, min, that type]."""
    if a.dtype.kind in "iu" and a.itemsize > 1 and len(a):
        lo, hi = int(a.min()), int(a.max())
        for t in _NARROW:
            if t.itemsize >= a.itemsize:
                break
            if hi - lo <= np.iinfo(t).max:
                return [a.dtype.str, (a - a.dtype.type(lo)).astype(t).tobytes(), lo, t.str]
    return [a.dtype.str, np.ascontiguousarray(a).tobytes()]


def _unpack(x: Sequence[Any], n: int) -> np.ndarray:
    if len(x) == 4:
        t = np.dtype(x[0])
        a = np.frombuffer(x[1], np.dtype(x[3])).astype(t) + t.type(x[2])
    else:
        a = np.frombuffer(x[1], np.dtype(x[0]))
    if len(a) != n:
        raise ValueError(f"a column has {len(a)} values, the record {n} rows")
    return a


def _objects(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), object)
    out[:] = values
    return out


# -- raw rows in memory -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class RawColumn:
    role: str  # "dimension" or "metric"
    values: np.ndarray  # numeric, or object (strings, None where nil)
    nil: np.ndarray | None  # numeric dimensions: True where nil; None when no row is nil

    def take(self, index: np.ndarray) -> RawColumn:
        nil = None if self.nil is None else self.nil[index]
        return RawColumn(self.role, self.values[index],
                         nil if nil is not None and nil.any() else None)


@dataclasses.dataclass(frozen=True, slots=True)
class RawChunk:
    """Raw rows as columns, with where each came from: `seq` (its record's archive sequence
    number) and `idx` (its position in the record), the order of rows of equal timestamp."""

    ts_name: str
    ts: np.ndarray  # int64 Unix seconds
    count: np.ndarray | None  # int64 roll-up counts; None: 1 for every row
    columns: dict[str, RawColumn]
    seq: np.ndarray  # int64
    idx: np.ndarray  # int64

    @property
    def n(self) -> int:
        return len(self.ts)

    def take(self, index: np.ndarray) -> RawChunk:
        return RawChunk(self.ts_name, self.ts[index],
                        None if self.count is None else self.count[index],
                        {k: c.take(index) for k, c in self.columns.items()},
                        self.seq[index], self.idx[index])

    def in_order(self) -> RawChunk:
        """The rows by (timestamp, seq, idx)."""
        return self.take(np.lexsort((self.idx, self.seq, self.ts)))


def _filled(col: RawColumn | None, like: RawColumn, n: int) -> RawColumn:
    """`col`, or for a chunk without the column n nil rows of `like`'s kind."""
    if col is not None:
        return col
    if like.values.dtype == object:
        return RawColumn(like.role, np.full(n, None, object), None)
    return RawColumn(like.role, np.zeros(n, like.values.dtype), np.ones(n, bool))


def _with_nones(col: RawColumn) -> np.ndarray:
    """The column's values as objects, None where nil."""
    out = col.values.astype(object)
    if col.nil is not None:
        out[col.nil] = None
    return out


def concat(chunks: Sequence[RawChunk]) -> RawChunk:
    """The rows of `chunks` one after the other. Columns are the union (first seen first); a
    chunk without a column has it nil; a column that is strings in one chunk and numbers in
    another becomes objects."""
    chunks = [c for c in chunks if c.n] or list(chunks[:1])
    if len(chunks) == 1:
        return chunks[0]
    if not chunks:
        raise ValueError("concat needs at least one chunk")
    names: dict[str, RawColumn] = {}
    for c in chunks:
        for k, col in c.columns.items():
            names.setdefault(k, col)
    columns: dict[str, RawColumn] = {}
    for k, like in names.items():
        parts = [_filled(c.columns.get(k), like, c.n) for c in chunks]
        if any(p.values.dtype == object for p in parts):
            values = np.concatenate([_with_nones(p) for p in parts])
            columns[k] = RawColumn(like.role, values, None)
            continue
        nil = (None if all(p.nil is None for p in parts) else
               np.concatenate([np.zeros(p.values.shape[0], bool) if p.nil is None else p.nil
                               for p in parts]))
        columns[k] = RawColumn(like.role, np.concatenate([p.values for p in parts]), nil)
    counts = None
    if any(c.count is not None for c in chunks):
        counts = np.concatenate([np.ones(c.n, np.int64) if c.count is None else c.count
                                 for c in chunks])
    return RawChunk(chunks[0].ts_name, np.concatenate([c.ts for c in chunks]), counts, columns,
                    np.concatenate([c.seq for c in chunks]),
                    np.concatenate([c.idx for c in chunks]))


# -- encoding -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Encoded:
    """A batch's compressed body and what its head says about it (`payload` adds the rest)."""

    n: int
    lo: int
    hi: int
    ts_name: str
    names: tuple[str, ...]
    counted: bool
    body: bytes


def _distinct(codes: np.ndarray) -> np.ndarray:
    """The distinct values of non-negative integer codes, ascending."""
    if not len(codes):
        return np.zeros(0, np.int64)
    top = int(codes.max())
    if top < 4 * len(codes) + 1024:
        return np.flatnonzero(np.bincount(codes, minlength=top + 1))
    return np.unique(codes).astype(np.int64)


def _compress(obj: dict[str, Any]) -> bytes:
    return bytes(_compressor().compress(msgpack.packb(obj, use_bin_type=True)))


def encode_block(schema: Schema, timestamps: np.ndarray, count: np.ndarray,
                 dims: Mapping[str, np.ndarray], nils: Mapping[str, np.ndarray | None],
                 metrics: Mapping[str, np.ndarray], strings: Mapping[str, Sequence[str]],
                 sizes: Mapping[str, int], new: Mapping[str, Sequence[str]],
                 sketches: Mapping[str, SketchColumn] | None = None) -> Encoded | None:
    """A batch's record body from its rows as the write-ahead log holds them: string
    dimensions as dictionary codes (a code below `sizes[name]` is `strings[name][code]`, a
    larger one `new[name][code - size]`: the strings the batch adds), numeric dimensions with
    their nil masks, metrics in their sum types, roll-up counts. A string column is stored as
    its codes, the distinct codes and their strings (so strings cost once per distinct value,
    not per row). A uniques metric is its rows' identity hashes (what validation kept of the
    identities: `sketches`, as the log has them), ragged: a length per row (0: no identity)
    and the hashes. None for no rows."""
    n = len(timestamps)
    if not n:
        return None
    cols: list[list[Any]] = []
    for d in schema.dimensions:
        nil = nils.get(d.name)
        mask = None if nil is None else np.ascontiguousarray(nil).tobytes()
        if not d.is_string:
            cols.append([d.name, "dimension", {"a": _pack(dims[d.name])}, mask])
            continue
        codes = dims[d.name]
        uniq = _distinct(codes if nil is None else codes[~nil])
        size, added = sizes.get(d.name, 0), new.get(d.name, ())
        old = uniq[uniq < size]
        text = ((pick(strings[d.name], old) if len(old) else [])  # type: ignore[arg-type]
                + [added[c - size] for c in uniq[uniq >= size].tolist()])
        cols.append([d.name, "dimension", {"c": _pack(codes), "u": _pack(uniq), "s": text},
                     mask])
    for m in schema.metrics:  # a min/max without a value: nil (it holds the kind's identity)
        missing = m.kind.missing(metrics[m.name])
        mask = (np.ascontiguousarray(missing).tobytes()
                if missing is not None and missing.any() else None)
        cols.append([m.name, "metric", {"a": _pack(metrics[m.name])}, mask])
    for u in schema.uniques:
        col = (sketches or {})[u.name]
        if len(col.dense_rows):  # a row of registers is no raw row (never so in an insert)
            raise ValueError(f"uniques {u.name!r}: a raw row holds identities, not registers")
        cols.append([u.name, "uniques", {"l": _pack(col.lens), "h": _pack(col.hashes)}, None])
    counted = bool((count != 1).any())
    body = _compress({"ts": _pack(timestamps), "count": _pack(count) if counted else None,
                      "cols": cols})
    return Encoded(n, int(timestamps.min()), int(timestamps.max()), schema.timestamp.name,
                   tuple(c[0] for c in cols), counted, body)


def payload(wal_seq: int, t: float, batch_id: str | None, enc: Encoded | None) -> bytes:
    """The framed payload of a record (`enc` None: a marker record with no rows)."""
    head = {"v": FORMAT, "wal": wal_seq, "t": t, "id": batch_id,
            "n": 0 if enc is None else enc.n, "lo": 0 if enc is None else enc.lo,
            "hi": 0 if enc is None else enc.hi, "ts": "" if enc is None else enc.ts_name,
            "cols": [] if enc is None else list(enc.names),
            "counted": False if enc is None else enc.counted}
    h: bytes = msgpack.packb(head, use_bin_type=True)
    return HEAD_LENGTH.pack(len(h)) + h + (b"" if enc is None else enc.body)


# -- decoding -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Head:
    wal: int
    t: float
    batch_id: str | None
    n: int
    lo: int
    hi: int
    ts_name: str
    names: tuple[str, ...]
    counted: bool
    body_offset: int  # where the body starts in the payload


def read_head(data: bytes) -> Head:
    """A payload's head. Raises ValueError/KeyError/TypeError when malformed."""
    (length,) = HEAD_LENGTH.unpack_from(data, 0)
    end = HEAD_LENGTH.size + length
    if end > len(data):
        raise ValueError("record head runs past the record")
    h = msgpack.unpackb(data[HEAD_LENGTH.size:end], raw=False)
    if not isinstance(h, dict) or h.get("v") != FORMAT:
        raise ValueError(f"unknown record format {h.get('v') if isinstance(h, dict) else h!r}")
    return Head(int(h["wal"]), float(h["t"]), h["id"], int(h["n"]), int(h["lo"]), int(h["hi"]),
                str(h["ts"]), tuple(h["cols"]), bool(h["counted"]), end)


def decode_body(body: bytes, ts_name: str, n: int, seq: int) -> RawChunk:
    """The rows of a record body (`seq`: the record's archive sequence number). Raises
    ValueError/KeyError/TypeError or a zstd error when malformed."""
    obj = msgpack.unpackb(_decompressor().decompress(body), raw=False)
    ts = _unpack(obj["ts"], n).astype(np.int64, copy=False)
    count = None if obj["count"] is None else _unpack(obj["count"], n).astype(np.int64)
    columns: dict[str, RawColumn] = {}
    for name, role, values, nil in obj["cols"]:
        mask = None if nil is None else np.frombuffer(nil, bool)
        if mask is not None and len(mask) != n:
            raise ValueError(f"nil mask of {name!r} has {len(mask)} entries, not {n}")
        if "h" in values:  # uniques: lengths "l" (0 or 1 per row) and the hashes "h"
            columns[name] = _identities(values, n, name)
        elif "c" in values:  # codes into the distinct codes "u", whose strings are "s"
            columns[name] = RawColumn(role, _strings(values, n, mask), None)
        elif "s" in values:  # strings, None for nil
            if len(values["s"]) != n:
                raise ValueError(f"column {name!r} has {len(values['s'])} values, not {n}")
            columns[name] = RawColumn(role, _objects(values["s"]), None)
        else:
            columns[name] = RawColumn(role, _unpack(values["a"], n), mask)
    return RawChunk(ts_name, ts, count, columns, np.full(n, seq, np.int64),
                    np.arange(n, dtype=np.int64))


def _identities(values: dict[str, Any], n: int, name: str) -> RawColumn:
    """A uniques column: each row's identity hash (uint64), nil where it has none."""
    lens = _unpack(values["l"], n).astype(np.int64)
    hashes = _unpack(values["h"], int(lens.sum())).astype(np.uint64)
    if len(lens) and lens.max() > 1:  # (this version writes one identity or none per row)
        raise ValueError(f"uniques {name!r}: a raw row with several identities")
    out = np.zeros(n, np.uint64)
    has = lens == 1
    out[has] = hashes
    return RawColumn("uniques", out, None if has.all() else ~has)


def _strings(values: dict[str, Any], n: int, nil: np.ndarray | None) -> np.ndarray:
    codes = _unpack(values["c"], n)
    text = _objects(values["s"])
    if not len(text):
        if nil is None or not nil.all():
            raise ValueError("string codes without strings")
        return np.full(n, None, object)
    uniq = _unpack(values["u"], len(text))
    pos = np.minimum(np.searchsorted(uniq, codes), len(text) - 1)
    found = uniq[pos] == codes
    if not (found if nil is None else found | nil).all():
        raise ValueError("a string code without its string")
    out = text[pos]
    if nil is not None:
        out[nil] = None
    return out


def decode(data: bytes, seq: int) -> tuple[Head, RawChunk | None]:
    """A record payload: its head and rows (None for a marker)."""
    head = read_head(data)
    if head.n == 0:
        return head, None
    return head, decode_body(data[head.body_offset:], head.ts_name, head.n, seq)


# -- spilled rows (the reader's temporary files) ---------------------------------------------------
def encode_chunk(chunk: RawChunk) -> bytes:
    """A RawChunk (with its seq and idx) as compressed bytes, for `decode_chunk`."""
    cols = [[k, c.role, {"s": c.values.tolist()} if c.values.dtype == object else
             {"a": _pack(c.values)}, None if c.nil is None else c.nil.tobytes()]
            for k, c in chunk.columns.items()]
    body = _compress({"ts": _pack(chunk.ts), "cols": cols,
                      "count": None if chunk.count is None else _pack(chunk.count)})
    obj = {"n": chunk.n, "ts_name": chunk.ts_name, "seq": _pack(chunk.seq),
           "idx": _pack(chunk.idx), "body": body}
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def decode_chunk(data: bytes) -> RawChunk:
    obj = msgpack.unpackb(data, raw=False)
    n = int(obj["n"])
    c = decode_body(obj["body"], obj["ts_name"], n, 0)
    return dataclasses.replace(c, seq=_unpack(obj["seq"], n).astype(np.int64),
                               idx=_unpack(obj["idx"], n).astype(np.int64))
