"""The archive as the storage layer writes it: what is kept (every accepted row, as accepted,
exactly once), rotation and file names, `keep`, restarts and log replay (crash images: the
directory as a kill -9 leaves it), a failing archive write, MEMORY databases."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import pytest

from gumshoe import archive as archive_mod
from gumshoe import fileio
from gumshoe.archive import list_files, parse_time
from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.errors import ConfigError, CorruptDataError, StorageFailedError
from gumshoe.wal import read_frames

from .helpers import T0, archive_rows, config, sample_rows, sorted_rows


def insert_all(db: DB, rows: list[dict], size: int, prefix: str = "b") -> None:
    for i in range(0, len(rows), size):
        db.insert(rows[i:i + size], f"{prefix}{i}")


def crash_image(db_dir: Path, image: Path, tmp: Path) -> Path:
    """A copy of an open database's directory (what a kill -9 leaves: every write reached the
    OS) and a config that opens it."""
    shutil.copytree(db_dir, image)
    (tmp / "image").mkdir(exist_ok=True)
    return config(tmp / "image", image)


def test_archive_holds_every_accepted_row_as_accepted(tmp_path: Path) -> None:
    cfg = config(tmp_path, tmp_path / "db")
    rows = sample_rows(1500, 1)
    rows[3]["at"] = rows[3]["at"] + 0.75  # a float timestamp is floored
    with DB(load_config(cfg)) as db:
        insert_all(db, rows, 100)
        db.insert(rows[:100], "b0")  # a retry of an applied batch: not archived again
        db.insert([])  # nothing
        live = archive_rows(tmp_path / "db" / "archive")  # read while the DB writes
    assert live == sorted_rows(rows)
    assert archive_rows(tmp_path / "db" / "archive") == sorted_rows(rows)


def test_rows_outside_retention_are_not_archived(tmp_path: Path) -> None:
    cfg = config(tmp_path, tmp_path / "db", retention_days=1)
    now = time.time()
    new = [{"at": int(now) - 60, "name": "new", "visits": 1}]
    old = [{"at": int(now) - 5 * 86400, "name": "old", "visits": 1}]
    with DB(load_config(cfg)) as db:
        r = db.insert(new + old)
        assert (r.inserted, r.rejected) == (1, 1)
        db.insert(old)  # all rejected: nothing to archive
    assert archive_rows(tmp_path / "db" / "archive") == sorted_rows(new)


def test_rotation_names_files_by_time_range(tmp_path: Path) -> None:
    cfg = config(tmp_path, tmp_path / "db", archive='rotate = "8KB"')
    rows = sample_rows(2000, 2, hours=48)
    with DB(load_config(cfg)) as db:
        insert_all(db, rows, 50)
        assert db.archive is not None and db.archive.stats["rotations"] >= 3
    closed, active = list_files(tmp_path / "db" / "archive")
    assert not active  # a clean close closes the active file
    seqs = [(f.first, f.last) for f in closed]
    assert seqs[0][0] == 1 and all(b[0] == a[1] + 1 for a, b in zip(seqs, seqs[1:]))
    for f in closed:  # the name's time range is the range of the file's rows
        assert f.tmin is not None and f.tmax is not None
        assert parse_time(f.path.name.split(".")[1].split("-")[0]) == f.tmin
        mine = archive_rows(tmp_path / "db" / "archive", f.tmin - 1, f.tmax)
        assert mine and min(r["at"] for r in mine) == f.tmin
    assert archive_rows(tmp_path / "db" / "archive") == sorted_rows(rows)


def test_keep_deletes_files_older_than_it(tmp_path: Path) -> None:
    cfg = config(tmp_path, tmp_path / "db", archive='rotate = "2KB"\nkeep = "2d"')
    rows = sample_rows(600, 3)
    with DB(load_config(cfg)) as db:
        insert_all(db, rows, 50)
    arch = tmp_path / "db" / "archive"
    closed, _ = list_files(arch)
    assert len(closed) >= 4
    old, kept = closed[:2], closed[2:]
    for f in old:  # last written three days ago
        t = time.time() - 3 * 86400
        os.utime(f.path, (t, t))
    t = time.time() - 86400
    os.utime(kept[0].path, (t, t))
    with DB(load_config(cfg)):
        pass
    assert [f.path.name for f in list_files(arch)[0]] == [f.path.name for f in kept]


def test_keep_is_checked_while_writing(tmp_path: Path) -> None:
    now = [time.time()]
    cfg = load_config(config(tmp_path, tmp_path / "db", archive='rotate = "2KB"\nkeep = "1h"'))
    db = DB(cfg, clock=lambda: now[0])
    try:
        insert_all(db, sample_rows(600, 4), 20)
        assert db.archive is not None
        before = len(db.archive.files())
        assert before >= 3
        now[0] += 2 * 3600  # every closed file is now older than keep
        db.insert(sample_rows(20, 5), "later")
        assert db.archive.stats["expired"] == before
        assert all(f.mtime >= now[0] - 3600 for f in db.archive.files())
    finally:
        db.close()


def test_restart_and_replay_archive_each_batch_once(tmp_path: Path) -> None:
    """A crash image with unflushed batches: the log replays them, the archive already has
    them, so nothing is archived twice; a flushed and restarted database adds nothing."""
    cfg = config(tmp_path, tmp_path / "db", archive='rotate = "16KB"')
    rows = sample_rows(900, 6)
    db = DB(load_config(cfg))
    try:
        insert_all(db, rows[:300], 50)
        db.flush()  # the log is trimmed: these are no longer replayed
        insert_all(db, rows[300:], 50, "c")
        image = crash_image(tmp_path / "db", tmp_path / "img", tmp_path)
    finally:
        db.close()
    with DB(load_config(image)) as again:
        assert again.archive is not None
        assert again.stats["replayed_rows"] == 600
        assert again.archive.stats["replayed"] == 0
    assert archive_rows(tmp_path / "img" / "archive") == sorted_rows(rows)
    with DB(load_config(image)):  # and once more, after a clean close
        pass
    assert archive_rows(tmp_path / "img" / "archive") == sorted_rows(rows)


def test_batches_the_archive_lost_are_archived_from_the_log(tmp_path: Path) -> None:
    """Cut the archive's active file back to an earlier record (its tail never reached the
    disk): replay archives exactly the batches after the last one it still has."""
    cfg = config(tmp_path, tmp_path / "db")
    rows = sample_rows(500, 7)
    db = DB(load_config(cfg))
    try:
        insert_all(db, rows[:200], 50)
        arch = tmp_path / "db" / "archive"
        _, (active,) = list_files(arch)
        cut = active.path.stat().st_size  # the end of batch 4
        insert_all(db, rows[200:], 50, "c")
        image = crash_image(tmp_path / "db", tmp_path / "img", tmp_path)
    finally:
        db.close()
    _, (active,) = list_files(tmp_path / "img" / "archive")
    with open(active.path, "r+b") as f:
        f.truncate(cut + 7)  # plus a torn start of the next record
    with DB(load_config(image)) as again:
        assert again.archive is not None and again.archive.stats["replayed"] == 6
    assert archive_rows(tmp_path / "img" / "archive") == sorted_rows(rows)


def record_offsets(path: Path) -> list[int]:
    """Where each record of an archive file starts."""
    return [off for _, _, off in read_frames(path, int(path.name.split(".")[1]), True, False,
                                             "raw archive", repair=False)]


@pytest.mark.parametrize("damaged", [4, 1])
def test_damage_in_the_part_not_yet_fsynced(tmp_path: Path, damaged: int) -> None:
    """After a power loss the archive's active file may be damaged where it was not fsync'd
    yet: everything after the last flush (which fsyncs the archive first). Damage there is cut
    off and those batches archived again from the log; damage before it (records no log holds
    any more) refuses start-up, naming the file."""
    cfg = config(tmp_path, tmp_path / "db", durability="fsync")
    rows = sample_rows(350, 14)
    db = DB(load_config(cfg))
    try:
        insert_all(db, rows[:150], 50)  # log records 1-3
        db.flush()
        insert_all(db, rows[150:], 50, "c")  # 4-7: unflushed
        image = crash_image(tmp_path / "db", tmp_path / "img", tmp_path)
    finally:
        db.close()
    _, (active,) = list_files(tmp_path / "img" / "archive")
    offsets = record_offsets(active.path)
    assert len(offsets) == 7
    with open(active.path, "r+b") as f:  # a byte of record `damaged + 1`'s payload
        f.seek(offsets[damaged] + 30)
        byte = f.read(1)
        f.seek(offsets[damaged] + 30)
        f.write(bytes([byte[0] ^ 0xFF]))
    if damaged < 3:
        with pytest.raises(CorruptDataError, match=f"{active.path}.*no longer holds"):
            DB(load_config(image))
        return
    with DB(load_config(image)) as again:
        assert again.archive is not None and again.archive.stats["replayed"] == 7 - damaged
    assert archive_rows(tmp_path / "img" / "archive") == sorted_rows(rows)


def test_a_new_database_on_an_old_archive_starts_a_new_epoch(tmp_path: Path) -> None:
    """Log sequence numbers start again in a new database: records of the old one must not
    make the new one's replayed batches look archived."""
    arch = tmp_path / "shared"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = config(tmp_path / "a", tmp_path / "a" / "db", archive=f'dir = "{arch}"')
    second = config(tmp_path / "b", tmp_path / "b" / "db", archive=f'dir = "{arch}"')
    rows = sample_rows(400, 8)
    with DB(load_config(first)) as db:
        insert_all(db, rows[:300], 50)
    db = DB(load_config(second))
    try:
        _, (active,) = list_files(arch)
        cut = active.path.stat().st_size  # the new database's marker is in
        insert_all(db, rows[300:], 50, "c")  # log records 1 and 2 of the new database
        shutil.copytree(arch, tmp_path / "arch-img")
        shutil.copytree(tmp_path / "b" / "db", tmp_path / "b-img")
    finally:
        db.close()
    _, (active,) = list_files(tmp_path / "arch-img")
    with open(active.path, "r+b") as f:
        f.truncate(cut)  # the new database's batches never reached the archive
    (tmp_path / "c").mkdir()
    image = config(tmp_path / "c", tmp_path / "b-img", archive=f'dir = "{tmp_path}/arch-img"')
    with DB(load_config(image)) as again:
        assert again.archive is not None and again.archive.stats["replayed"] == 2
    assert archive_rows(tmp_path / "arch-img") == sorted_rows(rows)


def test_a_failed_archive_write_is_never_acknowledged(tmp_path: Path) -> None:
    """The archive write fails (the disk is full): the insert fails, the database refuses
    writes; after a restart the batch (in the log) is applied and archived once."""
    cfg = config(tmp_path, tmp_path / "db")
    rows = sample_rows(200, 9)
    db = DB(load_config(cfg))
    try:
        db.insert(rows[:100], "one")
        with fileio.inject(fileio.FaultyIO(fail_at=2, err=errno.ENOSPC, kinds=("write",))):
            with pytest.raises(StorageFailedError, match="sidecar write"):
                db.insert(rows[100:], "two")  # write 1: the log; write 2: the archive
        with pytest.raises(StorageFailedError):
            db.insert(rows[:1], "three")
    finally:
        db.close(flush=False)
    with DB(load_config(cfg)) as again:
        assert again.stats["replayed_rows"] == 200
        assert again.insert(rows[100:], "two").duplicate
    assert archive_rows(tmp_path / "db" / "archive") == sorted_rows(rows)


@pytest.mark.parametrize("durability", ["fsync", "none"])
def test_durability_modes(tmp_path: Path, durability: str) -> None:
    cfg = config(tmp_path, tmp_path / "db", durability=durability)
    rows = sample_rows(300, 10)
    with DB(load_config(cfg)) as db:
        insert_all(db, rows, 60)
    assert archive_rows(tmp_path / "db" / "archive") == sorted_rows(rows)


def test_memory_database_needs_an_archive_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="archive.dir"):
        DB(load_config(config(tmp_path, "MEMORY")))
    cfg = config(tmp_path, "MEMORY", archive=f'dir = "{tmp_path / "arch"}"')
    rows = sample_rows(100, 11)
    with DB(load_config(cfg)) as db:
        insert_all(db, rows, 30)
    assert archive_rows(tmp_path / "arch") == sorted_rows(rows)


def test_an_archive_is_written_by_one_database_at_a_time(tmp_path: Path) -> None:
    from gumshoe.errors import DBLockedError
    arch = tmp_path / "shared"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with DB(load_config(config(tmp_path / "a", tmp_path / "a" / "db",
                               archive=f'dir = "{arch}"'))):
        with pytest.raises(DBLockedError):
            DB(load_config(config(tmp_path / "b", tmp_path / "b" / "db",
                                  archive=f'dir = "{arch}"')))


def test_leftover_active_files_are_closed_at_start(tmp_path: Path) -> None:
    """A rotation cut short leaves two active files: the older is closed at start."""
    cfg = config(tmp_path, tmp_path / "db")
    rows = sample_rows(200, 12)
    db = DB(load_config(cfg))
    try:
        insert_all(db, rows, 50)
        image = crash_image(tmp_path / "db", tmp_path / "img", tmp_path)
    finally:
        db.close()
    arch = tmp_path / "img" / "archive"
    _, (active,) = list_files(arch)
    (arch / archive_mod.active_name(active.first + 4)).touch()  # the next file, empty
    with DB(load_config(image)) as again:
        again.insert(sample_rows(10, 13), "more")
    closed, active_left = list_files(arch)
    assert not active_left and len(closed) == 2
    assert archive_rows(arch) == sorted_rows(rows + sample_rows(10, 13))


def test_damage_in_a_rotation_cut_short(tmp_path: Path) -> None:
    """A power loss in a rotation: the new file exists (empty), the old one was not fsync'd
    yet and is damaged after the last flush. It is cut, closed, and the batches re-archived."""
    cfg = config(tmp_path, tmp_path / "db", durability="fsync")
    rows = sample_rows(300, 15)
    db = DB(load_config(cfg))
    try:
        insert_all(db, rows[:100], 50)
        db.flush()
        insert_all(db, rows[100:], 50, "c")  # log records 3-6
        image = crash_image(tmp_path / "db", tmp_path / "img", tmp_path)
    finally:
        db.close()
    arch = tmp_path / "img" / "archive"
    _, (active,) = list_files(arch)
    offsets = record_offsets(active.path)
    with open(active.path, "r+b") as f:
        f.seek(offsets[4] + 30)
        byte = f.read(1)
        f.seek(offsets[4] + 30)
        f.write(bytes([byte[0] ^ 0xFF]))
    (arch / archive_mod.active_name(7)).touch()
    with DB(load_config(image)) as again:
        assert again.archive is not None and again.archive.stats["replayed"] == 2
    assert archive_rows(arch) == sorted_rows(rows)
