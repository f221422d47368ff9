"""The shard function: which shard holds a roll-up key (interval start + dimension values).

Imports schema only. The router assigns inserted rows with it and `gumtool balance` moves
stored rows with it, so every roll-up key lives on exactly one shard and metric filters (which
see rolled-up rows) answer the same through a router as on one server.

Definition (stable across processes, machines and versions of Python or numpy):

    h = 0xcbf29ce484222325
    for w in (interval_start, word(dim_1), ..., word(dim_k)):     # dimensions in schema order
        h = mix(h ^ w)
    shard = h mod n_shards

with 64-bit unsigned wrap-around arithmetic, `mix` the splitmix64 finaliser
(z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb; z ^= z >> 31),
and word(v) = 0x9e3779b97f4a7c15 for nil, the first 8 bytes (little-endian) of
blake2b(utf8(v), digest_size=8) for a string, the two's-complement 64-bit value of an
integer, and the IEEE-754 bits of a float as float64 (with -0.0 as 0.0).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from .batch import Factor
from .schema import Schema

SEED = np.uint64(0xCBF29CE484222325)
NIL_WORD = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def mix(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, vectorised over uint64 (wrap-around multiplication)."""
    z = z ^ (z >> _S30)
    z = z * _M1
    z = z ^ (z >> _S27)
    z = z * _M2
    return z ^ (z >> _S31)


def string_word(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")


def _words(values: Any, nil: np.ndarray | None, n: int) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype != object:
        if values.dtype.kind == "f":
            f = values.astype(np.float64) + 0.0  # -0.0 + 0.0 == +0.0
            words = f.view(np.uint64).copy()
        else:
            words = values.astype(np.int64).view(np.uint64).copy() if values.dtype != np.uint64 \
                else values.copy()
    elif isinstance(values, Factor):  # hash each distinct string once, gather by code
        words = np.array([string_word(s) for s in values.uniques] or [0], np.uint64)[
            values.codes]
    else:  # strings: hash each distinct string once
        table = {s: string_word(s) for s in set(values) if s is not None}
        words = np.fromiter(map(table.get, values, itertools.repeat(0)), np.uint64, n)
    if nil is not None:
        words[nil] = NIL_WORD
    return words


def shard_of(schema: Schema, starts: np.ndarray, dims: Mapping[str, Any],
             nils: Mapping[str, np.ndarray | None], n_shards: int) -> np.ndarray:
    """The shard index (0..n_shards-1) of each row.

    Parameters
    ----------
    starts : interval start of each row (int64 Unix seconds).
    dims : per dimension, its values: a numeric array, or strings (list or object array).
    nils : per dimension, a boolean nil mask or None.
    """
    n = len(starts)
    if n_shards <= 1:
        return np.zeros(n, np.int64)
    with np.errstate(over="ignore"):
        h = mix(np.full(n, SEED, np.uint64) ^ starts.astype(np.int64).view(np.uint64))
        for d in schema.dimensions:
            h = mix(h ^ _words(dims[d.name], nils.get(d.name), n))
    return (h % np.uint64(n_shards)).astype(np.int64)
