"""The router <-> shard binary forms (msgpack): partial results, and validated insert batches.

Imports schema, kinds, batch, errors and partials. Numeric columns travel as raw little-endian
bytes with their dtype; strings as lists (None for nil), or a batch's string column that
arrived as a Factor (the insert fast path's form) as its distinct strings and narrow codes; a
partial's extent (the first and last
interval its shard scanned, for zero-fill) as a pair or nil, its granularity (seconds, when
coarser than the query asked) as an integer or absent, the kinds of its min/max columns by name
(absent: all sums). A decoded partial merges with `partials.merge`
exactly as a shard merges its own intervals. A batch validated by the router travels as
columns, so a shard skips JSON decoding and row validation and only checks, vectorised, that
the columns fit its schema.
"""

from __future__ import annotations

import itertools
import operator
from typing import Any

import msgpack
import numpy as np

from .batch import Batch, Factor
from .sketch import SketchColumn
from .errors import ClientError, InsertError
from .kinds import KINDS, Kind
from .partials import Partial
from .schema import Schema

VERSION = 1
CONTENT_TYPE = "application/msgpack"
BATCH_VERSION = 1
MAX_BATCH_ID = 256
ROUTER_BATCH_ID = MAX_BATCH_ID - 16  # the router appends "#<shard index>" for each shard


def check_batch_id(value: str | None, limit: int = MAX_BATCH_ID) -> str | None:
    """The X-Batch-Id header (None when absent or empty): printable ASCII, at most `limit`
    characters (it is kept in the log and the metadata for batch_id_window).

    Raises ClientError (400) otherwise."""
    if not value:
        return None
    if len(value) > limit or not (value.isascii() and value.isprintable()):
        raise ClientError(f"X-Batch-Id: expected at most {limit} printable ASCII characters, "
                          f"got {len(value)} characters")
    return value


def _enc(a: np.ndarray) -> dict[str, Any]:
    if a.dtype == object:
        return {"s": a.tolist()}
    a = np.ascontiguousarray(a)
    return {"d": a.dtype.str, "b": a.tobytes()}


def _dec(obj: dict[str, Any]) -> np.ndarray:
    if "s" in obj:
        out = np.empty(len(obj["s"]), object)
        out[:] = obj["s"]
        return out
    return np.frombuffer(obj["b"], np.dtype(obj["d"]))


def encode_partial(p: Partial) -> bytes:
    """Serialise a decoded partial (string keys as strings)."""
    if not p.decoded:
        raise ValueError("encode_partial needs a decoded partial (string keys as strings)")
    return msgpack.packb({
        "v": VERSION,
        "keys": [_enc(k) for k in p.keys],
        "nils": [None if nil is None else nil.tobytes() for nil in p.nils],
        "count": _enc(p.count),
        "sums": {c: _enc(v) for c, v in p.sums.items()},
        "extent": None if p.extent is None else [int(p.extent[0]), int(p.extent[1])],
        **({"granularity": int(p.granularity)} if p.granularity else {}),
        # the columns of `sums` that merge by min/max (absent: every column is a sum)
        **({"kinds": {c: k.name for c, k in p.kinds.items()}} if p.kinds else {}),
        # uniques columns: each group's sketch (SketchColumn.to_arrays), merged by the router
        **({"sketches": {c: {a: _enc(v) for a, v in col.to_arrays().items()}
                         for c, col in p.sketches.items()}} if p.sketches else {}),
    }, use_bin_type=True)


def decode_partial(data: bytes) -> Partial:
    obj = msgpack.unpackb(data, raw=False)
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise ValueError("not a gumshoe partial (version "
                         f"{obj.get('v') if isinstance(obj, dict) else '?'})")
    sketches = {str(c): SketchColumn.from_arrays({a: _dec(v) for a, v in col.items()})
                for c, col in obj.get("sketches", {}).items()}
    if any(len(col) != len(obj["count"]["b"]) // 8 for col in sketches.values()):
        raise ValueError("partial sketches do not match its groups")
    return Partial(
        [_dec(k) for k in obj["keys"]],
        [None if nil is None else np.frombuffer(nil, bool) for nil in obj["nils"]],
        _dec(obj["count"]),
        {c: _dec(v) for c, v in obj["sums"].items()},
        decoded=True,
        extent=_extent(obj.get("extent")),  # absent from a shard of an older version: None
        granularity=_granularity(obj.get("granularity")),
        kinds=_kinds(obj.get("kinds")),
        sketches=sketches,
    )


def _kinds(value: Any) -> dict[str, Kind]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(v in KINDS for v in value.values()):
        raise ValueError(f"bad partial kinds {value!r}")
    return {str(c): KINDS[v] for c, v in value.items()}


def _granularity(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value <= 0:
        raise ValueError(f"bad partial granularity {value!r}")
    return value


def _extent(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    lo, hi = value
    if type(lo) is not int or type(hi) is not int or lo > hi:
        raise ValueError(f"bad partial extent {value!r}")
    return lo, hi


def encode_batch(batch: Batch) -> bytes:
    """Serialise a validated batch (string dimensions as lists of str/None)."""
    if batch.sketches:  # rolled-up sketches travel as insert bodies of raw identities instead
        raise ValueError("encode_batch: a batch with rolled-up sketches has no wire form")
    return msgpack.packb({
        "v": BATCH_VERSION,
        "n": batch.n,
        "ts": _enc(batch.timestamps),
        # a string column as its strings per row, or (Factor: the C scanner's and the bulk
        # loaders' form) as its distinct strings and a code per row (nil rows: code 0)
        "dims": {k: ({"s": v} if isinstance(v, list) else
                     {"f": v.uniques, "c": _enc(_narrow_codes(v))} if isinstance(v, Factor)
                     else _enc(v))
                 for k, v in batch.dims.items()},
        "nils": {k: (None if v is None else v.tobytes()) for k, v in batch.nils.items()},
        "metrics": {k: _enc(v) for k, v in batch.metrics.items()},
        "counts": None if batch.counts is None else _enc(batch.counts),
        # uniques columns: identity hashes and presence, hashed once where the rows arrived
        **({"ids": {k: [_enc(h), _enc(p)] for k, (h, p) in batch.identities.items()}}
           if batch.identities else {}),
    }, use_bin_type=True)


def _narrow_codes(f: Factor) -> np.ndarray:
    """A Factor's codes in the narrowest unsigned type that holds them (1 byte a row for up
    to 256 distinct strings: less than most strings take)."""
    k = len(f.uniques)
    return f.codes.astype(np.uint8 if k <= 1 << 8 else np.uint16 if k <= 1 << 16
                          else np.uint32, copy=False)


MAX_COUNT = 2**32 - 1  # the largest roll-up count one binary row may carry


def decode_batch(schema: Schema, data: bytes) -> Batch:
    """A batch sent by a router, checked against `schema` as strictly as a JSON batch is:
    column set, dtypes, lengths, nil masks of 0/1 only, strings exactly where the mask says
    none is nil, values in their declared ranges (floats finite), counts in [1, MAX_COUNT].

    Raises InsertError naming the column that does not fit."""
    try:
        obj = msgpack.unpackb(data, raw=False)
        if not isinstance(obj, dict) or obj.get("v") != BATCH_VERSION:
            raise InsertError("binary insert body is not a gumshoe batch (version "
                              f"{obj.get('v') if isinstance(obj, dict) else '?'})")
        n = obj["n"]
        if type(n) is not int or n < 0:
            raise InsertError(f"binary insert body: n must be a non-negative integer, got {n!r}")
        for part, cols in (("dims", schema.dimensions), ("nils", schema.dimensions),
                           ("metrics", schema.metrics)):
            if not isinstance(obj[part], dict) or set(obj[part]) != {c.name for c in cols}:
                raise InsertError(f"binary insert body: {part} must name exactly the columns "
                                  f"{sorted(c.name for c in cols)}")
        ts = _dec(obj["ts"])
        dims: dict[str, object] = {}
        nils: dict[str, np.ndarray | None] = {}
        for d in schema.dimensions:
            v = obj["dims"][d.name]
            if not d.is_string:
                dims[d.name] = _dec(v)
            elif "f" in v:
                dims[d.name] = Factor(list(v["f"]), _dec(v["c"]))
            else:
                dims[d.name] = list(v["s"])
            raw = obj["nils"][d.name]
            if raw is None:
                nils[d.name] = None
                continue
            mask = np.frombuffer(raw, np.uint8)
            if len(mask) and int(mask.max()) > 1:
                raise InsertError(f"binary insert body: nil mask of {d.name!r} holds a byte "
                                  "other than 0 or 1")
            nils[d.name] = mask.view(bool)
        metrics = {m.name: _dec(obj["metrics"][m.name]) for m in schema.metrics}
        counts = None if obj.get("counts") is None else _dec(obj["counts"])
        ids = _identities(schema, n, obj.get("ids", {}))
    except (KeyError, TypeError, ValueError, AttributeError, msgpack.UnpackException) as e:
        if isinstance(e, InsertError):
            raise
        raise InsertError(f"binary insert body: malformed batch ({type(e).__name__}: {e})"
                          ) from None
    _check(schema, n, ts, dims, nils, metrics, counts)
    return Batch(n, ts, dims, nils, metrics, counts, identities=ids)


def _identities(schema: Schema, n: int, obj: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not isinstance(obj, dict) or set(obj) != {c.name for c in schema.uniques}:
        raise InsertError("binary insert body: ids must name exactly the columns "
                          f"{sorted(c.name for c in schema.uniques)}")
    out = {}
    for c in schema.uniques:
        h, p = (_dec(x) for x in obj[c.name])
        if h.dtype != np.uint64 or p.dtype != np.bool_ or len(h) != n or len(p) != n:
            raise InsertError(f"binary insert body: ids of {c.name!r} must be {n} uint64 "
                              "hashes and {n} presence flags")
        out[c.name] = (h, p)
    return out


def _check(schema: Schema, n: int, ts: np.ndarray, dims: dict[str, object],
           nils: dict[str, np.ndarray | None], metrics: dict[str, np.ndarray],
           counts: np.ndarray | None) -> None:
    def fail(what: str) -> None:
        raise InsertError(f"binary insert body: {what}")

    if ts.dtype != np.int64 or len(ts) != n:
        fail(f"timestamps must be {n} int64 values")
    if n and (int(ts.min()) < 0 or int(ts.max()) > 2**32 - 1):
        fail("a timestamp is out of range [0, 4294967295]")
    for d in schema.dimensions:
        v, nil = dims[d.name], nils[d.name]
        if nil is not None and len(nil) != n:
            fail(f"nil mask of {d.name!r} must have {n} entries")
        if d.is_string and isinstance(v, Factor):
            codes = v.codes
            if not set(map(type, v.uniques)) <= {str}:
                fail(f"column {d.name!r}: the distinct strings must be strings")
            if codes.dtype.kind not in "iu" or len(codes) != n:
                fail(f"column {d.name!r} must be {n} integer codes")
            live = codes if nil is None else codes[~nil]
            if len(live) and (int(live.min()) < 0 or int(live.max()) >= len(v.uniques)):
                fail(f"column {d.name!r}: a code is not one of its {len(v.uniques)} strings")
            if nil is not None and len(codes):  # nil rows: code 0 (any code was sent)
                dims[d.name] = Factor(v.uniques, np.where(nil, 0, codes))
        elif d.is_string:
            assert isinstance(v, list)
            types = set(map(type, v))
            if len(v) != n or not types <= {str, type(None)}:
                fail(f"column {d.name!r} must be {n} strings or nulls")
            if type(None) in types or nil is not None:
                is_none = np.fromiter(map(operator.is_, v, itertools.repeat(None)), bool, n)
                if not np.array_equal(is_none, np.zeros(n, bool) if nil is None else nil):
                    fail(f"column {d.name!r}: null values and the nil mask disagree")
        elif not isinstance(v, np.ndarray) or v.dtype != d.dtype or len(v) != n:
            fail(f"column {d.name!r} must be {n} values of {d.dtype}")
        elif d.dtype.kind == "f" and n and not np.isfinite(v).all():
            fail(f"a value of {d.name!r} is not finite")
    for m in schema.metrics:
        v = metrics[m.name]
        if not isinstance(v, np.ndarray) or v.dtype != m.store_dtype or len(v) != n:
            fail(f"column {m.name!r} must be {n} values of {m.store_dtype}")
        lo, hi = m.value_range
        missing = m.kind.missing(v)  # a min/max row without a value holds the identity
        if missing is not None:
            v = v[~missing]
        if not len(v):
            continue
        if m.dtype.kind == "f":
            if not np.isfinite(v).all() or float(np.abs(v).max()) > hi:
                fail(f"a value of {m.name!r} is not finite or out of range for {m.type_name}")
        elif (int(v.min()) < lo or int(v.max()) > hi) and counts is None:
            fail(f"a value of {m.name!r} is out of range for {m.type_name} [{lo}, {hi}]")
    if counts is not None:
        if counts.dtype != np.int64 or len(counts) != n:
            fail("counts must be int64 values, one per row")
        if n and (int(counts.min()) < 1 or int(counts.max()) > MAX_COUNT):
            fail(f"counts must be in [1, {MAX_COUNT}]")
        for m in schema.metrics:  # a rolled-up value sums at most `count` declared values
            v = metrics[m.name]
            if n and m.dtype.kind != "f" and m.kind.is_sum:
                lo, hi = m.value_range
                wide = v.astype(object)
                c = counts.astype(object)
                if ((wide < c * lo) | (wide > c * hi)).any():
                    fail(f"a value of {m.name!r} is out of range for {m.type_name} times its "
                         "row's count")
