"""String dictionaries: an append-only str <-> code map per string dimension.

Imports fileio, batch (pick), schema and errors. Codes are dense (0..size-1) and never change
once given, so a reader that remembers the size it saw has a consistent view while the writer
appends. A persisted dictionary is a JSON array of its strings (`encode_dictionary`); the
metadata records its size and the crc32 of its bytes, both checked on reading.
"""

from __future__ import annotations

import itertools
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from . import fileio
from .batch import Factor, pick
from .block import string_ranks
from .errors import CorruptDataError, InsertError
from .schema import Column


def _is_unicode(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Dictionary:
    """The strings of one string dimension, in code order."""

    __slots__ = ("_cache", "index", "values")

    def __init__(self, values: list[str] | None = None) -> None:
        self.values: list[str] = list(values or ())
        self.index: dict[str, int] = {s: i for i, s in enumerate(self.values)}
        self._cache: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.values)

    def encode(self, values: list[Any] | Factor, nil: np.ndarray | None, col: Column,
               row_index: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
        """Codes for `values` (nil rows get code 0) and the new strings they need, in code order.

        Nothing is changed: the caller commits the new strings with `extend` once the whole
        batch is valid. Raises InsertError naming the row that would overflow the code type
        (by its `row_index` entry when given: its index in the original request).
        """
        if isinstance(values, Factor):
            return self._encode_factor(values, nil, col, row_index)
        n = len(values)
        codes = np.fromiter(map(self.index.get, values, itertools.repeat(-1)), np.int64, n)
        missing = codes < 0
        if nil is not None:
            missing &= ~nil
        new: list[str] = []
        if missing.any():
            where = np.flatnonzero(missing)
            pos = where.tolist()
            new_values = pick(values, where)
            staged = {s: len(self.values) + k for k, s in enumerate(dict.fromkeys(new_values))}
            if len(self.values) + len(staged) > col.capacity:
                first = next(i for i in pos if staged[values[i]] >= col.capacity)
                row = first if row_index is None else int(row_index[first])
                raise InsertError(f"rows[{row}].{col.name}: adding the new value "
                                  f"{values[first]!r} overflows the dictionary of {col.name} "
                                  f"({col.type_name} holds {col.capacity} distinct strings)")
            try:  # new strings are persisted and logged as UTF-8: no lone surrogates
                "".join(staged).encode("utf-8")
            except UnicodeEncodeError:
                first = next(i for i in pos if not _is_unicode(values[i]))
                row = first if row_index is None else int(row_index[first])
                raise InsertError(f"rows[{row}].{col.name}: {values[first]!r} is not valid "
                                  "Unicode text (it holds a lone surrogate)") from None
            codes[pos] = np.fromiter(map(staged.__getitem__, new_values), np.int64, len(pos))
            new = list(staged)
        if nil is not None:
            codes[nil] = 0
        return codes.astype(col.dtype), new

    def _encode_factor(self, f: Factor, nil: np.ndarray | None, col: Column,
                       row_index: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
        """`encode` of a factorised column: the strings its rows use are encoded (new ones in
        the order rows first use them, as the list form does), then the codes are mapped."""
        n, k = len(f.codes), len(f.uniques)
        codes = f.codes.astype(np.int64, copy=False)
        rows = np.arange(n, dtype=np.int64)
        if nil is not None:
            codes, rows = codes[~nil], rows[~nil]
        first = np.full(k, n, np.int64)  # each string's first row (n: unused)
        first[codes[::-1]] = rows[::-1]  # the last write wins (numpy's order: checked)
        if len(codes) and not (first[codes] <= rows).all():
            _, at = np.unique(codes, return_index=True)
            first[:] = n
            first[codes[at]] = rows[at]
        used = np.flatnonzero(first < n)
        used = used[np.argsort(first[used], kind="stable")]
        where = first[used]
        ucodes, new = self.encode(pick(f.uniques, used), None, col,
                                  where if row_index is None else row_index[where])
        table = np.zeros(max(k, 1), ucodes.dtype)
        table[used] = ucodes
        out = table[f.codes] if n else np.zeros(0, ucodes.dtype)
        if nil is not None:
            out[nil] = 0
        return out, new

    def extend(self, new: list[str]) -> None:
        base = len(self.values)
        for k, s in enumerate(new):
            if self.index.setdefault(s, base + k) != base + k:
                raise AssertionError(f"dictionary already holds {s!r}")
        self.values.extend(new)

    def lookup(self, s: str) -> int | None:
        return self.index.get(s)

    def strings(self, size: int) -> np.ndarray:
        """The first `size` strings as an object array (cached): codes -> strings by indexing."""
        arr = self._cache.get("strings")
        if arr is None or len(arr) != size:
            arr = np.array(self.values[:size] + [None], dtype=object)[:size]
            self._cache["strings"] = arr
        return arr

    def sorted_values(self, size: int) -> list[str]:
        """The first `size` strings in sorted (code point) order (cached)."""
        arr = self._cache.get("sorted")
        if arr is None or len(arr) != size:
            arr = sorted(self.values[:size])
            self._cache["sorted"] = arr
        return arr

    def ranks(self, size: int) -> np.ndarray:
        """rank[code] = position of the string in sorted (code point) order, for the first
        `size` codes (cached): string order comparisons and ordered output use it."""
        arr = self._cache.get("ranks")
        if arr is None or len(arr) != size:
            strings = np.empty(size, object)
            strings[:] = self.values[:size]
            arr = string_ranks(strings)[0]  # sorted in C, the GIL released
            self._cache["ranks"] = arr
        return arr


def encode_dictionary(values: list[str]) -> bytes:
    """A dictionary file's bytes: its strings as a JSON array, in code order."""
    return json.dumps(values).encode()


def read_dictionary_file(path: Path, size: int, crc32: int | None = None
                         ) -> tuple[list[str], int]:
    """The strings of a persisted dictionary (a JSON array in code order), checked against the
    `size` and (when recorded) the `crc32` of its bytes that the metadata records, and the
    crc32 of the bytes read. Raises CorruptDataError naming the file."""
    try:
        data = fileio.read_bytes(path)
    except FileNotFoundError:
        raise CorruptDataError(f"{path}: dictionary file is missing") from None
    crc = zlib.crc32(data)
    if crc32 is not None and crc != crc32:
        raise CorruptDataError(f"{path}: dictionary checksum mismatch (crc32 {crc:#010x}, "
                               f"metadata says {crc32:#010x}): the file is damaged")
    try:
        values = json.loads(data)
    except ValueError as e:
        raise CorruptDataError(f"{path}: damaged dictionary file ({e})") from None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise CorruptDataError(f"{path}: a dictionary file must hold a list of strings")
    if len(values) != size:
        raise CorruptDataError(f"{path}: dictionary has {len(values)} strings, metadata says "
                               f"{size}")
    if len(set(values)) != len(values):
        raise CorruptDataError(f"{path}: a string appears twice in the dictionary")
    return values, crc
