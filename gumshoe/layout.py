"""The directory layout of a database: its file names, the metadata (db.json), the directory
lock, atomic replacement and the retention cutoff. No other module parses or writes db.json.

Imports errors, fileio and schema. A database directory holds

    db.json                                          the metadata (`Meta`): the commit point
    interval.<start>.generation<G>.segment<I>.seg    segments (segment.py), checksummed
    dictionary.<column>.generation<G>.json           a string dimension's strings in code order
    wal.<first sequence number, 16 digits>.log       write-ahead log files (wal.py)
    <one of those>.tmp                               a file being written (`write_atomic`)

and nothing else of ours: `kind_of(name)` is the one test of "is this one of our files" (start-up
and `gumtool clean` remove our files that db.json does not reference, and leave every other file
alone). Beside a destination, gumtool builds a new database in a hidden directory
(`staging_prefix`) and uploads one to another host as a hidden partial (`partial_path`).

db.json (format "gumshoe/2") is a JSON object: `format`, `schema`, `wal_seq` (the last log
record the segments cover), `last_updated` (the largest row timestamp ever inserted, or null),
`intervals` (each: `start`, `generation`, `segments`: [{`file`, `rows`}], `duration` in
seconds when it is not the schema's `interval_duration`: a re-rolled interval of a coarser
tier, and `runs` when the interval holds more than one run: [[generation, segments], ...],
oldest first, generations ascending, the last one the interval's `generation`; the segments
list them run after run, each named by its run's generation (docs/storage.md section 6)), with tiers `watermarks` (one per tier boundary, tiers.py), `dictionaries`
(column -> {`file`, `generation`, `size`, `crc32` of the file's bytes}), `batch_ids` (id -> the
time it was applied) and `crc32`: the crc32 of the canonical JSON of everything else, so a damaged
db.json never passes for a good one. Format "gumshoe/1" (written before checksums and
`last_updated`) still opens: its dictionaries are checked from their next generation on (the DB
records the checksum of each at its first flush).
"""

from __future__ import annotations

import dataclasses
import fcntl
import itertools
import json
import os
import posixpath
import re
import zlib
from pathlib import Path
from typing import Any, Self

from . import fileio
from .errors import ConfigError, CorruptDataError, DBLockedError, GumshoeError
from .schema import Schema

META = "db.json"
FORMAT = "gumshoe/2"
READABLE_FORMATS = ("gumshoe/1", FORMAT)
TMP_SUFFIX = ".tmp"
IMPORT_CHECKPOINT = "import.checkpoint.json"  # gumtool import's resume point

_SEGMENT_RE = re.compile(r"interval\.(-?\d+)\.generation(\d+)\.segment(\d+)\.seg")
_DICTIONARY_RE = re.compile(r"dictionary\.(.+)\.generation(\d+)\.json")
_WAL_RE = re.compile(r"wal\.(\d+)\.log")


class LayoutError(GumshoeError):
    """A path is not what it should be: no such directory, not a directory, not a database."""


# -- file names -------------------------------------------------------------------------------
def segment_filename(start: int, generation: int, index: int) -> str:
    return f"interval.{start}.generation{generation:04d}.segment{index:04d}.seg"


def dictionary_filename(column: str, generation: int) -> str:
    return f"dictionary.{column}.generation{generation:04d}.json"


def wal_filename(first_seq: int) -> str:
    return f"wal.{first_seq:016d}.log"


def tmp_name(name: str) -> str:
    """The name a file is written under before it is renamed to `name`."""
    return name + TMP_SUFFIX


def kind_of(name: str) -> str | None:
    """What a file name in a database directory is: "meta", "segment", "dictionary", "wal",
    "checkpoint" (gumtool import's progress), "tmp" (a temporary file of one of those), or
    None: not one of ours."""
    if name == META:
        return "meta"
    if name == IMPORT_CHECKPOINT:
        return "checkpoint"
    if _SEGMENT_RE.fullmatch(name):
        return "segment"
    if _DICTIONARY_RE.fullmatch(name):
        return "dictionary"
    if _WAL_RE.fullmatch(name):
        return "wal"
    if name.endswith(TMP_SUFFIX) and kind_of(name[:-len(TMP_SUFFIX)]) not in (None, "tmp"):
        return "tmp"
    return None


def is_ours(name: str) -> bool:
    return kind_of(name) is not None


def wal_files(directory: Path) -> list[tuple[int, Path]]:
    """The write-ahead log files of a database directory, (first seq, path), ascending."""
    return sorted((int(m.group(1)), p) for p in directory.iterdir()
                  if (m := _WAL_RE.fullmatch(p.name)) and p.is_file())


def unneeded_wal_files(directory: Path, wal_seq: int) -> list[Path]:
    """Log files whose records are all covered by the flush db.json records (the next file
    starts at or below `wal_seq` + 1). The last file is always kept."""
    files = wal_files(directory)
    return [p for (_, p), (nxt, _) in itertools.pairwise(files) if nxt - 1 <= wal_seq]


def staging_prefix(dest: Path) -> str:
    """The name prefix of the hidden directory beside `dest` where gumtool builds the database
    that it renames to `dest` once complete (a kill -9 can leave it behind)."""
    return f".{dest.name}.gumtool-"


def partial_path(dest: str, tag: str) -> str:
    """Where gumtool uploads a database for the (remote, POSIX) path `dest` before renaming it
    into place: a hidden directory beside it."""
    dest = posixpath.normpath(dest)
    parent, name = posixpath.split(dest)
    return posixpath.join(parent, f".{name}.{tag}.partial")


# -- metadata ---------------------------------------------------------------------------------
def _damaged(path: Path | str, what: str) -> CorruptDataError:
    return CorruptDataError(f"{path}: damaged metadata ({what})")


def _int(obj: Any, key: str, path: Path | str, where: str, minimum: int | None = 0) -> int:
    if not isinstance(obj, dict) or key not in obj:
        raise _damaged(path, f"{where}: no {key!r}")
    v = obj[key]
    if not isinstance(v, int) or isinstance(v, bool) or (minimum is not None and v < minimum):
        raise _damaged(path, f"{where}.{key}: {v!r} is not an integer >= {minimum}"
                       if minimum is not None else f"{where}.{key}: {v!r} is not an integer")
    return v


def _str(obj: Any, key: str, path: Path | str, where: str) -> str:
    if not isinstance(obj, dict) or not isinstance(obj.get(key), str):
        raise _damaged(path, f"{where}: no {key!r} string")
    v: str = obj[key]
    return v


@dataclasses.dataclass(frozen=True, slots=True)
class SegmentMeta:
    file: str
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "rows": self.rows}


@dataclasses.dataclass(frozen=True, slots=True)
class IntervalMeta:
    start: int
    generation: int
    segments: tuple[SegmentMeta, ...]
    duration: int = 0  # seconds; 0: the schema's interval_duration (as read: always set)
    # (generation, segments) per run, oldest first, when there are several; (): one run, of
    # `generation`, holding every segment
    runs: tuple[tuple[int, int], ...] = ()

    @property
    def rows(self) -> int:
        """Rows stored: with several runs a key may be stored once per run, so this is an
        upper bound of the interval's rolled-up rows."""
        return sum(s.rows for s in self.segments)

    @property
    def run_list(self) -> tuple[tuple[int, int], ...]:
        """(generation, segments) of each run, oldest first (one run: the interval's)."""
        return self.runs or ((self.generation, len(self.segments)),)

    def filenames(self) -> list[str]:
        return [s.file for s in self.segments]

    def to_json(self, base: int = 0) -> dict[str, Any]:
        """Its db.json entry; `duration` only when it is not `base` (the schema's
        interval_duration) and `runs` only when there are several, so a database without
        tiers or runs writes what it always wrote."""
        out: dict[str, Any] = {"start": self.start, "generation": self.generation,
                               "segments": [s.to_json() for s in self.segments]}
        if self.duration and self.duration != base:
            out["duration"] = self.duration
        if len(self.runs) > 1:
            out["runs"] = [[g, n] for g, n in self.runs]
        return out

    @classmethod
    def from_json(cls, obj: Any, path: Path | str, where: str = "interval",
                  base: int = 0) -> IntervalMeta:
        start = _int(obj, "start", path, where, minimum=None)
        gen = _int(obj, "generation", path, where)
        duration = _int(obj, "duration", path, where, minimum=1) if "duration" in obj else base
        segs = obj.get("segments")
        if not isinstance(segs, list):
            raise _damaged(path, f"{where}: no 'segments' list")
        runs = _runs(obj, gen, len(segs), path, where)
        names = [segment_filename(start, g, i) for g, n in runs or ((gen, len(segs)),)
                 for i in range(n)]
        out = []
        for i, s in enumerate(segs):
            w = f"{where}.segments[{i}]"
            file = _str(s, "file", path, w)
            if file != names[i]:
                raise _damaged(path, f"{w}.file: {file!r}, expected {names[i]!r}")
            out.append(SegmentMeta(file, _int(s, "rows", path, w)))
        return cls(start, gen, tuple(out), duration, runs)


def _runs(obj: dict[str, Any], gen: int, segments: int, path: Path | str,
          where: str) -> tuple[tuple[int, int], ...]:
    """An interval entry's `runs` (absent: one run): at least two [generation, segments]
    pairs, generations ascending and the last the interval's, each run one segment or more,
    together the interval's segments."""
    if "runs" not in obj:
        return ()
    raw = obj["runs"]
    if not isinstance(raw, list) or len(raw) < 2 or not all(
            isinstance(r, list) and len(r) == 2 and all(
                isinstance(x, int) and not isinstance(x, bool) for x in r) for r in raw):
        raise _damaged(path, f"{where}.runs: not a list of at least two [generation, "
                             "segments] pairs")
    runs = tuple((g, n) for g, n in raw)
    if any(g < 0 or n < 1 for g, n in runs):
        raise _damaged(path, f"{where}.runs: a negative generation or a run without segments")
    if any(a[0] >= b[0] for a, b in itertools.pairwise(runs)) or runs[-1][0] != gen:
        raise _damaged(path, f"{where}.runs: generations are not ascending to the interval's "
                             f"generation {gen}")
    if sum(n for _, n in runs) != segments:
        raise _damaged(path, f"{where}.runs: {sum(n for _, n in runs)} segments, the interval "
                             f"lists {segments}")
    return runs


@dataclasses.dataclass(frozen=True, slots=True)
class DictMeta:
    file: str
    generation: int
    size: int  # strings in the file
    crc32: int | None  # of the file's bytes; None: written before checksums (format gumshoe/1)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file, "generation": self.generation,
                               "size": self.size}
        if self.crc32 is not None:
            out["crc32"] = self.crc32
        return out

    @classmethod
    def from_json(cls, column: str, obj: Any, path: Path | str) -> DictMeta:
        where = f"dictionaries.{column}"
        gen = _int(obj, "generation", path, where)
        file = _str(obj, "file", path, where)
        if file != dictionary_filename(column, gen):
            raise _damaged(path, f"{where}.file: {file!r}, expected "
                                 f"{dictionary_filename(column, gen)!r}")
        crc = None
        if "crc32" in obj:
            crc = _int(obj, "crc32", path, where)
            if crc >= 1 << 32:
                raise _damaged(path, f"{where}.crc32: {crc} is not a crc32")
        return cls(file, gen, _int(obj, "size", path, where), crc)


@dataclasses.dataclass(frozen=True, slots=True)
class Meta:
    """The contents of db.json (see the module docstring)."""

    schema: Schema
    wal_seq: int = 0
    intervals: tuple[IntervalMeta, ...] = ()
    dictionaries: dict[str, DictMeta] = dataclasses.field(default_factory=dict)
    batch_ids: dict[str, float] = dataclasses.field(default_factory=dict)
    last_updated: int | None = None
    format: str = FORMAT  # as read; always written as FORMAT
    # with tiers: per tier boundary, the time before which rows are stored at the coarser
    # tier (tiers.py); () without tiers
    watermarks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # an interval without a duration has the schema's: spelled out, so equal metadata
        # compares equal however it was made
        if any(not im.duration for im in self.intervals):
            base = self.schema.interval_duration
            object.__setattr__(self, "intervals", tuple(
                im if im.duration else dataclasses.replace(im, duration=base)
                for im in self.intervals))

    def files(self) -> set[str]:
        """db.json and every file it references (segments and dictionaries)."""
        names = {META}
        for im in self.intervals:
            names.update(im.filenames())
        names.update(d.file for d in self.dictionaries.values())
        return names

    def to_json(self) -> dict[str, Any]:
        base = self.schema.interval_duration
        out = {"format": FORMAT, "schema": self.schema.to_json(), "wal_seq": self.wal_seq,
               "last_updated": self.last_updated,
               "intervals": [im.to_json(base) for im in sorted(self.intervals,
                                                               key=lambda im: im.start)],
               "dictionaries": {k: v.to_json() for k, v in sorted(self.dictionaries.items())},
               "batch_ids": dict(self.batch_ids)}
        if self.watermarks:
            out["watermarks"] = list(self.watermarks)
        return out

    @classmethod
    def from_json(cls, obj: Any, path: Path | str) -> Meta:
        """Check and type a parsed db.json; CorruptDataError naming `path` when it is damaged
        or of an unknown format (its checksum is checked by `read_meta`)."""
        if not isinstance(obj, dict):
            raise CorruptDataError(f"{path}: unknown format {obj!r}")
        fmt = obj.get("format")
        if fmt not in READABLE_FORMATS:
            raise CorruptDataError(f"{path}: unknown format {fmt!r} (this gumshoe reads "
                                   f"{', '.join(READABLE_FORMATS)})")
        if not isinstance(obj.get("schema"), dict):
            raise _damaged(path, "no 'schema'")
        try:
            schema = Schema.from_json(obj["schema"])
        except (ConfigError, KeyError, TypeError, ValueError) as e:
            raise _damaged(path, f"bad schema: {e}") from None
        intervals = obj.get("intervals", [])
        if not isinstance(intervals, list):
            raise _damaged(path, "'intervals' is not a list")
        ims = tuple(IntervalMeta.from_json(im, path, f"intervals[{i}]",
                                           schema.interval_duration)
                    for i, im in enumerate(intervals))
        watermarks = _watermarks(obj, schema, path)
        _check_intervals(ims, schema, watermarks, path)
        dicts = obj.get("dictionaries", {})
        strings = {d.name for d in schema.string_dimensions}
        if not isinstance(dicts, dict) or not set(dicts) <= strings:
            raise _damaged(path, "'dictionaries' lists a column that is not a string dimension")
        ids = obj.get("batch_ids") or {}
        if not isinstance(ids, dict) or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) for t in ids.values()):
            raise _damaged(path, "'batch_ids' is not an object of times")
        last = obj.get("last_updated")
        if last is not None:
            last = _int(obj, "last_updated", path, "metadata", minimum=None)
        return cls(schema=schema,
                   wal_seq=_int(obj, "wal_seq", path, "metadata") if "wal_seq" in obj else 0,
                   intervals=ims,
                   dictionaries={k: DictMeta.from_json(k, v, path) for k, v in dicts.items()},
                   batch_ids={str(k): float(t) for k, t in ids.items()},
                   last_updated=last, format=fmt, watermarks=watermarks)


def _watermarks(obj: dict[str, Any], schema: Schema, path: Path | str) -> tuple[int, ...]:
    """The tier watermarks of db.json: one per tier boundary, each a multiple of its tier's
    duration, non-increasing; absent (all 0: nothing re-rolled yet) in a database created
    before its tiers were configured."""
    n = max(len(schema.tiers) - 1, 0)
    raw = obj.get("watermarks")
    if raw is None:
        return (0,) * n
    if not isinstance(raw, list) or len(raw) != n or not all(
            isinstance(w, int) and not isinstance(w, bool) for w in raw):
        raise _damaged(path, f"'watermarks' is not a list of {n} integers (one per tier "
                             "boundary)")
    for i, w in enumerate(raw):
        if w % schema.tiers[i + 1][0]:
            raise _damaged(path, f"watermarks[{i}]: {w} is not a multiple of its tier's "
                                 f"duration ({schema.tiers[i + 1][0]}s)")
        if i and w > raw[i - 1]:
            raise _damaged(path, f"watermarks[{i}]: {w} is after watermarks[{i - 1}]")
    return tuple(raw)


def _check_intervals(ims: tuple[IntervalMeta, ...], schema: Schema,
                     watermarks: tuple[int, ...], path: Path | str) -> None:
    """Interval starts are unique multiples of their durations, durations are the schema's,
    intervals never overlap, and each lies in its tier's range of the watermarks."""
    durations = schema.durations
    ordered = sorted(ims, key=lambda im: im.start)
    for a, b in itertools.pairwise(ordered):
        if a.start == b.start:
            raise _damaged(path, "an interval is listed twice")
        if a.start + a.duration > b.start:
            raise _damaged(path, f"interval {a.start} ({a.duration}s) overlaps interval "
                                 f"{b.start}")
    for im in ordered:
        if im.duration not in durations:
            raise _damaged(path, f"interval {im.start}: duration {im.duration}s is not one of "
                                 f"the schema's ({', '.join(f'{d}s' for d in durations)})")
        if im.start % im.duration:
            raise _damaged(path, "an interval start is not a multiple of the interval duration")
        tier = durations.index(im.duration)
        hi = watermarks[tier - 1] if tier else None  # tier i lies in [w_{i+1}, w_i)
        lo = watermarks[tier] if tier < len(watermarks) else None
        if (hi is not None and im.start + im.duration > hi) or (lo is not None
                                                                 and im.start < lo):
            raise _damaged(path, f"interval {im.start} ({im.duration}s) lies outside its "
                                 f"tier's range of the watermarks {list(watermarks)}")


def _canonical_crc(obj: dict[str, Any]) -> int:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return zlib.crc32(text.encode())


def meta_bytes(obj: dict[str, Any]) -> bytes:
    """db.json's bytes for a metadata object (`Meta.to_json()`): indented, with its checksum."""
    body = {k: v for k, v in obj.items() if k != "crc32"}
    return json.dumps({**body, "crc32": _canonical_crc(body)}, indent=1).encode()


def parse_meta(data: bytes, path: Path | str) -> Meta:
    """`Meta` from db.json's bytes, checksum checked (format gumshoe/2 on); CorruptDataError
    naming `path` when damaged."""
    try:
        obj = json.loads(data)
    except ValueError as e:
        raise _damaged(path, str(e)) from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:  # gumshoe/1 had no checksum
        crc = obj.pop("crc32", None)
        if crc != _canonical_crc(obj):
            raise CorruptDataError(f"{path}: metadata checksum mismatch (stored {crc!r}, "
                                   f"computed {_canonical_crc(obj)}): the file is damaged")
    return Meta.from_json(obj, path)


def read_meta(directory: Path) -> Meta:
    """A database directory's metadata. FileNotFoundError when it has none; CorruptDataError
    naming the file when it is damaged or of an unknown format."""
    path = directory / META
    return parse_meta(fileio.read_bytes(path), path)


def write_meta(directory: Path, meta: Meta, fsync: bool = True) -> None:
    """Replace db.json atomically: the commit point of every change to a database."""
    write_atomic(directory / META, meta_bytes(meta.to_json()), fsync=fsync)


def write_atomic(path: Path, data: bytes, fsync: bool = True) -> None:
    """Replace `path` by a file holding `data`: written to its `.tmp` name (fsync'd with
    `fsync`), renamed over `path`, then the directory fsync'd (with `fsync`).

    Every file descriptor is taken before the rename, so running out of them (EMFILE) fails
    before anything changed; on any failure before the rename the temporary file is removed
    and `path` is untouched."""
    tmp = path.with_name(tmp_name(path.name))
    dir_fd = fileio.open_dir(path.parent) if fsync else None
    try:
        try:
            with fileio.open_file(tmp, "wb") as f:
                fileio.write(f, data)
                f.flush()
                if fsync:
                    fileio.fsync(f.fileno())
            fileio.replace(tmp, path)
        except BaseException:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise
        if dir_fd is not None:
            fileio.fsync(dir_fd)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


# -- the directory lock -----------------------------------------------------------------------
def locked_error(where: str) -> DBLockedError:
    """The error for a database directory whose lock another process holds."""
    return DBLockedError(f"database {where!r} is in use: its directory is locked, most likely "
                         "by a running gumshoe server; stop the server first")


class DirLock:
    """`flock(LOCK_EX | LOCK_NB)` on a database directory, held until `release`: a running DB
    holds it, and every gumtool command takes it, so they never race. The kernel drops it when
    the process dies (kill -9 included)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            fd = fileio.open_dir(self.path)
        except FileNotFoundError:
            raise LayoutError(f"{self.path}: no such database directory") from None
        except NotADirectoryError:
            raise LayoutError(f"{self.path}: not a directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise locked_error(str(self.path)) from None
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- retention --------------------------------------------------------------------------------
def retention_cutoff(retention_days: int, interval_duration: int, now: float) -> int | None:
    """Intervals starting before this are out of retention (None: `retention_days` 0 keeps
    everything). An interval is dropped once it ended more than `retention_days` ago."""
    if not retention_days:
        return None
    return int(now) - retention_days * 86400 - interval_duration


def schema_retention_cutoff(schema: Schema, retention_days: int, now: float) -> int | None:
    """`retention_cutoff` of a database: with tiers, the last tier's keep decides (the cutoff
    is then a multiple of the coarsest duration, so it compares alike with an interval start
    of any tier and with a timestamp)."""
    tiers = schema.tiering
    if tiers is None:
        return retention_cutoff(retention_days, schema.interval_duration, now)
    return tiers.retention_cutoff(now)
