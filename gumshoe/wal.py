"""The write-ahead log: every accepted batch is one CRC-framed record, durable before the ack.

Imports block, errors, fileio and layout. The DB (db.py) owns the order of operations; this module
owns the files, the framing, group commit, recovery and the remembered batch ids.

Files. `wal.<first seq, 16 digits>.log` in the database directory (`layout.wal_filename`),
appended to in sequence-number order. The log rolls to a new file at about `segment_bytes` (64 MB) and at every flush, so that
`trim` can delete whole files whose records are all covered by a durable flush.

Record framing (little-endian), `HEADER = <IIQI`:

    u32 payload length | u32 crc32(payload) | u64 seq | u32 crc32(the 16 bytes before) | payload

The payload is msgpack: the batch as validated and dictionary-encoded (timestamps, counts, each
dimension -- string dimensions as dictionary codes -- with its nil mask, each metric; arrays as
[dtype, raw bytes]), the batch id, the wall-clock time it was applied, the strings the batch
added to each dictionary and the size of each dictionary before it. Replay checks that every
dictionary has exactly that size before appending the recorded strings, so every code means the
same string as when the batch was acknowledged. (Codes rather than string lists: packing 10k
strings per column cost more than the rest of the log write together.)

Durability modes (the `durability` setting):

* ``fsync``: `append` writes the record to the OS under the DB's write lock; `commit` (called
  after the lock is released) returns once an fsync covering the record has completed. Group
  commit: one waiting thread is the leader and fsyncs everything written so far; the others wait
  on a condition and are released by it (leader/follower), so concurrent inserts share fsyncs.
* ``os``: `append` writes the record to the OS; `commit` returns at once. Survives kill -9,
  not power loss or a kernel crash.
* ``none``: no record is written (only flushed data survives a crash). Batch ids are still
  remembered in memory and persisted in db.json at flush.

Failures are fail-stop: after a failed write or fsync the log refuses every further append and
every commit not already covered by a successful fsync raises StorageFailedError. Running out
of file descriptors (EMFILE/ENFILE) is not a disk fault: a roll opens its new file before it
touches the old one, so when that open fails nothing has changed, TransientStorageError is
raised (the append or rotate was not done) and the next append or rotate tries again.

Recovery (`recover`) reads the files in order, yields the records after the flushed sequence
number exactly once, truncates a torn last record with a warning, and raises CorruptDataError
naming the file and offset for a bad checksum, bad framing or a gap anywhere else. It logs its
progress (records, rows, % of the log's bytes, rows/s) at most every `PROGRESS_EVERY` seconds
and a final line, and hands the same figures (`ReplayProgress`) to an optional callback.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
import threading
import time
import zlib
from typing import TYPE_CHECKING, Any, Protocol

import msgpack
import numpy as np

from . import fileio
from .block import Block
from .sketch import SketchColumn
from .errors import CorruptDataError, StorageFailedError, TransientStorageError
from .layout import wal_filename, wal_files

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

log = logging.getLogger(__name__)

HEADER = struct.Struct("<IIQI")
SEGMENT_BYTES = 64 << 20
MODES = ("fsync", "os", "none")
PROGRESS_EVERY = 1.0  # seconds between progress reports while replaying
monotonic = time.monotonic  # the replay's clock (tests replace it)
_FORMAT = 1


def frame(seq: int, payload: bytes) -> bytes:
    head = struct.pack("<IIQ", len(payload), zlib.crc32(payload), seq)
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def read_frames(path: Path, first: int, at_tail: bool, sync: bool,
                what: str = "write-ahead log", *, data: Any = None, size: int | None = None,
                repair: bool = True) -> Iterator[tuple[int, bytes, int]]:
    """Yield (seq, payload, offset) of each framed record of one file (`first`: the first
    record's seq); truncate a torn tail when `at_tail`, fsync'd when `sync`. Raises
    CorruptDataError for damage anywhere else. The funnel's spool and the raw archive read
    their files with it: `data` (e.g. a memory map of the file) is read instead of the file,
    its first `size` bytes; `repair=False` ends at a torn tail and leaves the file alone (a
    reader of a file that another process may be appending to)."""
    if data is None:
        data = fileio.read_bytes(path)
    off, expect = 0, first
    size = len(data) if size is None else size
    while off < size:
        problem = None
        torn = False
        if size - off < HEADER.size:
            problem, torn = f"incomplete record header ({size - off} bytes)", True
        else:
            length, crc, seq, hcrc = HEADER.unpack_from(data, off)
            if zlib.crc32(data[off:off + 16]) != hcrc:
                problem = "bad record header checksum"
                torn = not data[off:size].strip(b"\0")  # a zero-filled tail
            elif off + HEADER.size + length > size:
                problem = (f"record {seq} is cut short ({size - off - HEADER.size} of "
                           f"{length} payload bytes)")
                torn = True
            else:
                payload = data[off + HEADER.size:off + HEADER.size + length]
                if zlib.crc32(payload) != crc:
                    problem = f"bad checksum in record {seq}"
                    torn = off + HEADER.size + length == size  # the very last record
                elif seq != expect:
                    raise CorruptDataError(f"{path}: record at offset {off} has sequence "
                                           f"number {seq}, expected {expect} (bad framing)")
        if problem is None:
            yield seq, payload, off
            off += HEADER.size + length
            expect += 1
            continue
        if torn and at_tail:
            if not repair:
                return
            log.warning("%s: torn last record at offset %d (%s); truncating the log to %d "
                        "bytes (that batch was never acknowledged)", path, off, problem, off)
            with fileio.open_file(path, "r+b") as f:
                f.truncate(off)
                f.flush()
                if sync:
                    fileio.fsync(f.fileno())
            return
        hint = ("" if at_tail else "; later log files hold more records, so this is not a "
                "torn tail")
        raise CorruptDataError(f"{path}: corrupt {what} at offset {off}: "
                               f"{problem}{hint}. Refusing to start rather than lose the "
                               f"records after it; restore the file or truncate it to {off} "
                               f"bytes to discard them")


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    seq: int
    batch_id: str | None
    time: float
    timestamps: np.ndarray  # int64, one per row of `block`
    block: Block  # dictionary-encoded rows (not rolled up)
    new_strings: dict[str, list[str]]  # per string dimension: strings this batch added
    dict_sizes: dict[str, int]  # per string dimension: its size before this batch


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayProgress:
    """How far the replay of the write-ahead log at start-up has got."""

    records: int  # records replayed so far (those after the last flush)
    rows: int  # rows in them
    bytes_read: int  # of the log files, flushed records included
    bytes_total: int
    seconds: float  # since the replay started
    done: bool  # the last report

    @property
    def fraction(self) -> float:
        """Share of the log's bytes read, 0..1."""
        return 1.0 if not self.bytes_total else min(1.0, self.bytes_read / self.bytes_total)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """One line for a log or a "starting: ..." status."""
        if self.done:
            return (f"replayed the write-ahead log: {self.records} records, {self.rows} rows "
                    f"({self.bytes_total} bytes) in {self.seconds:.1f}s "
                    f"({self.rows_per_second:.0f} rows/s)")
        return (f"replaying the write-ahead log, {int(self.fraction * 100)}% ({self.records} "
                f"records, {self.rows} rows, {self.rows_per_second:.0f} rows/s)")


_NARROW = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))


def _arr(a: np.ndarray) -> list[Any]:
    """[dtype, raw bytes], or for integers with a small range [dtype, raw bytes of the values
    minus their minimum in a narrower unsigned type, the minimum, that type]: metrics are
    stored as int64 and timestamps span little, so this shrinks a record (and its fsync) ~3x."""
    if a.dtype.kind in "iu" and a.itemsize > 1 and len(a):
        lo, hi = int(a.min()), int(a.max())
        for t in _NARROW:
            if t.itemsize >= a.itemsize:
                break
            if hi - lo <= np.iinfo(t).max:
                return [a.dtype.str, (a - a.dtype.type(lo)).astype(t).tobytes(), lo, t.str]
    return [a.dtype.str, np.ascontiguousarray(a).tobytes()]


def encode_payload(batch_id: str | None, t: float, timestamps: np.ndarray, block: Block,
                   new_strings: dict[str, list[str]], dict_sizes: dict[str, int]) -> bytes:
    data: bytes = msgpack.packb({
        "v": _FORMAT, "id": batch_id, "t": t, "n": block.n,
        "ts": _arr(timestamps),
        "count": _arr(block.count),
        "dims": {k: _arr(v) for k, v in block.dims.items()},
        "nils": {k: (None if v is None else np.ascontiguousarray(v).tobytes())
                 for k, v in block.nils.items()},
        "metrics": {k: _arr(v) for k, v in block.metrics.items()},
        # uniques: each sketch column's four arrays (SketchColumn.to_arrays), raw
        **({"sketches": {k: {a: [v.dtype.str, np.ascontiguousarray(v).tobytes()]
                             for a, v in col.to_arrays().items()}
                         for k, col in block.sketches.items()}} if block.sketches else {}),
        "new": new_strings,
        "sizes": dict_sizes,
    }, use_bin_type=True)
    return data


def decode_payload(seq: int, payload: bytes) -> Record:
    """Decode one record payload (checked by CRC already). Raises ValueError/KeyError/TypeError
    on a malformed payload; the caller turns that into CorruptDataError."""
    obj = msgpack.unpackb(payload, raw=False)
    if obj.get("v") != _FORMAT:
        raise ValueError(f"unknown record format {obj.get('v')!r}")
    n = int(obj["n"])

    def arr(x: Any, dtype: Any = None) -> np.ndarray:
        if dtype is not None:  # a nil mask: raw bytes
            a = np.frombuffer(x, dtype=dtype)
        elif len(x) == 4:  # narrowed integers
            t = np.dtype(x[0])
            a = np.frombuffer(x[1], dtype=np.dtype(x[3])).astype(t) + t.type(x[2])
        else:
            a = np.frombuffer(x[1], dtype=np.dtype(x[0]))
        if len(a) != n:
            raise ValueError(f"column has {len(a)} values, record has {n} rows")
        return a

    block = Block(n, arr(obj["count"]), {k: arr(v) for k, v in obj["dims"].items()},
                  {k: (None if v is None else arr(v, bool)) for k, v in obj["nils"].items()},
                  {k: arr(v) for k, v in obj["metrics"].items()},
                  {k: SketchColumn.from_arrays({a: np.frombuffer(b, np.dtype(t))
                                               for a, (t, b) in col.items()})
                   for k, col in obj.get("sketches", {}).items()})
    return Record(seq, obj["id"], float(obj["t"]), arr(obj["ts"]), block,
                  {k: list(v) for k, v in obj["new"].items()},
                  {k: int(v) for k, v in obj["sizes"].items()})


class _Meter:
    """Progress of one replay: reports at the start, every PROGRESS_EVERY s, and at the end."""

    def __init__(self, total: int, callback: Callable[[ReplayProgress], None] | None) -> None:
        self.total = total
        self.callback = callback
        self.records = self.rows = self.read = 0
        self.t0 = self.last = monotonic()
        if total:
            self._report(False, log_it=False)

    def _report(self, done: bool, log_it: bool = True) -> None:
        p = ReplayProgress(self.records, self.rows, self.read, self.total,
                           monotonic() - self.t0, done)
        if log_it:
            log.info("%s", p.describe())
        if self.callback is not None:
            self.callback(p)

    def at(self, offset: int) -> None:
        self.read = offset
        now = monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            self._report(False)

    def record(self, rows: int) -> None:
        self.records += 1
        self.rows += rows

    def finish(self) -> None:
        if self.total:
            self.read = self.total
            self._report(True)


class Sidecar(Protocol):
    """A second file written with every record that has rows (the raw archive): `write` runs
    in `append` after the record is written and before it counts as written, with `append`'s
    arguments, the record's seq (0 with durability "none": no record) and its time. Any error
    there is a log failure (fail-stop): the record is in the log, so a restart replays it.
    The sidecar makes itself durable (the DB syncs it before a flush moves the log's mark)."""

    def write(self, seq: int, t: float, batch_id: str | None, timestamps: np.ndarray,
              block: Block, new_strings: dict[str, list[str]],
              dict_sizes: dict[str, int]) -> None: ...


class WriteAheadLog:
    """The log of one database directory (or none: `directory=None` keeps only batch ids).

    Threading contract: `append`, `rotate` and `seen` are called under the DB's write lock
    (which serialises them); `commit`, `trim` and `batch_ids_json` may be called from any
    thread without it. `sidecar`, when set, is written with the log (`Sidecar`).
    """

    def __init__(self, directory: Path | None, durability: str, batch_id_window: float,
                 clock: Callable[[], float] = time.time,
                 segment_bytes: int = SEGMENT_BYTES) -> None:
        if durability not in MODES:
            raise ValueError(f"durability must be one of {MODES}, got {durability!r}")
        self.dir = directory
        self.mode = "none" if directory is None else durability
        self.window = batch_id_window
        self.clock = clock
        self.segment_bytes = segment_bytes
        self.failed: str | None = None
        self.stats = {"records": 0, "bytes": 0, "fsyncs": 0, "files_removed": 0,
                      "replayed": 0}
        # batch id -> (applied at wall-clock time, seq of its record; 0 = already durable)
        # (the third field orders appends: an id goes into db.json only with the flush that
        # covers its rows, or a crash could leave the id remembered and its rows lost)
        self._ids: dict[str, tuple[float, int, int]] = {}
        self._ids_lock = threading.Lock()
        self._order = 0  # appends with a batch id so far
        self._flush_mark = 0  # `_order` at the last `rotate` (the flush's memtable swap)
        self._cond = threading.Condition(threading.Lock())
        self._written = 0  # last seq handed to the OS (or assigned, with no log)
        self._synced = 0  # last seq known durable
        self._syncing = False  # a leader's fsync (or a roll) is in progress
        self._fd: int | None = None
        self._first = 0  # first seq of the active file
        self._size = 0  # bytes in the active file
        self._closed_files: list[tuple[int, Path]] = []  # (first seq, path), ascending
        self._files_lock = threading.Lock()
        self._closed = False
        self.sidecar: Sidecar | None = None

    # -- state --------------------------------------------------------------------------
    @property
    def seq(self) -> int:
        """The last sequence number appended."""
        return self._written

    def files(self) -> list[Path]:
        with self._files_lock:
            paths = [p for _, p in self._closed_files]
        if self._fd is not None and self.dir is not None:
            paths.append(self.dir / wal_filename(self._first))
        return paths

    def _fail(self, what: str, e: BaseException) -> StorageFailedError:
        reason = f"write-ahead log {what} failed: {e}"
        with self._cond:
            if self.failed is None:
                self.failed = reason
                log.error("%s; refusing further writes", reason)
            self._cond.notify_all()
        return StorageFailedError(reason)

    def _check(self) -> None:
        if self.failed:
            raise StorageFailedError(f"database is read-only after a storage failure: "
                                     f"{self.failed}")
        if self._closed:
            raise StorageFailedError("database is closed")

    # -- recovery -----------------------------------------------------------------------
    def recover(self, flushed_seq: int, batch_ids: dict[str, float] | None = None,
                progress: Callable[[ReplayProgress], None] | None = None) -> Iterator[Record]:
        """Yield every logged record after `flushed_seq` (the db.json `wal_seq`) in order, then
        open a new active file. Loads the batch ids persisted at the last flush. Raises
        CorruptDataError for corruption anywhere but a torn last record.

        When the log holds any bytes, `progress` (if given) is called with a ReplayProgress
        when the replay starts, at most every PROGRESS_EVERY seconds while it runs (the time
        the caller spends applying records included), and once at the end (`done`); the
        same is logged (logger gumshoe.wal) from the first second on, plus a final line."""
        now = self.clock()
        for bid, t in (batch_ids or {}).items():
            if now - float(t) <= self.window:
                self._ids[bid] = (float(t), 0, 0)
        last = flushed_seq
        kept: list[tuple[int, Path]] = []
        if self.dir is not None:
            files = wal_files(self.dir)
            sizes = [p.stat().st_size for _, p in files]
            meter = _Meter(sum(sizes), progress)
            for i, (first, path) in enumerate(files):
                at_tail = not any(sizes[i + 1:])
                file_last = None
                for rec_seq, payload, offset in self._read_file(path, first, at_tail):
                    file_last = rec_seq
                    meter.at(sum(sizes[:i]) + offset + HEADER.size + len(payload))
                    if rec_seq <= flushed_seq:
                        continue
                    if rec_seq != last + 1:
                        raise CorruptDataError(
                            f"{path}: record at offset {offset} has sequence number {rec_seq}, "
                            f"expected {last + 1}: the log has a gap (missing log file?)")
                    try:
                        rec = decode_payload(rec_seq, payload)
                    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
                        raise CorruptDataError(f"{path}: undecodable record {rec_seq} at "
                                               f"offset {offset}: {e}") from None
                    if rec.batch_id is not None:
                        self._order += 1
                        self._ids[rec.batch_id] = (rec.time, rec_seq, self._order)
                    last = rec_seq
                    self.stats["replayed"] += 1
                    meter.record(rec.block.n)
                    yield rec
                if file_last is not None and file_last > flushed_seq:
                    kept.append((first, path))
                else:
                    log.info("removing flushed write-ahead log file %s", path)
                    path.unlink(missing_ok=True)
                    self.stats["files_removed"] += 1
            meter.finish()
        self._written = self._synced = last
        if self.dir is not None and self.mode != "none":
            if self.mode == "fsync":
                for _, path in kept:  # what was replayed is durable before anything new
                    fd = fileio.open_fd(path, os.O_RDONLY)
                    try:
                        fileio.fsync(fd)
                    finally:
                        os.close(fd)
            self._closed_files = kept
            self._open_active(last + 1)
        else:
            self._closed_files = kept  # kept until a flush trims them

    def _read_file(self, path: Path, first: int, at_tail: bool
                   ) -> Iterator[tuple[int, bytes, int]]:
        return read_frames(path, first, at_tail, self.mode == "fsync")

    def _open_file(self, first: int) -> int:
        """Create (or open) the log file starting at `first`, its directory entry durable in
        fsync mode. On failure nothing is left behind (an empty new file is removed)."""
        assert self.dir is not None
        path = self.dir / wal_filename(first)
        fd = fileio.open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if self.mode == "fsync":
                fileio.fsync_dir(self.dir)  # the new file's directory entry is durable
        except BaseException:
            empty = os.fstat(fd).st_size == 0
            os.close(fd)
            if empty:
                path.unlink(missing_ok=True)
            raise
        return fd

    def _open_active(self, first: int) -> None:
        fd = self._open_file(first)
        self._fd, self._first, self._size = fd, first, os.fstat(fd).st_size

    # -- batch ids ----------------------------------------------------------------------
    def seen(self, batch_id: str) -> int | None:
        """The ticket (seq) of the record that applied `batch_id` within the window, or None."""
        with self._ids_lock:
            entry = self._ids.get(batch_id)
        if entry is None or self.clock() - entry[0] > self.window:
            return None
        return entry[1]

    def _remember(self, batch_id: str, t: float, seq: int) -> None:
        with self._ids_lock:
            self._ids.pop(batch_id, None)
            self._order += 1
            self._ids[batch_id] = (t, seq, self._order)
            # Ids are kept in insertion (about time) order: drop expired ones from the front.
            cutoff = t - self.window
            while self._ids:
                oldest = next(iter(self._ids))
                if self._ids[oldest][0] >= cutoff:
                    break
                del self._ids[oldest]

    def batch_ids_json(self) -> dict[str, float]:
        """The batch ids applied within the window and covered by the flush in progress (up
        to its `rotate`) -> their time, to persist in db.json. Later ids stay in the log."""
        now = self.clock()
        with self._ids_lock:
            return {k: t for k, (t, _, order) in self._ids.items()
                    if now - t <= self.window and order <= self._flush_mark}

    # -- appending ----------------------------------------------------------------------
    def append(self, batch_id: str | None, timestamps: np.ndarray, block: Block,
               new_strings: dict[str, list[str]], dict_sizes: dict[str, int]) -> int:
        """Log an encoded batch (called under the DB write lock, before it is applied): its
        rows, the strings it adds and the dictionary sizes before it (and hand it to the
        sidecar). Returns a ticket for `commit`: 0 when there is nothing to wait for."""
        if block.n == 0 and batch_id is None:
            return 0
        self._check()
        t = self.clock()
        if self.mode == "none":
            if block.n and self.sidecar is not None:
                try:
                    self.sidecar.write(0, t, batch_id, timestamps, block, new_strings,
                                       dict_sizes)
                except Exception as e:
                    raise self._fail("sidecar write", e) from e
            if batch_id is not None:
                self._remember(batch_id, t, 0)
            return 0
        seq = self._written + 1
        data = frame(seq, encode_payload(batch_id, t, timestamps, block, new_strings,
                                         dict_sizes))
        if self._size and self._size + len(data) > self.segment_bytes:
            self._roll()
        assert self._fd is not None
        try:
            fileio.write(self._fd, data)
        except OSError as e:
            raise self._fail("write", e) from e
        if block.n and self.sidecar is not None:
            try:  # before the record counts as written (so before any commit returns)
                self.sidecar.write(seq, t, batch_id, timestamps, block, new_strings,
                                   dict_sizes)
            except Exception as e:  # the record is in the log but not counted: fail-stop
                raise self._fail("sidecar write", e) from e
        self._size += len(data)
        with self._cond:
            self._written = seq
        self.stats["records"] += 1
        self.stats["bytes"] += len(data)
        if batch_id is not None:
            self._remember(batch_id, t, seq)
        return seq

    def commit(self, ticket: int) -> None:
        """Return once the record `ticket` is durable per the durability mode (call it without
        holding the DB write lock). Raises StorageFailedError if it can never be."""
        if ticket <= 0 or self.mode != "fsync":
            return  # os: the record reached the OS in `append`; none: nothing to wait for
        with self._cond:
            while True:
                if self._synced >= ticket:
                    return
                if self.failed:
                    raise StorageFailedError(f"not acknowledged: {self.failed}")
                if not self._syncing:
                    break
                self._cond.wait()
            self._syncing = True  # this thread is the leader
            target, fd = self._written, self._fd
        err: OSError | None = None
        try:
            assert fd is not None
            fileio.fsync(fd)
        except OSError as e:
            err = e
        with self._cond:
            self._syncing = False
            if err is None:
                self._synced = max(self._synced, target)
                self.stats["fsyncs"] += 1
            self._cond.notify_all()
        if err is not None:
            raise self._fail("fsync", err) from err

    def _roll(self) -> None:
        """Start a new file and close the active one (fsync'd in fsync mode). Under the DB
        write lock, so no append runs concurrently; waits for a running group fsync. The new
        file is opened first: out of file descriptors, TransientStorageError and nothing
        changed."""
        assert self.dir is not None
        assert self._fd is not None
        with self._cond:
            while self._syncing:
                self._cond.wait()
            self._check()
            self._syncing = True
        ok = False
        first = self._written + 1
        try:
            try:
                fd = self._open_file(first)
            except OSError as e:
                if fileio.is_transient(e):
                    raise TransientStorageError(f"write-ahead log: cannot start a new file "
                                                f"now: {e}") from e
                raise
            try:
                if self.mode == "fsync" and self._written > self._synced:
                    fileio.fsync(self._fd)
                    self.stats["fsyncs"] += 1
                os.close(self._fd)
            except BaseException:
                os.close(fd)
                raise
            with self._files_lock:
                self._closed_files.append((self._first, self.dir / wal_filename(self._first)))
            self._fd, self._first, self._size = fd, first, 0
            ok = True
        except OSError as e:
            raise self._fail("roll", e) from e
        finally:
            with self._cond:
                self._syncing = False
                if ok:
                    self._synced = self._written
                self._cond.notify_all()

    def rotate(self) -> int:
        """Start a new log file if the active one holds records (at a flush, under the write
        lock) and return the last sequence number: the flush covers every record up to it."""
        self._check()
        with self._ids_lock:
            self._flush_mark = self._order
        if self.mode != "none" and self._fd is not None and self._size:
            self._roll()
        return self._written

    def trim(self, flushed_seq: int) -> None:
        """Delete the log files whose records are all <= `flushed_seq` (durably flushed)."""
        with self._files_lock:
            end = self._first if self._fd is not None else self._written + 1
            nexts = [f for f, _ in self._closed_files[1:]] + [end]  # each file's successor
            drop = [fp for fp, nxt in zip(self._closed_files, nexts[:len(self._closed_files)],
                                          strict=True) if nxt - 1 <= flushed_seq]
            self._closed_files = [fp for fp in self._closed_files if fp not in drop]
        for _, path in drop:
            try:
                path.unlink()
                self.stats["files_removed"] += 1
            except OSError as e:  # harmless: skipped and removed at the next start
                log.warning("cannot remove flushed log file %s: %s", path, e)

    def close(self) -> None:
        """Make everything written durable (fsync mode) and close the active file."""
        with self._cond:
            while self._syncing:
                self._cond.wait()
            if self._closed:
                return
            self._closed = True
            self._syncing = True
        try:
            if self._fd is not None:
                if self.mode == "fsync" and not self.failed and self._written > self._synced:
                    try:
                        fileio.fsync(self._fd)
                    except OSError as e:
                        self._fail("fsync", e)
                    else:
                        self._synced = self._written
                os.close(self._fd)
                self._fd = None
        finally:
            with self._cond:
                self._syncing = False
                self._cond.notify_all()
