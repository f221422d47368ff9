"""Reading the raw archive: the rows whose timestamp falls in a range, in time order, with
bounded memory.

Imports errors, fileio, rawrecord, wal (its framing) and archive (file names, listing). The
range is (lo_excl, hi_incl] in Unix seconds. A `RawScan` works in three steps:

1. **Index** (at construction, so a damaged file is reported before any row is sent): the files
   that can hold the range (by the time range in their names; the active file always) are
   memory-mapped and every record's head is read (checksums checked): its rows and the smallest
   and largest timestamp. Records outside the range are dropped. Memory: a few numbers a record.
2. **Plan**: the range is cut into windows of about `window_rows` rows each, estimating that a
   record's rows spread evenly over its [lo, hi] (with `align`, window ends fall on multiples
   of it: whole intervals for `gumtool reindex`).
3. **Read** (`chunks`), window by window: each record is decompressed once, in the first window
   it reaches; its rows in that window are kept, its rows in later windows are set aside in
   temporary files (one per window, compressed, framed like the log: `wal.frame`) and read back
   when their window comes. A window's rows are sorted by (timestamp, record seq, position in
   the record) and yielded as one RawChunk. Memory: one window's rows plus one record.

Within a file, records follow arrival order and may overlap in time arbitrarily (late data, a
batch spanning days): the windows handle that; live data (batches spanning seconds) is read in
one pass with almost nothing set aside.
"""

from __future__ import annotations

import dataclasses
import logging
import mmap
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zstandard

from . import fileio
from .archive import SCRATCH_PREFIX, WHAT, Archive, FileInfo, list_files
from .errors import CorruptDataError
from .rawrecord import RawChunk, concat, decode_body, decode_chunk, encode_chunk, read_head
from .wal import HEADER, frame, read_frames

log = logging.getLogger(__name__)

WINDOW_ROWS = 250_000  # rows held in memory at once (a few tens of MB)
_BAD = (ValueError, KeyError, TypeError, msgpack.UnpackException, zstandard.ZstdError)


@dataclasses.dataclass(frozen=True, slots=True)
class _Ref:
    view: int  # index into the scan's views
    offset: int  # of the payload in the file
    length: int
    seq: int
    lo: int
    hi: int
    n: int
    ts_name: str
    body: int  # offset of the body within the payload


def open_files(directory: Path, lo_excl: int, hi_incl: int
               ) -> list[tuple[FileInfo, int, mmap.mmap]]:
    """The files of an archive directory that can hold the range, memory-mapped, for a reader
    that is not the archive's writer (`gumtool reindex`: the server may be writing it). An
    active file is read up to its last whole record."""
    for _attempt in range(3):
        closed, active = list_files(directory)
        out: list[tuple[FileInfo, int, mmap.mmap]] = []
        try:
            for f in [*closed, *active]:
                if not f.overlaps(lo_excl, hi_incl):
                    continue
                with fileio.open_file(f.path, "rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    if size:
                        out.append((f, size, mmap.mmap(fh.fileno(), size,
                                                       access=mmap.ACCESS_READ)))
            return out
        except FileNotFoundError:  # rotated or expired meanwhile: list again
            for _, _, m in out:
                m.close()
    raise CorruptDataError(f"{directory}: the {WHAT} keeps changing under the reader")


class RawScan:
    """The rows of (lo_excl, hi_incl] from the given memory-mapped files (which it closes)."""

    def __init__(self, files: list[tuple[FileInfo, int, mmap.mmap]], lo_excl: int,
                 hi_incl: int, scratch: Path | None = None, window_rows: int = WINDOW_ROWS,
                 align: int = 1) -> None:
        self.files = sorted(files, key=lambda f: f[0].first)
        self.lo, self.hi = lo_excl, hi_incl
        self.window_rows = max(1, window_rows)
        self.align = max(1, align)
        self._scratch_given = scratch
        self._scratch: Path | None = None
        self.refs: list[_Ref] = []
        self.columns: dict[str, None] = {}  # names of the columns met, in order
        self.ts_name = ""
        self.counted = False
        try:
            self._index()
        except BaseException:
            self.close()
            raise

    # -- 1. index ---------------------------------------------------------------------------
    def _index(self) -> None:
        for i, (f, size, data) in enumerate(self.files):
            at_tail = f.path.name.endswith(".active")
            for seq, pl, off in read_frames(f.path, f.first, at_tail, False, WHAT, data=data,
                                            size=size, repair=False):
                try:
                    h = read_head(pl)
                except _BAD as e:
                    raise CorruptDataError(f"{f.path}: undecodable {WHAT} record {seq} at "
                                           f"offset {off}: {e}") from None
                if not h.n or h.hi <= self.lo or h.lo > self.hi:
                    continue
                self.refs.append(_Ref(i, off + HEADER.size, len(pl), seq, h.lo, h.hi, h.n,
                                      h.ts_name, h.body_offset))
                if not self.ts_name:
                    self.ts_name = h.ts_name
                self.columns.update(dict.fromkeys(h.names))
                self.counted |= h.counted

    @property
    def rows_estimate(self) -> int:
        """Rows of the records that reach the range (an upper bound)."""
        return sum(r.n for r in self.refs)

    # -- 2. plan ----------------------------------------------------------------------------
    def windows(self) -> np.ndarray:
        """The inclusive ends of the windows, ascending; the last is hi_incl."""
        if not self.refs:
            return np.array([self.hi], np.int64)
        lo = np.array([max(r.lo, self.lo + 1) for r in self.refs], np.int64)
        hi = np.array([min(r.hi, self.hi) for r in self.refs], np.int64)
        span = np.array([r.hi - r.lo + 1 for r in self.refs], np.float64)
        rate = np.array([r.n for r in self.refs], np.float64) / span  # rows per second
        points = np.unique(np.concatenate([lo, hi + 1]))
        delta = np.zeros(len(points), np.float64)
        np.add.at(delta, np.searchsorted(points, lo), rate)
        np.add.at(delta, np.searchsorted(points, hi + 1), -rate)
        seg_rate = np.cumsum(delta)[:-1]  # rows per second on [points[k], points[k+1])
        seg_len = np.diff(points).astype(np.float64)
        cum = np.cumsum(seg_rate * seg_len)
        total = float(cum[-1]) if len(cum) else 0.0
        if total <= self.window_rows:
            return np.array([self.hi], np.int64)
        targets = np.arange(self.window_rows, total, self.window_rows, dtype=np.float64)
        k = np.minimum(np.searchsorted(cum, targets), len(cum) - 1)
        before = np.where(k > 0, cum[np.maximum(k - 1, 0)], 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(seg_rate[k] > 0, np.ceil((targets - before) / seg_rate[k]), 1.0)
        ends = points[k] + np.clip(step, 1, seg_len[k]).astype(np.int64) - 1
        if self.align > 1:  # the next window starts on a multiple of align
            ends = (ends + 1 + self.align - 1) // self.align * self.align - 1
        ends = np.unique(ends[(ends > self.lo) & (ends < self.hi)])
        return np.append(ends, np.int64(self.hi))

    # -- 3. read ----------------------------------------------------------------------------
    def _decode(self, r: _Ref) -> RawChunk:
        f, _, data = self.files[r.view]
        try:
            return decode_body(data[r.offset + r.body:r.offset + r.length], r.ts_name, r.n,
                               r.seq)
        except _BAD as e:
            raise CorruptDataError(f"{f.path}: undecodable {WHAT} record {r.seq}: {e}") from None

    def _spill_dir(self) -> Path:
        if self._scratch is None:
            parent = self._scratch_given
            self._scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent)
                                 if parent is not None else
                                 tempfile.mkdtemp(prefix="gumshoe-raw-"))
        return self._scratch

    def chunks(self) -> Iterator[RawChunk]:
        """The rows of the range, a window at a time, each chunk in time order."""
        try:
            yield from self._chunks()
        finally:
            self.close()

    def _chunks(self) -> Iterator[RawChunk]:
        ends = self.windows()
        first = np.searchsorted(ends, [max(r.lo, self.lo + 1) for r in self.refs])
        by_window: dict[int, list[_Ref]] = {}
        for r, w in zip(self.refs, first.tolist(), strict=True):
            by_window.setdefault(w, []).append(r)
        spilled: dict[int, int] = {}  # window -> frames in its spill file
        for w in range(len(ends)):
            parts: list[RawChunk] = []
            for r in by_window.pop(w, []):
                c = self._decode(r)
                c = c.take((c.ts > self.lo) & (c.ts <= self.hi))
                where = np.searchsorted(ends, c.ts)
                if not (where > w).any():
                    parts.append(c)
                    continue
                parts.append(c.take(where == w))
                for j in np.unique(where[where > w]).tolist():
                    self._spill(j, spilled, c.take(where == j))
            if w in spilled:
                parts.extend(self._unspill(w, spilled.pop(w)))
            if parts:
                chunk = concat(parts)
                if chunk.n:
                    yield chunk.in_order()

    def _spill(self, window: int, spilled: dict[int, int], chunk: RawChunk) -> None:
        k = spilled.get(window, 0) + 1
        with open(self._spill_dir() / f"w{window}", "ab") as f:
            f.write(frame(k, encode_chunk(chunk)))
        spilled[window] = k

    def _unspill(self, window: int, frames: int) -> list[RawChunk]:
        path = self._spill_dir() / f"w{window}"
        out = [decode_chunk(pl) for _, pl, _ in read_frames(path, 1, False, False, "raw spill")]
        path.unlink()
        if len(out) != frames:
            raise CorruptDataError(f"{path}: {len(out)} of {frames} spilled parts")
        return out

    def close(self) -> None:
        for _, _, data in self.files:
            try:
                data.close()
            except BufferError:  # pragma: no cover - a view is still alive; GC closes it
                pass
        self.files = []
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def scan_archive(archive: Archive, lo_excl: int, hi_incl: int, **kw: Any) -> RawScan:
    """A RawScan over the archive a DB writes (its temporary files in the archive directory)."""
    return RawScan(archive.snapshot(lo_excl, hi_incl), lo_excl, hi_incl, archive.dir, **kw)


def scan_directory(directory: Path, lo_excl: int, hi_incl: int, scratch: Path | None = None,
                   **kw: Any) -> RawScan:
    """A RawScan over an archive directory read from outside (see `open_files`)."""
    return RawScan(open_files(directory, lo_excl, hi_incl), lo_excl, hi_incl, scratch, **kw)
