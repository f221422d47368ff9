"""The funnel's spool: accepted batches on disk, append-only, until upstream has them.

Imports wal (its record framing and reader: one framing in the code base), fileio and errors.
Files `spool.<first seq, 16 digits>.log` in `<database_dir>/spool/`, each a run of
`wal.frame(seq, msgpack payload)` records of four kinds:

- `start` (first record of every file): the funnel id, the next upstream batch number and the
  client batch ids seen within the window (so a dedupe survives the trimming of old files);
- `data`: one accepted batch (opaque bytes: wire.encode_batch), its row count, arrival time and
  the client's X-Batch-Id;
- `cut`: upstream batch `k` is made of the data records up to seq `last` not in an earlier cut;
  fsync'd before batch k is first sent, so a resend after a crash has exactly the same rows and
  the same batch id (the upstream drops the repeat);
- `ack`: upstream acknowledged batch `k` (not fsync'd: losing one only causes a resend).

A data record is fsync'd (group commit: concurrent appends share one fsync, run in a thread)
before its request is answered. Closed files whose data were all acknowledged are deleted. At
start, `open` replays every file (a torn last record is cut off, damage elsewhere stops start-up
naming the file and offset) and hands back what is still to forward.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

import msgpack

from .. import fileio
from ..errors import CorruptDataError, DBLockedError, OverloadedError, StorageFailedError
from ..wal import HEADER, frame, read_frames

log = logging.getLogger(__name__)

SEGMENT_BYTES = 64 << 20
_NAME_RE = re.compile(r"spool\.(\d{16})\.log")


def _name(first_seq: int) -> str:
    return f"spool.{first_seq:016d}.log"


@dataclasses.dataclass(slots=True)
class Entry:
    """A data record still to forward (its payload is read back from `path` when sent)."""

    seq: int
    path: Path
    offset: int  # of the payload in the file
    length: int
    rows: int
    time: float


@dataclasses.dataclass(slots=True)
class Cut:
    """An upstream batch: number `k`, data up to seq `last`, sent with funnel id `funnel`."""

    k: int
    last: int
    funnel: str


class Spool:
    def __init__(self, directory: Path, limit: int, *, sync: bool = True,
                 id_window: float = 86400.0, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.dir = directory
        self.limit = limit
        self.sync = sync
        self.id_window = id_window
        self.segment_bytes = segment_bytes
        self.funnel = ""
        self.next_batch = 1
        self.pending: collections.deque[Entry] = collections.deque()
        self.pending_bytes = 0
        self.planned: Cut | None = None  # a cut made before a crash, not yet acknowledged
        self.ids: dict[str, tuple[float, int]] = {}  # client batch id -> (time, data seq)
        self.failed: str | None = None
        # closed files: (first seq, path, the last data seq it holds or a cut in it covers)
        self._files: list[tuple[int, Path, int]] = []
        self._active_last = 0  # the same for the active file
        self._fd: int | None = None
        self._path: Path | None = None
        self._first = 0
        self._size = 0
        self._seq = 0  # last seq written
        self._synced = 0
        self._sync_task: asyncio.Future[None] | None = None
        self._acked = 0  # every data seq <= this was acknowledged upstream
        self._lock_fd: int | None = None

    # -- start-up -------------------------------------------------------------------------
    def open(self, funnel_id: str = "") -> None:
        """Lock the directory, replay its files and open a new active file. `funnel_id`
        (config) wins over the stored one; with neither, one is made up and kept."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise DBLockedError(f"spool directory {str(self.dir)!r} is in use by another "
                                "funnel") from None
        stored = self._replay()
        self.funnel = funnel_id or stored or secrets.token_hex(6)
        self._open_active(self._seq + 1)

    def _replay(self) -> str:
        files = sorted((int(m.group(1)), p) for p in self.dir.iterdir()
                       if (m := _NAME_RE.fullmatch(p.name)) and p.is_file())
        sizes = [p.stat().st_size for _, p in files]
        funnel, data, cuts, acked = "", [], {}, 0
        now = time.time()
        for i, (first, path) in enumerate(files):
            at_tail = not any(sizes[i + 1:])
            last = 0
            if first != self._seq + 1 and self._seq:
                raise CorruptDataError(f"{path}: starts at record {first}, expected "
                                       f"{self._seq + 1}: a spool file is missing")
            for seq, payload, offset in read_frames(path, first, at_tail, self.sync, "spool"):
                try:
                    rec = msgpack.unpackb(payload, raw=False)
                    kind = rec["k"]
                except Exception as e:
                    raise CorruptDataError(f"{path}: undecodable spool record {seq} at offset "
                                           f"{offset}: {e}") from None
                self._seq = seq
                if kind == "start":
                    funnel = rec["funnel"] or funnel
                    self.next_batch = max(self.next_batch, int(rec["next"]))
                    for bid, t in rec["ids"].items():
                        if now - t <= self.id_window:
                            self.ids[bid] = (t, 0)
                elif kind == "data":
                    start = offset + HEADER.size
                    data.append(Entry(seq, path, start, len(payload), int(rec["n"]),
                                      float(rec["t"])))
                    if rec.get("id"):
                        self.ids[rec["id"]] = (float(rec["t"]), 0)
                    last = max(last, seq)
                elif kind == "cut":
                    cuts[int(rec["batch"])] = Cut(int(rec["batch"]), int(rec["last"]),
                                                  str(rec.get("funnel") or funnel))
                    self.next_batch = max(self.next_batch, int(rec["batch"]) + 1)
                    last = max(last, int(rec["last"]))
                elif kind == "ack":
                    acked = max(acked, int(rec["last"]))
            self._files.append((first, path, last))
        self._acked = acked
        self.pending.extend(e for e in data if e.seq > acked)
        self.pending_bytes = sum(e.length for e in self.pending)
        unacked = [c for c in cuts.values() if c.last > acked]
        if unacked:
            self.planned = min(unacked, key=lambda c: c.k)
        self._synced = self._seq
        if self.pending:
            log.info("spool: %d batches (%d rows, %d bytes) to forward from a previous run",
                     len(self.pending), sum(e.rows for e in self.pending), self.pending_bytes)
        return funnel

    def _open_active(self, first: int) -> None:
        path = self.dir / _name(first)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._path, self._first, self._size, self._active_last = path, first, 0, 0
        if self.sync:
            fileio.fsync_dir(self.dir)
        now = time.time()
        ids = {bid: t for bid, (t, _) in self.ids.items() if now - t <= self.id_window}
        self._write({"k": "start", "funnel": self.funnel, "next": self.next_batch, "ids": ids})

    # -- appending ------------------------------------------------------------------------
    def _write(self, record: dict[str, Any]) -> tuple[int, int, int]:
        """Append one record to the active file; returns (seq, payload offset, length)."""
        if self.failed:
            raise StorageFailedError(f"spool refuses writes after a failure: {self.failed}")
        payload: bytes = msgpack.packb(record, use_bin_type=True)
        seq = self._seq + 1
        data = frame(seq, payload)
        assert self._fd is not None
        try:
            fileio.write(self._fd, data)
        except OSError as e:
            try:  # leave no torn record behind: the next append would follow it
                os.ftruncate(self._fd, self._size)
            except OSError:
                self.failed = f"write failed ({e}) and the torn record could not be removed"
                raise StorageFailedError(f"spool: {self.failed}") from e
            raise OverloadedError(f"spool write failed ({e.strerror}); not accepted, retry "
                                  "later", retry_after=5) from e
        offset = self._size + HEADER.size
        self._size += len(data)
        self._seq = seq
        return seq, offset, len(payload)

    def append(self, payload: bytes, rows: int, client_id: str | None) -> int:
        """Write one accepted batch (durable only after `commit`). OverloadedError (503) when
        the spool is full."""
        if self.pending_bytes + len(payload) > self.limit and self.pending:
            raise OverloadedError(
                f"the spool is full: {self.pending_bytes} bytes wait for upstream "
                f"(funnel.spool_size is {self.limit}); retry later", retry_after=5)
        if self._size >= self.segment_bytes:
            self._roll()
        t = time.time()
        record = {"k": "data", "n": rows, "t": t, "id": client_id, "b": payload}
        seq, offset, length = self._write(record)
        assert self._path is not None
        self.pending.append(Entry(seq, self._path, offset, length, rows, t))
        self.pending_bytes += length
        self._active_last = seq
        if client_id:
            self.ids[client_id] = (t, seq)
        return seq

    async def commit(self, seq: int) -> None:
        """Return once record `seq` is on disk (one fsync for every append before it)."""
        while self._synced < seq:
            if self.failed:
                raise StorageFailedError(f"spool: not acknowledged: {self.failed}")
            if not self.sync:
                self._synced = self._seq
                return
            if self._sync_task is None:
                self._sync_task = asyncio.ensure_future(self._fsync())
            await asyncio.shield(self._sync_task)

    async def _fsync(self) -> None:
        target, fd = self._seq, self._fd
        try:
            assert fd is not None
            await asyncio.to_thread(fileio.fsync, fd)
        except OSError as e:
            self.failed = f"fsync failed: {e}"
            log.error("spool: %s; refusing further events", self.failed)
        else:
            self._synced = max(self._synced, target)
        finally:
            self._sync_task = None

    def seen(self, client_id: str) -> int | None:
        """The data seq of a client batch id accepted within the window (0: long durable)."""
        entry = self.ids.get(client_id)
        if entry is None or time.time() - entry[0] > self.id_window:
            return None
        return entry[1]

    def _roll(self) -> None:
        assert self._fd is not None and self._path is not None
        if self.sync:
            fileio.fsync(self._fd)
        os.close(self._fd)
        self._files.append((self._first, self._path, self._active_last))
        self._open_active(self._seq + 1)

    # -- forwarding -------------------------------------------------------------------------
    def read(self, entries: list[Entry]) -> list[bytes]:
        """The payloads of `entries` (each checked against its record's CRC when written;
        read back from the page cache or disk)."""
        out = []
        handles: dict[Path, Any] = {}
        with contextlib.ExitStack() as stack:
            for e in entries:
                f = handles.get(e.path)
                if f is None:
                    f = handles[e.path] = stack.enter_context(open(e.path, "rb"))
                f.seek(e.offset)
                out.append(msgpack.unpackb(f.read(e.length), raw=False)["b"])
        return out

    async def cut(self, last: int) -> Cut:
        """Fix the next upstream batch as the pending data up to seq `last` (durably)."""
        c = Cut(self.next_batch, last, self.funnel)
        self.next_batch += 1
        seq, _, _ = self._write({"k": "cut", "batch": c.k, "last": last, "funnel": c.funnel})
        self._active_last = max(self._active_last, last)
        await self.commit(seq)
        return c

    def ack(self, c: Cut) -> None:
        """Upstream has batch `c`: drop its entries and delete files wholly forwarded."""
        self._write({"k": "ack", "batch": c.k, "last": c.last})
        self._acked = max(self._acked, c.last)
        if self.planned is not None and self.planned.k == c.k:
            self.planned = None
        while self.pending and self.pending[0].seq <= c.last:
            self.pending_bytes -= self.pending.popleft().length
        while self._files and self._files[0][2] <= self._acked:  # oldest first: no gaps
            path = self._files.pop(0)[1]
            log.debug("spool: removing forwarded file %s", path)
            path.unlink(missing_ok=True)

    @property
    def oldest(self) -> float | None:
        return self.pending[0].time if self.pending else None

    def close(self) -> None:
        if self._fd is not None:
            if self.sync and not self.failed:
                try:
                    fileio.fsync(self._fd)
                except OSError as e:
                    log.error("spool: fsync at close failed: %s", e)
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
