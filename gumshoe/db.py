"""The database facade: open/lock/close, insert, flush, retention, snapshots.

Imports every storage layer below it (config, schema, batch, dictionary, block, segment,
interval, memtable, snapshot, wal). One writer at a time (inserts and the flush swap take the
write lock); readers take a Snapshot and never block the writer.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import fileio
from .batch import Batch, parse_rows
from .block import Block, rollup
from .config import Config
from .dictionary import Dictionary, read_dictionary_file
from .errors import (
    ConfigError,
    CorruptDataError,
    DBLockedError,
    StorageFailedError,
)
from .interval import Interval, build_interval, open_interval
from .memtable import Memtable
from .schema import COUNT_DTYPE, Schema
from .snapshot import IntervalView, Snapshot
from .wal import Record, WriteAheadLog

log = logging.getLogger(__name__)

META = "db.json"
FORMAT = "gumshoe/1"


@dataclasses.dataclass(frozen=True, slots=True)
class InsertResult:
    inserted: int  # rows applied
    rejected: int  # rows outside retention, not applied
    duplicate: bool = False  # the batch id was applied before; nothing was applied now

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"inserted": self.inserted, "rejected": self.rejected}
        if self.duplicate:
            out["duplicate"] = True
        return out


def fsync_dir(path: Path) -> None:
    fileio.fsync_dir(path)


def write_atomic(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write `data` to `path` via a temporary file and rename (fsync'd when asked)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        fileio.write(f, data)
        f.flush()
        if fsync:
            fileio.fsync(f.fileno())
    fileio.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


def read_meta(directory: Path) -> dict[str, Any]:
    """A database directory's metadata, its format checked. FileNotFoundError when it has none;
    CorruptDataError naming the file when it is damaged or of another format."""
    path = directory / META
    try:
        meta = json.loads(path.read_bytes())
    except ValueError as e:
        raise CorruptDataError(f"{path}: damaged metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CorruptDataError(f"{path}: unknown format "
                               f"{meta.get('format') if isinstance(meta, dict) else meta!r}")
    return meta


def dictionary_filename(name: str, generation: int) -> str:
    return f"dictionary.{name}.generation{generation:04d}.json"


class DB:
    """A gumshoe database (a directory, or memory when `database_dir == "MEMORY"`)."""

    def __init__(self, config: Config, *, auto_flush: bool = False,
                 clock: Any = time.time) -> None:
        self.config = config
        self.schema = Schema.from_config(config.schema)
        self.clock = clock
        self.dir: Path | None = None if config.in_memory else Path(config.database_dir)
        self._write_lock = threading.RLock()  # inserts, memtable swaps, metadata
        self._flush_lock = threading.Lock()  # one flush at a time
        self._lock_fd: int | None = None
        self.intervals: dict[int, Interval] = {}
        self.dictionaries = {d.name: Dictionary() for d in self.schema.string_dimensions}
        self._dict_files: dict[str, tuple[int, int]] = {}  # name -> (generation, size)
        self.memtable = Memtable(self.schema)
        self._flushing: Memtable | None = None
        self.last_updated: int | None = None
        self.closed = False
        self.failed: str | None = None
        self.wal: WriteAheadLog | None = None
        self.stats = {"inserted_rows": 0, "inserted_batches": 0, "rejected_rows": 0,
                      "flushes": 0, "last_flush_seconds": 0.0}
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if self.dir is not None:
            self._open_dir()
        else:  # no log; batch ids are still remembered (in memory)
            self.wal = WriteAheadLog(None, "none", config.batch_id_window, clock)
        if auto_flush:
            self._flusher = threading.Thread(target=self._flush_loop, name="gumshoe-flusher",
                                             daemon=True)
            self._flusher.start()

    # -- opening ----------------------------------------------------------------------------
    def _open_dir(self) -> None:
        assert self.dir is not None
        try:
            self.dir.mkdir(exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create database directory {str(self.dir)!r}: "
                              f"{e.strerror}") from None
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DBLockedError(f"cannot lock database directory {str(self.dir)!r}: it is in "
                                "use by another process") from None
        self._lock_fd = fd
        try:
            meta_path = self.dir / META
            if meta_path.exists():
                meta = read_meta(self.dir)
                try:
                    self._load(meta)
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    raise CorruptDataError(f"{meta_path}: damaged metadata ({e!r})") from None
            elif any(self.dir.glob("*.seg")):
                raise CorruptDataError(f"{self.dir}: segment files but no {META}; run "
                                       "`gumtool clean` or choose an empty directory")
            else:  # a new database: metadata first, so a crash in the first flush is harmless
                write_atomic(meta_path, json.dumps({
                    "format": FORMAT, "schema": self.schema.to_json(), "wal_seq": 0,
                    "intervals": [], "dictionaries": {}}, indent=1).encode(),
                    fsync=self.config.durability == "fsync")
            self._remove_unreferenced()
            self._recover()
        except BaseException:
            self._unlock()
            raise

    def _load(self, meta: dict[str, Any]) -> None:
        assert self.dir is not None
        stored = Schema.from_json(meta["schema"])
        stored.check_same(self.schema, hint=" (use `gumtool migrate` to change the schema)")
        for name, entry in meta.get("dictionaries", {}).items():
            values = read_dictionary_file(self.dir / entry["file"], int(entry["size"]))
            self.dictionaries[name] = Dictionary(values)
            self._dict_files[name] = (int(entry["generation"]), int(entry["size"]))
        verify = True
        for im in meta.get("intervals", []):
            iv = open_interval(self.schema, self.dir, im, verify=verify)
            self.intervals[iv.start] = iv
        self._loaded_meta = meta

    def referenced_files(self) -> set[str]:
        names = {META}
        for iv in self.intervals.values():
            names.update(iv.filenames())
        for name, (gen, _size) in self._dict_files.items():
            names.add(dictionary_filename(name, gen))
        return names

    def _remove_unreferenced(self) -> None:
        assert self.dir is not None
        keep = self.referenced_files()
        for p in self.dir.iterdir():
            if p.name not in keep and (p.suffix in (".seg", ".tmp") or
                                       p.name.startswith("dictionary.")):
                log.info("removing unreferenced file %s", p)
                p.unlink(missing_ok=True)

    def _recover(self) -> None:
        """Open the write-ahead log and replay the records after the last flush, exactly once."""
        assert self.dir is not None
        meta = getattr(self, "_loaded_meta", {})
        self.wal = WriteAheadLog(self.dir, self.config.durability, self.config.batch_id_window,
                                 self.clock)
        try:
            for rec in self.wal.recover(int(meta.get("wal_seq", 0)), meta.get("batch_ids")):
                self._replay(rec)
        except BaseException:
            self.wal.close()
            raise
        if self.wal.stats["replayed"]:
            log.info("replayed %d write-ahead log records (up to sequence number %d)",
                     self.wal.stats["replayed"], self.wal.seq)

    def _replay(self, rec: Record) -> None:
        """Re-apply one logged batch. Every dictionary must have the size it had when the batch
        was first applied, so its codes (and the strings it adds) mean the same again."""
        block = rec.block
        for col in self.schema.dimensions + self.schema.metrics:
            v = (block.metrics if col.role == "metric" else block.dims).get(col.name)
            nil = block.nils.get(col.name) if col.role != "metric" else None
            if (v is None or v.dtype != col.store_dtype or
                    (nil is not None and len(nil) != block.n)):
                raise CorruptDataError(f"write-ahead log record {rec.seq}: column {col.name!r} "
                                       f"does not match the schema")
        if not set(rec.new_strings) <= set(self.dictionaries):
            raise CorruptDataError(f"write-ahead log record {rec.seq}: adds strings to a "
                                   f"dimension that is not a string dimension")
        for name, d in self.dictionaries.items():
            size, new = rec.dict_sizes.get(name), rec.new_strings.get(name, [])
            if size != len(d):
                raise CorruptDataError(
                    f"write-ahead log record {rec.seq}: the {name!r} dictionary has "
                    f"{len(d)} strings at replay but had {size} when the batch was logged; "
                    f"the dictionaries do not match the log")
            codes, nil = block.dims[name], block.nils[name]
            valid = codes if nil is None else codes[~nil]
            if len(valid) and int(valid.max()) >= size + len(new):
                raise CorruptDataError(f"write-ahead log record {rec.seq}: code out of range "
                                       f"for dimension {name!r}")
            if len(set(new)) != len(new) or any(d.lookup(x) is not None for x in new):
                raise CorruptDataError(f"write-ahead log record {rec.seq}: adds strings that "
                                       f"dimension {name!r} already holds")
        self._apply(self.schema.interval_start(rec.timestamps), block, rec.new_strings)
        self.stats["replayed_rows"] = self.stats.get("replayed_rows", 0) + block.n

    # -- insert -----------------------------------------------------------------------------
    def retention_cutoff(self) -> int | None:
        """Intervals starting before this are out of retention (None: keep everything)."""
        if not self.config.retention_days:
            return None
        return int(self.clock()) - self.config.retention_days * 86400 - self.schema.interval_duration

    def insert(self, rows: Any, batch_id: str | None = None) -> InsertResult:
        """Validate and apply a batch of JSON row objects atomically.

        Raises InsertError (nothing applied) for any invalid row."""
        return self.insert_batch(parse_rows(self.schema, rows), batch_id)

    def insert_batch(self, batch: Batch, batch_id: str | None = None) -> InsertResult:
        """Apply a validated batch atomically; return only once it is durable.

        Under the write lock the batch is logged (written to the OS) and applied to the
        memtable, so it is visible to queries from then on; the wait for the fsync (group
        commit) happens after the lock is released. A concurrent reader may therefore see rows
        whose insert has not returned yet; if their fsync then fails the insert raises
        StorageFailedError (never acknowledged), the database turns read-only, and after a
        restart the batch is either wholly present or wholly absent.

        A `batch_id` applied within `batch_id_window` is not applied again: the result has
        duplicate=True (returned once the earlier record is durable)."""
        with self._write_lock:
            if self.closed:
                raise StorageFailedError("database is closed")
            assert self.wal is not None
            seen = self.wal.seen(batch_id) if batch_id is not None else None
            if seen is not None:
                ticket, result = seen, InsertResult(0, 0, duplicate=True)
            else:
                if (batch.n or batch_id is not None) and self.failed:
                    raise StorageFailedError(f"database is read-only after a storage failure: "
                                             f"{self.failed}")
                starts = self.schema.interval_start(batch.timestamps)
                rejected = 0
                cutoff = self.retention_cutoff()
                if cutoff is not None and batch.n:
                    keep = starts >= cutoff
                    rejected = int(batch.n - keep.sum())
                    if rejected:
                        batch = batch.take(keep)
                        starts = starts[keep]
                block, new_strings = self._encode(batch)
                sizes = {name: len(d) for name, d in self.dictionaries.items()}
                try:
                    ticket = self.wal.append(batch_id, batch.timestamps, block, new_strings,
                                             sizes)
                except StorageFailedError as e:
                    self._fail(str(e))
                    raise
                self._apply(starts, block, new_strings)
                if batch.n:
                    ts_max = int(batch.timestamps.max())
                    self.last_updated = max(self.last_updated or ts_max, ts_max)
                self.stats["inserted_rows"] += batch.n
                self.stats["inserted_batches"] += 1
                self.stats["rejected_rows"] += rejected
                result = InsertResult(batch.n, rejected)
        try:
            self.wal.commit(ticket)  # outside the lock: concurrent inserts share one fsync
        except StorageFailedError as e:
            self._fail(str(e))
            raise
        return result

    def _encode(self, batch: Batch) -> tuple[Block, dict[str, list[str]]]:
        """Dictionary-encode string columns (staged: nothing changes until `_apply`)."""
        dims: dict[str, np.ndarray] = {}
        new_strings: dict[str, list[str]] = {}
        for d in self.schema.dimensions:
            values = batch.dims[d.name]
            if d.is_string:
                codes, new = self.dictionaries[d.name].encode(values, batch.nils[d.name], d,
                                                                batch.row_index)
                dims[d.name] = codes
                if new:
                    new_strings[d.name] = new
            else:
                dims[d.name] = values
        count = batch.counts if batch.counts is not None else np.ones(batch.n, COUNT_DTYPE)
        return Block(batch.n, count, dims, dict(batch.nils), dict(batch.metrics)), new_strings

    def _apply(self, starts: np.ndarray, block: Block, new_strings: dict[str, list[str]]) -> None:
        for name, new in new_strings.items():
            self.dictionaries[name].extend(new)
        self.memtable.add(starts, block)

    # -- reading ----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._write_lock:
            mem = self.memtable.view()
            flushing = self._flushing.view() if self._flushing is not None else {}
            intervals = dict(self.intervals)
            sizes = {name: len(d) for name, d in self.dictionaries.items()}
        views = []
        for start in sorted(set(intervals) | set(mem) | set(flushing)):
            iv = intervals.get(start)
            views.append(IntervalView(start, iv.segments if iv else (),
                                      flushing.get(start, ()) + mem.get(start, ())))
        return Snapshot(self.schema, tuple(views), dict(self.dictionaries), sizes)

    # -- flush ------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write unflushed rows into their intervals (a new generation for each touched
        interval), persist dictionaries and metadata atomically, drop expired intervals."""
        with self._flush_lock:
            t0 = time.perf_counter()
            with self._write_lock:
                if self.failed:
                    return
                if self.wal is not None:
                    try:  # a new log file: trim can then drop every file this flush covers
                        wal_seq = self.wal.rotate()
                    except StorageFailedError as e:
                        self._fail(str(e))
                        raise
                else:
                    wal_seq = 0
                mem = self.memtable
                self.memtable = Memtable(self.schema)
                self._flushing = mem
                sizes = {name: len(d) for name, d in self.dictionaries.items()}
            try:
                new_intervals, dict_files, dead = self._write_flush(mem, sizes, wal_seq)
            except OSError as e:
                self._fail(f"flush failed: {e}")
                raise StorageFailedError(f"flush failed: {e}") from e
            except BaseException as e:  # a bug, not the disk: still fail-stop (rows are logged)
                self._fail(f"flush failed: {e!r}")
                raise
            with self._write_lock:
                self.intervals = new_intervals
                self._dict_files = dict_files
                self._flushing = None
            if self.wal is not None:
                self.wal.trim(wal_seq)
            for p in dead:
                p.unlink(missing_ok=True)
            self.stats["flushes"] += 1
            self.stats["last_flush_seconds"] = time.perf_counter() - t0

    def _write_flush(self, mem: Memtable, sizes: dict[str, int], wal_seq: int
                     ) -> tuple[dict[int, Interval], dict[str, tuple[int, int]], list[Path]]:
        fsync = self.config.durability == "fsync"
        intervals = dict(self.intervals)
        dead: list[Path] = []
        cutoff = self.retention_cutoff()
        for start, mi in sorted(mem.intervals.items()):
            if cutoff is not None and start < cutoff:
                continue
            old = intervals.get(start)
            blocks = (old.blocks if old else []) + [mi.compact()]
            gen = old.generation + 1 if old else 0
            intervals[start] = build_interval(self.schema, start, gen,
                                              rollup(self.schema, blocks), self.dir, fsync)
            if old and self.dir is not None:
                dead.extend(self.dir / f for f in old.filenames())
        if cutoff is not None:
            for start in [s for s in intervals if s < cutoff]:
                old = intervals.pop(start)
                if self.dir is not None:
                    dead.extend(self.dir / f for f in old.filenames())
        dict_files = dict(self._dict_files)
        if self.dir is not None:
            for name, size in sizes.items():
                gen, old_size = dict_files.get(name, (0, 0))
                if size != old_size:
                    fname = dictionary_filename(name, gen + 1)
                    write_atomic(self.dir / fname, json.dumps(
                        self.dictionaries[name].values[:size]).encode(), fsync=False)
                    if fsync:
                        with open(self.dir / fname, "rb") as f:
                            fileio.fsync(f.fileno())
                    if gen:
                        dead.append(self.dir / dictionary_filename(name, gen))
                    dict_files[name] = (gen + 1, size)
            if fsync:
                fsync_dir(self.dir)
            meta = {
                "format": FORMAT,
                "schema": self.schema.to_json(),
                "wal_seq": wal_seq,
                "intervals": [intervals[s].to_json() for s in sorted(intervals)],
                "dictionaries": {name: {"file": dictionary_filename(name, g), "generation": g,
                                        "size": n} for name, (g, n) in dict_files.items()},
            }
            if self.wal is not None:
                meta["batch_ids"] = self.wal.batch_ids_json()
            write_atomic(self.dir / META, json.dumps(meta, indent=1).encode(), fsync=fsync)
        return intervals, dict_files, dead

    def _fail(self, reason: str) -> None:
        log.error("storage failure, refusing further writes: %s", reason)
        self.failed = reason

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.config.flush_interval):
            try:
                self.flush()
            except Exception:
                log.exception("periodic flush failed")

    # -- querying ---------------------------------------------------------------------------
    def query(self, obj: Any, executor: Any = None) -> list[dict[str, Any]]:
        """Parse, validate and run a JSON query over a fresh snapshot; the result rows.

        Raises QueryError (naming the query part) for an invalid query."""
        from .engine import execute
        from .query import parse_query

        query = parse_query(obj, self.schema)
        return execute(query, self.snapshot(), executor or self.query_pool(),
                       self.config.max_groups)

    def query_partial(self, obj: Any, executor: Any = None) -> Any:
        """The mergeable partial result of a query (string keys decoded), for the router."""
        from .engine import run
        from .query import parse_query
        from .scan import decode

        query = parse_query(obj, self.schema)
        snapshot = self.snapshot()
        partial = run(query, snapshot, executor or self.query_pool(), self.config.max_groups)
        return decode(partial, query, snapshot.strings)

    def query_pool(self) -> Any:
        """The shared scan thread pool (`query_parallelism` threads; numpy releases the GIL)."""
        pool = getattr(self, "_query_pool", None)
        if pool is None:
            from concurrent.futures import ThreadPoolExecutor

            pool = self._query_pool = ThreadPoolExecutor(
                self.config.query_parallelism, thread_name_prefix="gumshoe-scan")
        return pool

    # -- closing ----------------------------------------------------------------------------
    def close(self, flush: bool = True) -> None:
        if self.closed:
            return
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        try:
            if flush and not self.failed:
                self.flush()
        finally:
            with self._write_lock:
                self.closed = True
            if self.wal is not None:
                self.wal.close()
            self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> DB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

