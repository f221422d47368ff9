"""Segments: a fixed-width columnar Block in a checksummed, memory-mapped file.

Imports schema and block. File layout (little-endian):

    magic  b"GUMSEG\\0\\1"   8 bytes
    u32    header length H
    H bytes of JSON header: {"version", "rows", "columns": [{"name", "dtype", "offset",
           "nbytes", "crc32", "min", "max"}]}
    u32    crc32 of the header length and header bytes (always checked: the min/max stats
           steer query kernels, so a damaged header must never be believed)
    column data, each column 64-byte aligned at its offset

Column names: "count", "d:<dim>", "n:<dim>" (nil mask, present only when a row is nil),
"m:<metric>", and per uniques metric its sketch column's four ragged arrays
"u:<metric>:len" (n narrow unsigned), ":hash" (uint64), ":rows" (int64), ":reg" (uint8 registers,
2^14 per dense row): sketch.SketchColumn.to_arrays. The count and integer metrics are stored in the narrowest integer type of their
kind that holds the segment's values (version 3; a rolled-up count of 1..200 takes 1 byte, not
8): a scan reads a quarter of the bytes. They are widened wherever they are summed (block.concat,
the query kernels). Version 2 files (every column at its full width) still open.

Opening maps the file read-only and views each column with np.frombuffer, so a segment is never
read whole into memory; checksums are verified on request.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from . import fileio
from .block import Block
from .sketch import SketchColumn
from .errors import CorruptDataError
from .schema import Schema

MAGIC = b"GUMSEG\x00\x01"
VERSION = 3
READABLE = (2, 3)  # version 2: the same layout with count and metrics at full width
_ALIGN = 64
_NARROW = {"u": (np.uint8, np.uint16, np.uint32, np.uint64),
           "i": (np.int8, np.int16, np.int32, np.int64)}


def narrow_dtype(arr: np.ndarray) -> np.dtype:
    """The narrowest integer type of arr's kind holding its values (its own type if none is
    narrower, or for floats)."""
    if arr.dtype.kind not in _NARROW or not len(arr):
        return arr.dtype
    lo, hi = int(arr.min()), int(arr.max())
    for t in _NARROW[arr.dtype.kind]:
        dt = np.dtype(t)
        if dt.itemsize >= arr.dtype.itemsize:
            break
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return dt
    return arr.dtype


def narrowest(arr: np.ndarray) -> np.ndarray:
    """`arr` in its narrow_dtype (itself when that is its own type)."""
    return arr.astype(narrow_dtype(arr), copy=False)


def _columns_of(schema: Schema, block: Block) -> list[tuple[str, np.ndarray]]:
    cols: list[tuple[str, np.ndarray]] = [("count", block.count)]
    for d in schema.dimensions:
        cols.append(("d:" + d.name, block.dims[d.name]))
        nil = block.nils[d.name]
        if nil is not None:
            cols.append(("n:" + d.name, nil))
    cols.extend(("m:" + m.name, block.metrics[m.name]) for m in schema.metrics)
    for u in schema.uniques:
        cols.extend((f"u:{u.name}:{part}", arr)
                    for part, arr in block.sketches[u.name].to_arrays().items())
    return cols


def _stat(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def encode_segment(schema: Schema, block: Block) -> tuple[bytes, list[tuple[int, np.ndarray]]]:
    """The header bytes and (offset, array) pieces of a segment file for `block`."""
    cols = _columns_of(schema, block)
    meta = []
    for name, arr in cols:
        if name == "count" or name.startswith("m:"):
            arr = narrowest(arr)
        arr = np.ascontiguousarray(arr)
        entry: dict[str, Any] = {"name": name, "dtype": arr.dtype.str, "nbytes": arr.nbytes,
                                 "crc32": zlib.crc32(arr.view(np.uint8).data)}
        if name.startswith(("d:", "m:")) and block.n:
            values = arr
            if name.startswith("d:"):
                nil = block.nils[name[2:]]
                values = arr if nil is None else arr[~nil]
            if len(values):
                entry["min"], entry["max"] = _stat(values.min()), _stat(values.max())
        meta.append((entry, arr))
    # Offsets depend on the header length, which depends on the offsets: reserve room.
    header_len = len(json.dumps({"version": VERSION, "rows": block.n,
                                 "columns": [e for e, _ in meta]})) + 24 * len(meta) + 64
    offset = -(-(len(MAGIC) + 8 + header_len) // _ALIGN) * _ALIGN
    pieces = []
    for entry, arr in meta:
        entry["offset"] = offset
        pieces.append((offset, arr))
        offset = -(-(offset + arr.nbytes) // _ALIGN) * _ALIGN
    header = json.dumps({"version": VERSION, "rows": block.n,
                         "columns": [e for e, _ in meta]}).encode()
    header = struct.pack("<I", header_len) + header.ljust(header_len)
    return MAGIC + header + struct.pack("<I", zlib.crc32(header)), pieces


def write_segment(path: Path, schema: Schema, block: Block, fsync: bool = True) -> int:
    """Write `block` as a segment file (not yet visible to any reader). Returns its size."""
    head, pieces = encode_segment(schema, block)
    with fileio.open_file(path, "wb") as f:
        fileio.write(f, head)
        for offset, arr in pieces:
            f.seek(offset)
            fileio.write(f, arr.view(np.uint8).data)
        size = f.tell()  # the end of the last column: past EOF when trailing columns are empty
        size += -size % _ALIGN
        f.seek(0, os.SEEK_END)
        if f.tell() < size:
            fileio.write(f, b"\0" * (size - f.tell()))  # pad to the aligned end
        f.flush()
        if fsync:
            fileio.fsync(f.fileno())
    return size


def _sum_bounds(stats: dict[str, tuple[Any, Any]], n: int) -> dict[str, int]:
    """"bound:m:<metric>" -> n * max(|min|, |max|) for integer metrics: a bound on the absolute
    sum of the column, which the query engine adds up per query to know whether a 64-bit sum
    could wrap (a look-up per segment, not a pass over the data)."""
    return {"bound:" + name: n * max(abs(lo), abs(hi)) for name, (lo, hi) in stats.items()
            if name.startswith("m:") and isinstance(lo, int) and isinstance(hi, int)}


class Segment:
    """An immutable segment: a Block plus its per-column min/max stats. `scan_stats` is what
    the query engine reads: the stats plus each integer metric's sum bound."""

    __slots__ = ("block", "nbytes", "path", "scan_stats", "stats")

    def __init__(self, block: Block, stats: dict[str, tuple[Any, Any]], nbytes: int,
                 path: Path | None = None) -> None:
        self.block = block
        self.stats = stats
        self.scan_stats: dict[str, Any] = {**stats, **_sum_bounds(stats, block.n)}
        self.nbytes = nbytes
        self.path = path

    @property
    def rows(self) -> int:
        return self.block.n

    @classmethod
    def in_memory(cls, schema: Schema, block: Block) -> Segment:
        stats = {}
        for name, arr in _columns_of(schema, block):
            if name.startswith("m:") and block.n:
                stats[name] = (_stat(arr.min()), _stat(arr.max()))
        return cls(block, stats, schema.row_bytes * block.n
                   + sum(s.nbytes for s in block.sketches.values()))

    @classmethod
    def open(cls, path: Path, schema: Schema, verify: bool = False) -> Segment:
        """Map a segment file read-only and check its header against `schema`."""
        try:
            with fileio.open_file(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < len(MAGIC) + 4:
                    raise CorruptDataError(f"{path}: segment file truncated ({size} bytes)")
                mm = fileio.map_file(f.fileno())
        except FileNotFoundError:
            raise CorruptDataError(f"{path}: segment file is missing") from None
        if mm[:len(MAGIC)] != MAGIC:
            raise CorruptDataError(f"{path}: not a gumshoe segment (bad magic)")
        (hlen,) = struct.unpack_from("<I", mm, len(MAGIC))
        end = len(MAGIC) + 4 + hlen
        if end + 4 > size:
            raise CorruptDataError(f"{path}: segment header runs past the end of the file "
                                   f"({hlen} bytes, file {size} bytes)")
        if zlib.crc32(mm[len(MAGIC):end]) != struct.unpack_from("<I", mm, end)[0]:
            raise CorruptDataError(f"{path}: segment header checksum mismatch")
        try:
            header = json.loads(bytes(mm[len(MAGIC) + 4:end]))
            n = int(header["rows"])
            entries = {e["name"]: e for e in header["columns"]}
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptDataError(f"{path}: bad segment header ({e})") from None
        if header.get("version") not in READABLE:
            raise CorruptDataError(f"{path}: unsupported segment version {header.get('version')}")

        def column(name: str, dtype: np.dtype, required: bool = True,
                   narrow: bool = False, rows: int | None = n) -> np.ndarray | None:
            """Column `name` of `rows` values (None: any number, a ragged sketch array)."""
            e = entries.get(name)
            if e is None:
                if required:
                    raise CorruptDataError(f"{path}: column {name!r} missing from segment")
                return None
            if narrow:  # written in the narrowest integer type of its kind that held the values
                stored = np.dtype(e["dtype"])
                if (stored.kind == dtype.kind and stored.itemsize <= dtype.itemsize
                        and stored.byteorder in "=|<"):
                    dtype = stored
            count = e["nbytes"] // dtype.itemsize if rows is None else rows
            if np.dtype(e["dtype"]) != dtype or e["nbytes"] != count * dtype.itemsize:
                raise CorruptDataError(f"{path}: column {name!r} is {e['dtype']} x "
                                       f"{e['nbytes']}B, expected {dtype.str} x {count} rows")
            if e["offset"] + e["nbytes"] > size:
                raise CorruptDataError(f"{path}: column {name!r} runs past the end of the file "
                                       f"(offset {e['offset']}, file {size} bytes)")
            arr = np.frombuffer(mm, dtype=dtype, count=count, offset=e["offset"])
            if verify and zlib.crc32(arr.view(np.uint8).data) != e["crc32"]:
                raise CorruptDataError(f"{path}: checksum mismatch in column {name!r} at offset "
                                       f"{e['offset']}")
            return arr

        try:
            count = column("count", np.dtype(np.int64), narrow=True)
            dims, nils = {}, {}
            for d in schema.dimensions:
                dims[d.name] = column("d:" + d.name, d.dtype)
                nils[d.name] = column("n:" + d.name, np.dtype(bool), required=False)
            metrics = {m.name: column("m:" + m.name, m.store_dtype, narrow=True)
                       for m in schema.metrics}
            stats = {name: (e["min"], e["max"]) for name, e in entries.items() if "min" in e}
            sketches = {}
            for u in schema.uniques:
                lens_entry = entries.get(f"u:{u.name}:len")
                lens_dtype = np.dtype(lens_entry["dtype"]) if lens_entry else np.dtype(np.uint8)
                if lens_dtype.kind != "u" or lens_dtype.itemsize > 4:
                    raise CorruptDataError(f"{path}: column 'u:{u.name}:len' is {lens_dtype}")
                arrays: dict[str, Any] = {
                    "len": column(f"u:{u.name}:len", lens_dtype),
                    "hash": column(f"u:{u.name}:hash", np.dtype(np.uint64), rows=None),
                    "rows": column(f"u:{u.name}:rows", np.dtype(np.int64), rows=None),
                    "reg": column(f"u:{u.name}:reg", np.dtype(np.uint8), rows=None)}
                sketches[u.name] = SketchColumn.from_arrays(arrays)
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptDataError(f"{path}: bad segment header ({e!r})") from None
        block = Block(n, count, dims, nils, metrics, sketches)  # type: ignore[arg-type]
        return cls(block, stats, size, path)
