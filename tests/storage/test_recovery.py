"""DB-level durability: replay exactly once, crash points around flush, idempotent batch ids
(also across restarts), torn tail vs corruption at open, durability modes, fail-stop, and
I/O-error injection iterated over every write/fsync/rename of an insert + flush run."""

from __future__ import annotations

import errno
import itertools
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

import pytest

import gumshoe.wal
from gumshoe import fileio
from gumshoe.batch import parse_rows
from gumshoe.db import DB
from gumshoe.errors import CorruptDataError, StorageFailedError
from gumshoe.wal import ReplayProgress, encode_payload, frame
from tests.crash.helpers import batch_rows, batch_size, expected, make_config, problems, totals


def crash(db: DB) -> None:
    """Drop a DB as a crash would: no flush (the log is closed, which a kill -9 also does)."""
    db.close(flush=False)


def insert(db: DB, bs: range | list[int], acked: set[int], ids: bool = True) -> None:
    for b in bs:
        r = db.insert(batch_rows(b), f"b{b}" if ids else None)
        assert not r.duplicate
        acked.add(b)


def check(db: DB, acked: set[int], attempted: set[int] | None = None) -> None:
    assert problems(totals(db), acked, attempted or acked) == []


def wal_files(d: Path) -> list[Path]:
    return sorted(d.glob("wal.*.log"))


def test_replay_exactly_once(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "db")
    acked: set[int] = set()
    db = DB(cfg)
    insert(db, range(0, 12), acked)
    crash(db)
    db = DB(cfg)
    check(db, acked)
    assert db.wal is not None
    assert db.wal.stats["replayed"] == 12
    db.flush()
    insert(db, range(12, 20), acked)
    crash(db)
    db = DB(cfg)
    check(db, acked)
    assert db.wal is not None
    assert db.wal.stats["replayed"] == 8
    db.close()  # flushes
    db = DB(cfg)
    check(db, acked)
    assert db.wal is not None
    assert db.wal.stats["replayed"] == 0
    assert len(wal_files(cfg_dir(cfg))) == 1
    db.close()


def cfg_dir(cfg: Any) -> Path:
    return Path(cfg.database_dir)


def test_crash_after_metadata_before_trim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    cfg = make_config(tmp_path / "db")
    acked: set[int] = set()
    db = DB(cfg)
    insert(db, range(10), acked)
    assert db.wal is not None
    monkeypatch.setattr(db.wal, "trim", lambda seq: None)  # "crash" right before the trim
    db.flush()
    insert(db, range(10, 13), acked)
    crash(db)
    assert len(wal_files(cfg_dir(cfg))) == 2
    meta = json.loads((cfg_dir(cfg) / "db.json").read_text())
    assert meta["wal_seq"] == 10
    db = DB(cfg)
    check(db, acked)  # records 1..10 are in the segments and not replayed again
    assert db.wal is not None
    assert db.wal.stats["replayed"] == 3
    assert len(wal_files(cfg_dir(cfg))) == 2  # the flushed file is gone; a new active one
    db.close()


@pytest.mark.parametrize("which", ["first", "last"])
@pytest.mark.parametrize("kind", ["write", "fsync", "replace"])
def test_failed_flush_is_fail_stop_and_recoverable(tmp_path: Path, kind: str, which: str
                                                   ) -> None:
    def setup(name: str) -> tuple[Any, DB, set[int]]:
        cfg = make_config(tmp_path / name)
        acked: set[int] = set()
        db = DB(cfg)
        insert(db, range(6), acked)
        db.flush()
        insert(db, range(6, 12), acked)
        return cfg, db, acked

    # First or last call of its kind in a flush (last: the db.json write / rename / dir fsync).
    _, probe_db, _ = setup("probe")
    with fileio.inject(fileio.FaultyIO(kinds=(kind,))) as probe:
        probe_db.flush()
    probe_db.close()
    cfg, db, acked = setup("db")
    n = 1 if which == "first" else probe.calls  # type: ignore[attr-defined]
    with fileio.inject(fileio.FaultyIO(n, errno.EIO, kinds=(kind,))), \
            pytest.raises(StorageFailedError, match="failed"):
        db.flush()
    assert db.failed
    check(db, acked)  # reads keep working, flushed and unflushed rows alike
    with pytest.raises(StorageFailedError, match="read-only"):
        db.insert(batch_rows(99), "b99")
    assert db.insert([]).inserted == 0  # an empty batch without an id is harmless
    db.flush()  # a no-op now
    db.close()
    db = DB(cfg)
    check(db, acked)
    assert not any(p.suffix == ".tmp" for p in cfg_dir(cfg).iterdir())
    insert(db, [99], acked)
    db.close()
    db = DB(cfg)
    check(db, acked)
    db.close()


def test_unreferenced_files_removed_but_not_logs(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "db")
    db = DB(cfg)
    acked: set[int] = set()
    insert(db, range(5), acked)
    db.flush()
    insert(db, range(5, 8), acked)
    crash(db)
    d = cfg_dir(cfg)
    (d / "interval.0.generation0009.segment0000.seg").write_bytes(b"orphan")
    (d / "dictionary.batch.generation0042.json").write_text("[]")
    (d / "db.json.tmp").write_text("{")
    logs = wal_files(d)
    db = DB(cfg)
    names = {p.name for p in d.iterdir()}
    assert "interval.0.generation0009.segment0000.seg" not in names
    assert "dictionary.batch.generation0042.json" not in names
    assert "db.json.tmp" not in names
    assert set(logs) <= set(wal_files(d))
    check(db, acked)
    db.close()


# -- batch ids ----------------------------------------------------------------------------------
def test_batch_id_dedupe_across_restarts(tmp_path: Path) -> None:
    now = [1_000_000.0]
    cfg = make_config(tmp_path / "db", window="1h")
    acked: set[int] = set()

    def open_db() -> DB:
        return DB(cfg, clock=lambda: now[0])

    db = open_db()
    insert(db, range(4), acked)
    assert db.insert(batch_rows(1), "b1").duplicate  # a retry
    check(db, acked)
    crash(db)
    db = open_db()  # ids come back from the log
    assert db.insert(batch_rows(2), "b2").duplicate
    db.flush()
    insert(db, [4], acked)
    crash(db)
    db = open_db()  # ids of flushed batches come back from db.json, the rest from the log
    for b in range(5):
        r = db.insert(batch_rows(b), f"b{b}")
        assert r.duplicate
        assert r.inserted == 0
    check(db, acked)
    db.close()
    meta = json.loads((cfg_dir(cfg) / "db.json").read_text())
    assert set(meta["batch_ids"]) == {f"b{b}" for b in range(5)}
    now[0] += 3601  # past the window: the id is forgotten, a resend is applied again
    db = open_db()
    assert not db.insert(batch_rows(0), "b0").duplicate
    assert totals(db)["b0"] == tuple(2 * x for x in expected(0))
    db.close()


@pytest.mark.parametrize("durability", ["fsync", "none"])
def test_batch_id_not_persisted_without_its_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 durability: str) -> None:
    """A batch applied while a flush writes is not in that flush: neither is its id, or a crash
    could leave the id remembered (a retry answered "duplicate") and its rows lost."""
    cfg = make_config(tmp_path / "db", durability=durability)
    db = DB(cfg)
    insert(db, [1], set())
    write_flush = db._write_flush

    def during_flush(*args: Any) -> Any:
        t = threading.Thread(target=db.insert, args=(batch_rows(2), "b2"))
        t.start()
        t.join(10)
        return write_flush(*args)

    monkeypatch.setattr(db, "_write_flush", during_flush)
    db.flush()
    meta = json.loads((cfg_dir(cfg) / "db.json").read_text())
    assert set(meta["batch_ids"]) == {"b1"}
    crash(db)
    db = DB(cfg)
    r = db.insert(batch_rows(2), "b2")
    assert r.duplicate == (durability == "fsync")  # none: the unflushed batch was lost
    assert totals(db)["b2"] == expected(2)
    db.close()


def test_duplicate_waits_for_the_original_to_be_durable(tmp_path: Path) -> None:
    db = DB(make_config(tmp_path / "db"))
    gate, started = threading.Event(), threading.Event()

    class SlowIO(fileio.FileIO):
        def fsync(self, fd: int) -> None:
            started.set()
            gate.wait(5)
            super().fsync(fd)

    results: list[Any] = []
    with fileio.inject(SlowIO()):
        t = threading.Thread(target=lambda: results.append(db.insert(batch_rows(1), "b1")))
        t.start()
        assert started.wait(5)
        t2 = threading.Thread(target=lambda: results.append(db.insert(batch_rows(1), "b1")))
        t2.start()
        t2.join(0.2)
        assert t2.is_alive()
        assert results == []  # the retry is not acknowledged early
        gate.set()
        t.join(5)
        t2.join(5)
    assert sorted(r.duplicate for r in results) == [False, True]
    db.close()


def test_memory_db_dedupes_batches() -> None:
    db = DB(make_config("MEMORY"))
    assert not db.insert(batch_rows(1), "x").duplicate
    assert db.insert(batch_rows(1), "x").duplicate
    assert totals(db) == {"b1": expected(1)}
    db.close()


# -- torn tail, corruption ----------------------------------------------------------------------
def test_torn_tail_at_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(tmp_path / "db")
    acked: set[int] = set()
    db = DB(cfg)
    insert(db, range(5), acked)
    crash(db)
    [path] = wal_files(cfg_dir(cfg))
    # A record for batch 5 that was being written when the process died.
    rec = frame(6, b"x" * 100)
    with open(path, "ab") as f:
        f.write(rec[:60])
    with caplog.at_level(logging.WARNING):
        db = DB(cfg)
    assert "torn last record" in caplog.text
    check(db, acked)
    insert(db, [5], acked)
    crash(db)
    db = DB(cfg)
    check(db, acked)
    db.close()


def test_mid_log_corruption_stops_start_up(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "db")
    db = DB(cfg)
    insert(db, range(5), set())
    crash(db)
    [path] = wal_files(cfg_dir(cfg))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match=r"wal\.0000000000000001\.log: corrupt "
                                               r"write-ahead log at offset \d+"):
        DB(cfg)
    with pytest.raises(CorruptDataError):  # the directory lock was released: it fails again
        DB(cfg)


def test_corrupt_segment_stops_start_up(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "db")
    db = DB(cfg)
    insert(db, range(3), set())
    db.close()
    seg = next(cfg_dir(cfg).glob("*.seg"))
    data = bytearray(seg.read_bytes())
    hlen = int.from_bytes(data[8:12], "little")
    col = json.loads(bytes(data[12:12 + hlen]))["columns"][0]
    data[col["offset"] + 3] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptDataError, match="checksum mismatch"):
        DB(cfg)


@pytest.mark.parametrize(("new", "size", "match"), [
    (["b2"], 5, "has 1 strings at replay but had 5"),
    (["b1"], 1, "already holds"),
    ([], 1, "code out of range"),
])
def test_replay_checks_dictionary_codes(tmp_path: Path, new: list[str], size: int, match: str
                                        ) -> None:
    cfg = make_config(tmp_path / "db")
    db = DB(cfg)
    insert(db, [1], set())
    block, _ = db._encode(parse_rows(db.schema, batch_rows(2)))  # code 1 for "b2"
    ts = parse_rows(db.schema, batch_rows(2)).timestamps
    crash(db)
    [path] = wal_files(cfg_dir(cfg))
    # A record whose dictionary state does not match what replay reaches.
    with open(path, "ab") as f:
        f.write(frame(2, encode_payload(None, 0.0, ts, block, {"batch": new}, {"batch": size})))
    with pytest.raises(CorruptDataError, match=match):
        DB(cfg)


# -- durability modes -----------------------------------------------------------------------------
def test_durability_none_loses_only_unflushed_rows(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "db", durability="none")
    db = DB(cfg)
    flushed: set[int] = set()
    insert(db, range(4), flushed)
    db.flush()
    insert(db, range(4, 8), set())
    assert db.insert(batch_rows(5), "b5").duplicate  # ids are remembered without a log
    crash(db)
    assert wal_files(cfg_dir(cfg)) == []
    db = DB(cfg)
    assert problems(totals(db), flushed, set(range(8))) == []
    assert set(totals(db)) == {f"b{b}" for b in flushed}
    assert db.insert(batch_rows(2), "b2").duplicate  # flushed ids persist in db.json
    db.close()


@pytest.mark.parametrize(("first", "then"), [("fsync", "os"), ("os", "none"), ("fsync", "none"),
                                             ("none", "fsync")])
def test_switching_durability_keeps_logged_batches(tmp_path: Path, first: str, then: str
                                                   ) -> None:
    acked: set[int] = set()
    db = DB(make_config(tmp_path / "db", durability=first))
    insert(db, range(3), acked)
    db.flush()
    insert(db, range(3, 6), acked)
    crash(db)
    if first == "none":
        acked = set(range(3))
    db = DB(make_config(tmp_path / "db", durability=then))
    check(db, acked)
    insert(db, range(6, 8), acked)
    db.flush()
    insert(db, range(8, 10), acked if then != "none" else set())
    crash(db)
    if then == "none":
        acked -= set(range(8, 10))
    db = DB(make_config(tmp_path / "db", durability=first))
    check(db, acked, acked | set(range(10)))
    db.close()


def test_concurrent_inserts_share_fsyncs(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "db")
    db = DB(cfg)
    acked: set[int] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for b in range(k, 160, 4):
                db.insert(batch_rows(b), f"b{b}")
                with lock:
                    acked.add(b)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(acked) == 160
    assert db.wal is not None
    assert db.wal.stats["records"] == 160
    fsyncs = db.wal.stats["fsyncs"]
    crash(db)
    db = DB(cfg)
    check(db, acked)
    db.close()
    assert fsyncs <= 160  # each commit is covered by a leader's fsync (often shared)


# -- I/O error injection --------------------------------------------------------------------------
def scenario(cfg: Any, acked: set[int], attempted: set[int]) -> None:
    """Open, insert, flush, insert, flush, insert: stop at the first storage failure and
    check the fail-stop contract on the way out."""
    db = DB(cfg)
    try:
        for step in (range(0, 4), "flush", range(4, 7), "flush", range(7, 9)):
            if step == "flush":
                db.flush()
                continue
            for b in step:
                attempted.add(b)
                db.insert(batch_rows(b), f"b{b}")
                acked.add(b)
    except StorageFailedError:
        assert db.failed
        # Reads still work and show every acknowledged batch; writes are refused.
        assert problems(totals(db), acked, attempted) == []
        with pytest.raises(StorageFailedError):
            db.insert(batch_rows(50), "b50")
        raise
    finally:
        db.close()


class FastFaultyIO(fileio.FaultyIO):
    """Counts and fails fsyncs like FaultyIO but skips the real one: these tests simulate a
    failing disk, not power loss, and real fsyncs would make the N-loop slow."""

    def fsync(self, fd: int) -> None:
        if self._should_fail("fsync"):
            self._raise("fsync")


def run_injection(tmp_path: Path, durability: str, sticky_modes: tuple[bool, ...],
                  stride: int = 1) -> None:
    probe = FastFaultyIO()
    with fileio.inject(probe):
        scenario(make_config(tmp_path / "probe", durability), set(), set())
    assert probe.calls > 20
    tried = 0
    for n in range(1, probe.calls + 1, stride):
        for sticky in sticky_modes:
            cfg = make_config(tmp_path / f"n{n}{sticky}", durability)
            acked: set[int] = set()
            attempted: set[int] = set()
            io = FastFaultyIO(n, errno.ENOSPC if n % 2 else errno.EIO, sticky=sticky)
            with fileio.inject(io):
                try:
                    scenario(cfg, acked, attempted)
                except (StorageFailedError, OSError):
                    pass
                else:
                    raise AssertionError(f"call {n} did not fail")
            assert io.failed, n
            tried += 1
            db = DB(cfg)  # a healthy disk again
            where = f"failing call {n} ({io.failed[0]}, sticky={sticky})"
            assert problems(totals(db), acked, attempted) == [], where
            # The database works normally again.
            db.insert(batch_rows(60), "b60")
            db.close()
            db = DB(cfg)
            assert problems(totals(db), acked | {60}, attempted | {60}) == [], where
            db.close()
    assert tried


def test_io_error_injection(tmp_path: Path) -> None:
    """Every write/fsync/rename of open + inserts + flushes fails once (fsync durability)."""
    run_injection(tmp_path, "fsync", (False,))


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["fsync", "os"])
def test_io_error_injection_full(tmp_path: Path, durability: str) -> None:
    """Also with a disk that stays broken after the first failure, and with os durability."""
    run_injection(tmp_path, durability, (False, True))


def test_io_error_injection_sticky_sample(tmp_path: Path) -> None:
    run_injection(tmp_path, "os", (True,), stride=7)


def test_unexpected_flush_error_is_fail_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    cfg = make_config(tmp_path / "db")
    db = DB(cfg)
    acked: set[int] = set()
    insert(db, range(3), acked)

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in the flush")

    monkeypatch.setattr(db, "_write_flush", broken)
    with pytest.raises(RuntimeError):
        db.flush()
    assert db.failed
    check(db, acked)  # the rows being flushed stay visible
    with pytest.raises(StorageFailedError):
        db.insert(batch_rows(7), "b7")
    db.close()
    db = DB(cfg)
    check(db, acked)
    db.close()


# -- replay progress ------------------------------------------------------------------------------
def test_replay_reports_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(tmp_path / "db", "os")
    acked: set[int] = set()
    db = DB(cfg)
    insert(db, range(20), acked)
    db.flush()
    insert(db, range(20, 50), acked)
    crash(db)
    reports: list[ReplayProgress] = []
    monkeypatch.setattr(gumshoe.wal, "PROGRESS_EVERY", 0.0)  # a report at every record
    with caplog.at_level(logging.INFO, logger="gumshoe.wal"):
        db = DB(cfg, replay_progress=reports.append)
    check(db, acked)
    first, last = reports[0], reports[-1]
    assert (first.records, first.rows, first.bytes_read, first.done) == (0, 0, 0, False)
    assert first.describe().startswith("replaying the write-ahead log, 0% (0 records")
    rows = sum(batch_size(b) for b in range(20, 50))
    assert last.done and (last.records, last.rows, last.fraction) == (30, rows, 1.0)
    assert last.bytes_read == last.bytes_total == sum(p.stat().st_size for p in wal_files(
        cfg_dir(cfg)) if p.stat().st_size) > 0
    assert [r.done for r in reports].count(True) == 1
    assert len(reports) >= 30
    for a, b in itertools.pairwise(reports):
        assert a.records <= b.records and a.rows <= b.rows and a.fraction <= b.fraction
    assert 0 < reports[15].fraction < 1
    lines = [r.getMessage() for r in caplog.records if r.name == "gumshoe.wal"]
    assert any(re.fullmatch(r"replaying the write-ahead log, \d+% \(\d+ records, \d+ rows, "
                            r"\d+ rows/s\)", m) for m in lines), lines
    assert lines[-1].startswith(f"replayed the write-ahead log: 30 records, {rows} rows")
    db.close()
    reports.clear()
    DB(cfg, replay_progress=reports.append).close()  # flushed at close: nothing to replay
    assert reports == []


def test_replay_progress_is_rate_limited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """At most about one report a second (a clock that advances 0.25 s per reading), each
    logged, plus the first (not logged) and the last."""
    cfg = make_config(tmp_path / "db", "os")
    acked: set[int] = set()
    db = DB(cfg)
    insert(db, range(40), acked)
    crash(db)
    ticks = itertools.count()
    monkeypatch.setattr(gumshoe.wal, "monotonic", lambda: next(ticks) * 0.25)
    reports: list[ReplayProgress] = []
    with caplog.at_level(logging.INFO, logger="gumshoe.wal"):
        db = DB(cfg, replay_progress=reports.append)
    check(db, acked)
    db.close()
    middle = reports[1:-1]
    assert 5 <= len(middle) <= 20, [r.seconds for r in reports]  # 4 clock readings a second
    for a, b in itertools.pairwise(middle):
        assert b.seconds - a.seconds >= 1.0
    assert reports[-1].done and reports[-1].records == 40
    lines = [r.getMessage() for r in caplog.records if r.name == "gumshoe.wal"
             and "write-ahead log" in r.getMessage()]
    assert len(lines) == len(middle) + 1  # the start is not logged, the rest is
