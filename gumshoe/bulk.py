"""Bulk access to database directories for offline tools (gumtool): read a stored database
without starting it, and write a whole new database at once, atomically.

Imports db and the storage layers below it; file names, db.json and the lock are layout.py's.
`StoredDB` holds the directory lock (so a running server is refused and cannot start
meanwhile), reads db.json, the dictionaries (checksums checked) and, lazily, the segments of one
interval at a time; rows still only in the write-ahead log are replayed by the DB's own recovery
code on a scratch copy of the log, so the directory itself is never modified. `NewDB` builds a
database in a hidden directory beside its destination (`layout.staging_prefix`) and renames it
into place only once db.json is durable: a crash or Ctrl-C leaves no output that looks complete.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from . import fileio
from .block import Block
from .config import SchemaConfig, default_config_text, parse_config
from .db import DB
from .dictionary import encode_dictionary, read_dictionary_file
from .errors import CorruptDataError, GumshoeError
from .interval import build_interval
from .layout import (
    META,
    DictMeta,
    DirLock,
    IntervalMeta,
    Meta,
    dictionary_filename,
    read_meta,
    staging_prefix,
    wal_files,
    write_atomic,
    write_meta,
)
from .schema import Column, Schema
from .segment import Segment


class BulkError(GumshoeError):
    """An offline operation cannot proceed (not a database, destination in use, ...)."""


def stored_meta(directory: Path) -> Meta:
    """layout.read_meta, with a missing db.json said plainly (gumtool names a directory)."""
    try:
        return read_meta(directory)
    except FileNotFoundError:
        raise BulkError(f"{directory}: not a gumshoe database (no {META})") from None


def schema_config(schema: Schema, **changes: Any) -> SchemaConfig:
    """The [schema] config section of a stored schema (for opening it with DB)."""
    sc = SchemaConfig(segment_size=schema.segment_size,
                      interval_duration=schema.interval_duration,
                      timestamp_column=(schema.timestamp.name, schema.timestamp.type_name),
                      dimension_columns=tuple((c.name, c.type_name) for c in schema.dimensions),
                      metric_columns=tuple((c.name, c.type_name)
                                           for c in (*schema.metrics, *schema.uniques)),
                      tiers=schema.tiers)
    return dataclasses.replace(sc, **changes)


# -- reading ------------------------------------------------------------------------------
class StoredDB:
    """A database directory opened read-only, locked for as long as it is open.

    `starts` lists the interval starts (flushed or only in the write-ahead log); `blocks(start)`
    returns that interval's stored blocks (its segments, each run rolled up, then any unflushed
    rows, not rolled up; `runs(start)` says how many runs); `duration(start)` its duration (with tiers, re-rolled intervals are
    coarser; `meta.watermarks` says which times are); `strings(name)` is the code -> string
    table of a string dimension; `last_updated` the largest row timestamp ever inserted (None:
    unknown).
    """

    def __init__(self, path: str | os.PathLike[str], *, lock: DirLock | None = None,
                 verify: bool = True) -> None:
        self.dir = Path(path)
        self.verify = verify
        self._own_lock = lock is None
        self.lock = lock or DirLock(self.dir)
        try:
            self.meta = stored_meta(self.dir)
            self.schema = self.meta.schema
            self.last_updated = self.meta.last_updated
            self.dictionaries: dict[str, list[str]] = {}
            for d in self.schema.string_dimensions:
                self.dictionaries[d.name] = self._load_dictionary(d.name)
            self.intervals: dict[int, IntervalMeta] = {im.start: im for im in self.meta.intervals}
            self.pending: dict[int, list[Block]] = {}
            self._pending_durations: dict[int, int] = {}
            self.pending_rows = 0
            if any(p.stat().st_size for _, p in wal_files(self.dir)):
                self._replay_wal()
            self._arrays: dict[str, np.ndarray] = {}
        except BaseException:
            self.close()
            raise

    def _load_dictionary(self, name: str) -> list[str]:
        entry = self.meta.dictionaries.get(name)
        if entry is None:
            return []
        return read_dictionary_file(self.dir / entry.file, entry.size, entry.crc32)[0]

    def _replay_wal(self) -> None:
        """Replay the unflushed log records with the DB's own recovery, on a scratch copy of the
        log and dictionaries (so nothing here changes), and keep the rows in memory."""
        scratch = Path(tempfile.mkdtemp(prefix="gumtool-wal-"))
        try:
            for entry in self.meta.dictionaries.values():
                shutil.copyfile(self.dir / entry.file, scratch / entry.file)
            for _, p in wal_files(self.dir):
                shutil.copyfile(p, scratch / p.name)
            write_meta(scratch, dataclasses.replace(self.meta, intervals=()), fsync=False)
            config = parse_config(default_config_text()).replace(
                database_dir=str(scratch), retention_days=0, durability="none",
                schema=schema_config(self.schema))
            db = DB(config)
            try:
                snap = db.snapshot()
                for view in snap.intervals:
                    if view.mem:
                        self.pending[view.start] = list(view.mem)
                        self._pending_durations[view.start] = view.duration
                        self.pending_rows += sum(b.logical_rows for b in view.mem)
                for name, d in snap.dictionaries.items():
                    self.dictionaries[name] = d.values[:snap.dict_sizes[name]]
                self.last_updated = db.last_updated
            finally:
                db.close(flush=False)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    # -- contents -------------------------------------------------------------------------
    @property
    def starts(self) -> list[int]:
        return sorted(set(self.intervals) | set(self.pending))

    def duration(self, start: int) -> int:
        """The duration of the interval at `start` (seconds)."""
        im = self.intervals.get(start)
        if im is not None and im.duration:
            return im.duration
        return self._pending_durations.get(start) or self.schema.interval_duration

    def stored_rows(self, start: int) -> int:
        """Rows of an interval as stored (segments) plus its unflushed input rows."""
        im = self.intervals.get(start)
        flushed = im.rows if im else 0
        return flushed + sum(b.n for b in self.pending.get(start, ()))

    def runs(self, start: int) -> int:
        """Flushed runs of an interval (keys may repeat across runs: docs/storage.md
        section 6); 0: none flushed."""
        im = self.intervals.get(start)
        return len(im.run_list) if im else 0

    def segment_files(self, start: int) -> list[str]:
        im = self.intervals.get(start)
        return im.filenames() if im else []

    def segments(self, start: int) -> list[Segment]:
        """Open (memory-map, checksum when `verify`) the segments of one interval."""
        return [Segment.open(self.dir / f, self.schema, verify=self.verify)
                for f in self.segment_files(start)]

    def blocks(self, start: int) -> list[Block]:
        return [s.block for s in self.segments(start)] + self.pending.get(start, [])

    def strings(self, name: str) -> np.ndarray:
        """Code -> string object array of a string dimension."""
        arr = self._arrays.get(name)
        if arr is None:
            values = self.dictionaries[name]
            arr = self._arrays[name] = np.array(values + [None], dtype=object)[:len(values)]
        return arr

    def close(self) -> None:
        if self._own_lock:
            self.lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- writing ------------------------------------------------------------------------------
class StringTable:
    """The dictionary of one string dimension of a database being built: thread-safe
    re-encoding of codes from other dictionaries, one Python step per distinct new string."""

    def __init__(self, column: Column) -> None:
        self.column = column
        self.values: list[str] = []
        self.index: dict[str, int] = {}
        self._remaps: dict[Any, np.ndarray] = {}
        self._lock = threading.Lock()
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)

    def remap(self, key: Any, strings: Sequence[str], codes: np.ndarray,
              nil: np.ndarray | None) -> np.ndarray:
        """Codes into `strings` (the dictionary named `key`, which may grow but never changes
        a code) -> codes into this table (nil rows: 0), in the column's code dtype."""
        codes = codes.astype(np.int64, copy=False)
        if nil is not None:
            codes = np.where(nil, 0, codes)
        valid = codes if nil is None else codes[~nil]
        if len(valid) and (int(valid.max()) >= len(strings) or int(valid.min()) < 0):
            raise CorruptDataError(f"column {self.column.name!r}: a stored code is outside its "
                                   f"dictionary of {len(strings)} strings")
        with self._lock:
            table = self._remaps.get(key)
            if table is None or len(table) < len(strings):
                grown = np.full(len(strings), -1, np.int64)
                if table is not None:
                    grown[:len(table)] = table
                table = self._remaps[key] = grown
            if len(valid):
                missing = valid[table[valid] < 0]
                if len(missing):
                    for c in np.flatnonzero(np.bincount(missing)).tolist():
                        s = strings[c]
                        code = self.index.get(s)
                        if code is None:
                            code = self.index[s] = len(self.values)
                            self.values.append(s)
                        table[c] = code
                    if len(self.values) > self.column.capacity:
                        raise BulkError(
                            f"column {self.column.name!r}: the strings in use do not fit "
                            f"{self.column.type_name}, which holds {self.column.capacity} "
                            f"distinct strings (found at least {len(self.values)}, e.g. "
                            f"{self.values[-1]!r})")
        out = table[codes] if len(table) else np.zeros(len(codes), np.int64)
        if nil is not None:
            out[nil] = 0
        return out.astype(self.column.dtype)

    def array(self) -> np.ndarray:
        """The strings as an object array (code -> string), cached until the table grows."""
        with self._lock:
            arr = self._array
            if arr is None or len(arr) != len(self.values):
                arr = self._array = np.array(self.values + [None], dtype=object)[:-1]
            return arr


class NewDB:
    """A new database built offline: intervals are written (from any thread) into a hidden
    directory beside `dest`; `finish` writes the dictionaries and db.json there (durably),
    `publish` renames the directory to `dest` (`commit` does both); `abort` (or leaving a
    `with` block by an exception) removes it unless it was published. `last_updated` (set by
    the caller) goes into db.json."""

    def __init__(self, dest: str | os.PathLike[str], schema: Schema, fsync: bool = True) -> None:
        self.dest = Path(dest)
        self.schema = schema
        self.fsync = fsync
        check_destination(self.dest)
        self.tmp = Path(tempfile.mkdtemp(prefix=staging_prefix(self.dest),
                                         dir=self.dest.parent))
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(self.tmp, 0o777 & ~umask)  # as a directory the DB creates (mkdtemp: 0700)
        self.tables = {d.name: StringTable(d) for d in schema.string_dimensions}
        self._intervals: dict[int, IntervalMeta] = {}
        self._lock = threading.Lock()
        self.rows = 0
        self.input_rows = 0
        self.last_updated: int | None = None
        # with tiers: the watermarks db.json records (every interval must lie in its tier's
        # range of them, layout.py); set by the caller before `finish`
        self.watermarks: tuple[int, ...] = (0,) * max(len(schema.tiers) - 1, 0)
        self.finished = False
        self.done = False  # published

    def add_interval(self, start: int, block: Block, duration: int | None = None) -> None:
        """Write one rolled-up interval (string codes from `self.tables`) of `duration`
        seconds (default: the schema's interval_duration)."""
        if block.n == 0:
            return
        iv = build_interval(self.schema, start, 0, block, self.tmp, self.fsync,
                            duration=duration)
        meta = iv.meta()
        with self._lock:
            if start in self._intervals:
                raise AssertionError(f"interval {start} written twice")
            self._intervals[start] = meta
            self.rows += block.n
            self.input_rows += block.logical_rows

    @property
    def intervals(self) -> int:
        return len(self._intervals)

    def finish(self) -> None:
        """Write the dictionaries and db.json into the hidden directory (durably with
        `fsync`): a complete database, not yet at its destination."""
        dictionaries = {}
        for name, table in self.tables.items():
            if len(table):
                fname = dictionary_filename(name, 1)
                data = encode_dictionary(table.values)
                write_atomic(self.tmp / fname, data, fsync=self.fsync)
                dictionaries[name] = DictMeta(fname, 1, len(table), zlib.crc32(data))
        write_meta(self.tmp, Meta(self.schema, intervals=tuple(
            self._intervals[s] for s in sorted(self._intervals)), dictionaries=dictionaries,
            last_updated=self.last_updated, watermarks=self.watermarks), fsync=self.fsync)
        self.finished = True

    def publish(self) -> None:
        """Rename the finished database to `dest` (atomic; refused if `dest` appeared)."""
        assert self.finished
        check_destination(self.dest)
        fileio.replace(self.tmp, self.dest)  # an empty existing directory is replaced
        if self.fsync:
            fileio.fsync_dir(self.dest.parent)
        self.done = True

    def commit(self) -> None:
        self.finish()
        self.publish()

    def abort(self) -> None:
        if not self.done:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.abort()


def check_destination(dest: Path) -> None:
    """A new database may be created at `dest`: it does not exist (its parent does) or is an
    empty directory."""
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir() or dest.is_symlink():
            raise BulkError(f"destination {str(dest)!r} exists and is not a directory")
        if any(dest.iterdir()):
            what = "holds a gumshoe database" if (dest / META).exists() else "is not empty"
            raise BulkError(f"destination {str(dest)!r} already exists and {what}; choose a new "
                            "database_dir (a new database is never written over another)")
    elif not dest.parent.is_dir():
        raise BulkError(f"destination {str(dest)!r}: parent directory {str(dest.parent)!r} "
                        "does not exist")
