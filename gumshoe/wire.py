"""The router <-> shard binary form of partial results (msgpack).

Imports scan (Partial) and query. Numeric columns travel as raw little-endian bytes with their
dtype; string keys as lists (None for nil). A decoded partial merges with `scan.merge` exactly
as a shard merges its own intervals.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from .scan import Partial

VERSION = 1
CONTENT_TYPE = "application/msgpack"


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
