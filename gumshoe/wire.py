"""The router <-> shard binary forms (msgpack): partial results, and validated insert batches.

Imports schema, batch, errors and scan. Numeric columns travel as raw little-endian bytes with
their dtype; strings as lists (None for nil). A decoded partial merges with `scan.merge`
exactly as a shard merges its own intervals. A batch validated by the router travels as
columns, so a shard skips JSON decoding and row validation and only checks, vectorised, that
the columns fit its schema.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from .batch import Batch
from .errors import ClientError, InsertError
from .scan import Partial
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
    }, use_bin_type=True)


def decode_partial(data: bytes) -> Partial:
    obj = msgpack.unpackb(data, raw=False)
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise ValueError("not a gumshoe partial (version "
                         f"{obj.get('v') if isinstance(obj, dict) else '?'})")
    return Partial(
        [_dec(k) for k in obj["keys"]],
        [None if nil is None else np.frombuffer(nil, bool) for nil in obj["nils"]],
        _dec(obj["count"]),
        {c: _dec(v) for c, v in obj["sums"].items()},
        decoded=True,
    )


def encode_batch(batch: Batch) -> bytes:
    """Serialise a validated batch (string dimensions as lists of str/None)."""
    return msgpack.packb({
        "v": BATCH_VERSION,
        "n": batch.n,
        "ts": _enc(batch.timestamps),
        "dims": {k: ({"s": v} if isinstance(v, list) else _enc(v)) for k, v in batch.dims.items()},
        "nils": {k: (None if v is None else v.tobytes()) for k, v in batch.nils.items()},
        "metrics": {k: _enc(v) for k, v in batch.metrics.items()},
        "counts": None if batch.counts is None else _enc(batch.counts),
    }, use_bin_type=True)


def decode_batch(schema: Schema, data: bytes) -> Batch:
    """A batch sent by a router, checked against `schema` (dtypes, lengths, value ranges).

    Raises InsertError naming the column that does not fit."""
    try:
        obj = msgpack.unpackb(data, raw=False)
        if not isinstance(obj, dict) or obj.get("v") != BATCH_VERSION:
            raise InsertError("binary insert body is not a gumshoe batch (version "
                              f"{obj.get('v') if isinstance(obj, dict) else '?'})")
        n = int(obj["n"])
        ts = _dec(obj["ts"])
        dims: dict[str, object] = {}
        nils: dict[str, np.ndarray | None] = {}
        for d in schema.dimensions:
            v = obj["dims"][d.name]
            dims[d.name] = list(v["s"]) if d.is_string else _dec(v)
            raw = obj["nils"][d.name]
            nils[d.name] = None if raw is None else np.frombuffer(raw, bool)
        metrics = {m.name: _dec(obj["metrics"][m.name]) for m in schema.metrics}
        counts = None if obj.get("counts") is None else _dec(obj["counts"])
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as e:
        if isinstance(e, InsertError):
            raise
        raise InsertError(f"binary insert body: malformed batch ({type(e).__name__}: {e})"
                          ) from None
    _check(schema, n, ts, dims, nils, metrics, counts)
    return Batch(n, ts, dims, nils, metrics, counts)


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
        if d.is_string:
            if len(v) != n or not set(map(type, v)) <= {str, type(None)}:  # type: ignore[arg-type]
                fail(f"column {d.name!r} must be {n} strings or nulls")
        elif not isinstance(v, np.ndarray) or v.dtype != d.dtype or len(v) != n:
            fail(f"column {d.name!r} must be {n} values of {d.dtype}")
        if nil is not None and len(nil) != n:
            fail(f"nil mask of {d.name!r} must have {n} entries")
    for m in schema.metrics:
        v = metrics[m.name]
        if v.dtype != m.store_dtype or len(v) != n:
            fail(f"column {m.name!r} must be {n} values of {m.store_dtype}")
        lo, hi = m.value_range
        if n and m.dtype.kind != "f" and (v.min() < lo or v.max() > hi):
            fail(f"a value of {m.name!r} is out of range for {m.type_name} [{lo}, {hi}]")
    if counts is not None and (counts.dtype != np.int64 or len(counts) != n
                               or (n and int(counts.min()) < 1)):
        fail("counts must be positive int64 values, one per row")
