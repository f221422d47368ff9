"""Running out of file descriptors (EMFILE/ENFILE) is not a disk fault: the insert or flush
fails with TransientStorageError, the database is not marked failed, nothing acknowledged is
lost, and the next insert or flush succeeds once descriptors are free. In-process with
fileio's fault injection at every open of a flush, and in a real process whose descriptors run
out under RLIMIT_NOFILE. EIO/ENOSPC stay fail-stop (test_recovery.py)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gumshoe import fileio
from gumshoe.block import Block
from gumshoe.db import DB
from gumshoe.errors import StorageFailedError, TransientStorageError
from gumshoe.layout import kind_of
from gumshoe.wal import WriteAheadLog
from tests.crash.helpers import batch_rows, make_config, problems, totals
from tests.storage.contents import check_files

ROOT = Path(__file__).resolve().parents[2]


class FastIO(fileio.FaultyIO):
    """Fails the Nth open (EMFILE by default) and skips real fsyncs (not under test here)."""

    def __init__(self, fail_at: int = 0, err: int = errno.EMFILE, sticky: bool = False) -> None:
        super().__init__(fail_at, err, kinds=("open",), sticky=sticky)

    def fsync(self, fd: int) -> None:
        pass


def insert(db: DB, bs: range | list[int], acked: set[int]) -> None:
    for b in bs:
        db.insert(batch_rows(b), f"b{b}")
        acked.add(b)


def setup(d: Path, durability: str) -> tuple[Any, DB, set[int]]:
    """A database with flushed batches and unflushed ones (new strings: a new dictionary
    generation, and new generations of flushed intervals)."""
    cfg = make_config(d, durability)
    acked: set[int] = set()
    db = DB(cfg)
    insert(db, range(4), acked)
    db.flush()
    insert(db, range(4, 10), acked)
    return cfg, db, acked


def check(db: DB, acked: set[int]) -> None:
    assert problems(totals(db), acked, acked) == []


@pytest.mark.parametrize("durability", ["fsync", "os", "none"])
def test_flush_out_of_descriptors_at_every_open(tmp_path: Path, durability: str) -> None:
    _, probe_db, _ = setup(tmp_path / "probe", durability)
    with fileio.inject(FastIO()) as probe:
        probe_db.flush()
    probe_db.close()
    assert probe.calls >= 5  # log file, segments, their maps, dictionary, db.json, ...
    for n in range(1, probe.calls + 1):
        err = errno.ENFILE if n % 3 == 0 else errno.EMFILE
        cfg, db, acked = setup(tmp_path / f"n{n}", durability)
        with fileio.inject(FastIO(n, err)) as io, pytest.raises(TransientStorageError,
                                                                 match="Too many open files"):
            db.flush()
        assert io.failed == ["open"], n
        assert db.failed is None, n
        assert db.dir is not None
        left = {p.name for p in db.dir.iterdir() if kind_of(p.name) != "wal"}
        assert left == db.referenced_files(), n  # the failed attempt removed its files
        check(db, acked)  # every acknowledged row is still visible
        insert(db, [10, 11], acked)  # and the database takes inserts
        check(db, acked)
        db.flush()  # the retry writes the rows of both flushes
        check_files(db)  # the failed attempt's files are gone; nothing unreferenced
        check(db, acked)
        insert(db, [12], acked)
        db.close()
        db = DB(cfg)
        check(db, acked)
        check_files(db)
        db.close()


def test_descriptors_stay_exhausted_for_a_while(tmp_path: Path) -> None:
    """Every open fails for a while (sticky): flushes fail each time, inserts that need no new
    file go on; once descriptors are free again, one flush catches up."""
    cfg, db, acked = setup(tmp_path / "db", "fsync")
    with fileio.inject(FastIO(1, sticky=True)) as io:
        for b in range(10, 14):
            with pytest.raises(TransientStorageError):
                db.flush()
            insert(db, [b], acked)
            check(db, acked)
        assert db.failed is None and len(io.failed) >= 4
    db.flush()
    check_files(db)
    db.close()
    db = DB(cfg)
    check(db, acked)
    assert db.wal is not None and db.wal.stats["replayed"] == 0  # all of it was flushed
    db.close()


def test_close_out_of_descriptors_loses_nothing(tmp_path: Path) -> None:
    cfg, db, acked = setup(tmp_path / "db", "fsync")
    with fileio.inject(FastIO(1, sticky=True)), pytest.raises(TransientStorageError):
        db.close()  # its flush fails; the log still holds every row
    db = DB(cfg)
    check(db, acked)
    db.close()


def test_open_out_of_descriptors(tmp_path: Path) -> None:
    cfg, db, acked = setup(tmp_path / "db", "fsync")
    db.close(flush=False)
    with fileio.inject(FastIO()) as probe:
        DB(cfg).close(flush=False)
    for n in range(1, probe.calls + 1):
        with fileio.inject(FastIO(n)), pytest.raises(TransientStorageError,
                                                     match="cannot open database"):
            DB(cfg)
        db = DB(cfg)  # the failed open released the lock and changed nothing
        check(db, acked)
        db.close(flush=False)


def test_disk_faults_stay_fail_stop(tmp_path: Path) -> None:
    """The same opens failing with EIO or ENOSPC: fail-stop, as every other disk fault."""
    for err in (errno.EIO, errno.ENOSPC):
        cfg, db, acked = setup(tmp_path / f"e{err}", "os")
        with fileio.inject(FastIO(2, err)), pytest.raises(StorageFailedError):
            db.flush()
        assert db.failed
        with pytest.raises(StorageFailedError, match="read-only"):
            db.insert(batch_rows(20), "b20")
        db.close()
        db = DB(cfg)
        check(db, acked)
        db.close()


def block_of(n: int) -> tuple[np.ndarray, Block]:
    return (np.arange(n, dtype=np.int64),
            Block(n, np.ones(n, np.int64), {}, {}, {"m": np.arange(n, dtype=np.int64)}))


@pytest.mark.parametrize("mode", ["fsync", "os"])
def test_log_roll_out_of_descriptors(tmp_path: Path, mode: str) -> None:
    """An append that has to start a new log file and cannot: TransientStorageError, nothing
    written, the log not failed; the next append rolls and goes on."""
    wal = WriteAheadLog(tmp_path, mode, 3600.0, segment_bytes=300)
    list(wal.recover(0))
    acked = []
    for i in range(12):
        ts, block = block_of(5)
        if i % 3 == 2:
            with fileio.inject(FastIO(1)) as io:
                try:
                    wal.commit(wal.append(f"id{i}", ts, block, {}, {}))
                except TransientStorageError:
                    assert wal.seen(f"id{i}") is None  # not remembered: a retry applies it
                    continue
                finally:
                    assert wal.failed is None
            assert not io.failed  # no roll was due
        wal.commit(wal.append(f"id{i}", ts, block, {}, {}))
        acked.append(f"id{i}")
    assert len(acked) < 12 and len(wal.files()) > 2
    wal.close()
    again = WriteAheadLog(tmp_path, mode, 3600.0)
    assert [r.batch_id for r in again.recover(0)] == acked
    again.close()


def test_rotate_out_of_descriptors(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, "fsync", 3600.0)
    list(wal.recover(0))
    ts, block = block_of(3)
    wal.commit(wal.append(None, ts, block, {}, {}))
    with fileio.inject(FastIO(1)), pytest.raises(TransientStorageError):
        wal.rotate()
    assert wal.failed is None and len(wal.files()) == 1
    wal.commit(wal.append(None, ts, block, {}, {}))
    assert wal.rotate() == 2 and len(wal.files()) == 2
    wal.close()


def test_a_real_process_out_of_descriptors(tmp_path: Path) -> None:
    """RLIMIT_NOFILE lowered in a child and every descriptor taken: the flush fails at each of
    its opens in turn (one descriptor freed per retry) without failing the database, until
    it succeeds; nothing acknowledged is lost across a reopen."""
    done = subprocess.run([sys.executable, "-m", "tests.storage.fd_child", str(tmp_path / "db")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["problems"] == [] and out["acked"] == list(range(11)), out
    assert out["insert_while_exhausted"] and out["failed_inserts"] == 0, out
    assert out["failed_flushes"] >= 3, out  # out of descriptors at several points of a flush
    assert "failed" not in out and "lost" not in out and "gave_up" not in out, out
    assert "Too many open files" in out["first_error"], out
