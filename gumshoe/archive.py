"""The raw archive: every accepted batch, kept as it was accepted, in compressed, CRC-framed,
append-only files that rotate by size and are named by the time range of their rows.

Imports config, errors, fileio, layout (the directory lock), schema, block, rawrecord and wal
(its framing and `Record`). The DB (db.py) opens it and makes it its write-ahead log's sidecar
(`wal.Sidecar`): every log record with rows is also written here, from the same arguments,
under the same write lock, before the record counts as written, so before its batch is
acknowledged: an acknowledged batch is in the archive after a kill -9 (durability "os" or
"fsync"). Encoding and compressing a batch costs ~0.5-0.8 ms per 10k rows (synthetic data).

The archive is fsync'd (durability "fsync") before a flush commits, so before the log may drop
the records it covers, and when a file is closed; not at every commit. After a power loss the
batches since the last flush are still in the log; at start-up a damaged end of the active
file is cut off (`_scan_active`: only when the log still holds every record after the damage)
and those batches are archived again from the log (`replayed`).

Files, in the archive directory (`archive_dir`: [archive] dir, default `<database_dir>/archive`):

    raw.<first seq, 16 digits>.active                         the file being appended to
    raw.<tmin>-<tmax>.<first seq>-<last seq>.log              a closed file (never written again)

`tmin`/`tmax` are the smallest and largest row timestamps in the file (UTC, 20231114T221320Z),
so a reader of a time range opens only files that can hold it; seq numbers the records across
files (`wal.frame`). A record is one batch (`rawrecord`), and carries the write-ahead-log
sequence number of the batch: replaying the log after a crash archives exactly the records after
the last one archived, so no batch is archived twice or lost. The active file is closed when it
reaches `rotate` bytes or a day after its first record; closed files whose last write is older
than `keep` are deleted (checked at start and at most once a minute while writing).

Crash safety: a torn last record of the active file (a batch never acknowledged) is cut off at
start; a rotation opens the new file before it closes (fsync'd), renames and fsyncs the old
one, so a crash leaves at most two active files, the older of which is closed at start.
"""

from __future__ import annotations

import calendar
import dataclasses
import logging
import mmap
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
from . import fileio
from .config import Config
from .errors import ConfigError, CorruptDataError, TransientStorageError
from .layout import DirLock
from .rawrecord import Encoded, encode_block, payload, read_head
from .schema import Schema
from .block import Block
from .wal import HEADER, Record, frame, read_frames

log = logging.getLogger(__name__)

ROTATE_AGE = 86400.0  # seconds: the active file is closed a day after its first record
EXPIRE_EVERY = 60.0  # seconds between checks for files older than `keep`
SCRATCH_PREFIX = ".raw-"  # temporary directories of readers (removed at start)
WHAT = "raw archive"
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_CLOSED_RE = re.compile(r"raw\.(\d{8}T\d{6}Z)-(\d{8}T\d{6}Z)\.(\d+)-(\d+)\.log")
_ACTIVE_RE = re.compile(r"raw\.(\d+)\.active")


def archive_dir(config: Config) -> Path | None:
    """Where `config`'s archive lives (None when [archive] is off)."""
    a = config.archive
    if not a.enabled:
        return None
    if a.dir:
        return Path(a.dir)
    if config.in_memory:
        raise ConfigError('archive.dir: must be set when database_dir is "MEMORY" (the archive '
                          "is kept on disk)")
    return Path(config.database_dir) / "archive"


# -- file names -----------------------------------------------------------------------------------
def format_time(t: int) -> str:
    return time.strftime(_TIME_FORMAT, time.gmtime(t))


def parse_time(text: str) -> int:
    return calendar.timegm(time.strptime(text, _TIME_FORMAT))


def active_name(first: int) -> str:
    return f"raw.{first:016d}.active"


def closed_name(first: int, last: int, tmin: int, tmax: int) -> str:
    return f"raw.{format_time(tmin)}-{format_time(tmax)}.{first:016d}-{last:016d}.log"


@dataclasses.dataclass(frozen=True, slots=True)
class FileInfo:
    """One archive file. An active file's `last`, `tmin` and `tmax` are None unless known."""

    path: Path
    first: int
    last: int | None
    tmin: int | None
    tmax: int | None
    mtime: float = 0.0

    def overlaps(self, lo_excl: int, hi_incl: int) -> bool:
        """Can it hold a row with lo_excl < timestamp <= hi_incl?"""
        return (self.tmin is None or self.tmax is None
                or (self.tmax > lo_excl and self.tmin <= hi_incl))


def list_files(directory: Path) -> tuple[list[FileInfo], list[FileInfo]]:
    """(closed files, active files) of an archive directory, each by first seq."""
    closed, active = [], []
    for p in directory.iterdir():
        if m := _CLOSED_RE.fullmatch(p.name):
            closed.append(FileInfo(p, int(m.group(3)), int(m.group(4)),
                                   parse_time(m.group(1)), parse_time(m.group(2)),
                                   p.stat().st_mtime))
        elif m := _ACTIVE_RE.fullmatch(p.name):
            active.append(FileInfo(p, int(m.group(1)), None, None, None, p.stat().st_mtime))
    return sorted(closed, key=lambda f: f.first), sorted(active, key=lambda f: f.first)


@dataclasses.dataclass
class _Scan:
    """What the records of one file say: for naming it and for going on after it."""

    records: int = 0
    last: int | None = None  # last seq
    tmin: int | None = None
    tmax: int | None = None
    last_wal: int | None = None
    first_t: float | None = None  # arrival of the first record
    size: int = 0  # bytes of whole records
    damage: str | None = None  # salvage: what stopped the scan before the end


def scan_file(path: Path, first: int, repair: bool, sync: bool, salvage: bool = False
              ) -> _Scan:
    """Read every record head of one file (checksums checked). `repair`: a torn last record is
    cut off (the file is being appended to by no one); otherwise it ends the scan. `salvage`:
    damage elsewhere ends the scan too (`damage` says what), instead of CorruptDataError."""
    try:
        return _scan(path, first, repair, sync)
    except _Damaged as e:
        if not salvage:
            raise CorruptDataError(e.message) from None
        e.scan.damage = e.message
        return e.scan


class _Damaged(Exception):
    def __init__(self, message: str, scan: _Scan) -> None:
        super().__init__(message)
        self.message = message
        self.scan = scan


def _scan(path: Path, first: int, repair: bool, sync: bool) -> _Scan:
    out = _Scan()
    with fileio.open_file(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if not size:
            return out
        data = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
    try:
        frames = read_frames(path, first, True, sync, WHAT, data=data, size=size, repair=repair)
        while True:
            try:
                seq, pl, off = next(frames)
            except StopIteration:
                break
            except CorruptDataError as e:  # its advice is for the log: keep the finding
                raise _Damaged(str(e).split(". Refusing to start")[0], out) from None
            try:
                head = read_head(pl)
            except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
                raise _Damaged(f"{path}: undecodable {WHAT} record {seq} at offset {off}: "
                               f"{e}", out) from None
            out.records += 1
            out.last, out.last_wal, out.size = seq, head.wal, off + HEADER.size + len(pl)
            if out.first_t is None:
                out.first_t = head.t
            if head.n:
                out.tmin = head.lo if out.tmin is None else min(out.tmin, head.lo)
                out.tmax = head.hi if out.tmax is None else max(out.tmax, head.hi)
    finally:
        data.close()
    return out


# -- the writer -----------------------------------------------------------------------------------
class Archive:
    """The archive of one database: the write-ahead log's sidecar (`write`), plus `sync`
    (before a flush commits), `replayed` (log recovery), `new_epoch`, `snapshot` (readers) and
    `close`. Thread-safe: `write` and `replayed` run under the DB's write lock, `sync` in the
    flushing thread, `snapshot` in readers; the archive's own lock orders them."""

    def __init__(self, directory: Path, schema: Schema, rotate: int, keep: float, fsync: bool,
                 clock: Callable[[], float] = time.time, flushed_seq: int = 0,
                 dictionaries: Mapping[str, Any] | None = None) -> None:
        self.dir = directory
        self.schema = schema
        self.dictionaries: Mapping[str, Any] = dictionaries or {}  # name -> .values (str list)
        self.flushed_seq = flushed_seq  # the log's flushed mark when opened
        self.rotate_bytes = rotate
        self.keep = keep
        self.fsync = fsync
        self.clock = clock
        self.stats = {"records": 0, "bytes": 0, "rotations": 0, "expired": 0, "replayed": 0}
        self._lock = threading.Lock()
        self._closed: list[FileInfo] = []
        self._fd: int | None = None
        self._first = 1  # first seq of the active file
        self._next = 1  # seq of the next record
        self._size = 0
        self._tmin: int | None = None
        self._tmax: int | None = None
        self._first_t: float | None = None
        self._last_wal: int | None = None  # None: not known yet (see `_known_last_wal`)
        self._dirty = False
        self._broken = False  # a write failed: the active file is left as it is
        self._expire_at = 0.0
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"archive.dir: cannot create {str(directory)!r}: "
                              f"{e.strerror}") from None
        self._dir_lock = DirLock(directory)
        try:
            self._open()
        except BaseException:
            self._release()
            raise

    # -- opening ------------------------------------------------------------------------------
    def _open(self) -> None:
        for p in self.dir.iterdir():
            if p.name.startswith(SCRATCH_PREFIX):
                shutil.rmtree(p, ignore_errors=True)
        closed, active = list_files(self.dir)
        self._closed = closed
        for i, older in enumerate(active[:-1]):  # a rotation cut short: close it now
            rest_empty = all(f.path.stat().st_size == 0 for f in active[i + 1:])
            if (f := self._close_scanned(older, salvage=rest_empty)) is not None:
                self._closed.append(f)
        self._closed.sort(key=lambda f: f.first)
        nxt = max([f.last + 1 for f in self._closed if f.last is not None], default=1)
        if active:
            cur = active[-1]
            s = self._scan_active(cur, salvage=True)
            fd = fileio.open_fd(cur.path, os.O_WRONLY | os.O_APPEND)
            self._fd, self._first = fd, cur.first
            self._next = cur.first if s.last is None else s.last + 1
            self._size, self._tmin, self._tmax = s.size, s.tmin, s.tmax
            self._first_t, self._last_wal = s.first_t, s.last_wal
        else:
            self._start(nxt)
        self._expire(self.clock())

    def _scan_active(self, f: FileInfo, salvage: bool) -> _Scan:
        """Scan a file being written when the process stopped (the last one written to:
        `salvage`). A torn last record is cut off. Damage further back can only be the part
        not yet fsync'd (a power loss): the archive is fsync'd before each flush moves the
        log's mark, so every record after the last whole one is still in the log, and
        replaying it archives it again; the file is cut at the damage then. If the log's mark
        is past the last whole record, the damaged records are in no log any more: start-up is
        refused, naming the file."""
        s = scan_file(f.path, f.first, repair=True, sync=self.fsync, salvage=salvage)
        if s.damage is None:
            return s
        last = self._newest_closed_wal() if s.last_wal is None else s.last_wal
        if last < self.flushed_seq:
            raise CorruptDataError(f"{s.damage}; the write-ahead log no longer holds the "
                                   "batches after it (they were flushed), so cutting the "
                                   f"file would lose them: restore {f.path}")
        log.warning("%s; cutting the file to %d bytes: the batches after it are archived "
                    "again from the write-ahead log", s.damage, s.size)
        with fileio.open_file(f.path, "r+b") as fh:
            fh.truncate(s.size)
            fh.flush()
            if self.fsync:
                fileio.fsync(fh.fileno())
        s.damage = None
        return s

    def _close_scanned(self, f: FileInfo, salvage: bool) -> FileInfo | None:
        """Close an active file left by a crash (scan, then rename; removed when empty)."""
        s = self._scan_active(f, salvage)
        if s.last is None or s.tmin is None or s.tmax is None:
            if s.last is None:
                f.path.unlink()
                return None
            s.tmin = s.tmax = 0  # markers only
        path = self.dir / closed_name(f.first, s.last, s.tmin, s.tmax)
        fileio.replace(f.path, path)
        if self.fsync:
            fileio.fsync_dir(self.dir)
        return FileInfo(path, f.first, s.last, s.tmin, s.tmax, path.stat().st_mtime)

    def _start(self, first: int) -> None:
        self._fd = self._open_file(first)
        self._first = self._next = first
        self._size, self._tmin, self._tmax, self._first_t = 0, None, None, None

    def _open_file(self, first: int) -> int:
        path = self.dir / active_name(first)
        fd = fileio.open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if self.fsync:
                fileio.fsync_dir(self.dir)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- writing (the write-ahead log's sidecar) --------------------------------------------------
    def write(self, seq: int, t: float, batch_id: str | None, timestamps: np.ndarray,
              block: Block, new_strings: dict[str, list[str]],
              dict_sizes: dict[str, int]) -> None:
        """Append the record of one batch as the log has it (`seq`: its log record; strings
        by code from `dictionaries` and `new_strings`). Called under the DB's write lock."""
        enc = encode_block(self.schema, timestamps, block.count, block.dims, block.nils,
                           block.metrics, {k: d.values for k, d in self.dictionaries.items()},
                           dict_sizes, new_strings, block.sketches)
        with self._lock:
            self._maybe_rotate(t)
            self._append(seq, t, batch_id, enc)
            if self.keep and t >= self._expire_at:
                self._expire(t)

    def _append(self, wal_seq: int, t: float, batch_id: str | None, enc: Encoded | None) -> None:
        if self._fd is None:
            raise CorruptDataError(f"{WHAT} {self.dir} is closed")
        data = frame(self._next, payload(wal_seq, t, batch_id, enc))
        try:
            fileio.write(self._fd, data)
        except BaseException:
            self._broken = True  # maybe a partial record: left for the next start to cut
            raise
        self._next += 1
        self._size += len(data)
        self._dirty = True
        self._last_wal = wal_seq
        if self._first_t is None:
            self._first_t = t
        if enc is not None:
            self._tmin = enc.lo if self._tmin is None else min(self._tmin, enc.lo)
            self._tmax = enc.hi if self._tmax is None else max(self._tmax, enc.hi)
            self.stats["records"] += 1
            self.stats["bytes"] += len(data)

    def sync(self) -> None:
        """fsync what was written (durability "fsync"; else a no-op). The DB calls it before a
        flush commits: the log's records it covers are then trimmed, and recovery no longer
        replays them, so the archive must hold them durably by then."""
        if not self.fsync:
            return
        with self._lock:
            if self._fd is None or not self._dirty:
                return
            self._dirty = False
            fd = os.dup(self._fd)  # a rotation may close self._fd meanwhile
        try:
            fileio.fsync(fd)
        finally:
            os.close(fd)

    def _maybe_rotate(self, t: float) -> None:
        if self._next == self._first:
            return  # nothing in the active file
        if self._size >= self.rotate_bytes or (self._first_t is not None
                                               and t - self._first_t >= ROTATE_AGE):
            try:
                self._rotate()
            except TransientStorageError as e:
                log.warning("%s: not rotating now (%s); the next batch tries again", WHAT, e)

    def _rotate(self) -> None:
        """Close the active file (fsync'd in fsync mode) and start the next one."""
        old_fd, first, last = self._fd, self._first, self._next - 1
        assert old_fd is not None
        try:
            fd = self._open_file(self._next)  # first: out of descriptors, nothing changed
        except OSError as e:
            if fileio.is_transient(e):
                raise TransientStorageError(f"cannot open a new {WHAT} file: {e}") from e
            raise
        self._fd = fd
        if self.fsync and self._dirty:
            fileio.fsync(old_fd)
        os.close(old_fd)
        self._dirty = False
        old = self.dir / active_name(first)
        tmin = 0 if self._tmin is None else self._tmin
        tmax = 0 if self._tmax is None else self._tmax
        path = self.dir / closed_name(first, last, tmin, tmax)
        fileio.replace(old, path)
        if self.fsync:
            fileio.fsync_dir(self.dir)
        self._closed.append(FileInfo(path, first, last, tmin, tmax, self.clock()))
        self._first = self._next
        self._size, self._tmin, self._tmax, self._first_t = 0, None, None, None
        self.stats["rotations"] += 1

    def _expire(self, now: float) -> None:
        """Delete closed files last written more than `keep` ago."""
        self._expire_at = now + EXPIRE_EVERY
        if not self.keep:
            return
        old = [f for f in self._closed if f.mtime < now - self.keep]
        for f in old:
            try:
                f.path.unlink(missing_ok=True)
            except OSError as e:
                log.warning("%s: cannot remove expired file %s: %s", WHAT, f.path, e)
                continue
            self._closed.remove(f)
            self.stats["expired"] += 1
            log.info("%s: removed %s (older than keep)", WHAT, f.path.name)

    # -- recovery ---------------------------------------------------------------------------------
    def _known_last_wal(self) -> int:
        """The log sequence number of the last record archived (0: none)."""
        if self._last_wal is None:
            self._last_wal = self._newest_closed_wal()
        return self._last_wal

    def _newest_closed_wal(self) -> int:
        """The log sequence number of the last record of the newest closed file (0: none)."""
        for f in sorted(self._closed, key=lambda f: f.first, reverse=True):
            s = scan_file(f.path, f.first, repair=False, sync=False)
            if s.last_wal is not None:
                return s.last_wal
        return 0

    def new_epoch(self) -> None:
        """A new database starts writing here: its log numbers start again from 1, so a marker
        record resets the last archived one to 0."""
        with self._lock:
            if self._known_last_wal() != 0:
                self._append(0, self.clock(), None, None)

    def replayed(self, rec: Record) -> bool:
        """Archive a record replayed from the write-ahead log unless the archive has it
        already (it is archived after the record of the last batch it holds). Returns whether
        it was archived."""
        with self._lock:
            if rec.seq <= self._known_last_wal() or rec.block.n == 0:
                return False
        self.write(rec.seq, rec.time, rec.batch_id, rec.timestamps, rec.block, rec.new_strings,
                   rec.dict_sizes)
        self.stats["replayed"] += 1
        return True

    # -- reading ----------------------------------------------------------------------------------
    def snapshot(self, lo_excl: int, hi_incl: int) -> list[tuple[FileInfo, int, mmap.mmap]]:
        """The files that can hold rows in (lo_excl, hi_incl], each with its size of whole
        records and a read-only memory map of them (close it when done), by first seq. Taken
        under the lock, so rotation and expiry cannot move them away meanwhile."""
        out: list[tuple[FileInfo, int, mmap.mmap]] = []
        with self._lock:
            files = [(f, f.path.stat().st_size) for f in self._closed
                     if f.overlaps(lo_excl, hi_incl)]
            if self._next > self._first and self._size:
                active = FileInfo(self.dir / active_name(self._first), self._first,
                                  self._next - 1, self._tmin, self._tmax)
                if active.overlaps(lo_excl, hi_incl) and self._tmin is not None:
                    files.append((active, self._size))
            try:
                for f, size in files:
                    if size:
                        with fileio.open_file(f.path, "rb") as fh:
                            out.append((f, size, mmap.mmap(fh.fileno(), size,
                                                           access=mmap.ACCESS_READ)))
            except BaseException:
                for _, _, m in out:
                    m.close()
                raise
        return out

    # -- closing ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the active file (renamed as a closed one; removed when empty)."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is None:
                self._release()
                return
            try:
                if self.fsync and self._dirty:
                    fileio.fsync(fd)
            finally:
                os.close(fd)
            old = self.dir / active_name(self._first)
            if self._broken:
                pass  # the next start cuts off the partial record and goes on with the file
            elif self._next == self._first:
                old.unlink(missing_ok=True)
            else:  # a file of markers only is named after 1970
                tmin, tmax = self._tmin or 0, self._tmax or 0
                path = self.dir / closed_name(self._first, self._next - 1, tmin, tmax)
                fileio.replace(old, path)
                self._closed.append(FileInfo(path, self._first, self._next - 1, tmin, tmax,
                                             self.clock()))
            if self.fsync:
                fileio.fsync_dir(self.dir)
            self._release()

    def _release(self) -> None:
        self._dir_lock.release()

    def files(self) -> list[FileInfo]:
        with self._lock:
            return list(self._closed)


def open_archive(config: Config, schema: Schema, clock: Callable[[], float] = time.time,
                 flushed_seq: int = 0, dictionaries: Mapping[str, Any] | None = None
                 ) -> Archive | None:
    """The archive `config` asks for (None when [archive] is off), for a database whose log
    is flushed up to `flushed_seq` and whose dictionaries (name -> object with `.values`)
    give the strings of string codes."""
    d = archive_dir(config)
    if d is None:
        return None
    return Archive(d, schema, config.archive.rotate, config.archive.keep,
                   config.durability == "fsync", clock, flushed_seq, dictionaries)

