"""The database facade: open/lock/close, insert, flush, compaction, retention, snapshots.

Imports every storage layer below it (config, schema, layout, batch, dictionary, block, segment,
interval, memtable, snapshot, wal). One writer at a time (inserts and the flush swap take the
write lock); readers take a Snapshot and never block the writer. The directory's files, db.json
and the lock belong to layout.py.

With tiers (tiers.py), a row goes to the interval of the finest tier whose range still covers
its time, by the watermarks in db.json (on insert and on write-ahead log replay alike), and
`compact` re-rolls aged intervals into the next tier's (compaction.py), committing each step
with db.json as a flush does; the memtable's rows of a re-rolled range move to its coarser
interval in the same swap.

Failures: a disk fault (EIO, ENOSPC, ...) while logging or flushing is fail-stop (`failed` is
set, every later write is refused with StorageFailedError, reads go on; restart once the disk
is fixed). Running out of file descriptors (EMFILE/ENFILE) is not a disk fault: the insert or
flush fails with TransientStorageError, nothing acknowledged is lost, the database stays
writable, and the next insert or flush tries again (a flush keeps the rows it could not write
and writes them with the next one).
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import logging
import resource
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import compaction, fileio
from .archive import Archive, open_archive
from .batch import Batch, parse_rows
from .block import Block, rollup
from .config import Config
from .dictionary import Dictionary, encode_dictionary, read_dictionary_file
from .errors import (
    ConfigError,
    CorruptDataError,
    StorageFailedError,
    TransientStorageError,
)
from .interval import (
    FANOUT,
    MAX_RUNS,
    Interval,
    build_interval,
    cap_plan,
    merge_plan,
    open_interval,
)
from .layout import (
    DictMeta,
    DirLock,
    Meta,
    dictionary_filename,
    kind_of,
    read_meta,
    schema_retention_cutoff,
    tmp_name,
    wal_files,
    write_atomic,
    write_meta,
)
from .memtable import Memtable
from .schema import COUNT_DTYPE, Schema
from .sketch import SketchColumn
from .snapshot import IntervalView, Snapshot
from .wal import Record, ReplayProgress, WriteAheadLog

log = logging.getLogger(__name__)

COMPACT_EVERY = 60.0  # seconds between compactor runs (the server's loop, the auto flusher)
MERGE_SETTLE = 300.0  # seconds without a flush before a past interval's runs merge into one
MERGE_EVERY = 30.0  # seconds between background merges (after a flush; each commits db.json)
MAX_MERGE_ROWS = 4_000_000  # stored rows merged per commit, at most (one interval may exceed)


def _nofile_limit() -> int:
    """The soft limit of open file descriptors (RLIMIT_NOFILE), or 4096 when unknown."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        return 4096
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


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


class DB:
    """A gumshoe database (a directory, or memory when `database_dir == "MEMORY"`).

    Opening a directory replays its write-ahead log; `replay_progress`, when given, is called
    (in the opening thread) with a `wal.ReplayProgress` when the replay starts, about once a
    second while it runs, and at its end (`done`): `p.describe()` is a status line such as
    "replaying the write-ahead log, 43% (...)", `p.fraction` the share done (0..1).
    """

    def __init__(self, config: Config, *, auto_flush: bool = False,
                 clock: Any = time.time,
                 replay_progress: Callable[[ReplayProgress], None] | None = None) -> None:
        self.config = config
        self.schema = Schema.from_config(config.schema)
        self.clock = clock
        self.dir: Path | None = None if config.in_memory else Path(config.database_dir)
        self._write_lock = threading.RLock()  # inserts, memtable swaps, metadata
        self._flush_lock = threading.Lock()  # one flush at a time
        self._lock: DirLock | None = None
        self.intervals: dict[int, Interval] = {}
        self.dictionaries = {d.name: Dictionary() for d in self.schema.string_dimensions}
        self._dict_files: dict[str, DictMeta] = {}
        self.memtable = Memtable(self.schema)
        # Memtables being flushed, oldest first: one, or more after a flush that failed for
        # want of file descriptors (kept, visible to reads, written by the next flush).
        self._flushing: list[Memtable] = []
        self.tiers = self.schema.tiering  # None: one interval duration
        # per tier boundary: times before it are stored at the coarser tier (tiers.py)
        self.watermarks: tuple[int, ...] = self.tiers.initial_watermarks() if self.tiers else ()
        self._committed: Meta | None = None  # db.json as last written (compaction's base)
        # runs (docs/storage.md section 6): size-tiered merging, and the monotonic time of
        # each interval's last flush (a past interval quiet for merge_settle seconds is
        # merged into one run)
        self.fanout, self.max_runs, self.merge_settle = FANOUT, MAX_RUNS, MERGE_SETTLE
        # every mapped segment holds a file descriptor: past this many segments, the
        # intervals with the most runs merge to one first
        self.segment_budget = max(1024, _nofile_limit() // 2)
        self._touched: dict[int, float] = {}
        self._next_merge = 0.0  # monotonic time of the next background merge
        # the flushed intervals' views, for `snapshot` (remade when `intervals` is swapped)
        self._views: tuple[Any, tuple[IntervalView, ...], list[int]] = (None, (), [])
        self.last_updated: int | None = None  # the largest row timestamp ever inserted
        self.closed = False
        self.failed: str | None = None
        self.wal: WriteAheadLog | None = None
        self.archive: Archive | None = None  # the raw archive ([archive]), the log's sidecar
        self.stats = {"inserted_rows": 0, "inserted_batches": 0, "rejected_rows": 0,
                      "flushes": 0, "last_flush_seconds": 0.0, "compactions": 0,
                      "compacted_rows": 0, "compaction_seconds": 0.0, "dropped_intervals": 0,
                      "merges": 0, "merged_rows": 0, "flush_merged_runs": 0}
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if self.dir is not None:
            self._open_dir(replay_progress)
        else:  # no log; batch ids are still remembered (in memory)
            self.wal = WriteAheadLog(None, "none", config.batch_id_window, clock)
            self._attach_archive(0, new=True)
        if auto_flush:
            self._flusher = threading.Thread(target=self._flush_loop, name="gumshoe-flusher",
                                             daemon=True)
            self._flusher.start()

    # -- opening ----------------------------------------------------------------------------
    def _open_dir(self, replay_progress: Callable[[ReplayProgress], None] | None) -> None:
        assert self.dir is not None
        try:
            self.dir.mkdir(exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create database directory {str(self.dir)!r}: "
                              f"{e.strerror}") from None
        try:
            self._lock = DirLock(self.dir)
            try:
                meta = self._load_meta()
                self._remove_unreferenced()
                self._recover(meta, replay_progress)
            except BaseException:
                self._unlock()
                raise
        except OSError as e:
            if fileio.is_transient(e):
                raise TransientStorageError(f"cannot open database {str(self.dir)!r} now: "
                                            f"{e}") from e
            raise

    def _load_meta(self) -> Meta:
        """Read db.json and open what it lists (a new database: write an empty one first, so
        a crash in the first flush is harmless)."""
        assert self.dir is not None
        try:
            meta = read_meta(self.dir)
        except FileNotFoundError:
            if any(kind_of(p.name) == "segment" for p in self.dir.iterdir()):
                raise CorruptDataError(f"{self.dir}: segment files but no db.json; run "
                                       "`gumtool clean` or choose an empty directory") from None
            meta = Meta(self.schema, watermarks=self.watermarks)
            write_meta(self.dir, meta, fsync=self.config.durability == "fsync")
            self._committed = meta
            return meta
        meta.schema.check_same(self.schema,
                               hint=" (use `gumtool migrate` to change the schema)")
        for name, entry in meta.dictionaries.items():
            values, crc = read_dictionary_file(self.dir / entry.file, entry.size, entry.crc32)
            self.dictionaries[name] = Dictionary(values)
            # A dictionary from before checksums: its checksum is recorded from now on.
            self._dict_files[name] = dataclasses.replace(entry, crc32=crc)
        for im in meta.intervals:
            self.intervals[im.start] = open_interval(self.schema, self.dir, im, verify=True)
        self.last_updated = meta.last_updated
        if self.tiers is not None and meta.watermarks:
            self.watermarks = meta.watermarks  # else: tiers new to this database, all at 0
        self._committed = meta
        return meta

    def referenced_files(self) -> set[str]:
        """db.json and the files it references (segments and dictionaries)."""
        return self._meta(0, self.intervals, self._dict_files, None).files()

    def _remove_unreferenced(self) -> None:
        """Remove our segment, dictionary and temporary files that db.json does not reference
        (left by a crash); log files are the log's business, other files are left alone."""
        assert self.dir is not None
        keep = self.referenced_files()
        for p in self.dir.iterdir():
            if p.name not in keep and kind_of(p.name) in ("segment", "dictionary", "tmp"):
                log.info("removing unreferenced file %s", p)
                p.unlink(missing_ok=True)

    def _recover(self, meta: Meta,
                 replay_progress: Callable[[ReplayProgress], None] | None) -> None:
        """Open the write-ahead log and replay the records after the last flush, exactly once."""
        assert self.dir is not None
        self.wal = WriteAheadLog(self.dir, self.config.durability, self.config.batch_id_window,
                                 self.clock)
        try:
            self._attach_archive(meta.wal_seq, new=meta.wal_seq == 0 and not wal_files(self.dir))
            for rec in self.wal.recover(meta.wal_seq, meta.batch_ids, replay_progress):
                self._replay(rec)
                if self.archive is not None:  # unless archived before the crash
                    self.archive.replayed(rec)
        except BaseException:
            self.wal.close()
            if self.archive is not None:
                self.archive.close()
            raise

    def _attach_archive(self, flushed_seq: int, new: bool) -> None:
        """Open the raw archive, if configured, as the log's sidecar (`new`: a database whose
        log numbers start from 1)."""
        assert self.wal is not None
        self.archive = open_archive(self.config, self.schema, self.clock, flushed_seq,
                                    self.dictionaries)
        if self.archive is not None:
            self.wal.sidecar = self.archive
            if new:
                self.archive.new_epoch()

    def _replay(self, rec: Record) -> None:
        """Re-apply one logged batch. Every dictionary must have the size it had when the batch
        was first applied, so its codes (and the strings it adds) mean the same again."""
        block = rec.block
        for u in self.schema.uniques:
            if u.name not in block.sketches or len(block.sketches[u.name]) != block.n:
                raise CorruptDataError(f"write-ahead log record {rec.seq}: uniques column "
                                       f"{u.name!r} does not match the schema")
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
        self._apply(self.interval_starts(rec.timestamps), block, rec.new_strings)
        self._note_timestamps(rec.timestamps)
        self.stats["replayed_rows"] = self.stats.get("replayed_rows", 0) + block.n

    def _note_timestamps(self, timestamps: np.ndarray) -> None:
        if len(timestamps):
            ts_max = int(timestamps.max())
            self.last_updated = max(self.last_updated or ts_max, ts_max)

    # -- insert -----------------------------------------------------------------------------
    def retention_cutoff(self) -> int | None:
        """Intervals starting before this are out of retention (None: keep everything); with
        tiers, past the last tier's keep."""
        return schema_retention_cutoff(self.schema, self.config.retention_days, self.clock())

    def interval_starts(self, ts: np.ndarray) -> np.ndarray:
        """The start of the interval each timestamp goes to now: of the finest tier whose
        range still covers it (without tiers: of the one interval duration)."""
        if self.tiers is None:
            return self.schema.interval_start(ts)
        return self.tiers.interval_starts(ts, self.watermarks)

    def duration_at(self, start: int) -> int:
        """The duration of the interval starting at `start` (a start `interval_starts` gave)."""
        if self.tiers is None:
            return self.schema.interval_duration
        return self.tiers.duration_at(start, self.watermarks)

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
                starts = self.interval_starts(batch.timestamps)
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
                self._note_timestamps(batch.timestamps)
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
        sketches = {}  # uniques: a row's sketch holds its one identity (or none)
        for u in self.schema.uniques:
            if u.name in batch.sketches:  # rolled up before (gumtool import)
                sketches[u.name] = batch.sketches[u.name]
                continue
            hashes, present = batch.identities[u.name]
            rows = np.flatnonzero(present)
            sketches[u.name] = SketchColumn.from_identities(rows, hashes[rows], batch.n)
        return (Block(batch.n, count, dims, dict(batch.nils), dict(batch.metrics), sketches),
                new_strings)

    def _apply(self, starts: np.ndarray, block: Block, new_strings: dict[str, list[str]]) -> None:
        for name, new in new_strings.items():
            self.dictionaries[name].extend(new)
        self.memtable.add(starts, block)

    # -- reading ----------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._write_lock:
            state = self._capture()
        return self._assemble(*state)

    def try_snapshot(self) -> Snapshot | None:
        """A snapshot if the write lock is free now, else None: never waits (for the event
        loop, which must not stall behind an insert or a flush swap)."""
        if not self._write_lock.acquire(blocking=False):
            return None
        try:
            state = self._capture()
        finally:
            self._write_lock.release()
        return self._assemble(*state)

    def _capture(self) -> tuple[list[dict[int, tuple[Block, ...]]], tuple[IntervalView, ...],
                                list[int], dict[str, Any], dict[str, int], dict[int, int]]:
        """What a snapshot holds, taken under the write lock."""
        mems = [m.view() for m in (*self._flushing, self.memtable)]
        flushed, starts = self._flushed_views()
        sizes = {name: len(d) for name, d in self.dictionaries.items()}
        durations = {s: self.duration_at(s) for m in mems for s in m
                     if s not in self.intervals}
        return mems, flushed, starts, dict(self.dictionaries), sizes, durations

    def _assemble(self, mems: list[dict[int, tuple[Block, ...]]],
                  flushed: tuple[IntervalView, ...], starts: list[int],
                  dictionaries: dict[str, Any], sizes: dict[str, int],
                  durations: dict[int, int]) -> Snapshot:
        if not any(mems):
            return Snapshot(self.schema, flushed, dictionaries, sizes)
        views = list(flushed)
        added: list[int] = []  # starts of views inserted so far (they shift the indices)
        for start in sorted(set().union(*mems)):
            mem = tuple(b for m in mems for b in m.get(start, ()))
            i = bisect.bisect_left(starts, start)
            j = i + bisect.bisect_left(added, start)
            if i < len(starts) and starts[i] == start:
                views[j] = dataclasses.replace(views[j], mem=mem)
            else:
                views.insert(j, IntervalView(start, (), mem, durations[start]))
                added.append(start)
        return Snapshot(self.schema, tuple(views), dictionaries, sizes)

    def _flushed_views(self) -> tuple[tuple[IntervalView, ...], list[int]]:
        """The views of the flushed intervals, ascending, and their starts: remade only when
        a flush or compaction swapped `intervals` (call under the write lock)."""
        if self._views[0] is not self.intervals:
            ivs = [self.intervals[s] for s in sorted(self.intervals)]
            self._views = (self.intervals, tuple(
                IntervalView(iv.start, iv.segments, (), iv.duration, iv.sorted, iv)
                for iv in ivs),
                [iv.start for iv in ivs])
        return self._views[1], self._views[2]

    # -- flush ------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write unflushed rows into their intervals (a new generation for each touched
        interval), persist dictionaries and metadata atomically, drop expired intervals.

        Raises StorageFailedError after a disk fault (the database turns read-only) and
        TransientStorageError when file descriptors ran out: then nothing changed on disk, the
        rows stay in memory and in the log, and the next flush writes them."""
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
                    except TransientStorageError as e:
                        log.warning("flush postponed: %s (the next flush retries)", e)
                        raise
                else:
                    wal_seq = 0
                self._flushing.append(self.memtable)
                self.memtable = Memtable(self.schema)
                mems = list(self._flushing)
                sizes = {name: len(d) for name, d in self.dictionaries.items()}
                last_updated = self.last_updated
                batch_ids = self.wal.batch_ids_json() if self.wal is not None else {}
            written: list[Path] = []
            try:
                if self.archive is not None:  # durable before db.json passes its log records
                    self.archive.sync()
                new_intervals, dict_files, dead = self._write_flush(
                    mems, sizes, wal_seq, last_updated, batch_ids, written)
            except OSError as e:
                if fileio.is_transient(e):
                    self._forget(written)
                    log.warning("flush postponed: %s (the rows stay in memory and in the "
                                "write-ahead log; the next flush writes them)", e)
                    raise TransientStorageError(f"flush postponed: {e}") from e
                self._fail(f"flush failed: {e}")
                raise StorageFailedError(f"flush failed: {e}") from e
            except BaseException as e:  # a bug, not the disk: still fail-stop (rows are logged)
                self._fail(f"flush failed: {e!r}")
                raise
            with self._write_lock:
                self.intervals = new_intervals
                self._dict_files = dict_files
                self._flushing = []
            if self.wal is not None:
                self.wal.trim(wal_seq)
            for p in dead:
                p.unlink(missing_ok=True)
            self.stats["flushes"] += 1
            self.stats["last_flush_seconds"] = time.perf_counter() - t0

    @staticmethod
    def _forget(written: list[Path]) -> None:
        """Remove the files of a flush that failed before its commit (db.json does not
        reference them: new generations only)."""
        for p in written:
            for q in (p, p.with_name(tmp_name(p.name))):
                try:
                    q.unlink(missing_ok=True)
                except OSError as e:
                    log.warning("cannot remove %s: %s (removed at the next start)", q, e)

    def _meta(self, wal_seq: int, intervals: dict[int, Interval],
              dict_files: dict[str, DictMeta], last_updated: int | None,
              batch_ids: dict[str, float] | None = None) -> Meta:
        return Meta(self.schema, wal_seq=wal_seq,
                    intervals=tuple(intervals[s].meta() for s in sorted(intervals)),
                    dictionaries=dict(dict_files), batch_ids=dict(batch_ids or {}),
                    last_updated=last_updated, watermarks=self.watermarks)

    def _write_flush(self, mems: list[Memtable], sizes: dict[str, int], wal_seq: int,
                     last_updated: int | None, batch_ids: dict[str, float],
                     written: list[Path]
                     ) -> tuple[dict[int, Interval], dict[str, DictMeta], list[Path]]:
        """Write the new files and commit them with db.json; the new intervals, dictionary
        entries, and the files no longer referenced. Every file it creates before the commit
        is listed in `written` first."""
        fsync = self.config.durability == "fsync"
        intervals = dict(self.intervals)
        dead: list[Path] = []
        cutoff = self.retention_cutoff()
        for start in sorted({s for m in mems for s in m.intervals}):
            if cutoff is not None and start < cutoff:
                continue
            old = intervals.get(start)
            blocks = [m.intervals[start].compact() for m in mems if start in m.intervals]
            # one compacted memtable block alone is rolled up already (a second roll-up
            # would sort it again to change nothing)
            rolled = blocks[0] if len(blocks) == 1 else rollup(self.schema, blocks)
            if old is None:
                intervals[start] = build_interval(self.schema, start, 0, rolled, self.dir,
                                                  fsync, written,
                                                  duration=self.duration_at(start))
                continue
            # a new run (docs/storage.md section 6); past max_runs, the smallest runs merge
            # into it (the size-tiered merges are the background's: `merge`)
            n = old.nruns
            # (the new run counted as the smallest: it is always in the merge)
            merge = [i for i in cap_plan(old.run_rows() + [0], self.max_runs) if i < n]
            if merge:
                self.stats["flush_merged_runs"] += len(merge)
                segs = old.run_segments()
                rolled = rollup(self.schema, [s.block for i in merge for s in segs[i]]
                                + [rolled])
                if self.dir is not None:
                    dead.extend(self.dir / f for i in merge for f in old.run_filenames(i))
            run = build_interval(self.schema, start, old.generation + 1, rolled, self.dir,
                                 fsync, written, duration=old.duration)
            intervals[start] = old.keep_runs([i for i in range(n) if i not in merge], run)
            self._touched[start] = time.monotonic()
        if cutoff is not None:
            for start in [s for s in intervals if s < cutoff]:
                old = intervals.pop(start)
                if self.dir is not None:
                    dead.extend(self.dir / f for f in old.filenames())
        dict_files = dict(self._dict_files)
        if self.dir is not None:
            for name, size in sizes.items():
                entry = dict_files.get(name)
                gen, old_size = (entry.generation, entry.size) if entry else (0, 0)
                if size != old_size:
                    fname = dictionary_filename(name, gen + 1)
                    data = encode_dictionary(self.dictionaries[name].values[:size])
                    written.append(self.dir / fname)
                    write_atomic(self.dir / fname, data, fsync=False)
                    if fsync:
                        with fileio.open_file(self.dir / fname, "rb") as f:
                            fileio.fsync(f.fileno())
                    if gen:
                        dead.append(self.dir / dictionary_filename(name, gen))
                    dict_files[name] = DictMeta(fname, gen + 1, size, zlib.crc32(data))
            if fsync:
                fileio.fsync_dir(self.dir)
            meta = self._meta(wal_seq, intervals, dict_files, last_updated, batch_ids)
            write_meta(self.dir, meta, fsync=fsync)
            self._committed = meta
        return intervals, dict_files, dead

    # -- compaction (tiers) -------------------------------------------------------------------
    def compact(self, max_rows: int = compaction.MAX_STEP_ROWS,
                max_steps: int | None = None) -> int:
        """Re-roll every interval that aged past its tier into the next tier's intervals and
        drop intervals past the last keep, one committed step at a time (compaction.py), until
        nothing is due, `max_steps` steps are done or the database closes. Returns the steps
        committed (0 without tiers).

        Raises StorageFailedError after a disk fault (as a flush) and TransientStorageError
        when file descriptors ran out (nothing changed; the next run retries)."""
        steps = 0
        while self.tiers is not None and not self._stop.is_set() and not self.failed:
            if (max_steps is not None and steps >= max_steps) or not self._compact_step(
                    max_rows):
                break
            steps += 1
        return steps

    def compaction_lag(self) -> int:
        """Seconds of aged data the compactor has yet to re-roll (0: up to date, or no tiers)."""
        if self.tiers is None:
            return 0
        with self._write_lock:
            watermarks = self.watermarks
        return self.tiers.lag(self.clock(), watermarks)

    @contextlib.contextmanager
    def _background_step(self, what: str, written: list[Path]) -> Iterator[None]:
        """A compaction or merge step's failure handling: a transient error (no file
        descriptors, no space) drops the new files and postpones the step (the next run
        retries); any other disk error or a bug fails the database (fail-stop, as a flush)."""
        try:
            yield
        except OSError as e:
            if fileio.is_transient(e):
                self._forget(written)
                log.warning("%s postponed: %s (the next run retries)", what, e)
                raise TransientStorageError(f"{what} postponed: {e}") from e
            self._fail(f"{what} failed: {e}")
            raise StorageFailedError(f"{what} failed: {e}") from e
        except BaseException as e:  # a bug, not the disk
            self._fail(f"{what} failed: {e!r}")
            raise

    def _commit_intervals(self, after: dict[int, Interval], sync_dir: bool, fsync: bool,
                          watermarks: tuple[int, ...] | None = None) -> None:
        """Replace db.json with `after`'s intervals (and `watermarks`): the commit point of
        a compaction or merge step, once its new files are written (`sync_dir`: fsync the
        directory first, so their entries are durable before db.json names them)."""
        if self.dir is None:
            return
        assert self._committed is not None
        if sync_dir:
            fileio.fsync_dir(self.dir)
        changes: dict[str, Any] = {} if watermarks is None else {"watermarks": watermarks}
        meta = dataclasses.replace(self._committed, schema=self.schema,
                                   intervals=tuple(after[s].meta() for s in sorted(after)),
                                   **changes)
        write_meta(self.dir, meta, fsync=fsync)
        self._committed = meta

    def _compact_step(self, max_rows: int) -> bool:
        assert self.tiers is not None
        with self._flush_lock:  # no flush meanwhile: the intervals and db.json stay as read
            t0 = time.perf_counter()
            with self._write_lock:
                if self.failed or self.closed:
                    return False
                intervals = dict(self.intervals)
                watermarks = self.watermarks
            step = compaction.plan(self.tiers, {s: (iv.duration, iv.rows)
                                                for s, iv in intervals.items()},
                                   watermarks, self.clock(), self.retention_cutoff(), max_rows)
            if step is None:
                return False
            written: list[Path] = []
            with self._background_step("compaction", written):
                fsync = self.config.durability == "fsync"
                new, dead = compaction.build(self.schema, step, intervals, self.dir, fsync,
                                             written, self.stats)
                after = {s: iv for s, iv in intervals.items() if s not in step.sources}
                after.update(new)
                marks = list(watermarks)
                if step.boundary is not None:
                    marks[step.boundary] = step.watermark
                self._commit_intervals(after, fsync and bool(written), fsync, tuple(marks))
            with self._write_lock:
                self.intervals = after
                self.watermarks = tuple(marks)
                for m in (*self._flushing, self.memtable):
                    m.rekey(self.current_start)
            for p in dead:
                p.unlink(missing_ok=True)
            self.stats["compactions"] += 1
            self.stats["dropped_intervals"] += len(step.drops)
            self.stats["last_compaction_seconds"] = time.perf_counter() - t0
            return True

    # -- merging runs -------------------------------------------------------------------------
    def merge(self, max_steps: int | None = None, settle: float | None = None) -> int:
        """Merge intervals' runs (docs/storage.md section 6), one committed step at a time,
        until nothing is due, `max_steps` steps are done or the database closes: runs of
        similar size as `interval.merge_plan` says, and every run of an interval before the
        current one that no flush touched for `settle` seconds (default `merge_settle`; 0:
        every past interval). Returns the steps committed. The background's work (the
        server's flush loop, the auto flusher); errors as `compact`'s."""
        steps = 0
        while not self._stop.is_set() and not self.failed:
            if (max_steps is not None and steps >= max_steps) or not self._merge_step(
                    self.merge_settle if settle is None else settle):
                break
            steps += 1
        return steps

    def merge_if_due(self) -> int:
        """`merge`, at most every MERGE_EVERY seconds (the flush loops call this after each
        flush: merges then gather several flushes' runs into one commit each)."""
        if time.monotonic() < self._next_merge:
            return 0
        self._next_merge = time.monotonic() + MERGE_EVERY
        return self.merge()

    def _merge_plans(self, intervals: dict[int, Interval], settle: float
                     ) -> dict[int, tuple[int, ...]]:
        """start -> the runs to merge, of each interval with something to merge."""
        current = self.current_start(int(self.clock()))
        now = time.monotonic()
        plans = {}
        for start, iv in intervals.items():
            if iv.nruns < 2:
                continue
            if start < current and now - self._touched.get(start, -np.inf) >= settle:
                plans[start] = tuple(range(iv.nruns))
            elif plan := merge_plan(iv.run_rows(), self.fanout, self.max_runs):
                plans[start] = plan
        excess = sum(len(iv.segments) for iv in intervals.values()) - self.segment_budget
        for start in sorted((s for s in intervals if intervals[s].nruns > 1),
                            key=lambda s: -intervals[s].nruns):
            if excess <= 0:
                break
            plans[start] = tuple(range(intervals[start].nruns))
            excess -= intervals[start].nruns - 1
        return plans

    def _merge_step(self, settle: float) -> bool:
        with self._flush_lock:  # no flush meanwhile: the intervals and db.json stay as read
            t0 = time.perf_counter()
            with self._write_lock:
                if self.failed or self.closed:
                    return False
                intervals = self.intervals
            self._touched = {s: t for s, t in self._touched.items() if s in intervals}
            plans = self._merge_plans(intervals, settle)
            if not plans:
                return False
            new: dict[int, Interval] = {}
            dead: list[Path] = []
            written: list[Path] = []
            rows = 0
            with self._background_step("merge", written):
                fsync = self.config.durability == "fsync"
                for start in sorted(plans):
                    if rows >= MAX_MERGE_ROWS:
                        break  # the rest in the next step
                    iv, plan = intervals[start], plans[start]
                    segs = iv.run_segments()
                    blocks = [s.block for i in plan for s in segs[i]]
                    rows += sum(b.n for b in blocks)
                    run = build_interval(self.schema, start, iv.generation + 1,
                                         rollup(self.schema, blocks), self.dir, fsync,
                                         written, duration=iv.duration)
                    new[start] = iv.keep_runs([i for i in range(iv.nruns) if i not in plan],
                                              run)
                    if self.dir is not None:
                        dead.extend(self.dir / f for i in plan for f in iv.run_filenames(i))
                after = {**intervals, **new}
                self._commit_intervals(after, fsync, fsync)
            with self._write_lock:
                self.intervals = after
            for p in dead:
                p.unlink(missing_ok=True)
            self.stats["merges"] += 1
            self.stats["merged_rows"] += rows
            self.stats["last_merge_seconds"] = time.perf_counter() - t0
            return True

    def current_start(self, start: int) -> int:
        """The start of the interval that now holds the time `start` (after a watermark moved,
        a finer interval's start maps to its coarser bucket)."""
        return int(self.interval_starts(np.array([start], np.int64))[0])

    def _fail(self, reason: str) -> None:
        log.error("storage failure, refusing further writes: %s", reason)
        self.failed = reason

    def _flush_loop(self) -> None:
        next_compaction = 0.0  # with tiers: at once, then every COMPACT_EVERY seconds
        while not self._stop.wait(self.config.flush_interval):
            try:
                self.flush()
                self.merge_if_due()
                if self.tiers is not None and time.monotonic() >= next_compaction:
                    next_compaction = time.monotonic() + COMPACT_EVERY
                    self.compact()
            except TransientStorageError:
                pass  # logged by flush; the next one retries
            except Exception:
                log.exception("periodic flush failed")

    # -- closing ----------------------------------------------------------------------------
    def stop_background(self) -> None:
        """Stop the periodic flusher and any compaction run after its current step (close
        does it too; a server calls this first, so its shutdown never waits for a long
        catch-up)."""
        self._stop.set()

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
            if self.archive is not None:
                self.archive.close()
            self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> DB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

