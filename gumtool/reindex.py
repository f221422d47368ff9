"""`gumtool reindex`: rebuild a database from the raw archive under a new schema.

Imports gumshoe config, schema, batch, db, bulk, layout, rawformat (time parsing), rawrecord and
rawscan, gumtool's rewrite (checked casts) and common helpers, and tqdm. The archive is only
read (a running server may be writing it: its active file is read up to its last whole
record), a window of time at a time in time order (`rawscan`, windows ending on interval
boundaries, so each interval arrives whole). Each window's raw rows are converted to the new
schema (columns matched by name: a column missing from the raw rows is nil, or 0 for a metric;
a column of the raw rows the schema lacks is dropped, its rows rolled up together; values must
fit the new types) and applied with the storage layer's own `DB.insert_batch` to a database in
a hidden directory beside the destination, flushed every `--flush-rows` rows; the directory is
fsync'd and renamed into place only when complete, as migrate and merge do.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import operator
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gumshoe import fileio
from gumshoe.batch import Batch
from gumshoe.bulk import BulkError, check_destination
from gumshoe.config import ArchiveConfig, Config
from gumshoe.db import DB
from gumshoe.layout import staging_prefix
from gumshoe.rawformat import TIME_MAX, parse_time
from gumshoe.rawrecord import RawChunk, RawColumn
from gumshoe.rawscan import scan_directory
from gumshoe.schema import COUNT_DTYPE, Column, Schema

from .common import add_quiet, destination, note, positive_int, say
from .import_checkpoint import fsync_tree
from .rewrite import ConversionError, cast_exact

HELP = "rebuild a database from the raw archive under a new schema"
DESCRIPTION = """\
Rebuild a database from the raw archive at --archive (the [archive] dir of a server: every
batch it accepted, as accepted) under the schema of --new-db-config, into that config's
database_dir (which must not exist yet, or be an empty directory). Columns are matched by name:
a new dimension gets the values the raw rows hold for it (its history), a dimension the raw rows
lack is nil and a metric they lack 0; columns the new config does not list are dropped (rows
that become identical roll up). --from/--to (ISO 8601 or Unix seconds) keep the rows with
from <= timestamp < to. The new config's retention_days applies. The archive is only read and
may be in use by a running server. The new database appears only when complete."""
EXAMPLE = ("gumtool reindex --archive db/archive --new-db-config wide.toml "
           "--from 2026-01-01T00:00:00Z")
FLUSH_ROWS = 2_000_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archive", required=True, metavar="DIR",
                   help="the raw archive directory to read (e.g. db/archive)")
    p.add_argument("--new-db-config", required=True, metavar="CONFIG",
                   help="config (TOML) of the new database: its schema and database_dir")
    p.add_argument("--from", dest="start", metavar="T",
                   help="only rows at or after T (ISO 8601 or Unix seconds)")
    p.add_argument("--to", dest="end", metavar="T",
                   help="only rows before T (ISO 8601 or Unix seconds)")
    p.add_argument("--flush-rows", type=positive_int, default=FLUSH_ROWS, metavar="N",
                   help=f"write segments every N raw rows (default {FLUSH_ROWS})")
    add_quiet(p)


# -- raw columns -> the new schema ----------------------------------------------------------------
def _string_values(col: RawColumn, name: str) -> list[str | None]:
    if col.values.dtype != object:
        raise ConversionError(f"column {name!r}: the raw rows hold numbers "
                              f"({col.values.dtype}); the new config makes it a string column")
    values = col.values.tolist()
    if not set(map(type, values)) <= {str, type(None)}:
        raise ConversionError(f"column {name!r}: the raw rows hold numbers as well as strings; "
                              "the new config makes it a string column")
    return values


def _numbers(col: RawColumn, c: Column, target: np.dtype, what: str) -> np.ndarray:
    if col.values.dtype == object:
        raise ConversionError(f"column {c.name!r}: the raw rows hold strings; the new config "
                              f"makes it {c.type_name}")
    return cast_exact(col.values, target, c, col.nil, what)


def to_batch(chunk: RawChunk, schema: Schema) -> Batch:
    """Raw rows as a validated batch of `schema` (ConversionError naming a column that does
    not fit)."""
    n = chunk.n
    dims: dict[str, object] = {}
    nils: dict[str, np.ndarray | None] = {}
    for d in schema.dimensions:
        col = chunk.columns.get(d.name)
        if col is None:
            dims[d.name] = [None] * n if d.is_string else np.zeros(n, d.dtype)
            nils[d.name] = np.ones(n, bool) if n else None
        elif d.is_string:
            values = _string_values(col, d.name)
            nil = np.fromiter(map(operator.is_, values, itertools.repeat(None)), bool, n)
            dims[d.name], nils[d.name] = values, (nil if nil.any() else None)
        else:
            dims[d.name] = _numbers(col, d, d.dtype, "raw value")
            nils[d.name] = col.nil
    metrics: dict[str, np.ndarray] = {}
    for m in schema.metrics:
        col = chunk.columns.get(m.name)
        if col is None:
            metrics[m.name] = m.kind.empty(n, m.store_dtype)
        else:  # single rows must fit the declared type; rolled-up sums its sum type
            target = m.store_dtype if chunk.count is not None else m.dtype
            metrics[m.name] = m.kind.fill_missing(
                _numbers(col, m, target, "raw value").astype(m.store_dtype), col.nil)
    identities: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for u in schema.uniques:  # the archive keeps the identities' hashes: they are the sketches'
        col = chunk.columns.get(u.name)
        if col is None:
            identities[u.name] = (np.zeros(n, np.uint64), np.zeros(n, bool))
        elif col.role != "uniques":
            raise ConversionError(f"column {u.name!r}: the raw rows hold values, not the identity "
                                  "hashes a uniques metric counts (the archive keeps only "
                                  "those of uniques metrics)")
        else:
            present = np.ones(n, bool) if col.nil is None else ~col.nil
            identities[u.name] = (np.where(present, col.values, 0).astype(np.uint64), present)
    for c in (*schema.dimensions, *schema.metrics):  # identity hashes are no values
        col = chunk.columns.get(c.name)
        if col is not None and col.role == "uniques":
            raise ConversionError(f"column {c.name!r}: the raw rows hold identity hashes (a "
                                  f"uniques metric); the new config makes it {c.type_name}")
    counts = None if chunk.count is None else chunk.count.astype(COUNT_DTYPE)
    return Batch(n, chunk.ts, dims, nils, metrics, counts, identities=identities)


def describe(raw: list[str], schema: Schema) -> list[str]:
    """What the new schema makes of the raw columns."""
    notes = []
    for c in (*schema.dimensions, *schema.metrics):
        if c.name not in raw:
            notes.append(f"{c.role} {c.name}: not in the raw rows, "
                         f"{'nil' if c.role == 'dimension' else '0'} in every row")
    for u in schema.uniques:
        if u.name not in raw:
            notes.append(f"uniques {u.name}: not in the raw rows, no identity in any row")
    for name in raw:
        if schema.column(name) is None:
            notes.append(f"drop {name}: not in the new config (rows that become identical "
                         "roll up)")
    return notes


# -- the run --------------------------------------------------------------------------------------
@dataclasses.dataclass
class Summary:
    raw_rows: int = 0
    rejected: int = 0  # outside the new config's retention
    seconds: float = 0.0


def reindex(archive: Path, config: Config, schema: Schema, dest: Path, lo_excl: int,
            hi_incl: int, flush_rows: int = FLUSH_ROWS, quiet: bool = True) -> Summary:
    """Build the database of `config` at `dest` from the raw rows in (lo_excl, hi_incl]."""
    check_destination(dest)
    t0 = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(dest), dir=dest.parent))
    summary = Summary()
    try:
        scan = scan_directory(archive, lo_excl, hi_incl, scratch=staging,
                              align=schema.interval_duration)
        if not quiet:
            for line in describe(list(scan.columns), schema):
                note(f"reindex: {line}")
        cfg = config.replace(database_dir=str(staging / "db"), durability="none",
                             archive=ArchiveConfig())
        bar = tqdm(total=scan.rows_estimate, unit="rows", unit_scale=True, file=sys.stderr,
                   disable=True if quiet else None, dynamic_ncols=True, mininterval=0.25,
                   desc="reindex")
        db = DB(cfg)
        try:
            pending = 0
            for chunk in scan.chunks():
                r = db.insert_batch(to_batch(chunk, schema))
                summary.raw_rows += chunk.n
                summary.rejected += r.rejected
                pending += chunk.n
                if pending >= flush_rows:  # between windows: whole intervals
                    db.flush()
                    pending = 0
                bar.update(chunk.n)
        finally:
            bar.close()
            db.close()
        fsync_tree(staging / "db")
        check_destination(dest)
        fileio.replace(staging / "db", dest)
        fileio.fsync_dir(dest.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    summary.seconds = time.perf_counter() - t0
    return summary


def run(args: argparse.Namespace) -> int:
    config, schema, dest = destination(args.new_db_config)
    archive = Path(args.archive)
    if not archive.is_dir():
        raise BulkError(f"--archive {args.archive}: no such directory")
    lo_excl = -1 if args.start is None else int(np.ceil(parse_time(args.start, "--from"))) - 1
    hi_incl = (TIME_MAX if args.end is None
               else int(np.ceil(parse_time(args.end, "--to"))) - 1)
    if lo_excl >= hi_incl:
        raise BulkError("--from must be before --to")
    s = reindex(archive, config, schema, dest, lo_excl, hi_incl, args.flush_rows, args.quiet)
    say(f"reindexed {archive} -> {dest}: {s.raw_rows} raw rows in {s.seconds:.1f}s")
    if s.rejected:
        say(f"{s.rejected} rows outside the new config's retention "
            f"({config.retention_days} days) were not written")
    say("done")
    return 0
