"""`gumtool clean`: after a crash, remove the files the metadata does not reference and verify
what it does reference (segment headers and checksums, dictionaries, the write-ahead log).

Imports gumshoe bulk, layout and segment. It takes the database's lock, so it never races a
running server. "Our" files are those `layout.kind_of` names (the same test the server applies
at start-up); anything else is listed and left alone. Write-ahead log files are removed only
when every record in them is covered by the flush recorded in db.json (those still needed are
replayed at the next start).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gumshoe.bulk import StoredDB, stored_meta
from gumshoe.errors import CorruptDataError, GumshoeError
from gumshoe.layout import META, DirLock, Meta, is_ours, unneeded_wal_files, wal_files
from gumshoe.segment import Segment

from .common import say

HELP = "repair a GumshoeDB database that was stopped in an inconsistent state"
DESCRIPTION = """\
Check the database at --dir after a crash: remove the files its metadata (db.json) does not
reference -- leftover segment files (*.seg), temporary files (*.tmp), old dictionary files and
write-ahead log files whose records are all flushed -- then verify db.json (checksum), every
referenced segment (header and column checksums), dictionary (size and checksum) and the
write-ahead log (record checksums), and report what was done.
With --dry-run nothing is removed. Other files are listed and left alone. The exit status is 1
when a referenced file is missing or corrupt (restore it from a backup or a replica). The
database must not be in use by a running server."""
EXAMPLE = "gumtool clean --dir db --dry-run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, metavar="DIR", help="the database directory")
    p.add_argument("--dry-run", action="store_true", help="report only; remove nothing")


def check(directory: Path, dry_run: bool, lock: DirLock) -> tuple[list[str], bool]:
    """Clean and verify a locked database directory; the report lines and whether a
    problem remains."""
    lines: list[str] = []
    problems: list[str] = []
    has_meta = (directory / META).exists()
    meta: Meta | None = stored_meta(directory) if has_meta else None
    referenced = meta.files() if meta else {META}
    wal = {p.name for _, p in wal_files(directory)}
    stale_wal = ({p.name for p in unneeded_wal_files(directory, meta.wal_seq)}
                 if meta else set())
    extra, other = [], []
    for p in sorted(directory.iterdir()):
        if p.name in referenced or (p.name in wal and p.name not in stale_wal):
            continue
        if p.is_file() and is_ours(p.name):
            extra.append(p)
        else:
            other.append(p.name)
    verb = "would remove" if dry_run else "removed"
    if extra:
        lines.append(f"{verb} {len(extra)} file(s) not referenced by the metadata:")
        for p in extra:
            if not dry_run:
                p.unlink()
            lines.append(f"  {p.name}")
    else:
        lines.append("no unreferenced files found")
    if other:
        lines.append(f"left alone {len(other)} other file(s): {', '.join(other)}")
    if meta is None:
        if extra:
            lines.append(f"no {META}: the directory held files of a database that was never "
                         "completely created")
        if wal:
            problems.append(f"no {META} but write-ahead log files are present "
                            f"({', '.join(sorted(wal))}); they cannot be replayed without it "
                            "and were left alone")
        else:
            lines.append(f"no {META}: a server started here creates a new database")
        lines += [f"PROBLEM: {p}" for p in problems]
        return lines, bool(problems)

    lines.append(f"metadata ok ({META}: format {meta.format}"
                 + (", checksummed)" if meta.format != "gumshoe/1" else
                    ", written before checksums: its next flush adds them)"))
    segments = bad = 0
    for im in meta.intervals:
        for s in im.segments:
            segments += 1
            try:
                seg = Segment.open(directory / s.file, meta.schema, verify=True)
                if seg.rows != s.rows:
                    raise CorruptDataError(f"{directory / s.file}: segment holds {seg.rows} "
                                           f"rows, the metadata says {s.rows}")
            except CorruptDataError as e:
                bad += 1
                problems.append(str(e))
    lines.append(f"verified {segments - bad} of {segments} segment(s) in "
                 f"{len(meta.intervals)} interval(s): headers and checksums "
                 + ("ok" if not bad else f"{bad} BAD"))
    try:
        db = StoredDB(directory, lock=lock, verify=False)
    except GumshoeError as e:
        problems.append(f"dictionaries or write-ahead log: {e}")
    else:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in db.dictionaries.items()) or "none"
        unchecked = sorted(k for k, e in meta.dictionaries.items() if e.crc32 is None)
        lines.append(f"dictionaries ok (strings: {sizes}"
                     + (f"; no checksum recorded yet for {', '.join(unchecked)})" if unchecked
                        else ")"))
        kept = sorted(wal - stale_wal)
        lines.append(f"write-ahead log ok: {len(kept)} file(s) kept, {db.pending_rows} unflushed "
                     "input row(s) (replayed at the next start)")
    lines += [f"PROBLEM: {p}" for p in problems]
    return lines, bool(problems)


def run(args: argparse.Namespace) -> int:
    with DirLock(args.dir) as lock:
        lines, problem = check(Path(args.dir), args.dry_run, lock)
    say(*lines)
    if problem:
        say("the database has problems that clean cannot repair (see above)")
        return 1
    say("done")
    return 0
