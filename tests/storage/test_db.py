"""db.py: insert, flush, reopen, retention, locking, snapshots — against the reference."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gumshoe.config import SchemaConfig
from gumshoe.db import DB
from gumshoe.layout import META, read_meta, write_meta
from gumshoe.errors import (
    CorruptDataError,
    DBLockedError,
    InsertError,
    SchemaMismatchError,
    StorageFailedError,
)
from gumshoe.memtable import MemInterval
from gumshoe.schema import NUMERIC_TYPES
from tests import reference
from tests.storage.contents import (
    check_files,
    check_structure,
    dict_files,
    make_config,
    seg_files,
    snapshot_table,
)
from tests.strategies import rows, schema_configs

HOUR = 3600
DAY = 86400
T0 = 1_700_000_000 - 1_700_000_000 % DAY  # a day-aligned "now"

ALL_DIMS = tuple((f"d_{t}", t) for t in (*NUMERIC_TYPES, "string:uint8", "string:uint16",
                                          "string:uint32"))
ALL_METS = tuple((f"m_{t}", t) for t in NUMERIC_TYPES)


@pytest.fixture(params=["memory", "disk"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "MEMORY" if request.param == "memory" else str(tmp_path / "db")


def check(db: DB, raw: list[dict[str, Any]], cutoff: int | None = None) -> None:
    """The DB holds exactly the roll-up of `raw` (intervals before `cutoff` dropped)."""
    want = reference.rollup(db.schema, raw)
    if cutoff is not None:
        want = reference.drop_before(want, cutoff)
    snap = db.snapshot()
    check_structure(snap)
    assert snapshot_table(snap) == want


def every_type_rows() -> list[dict[str, Any]]:
    """Boundary values of every type, nils and missing keys, over 30 intervals."""
    out: list[dict[str, Any]] = []
    cols = [(n, t) for n, t in ALL_DIMS + ALL_METS]
    for i in range(120):
        r: dict[str, Any] = {"at": T0 + (i % 30) * HOUR + i}
        for j, (name, t) in enumerate(cols):
            pick = (i + j) % 5
            if pick == 0:
                continue  # missing
            if pick == 1 and name.startswith("d_"):
                r[name] = None
            elif t.startswith("string:"):
                r[name] = ["", "ä", "x" * 30, "日本"][(i + 2 * j) % 4]
            elif t.startswith("float"):
                r[name] = [0.5, -0.0, 1e30, -2.25][(i + j) % 4]
            else:
                lo, hi = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535),
                          "int16": (-32768, 32767), "uint32": (0, 2**32 - 1),
                          "int32": (-(2**31), 2**31 - 1), "uint64": (0, 2**64 - 1),
                          "int64": (-(2**63), 2**63 - 1)}[t]
                if name.startswith("m_") and t.endswith("64"):
                    lo, hi = max(lo, -(2**40)), 2**40  # sums stay inside 64 bits
                r[name] = [lo, hi, 0, 1][(i + j) % 4]
        out.append(r)
    return out


# -- round trips -------------------------------------------------------------------------------

def test_reopen_round_trip_every_column_type(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "db", ALL_DIMS, ALL_METS, segment_size=160)  # 1 row/segment
    raw = every_type_rows()
    db = DB(cfg)
    db.insert(raw[:70])
    check(db, raw[:70])  # unflushed
    db.flush()
    check(db, raw[:70])
    db.insert(raw[70:])
    check(db, raw)  # flushed + unflushed, same intervals
    db.close()
    db = DB(cfg)
    try:
        check(db, raw)
        snap = db.snapshot()
        assert len(snap.intervals) == 30
        assert any(len(iv.segments) > 1 for iv in snap.intervals)  # segment_size splits
        check_files(db)
    finally:
        db.close()


def test_memory_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = make_config("MEMORY", ALL_DIMS, ALL_METS, segment_size=2000)
    assert cfg.in_memory
    raw = every_type_rows()
    db = DB(cfg)
    db.insert(raw[:50])
    db.flush()
    db.insert(raw[50:])
    check(db, raw)
    db.flush()
    check(db, raw)
    assert all(iv.mem == () for iv in db.snapshot().intervals)
    db.close()
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere


@settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_batches_flushes_and_reopen(tmp_path_factory: pytest.TempPathFactory,
                                           data: st.DataObject) -> None:
    sc = data.draw(schema_configs(uniques=True))
    cfg = make_config(tmp_path_factory.mktemp("db"), schema=sc)
    db = DB(cfg)
    accepted: list[dict[str, Any]] = []
    try:
        for _ in range(data.draw(st.integers(1, 4))):
            batch = data.draw(rows(db.schema, max_size=20))
            assert db.insert(batch).inserted == len(batch)
            accepted += batch
            if data.draw(st.booleans()):
                db.flush()
        check(db, accepted)
        db.close()
        db = DB(cfg)
        check(db, accepted)
        check_files(db)
    finally:
        db.close()


def test_t10_persistence_end_to_end(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "db", [("dim1", "string:uint32")], [("metric1", "uint32")])
    with DB(cfg) as db:
        db.insert([{"at": 0, "dim1": str(i % 100), "metric1": 1} for i in range(10_000)])
        db.flush()
        [iv] = db.snapshot().intervals
        assert sum(s.rows for s in iv.segments) == 100
        assert sum(int(s.block.metrics["metric1"].sum()) for s in iv.segments) == 10_000
    with DB(cfg) as db:
        [iv] = db.snapshot().intervals
        assert sum(s.rows for s in iv.segments) == 100
        assert sum(int(s.block.count.sum()) for s in iv.segments) == 10_000


def test_uint8_metric_rolled_up_300_times_holds_300(where: str) -> None:
    cfg = make_config(where, [("d", "uint8")], [("visits", "uint8")])
    db = DB(cfg)
    for _ in range(3):
        db.insert([{"at": 5, "d": 1, "visits": 1}] * 100)
        db.flush()
    db.insert([{"at": 5, "d": 1, "visits": 255}] * 2)
    assert snapshot_table(db.snapshot()) == {(0, (1,)): {"count": 302, "visits": 300 + 510}}
    db.close()
    if where != "MEMORY":
        with DB(cfg) as db:
            assert snapshot_table(db.snapshot()) == {(0, (1,)): {"count": 302, "visits": 810}}


def test_nil_round_trips(tmp_path: Path) -> None:
    """T6: a nil dimension round-trips as nil, distinct from 0 and ""."""
    cfg = make_config(tmp_path / "db", [("s", "string:uint8"), ("n", "int8")], [("m", "uint8")])
    raw = [{"at": 0, "s": "a", "n": 0, "m": 0}, {"at": HOUR, "s": None, "m": 1},
           {"at": HOUR, "s": "", "n": None, "m": 2}, {"at": HOUR, "n": 0, "m": 4}]
    with DB(cfg) as db:
        db.insert(raw)
    with DB(cfg) as db:
        assert snapshot_table(db.snapshot()) == {
            (0, ("a", 0)): {"count": 1, "m": 0},
            (HOUR, (None, None)): {"count": 1, "m": 1},
            (HOUR, ("", None)): {"count": 1, "m": 2},
            (HOUR, (None, 0)): {"count": 1, "m": 4}}


def test_unflushed_rows_are_visible(where: str) -> None:
    db = DB(make_config(where))
    db.insert([{"at": 10, "name": "a", "visits": 1}])
    [iv] = db.snapshot().intervals
    assert iv.segments == () and len(iv.mem) == 1
    db.flush()
    db.insert([{"at": 20, "name": "a", "visits": 2}, {"at": 30, "name": "b", "visits": 4}])
    [iv] = db.snapshot().intervals
    assert len(iv.segments) == 1 and len(iv.mem) == 1 and not iv.fully_rolled_up
    check(db, [{"at": 10, "name": "a", "visits": 1}, {"at": 20, "name": "a", "visits": 2},
               {"at": 30, "name": "b", "visits": 4}])
    db.close()


def test_snapshots_are_isolated_from_later_writes(where: str) -> None:
    db = DB(make_config(where))
    db.insert([{"at": 10, "name": "a", "visits": 1}])
    before = db.snapshot()
    table = snapshot_table(before)
    db.insert([{"at": 10, "name": "b", "visits": 2}, {"at": HOUR, "name": "a"}])
    db.flush()
    db.insert([{"at": 10, "name": "c", "visits": 5}])
    db.flush()
    assert snapshot_table(before) == table == {(0, ("a",)): {"count": 1, "visits": 1}}
    assert before.dict_sizes == {"name": 1}
    assert before.strings("name").tolist() == ["a"]
    db.close()


def test_memtable_compaction_keeps_every_row(where: str, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """Enough rows in one interval for the memtable to roll its chunks up, repeatedly."""
    monkeypatch.setattr("gumshoe.memtable._MIN_COMPACT_ROWS", 50)
    db = DB(make_config(where, [("k", "uint16")], [("v", "uint32")]))
    raw = [{"at": 7, "k": i % 40, "v": i} for i in range(1000)]
    for lo in range(0, len(raw), 30):
        db.insert(raw[lo:lo + 30])
        check(db, raw[:lo + 30])
    mi = db.memtable.intervals[0]
    assert mi.rolled is not None and mi.rolled.n == 40  # compacted in memory
    assert mi.pending_rows < 50
    check(db, raw)
    db.flush()
    check(db, raw)
    db.close()


def test_a_flush_cannot_tear_a_snapshot() -> None:
    """Take a snapshot at every line the flush's memtable compaction executes: every one
    holds each row exactly once (never the rolled-up rows and their chunks together)."""
    db = DB(make_config("MEMORY"))
    raw = [{"at": 1, "name": n, "visits": 1} for n in "abcab"]
    for r in raw:
        db.insert([r])
    totals: list[int] = []

    def local(frame: Any, event: str, arg: Any) -> Any:
        totals.append(sum(e["count"] for e in snapshot_table(db.snapshot()).values()))
        return local

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        return local if frame.f_code is MemInterval.compact.__code__ else None

    sys.settrace(tracer)
    try:
        db.flush()
    finally:
        sys.settrace(None)
    assert len(totals) > 3 and set(totals) == {5}
    check(db, raw)


# -- flush, files, generations -----------------------------------------------------------------

def test_t11_t13_generations_and_old_files(tmp_path: Path) -> None:
    d = tmp_path / "db"
    cfg = make_config(d, [("dim1", "string:uint32")], [("metric1", "uint32")])
    db = DB(cfg)
    db.insert([{"at": 0, "dim1": "a", "metric1": 1}])
    db.flush()
    assert seg_files(d) == ["interval.0.generation0000.segment0000.seg"]
    assert dict_files(d) == ["dictionary.dim1.generation0001.json"]
    db.insert([{"at": 0, "dim1": "a", "metric1": 1}])
    db.flush()  # a second run, not a rewrite (docs/storage.md section 6)
    assert seg_files(d) == ["interval.0.generation0000.segment0000.seg",
                            "interval.0.generation0001.segment0000.seg"]
    assert dict_files(d) == ["dictionary.dim1.generation0001.json"]  # no new strings
    assert json.loads((d / "db.json").read_text())["intervals"][0]["runs"] == [[0, 1], [1, 1]]
    check_files(db)
    assert db.merge(settle=0) == 1  # a past interval: its runs merge into one
    assert seg_files(d) == ["interval.0.generation0002.segment0000.seg"]
    assert "runs" not in json.loads((d / "db.json").read_text())["intervals"][0]
    db.insert([{"at": 0, "dim1": "b", "metric1": 1}, {"at": HOUR, "dim1": "a"}])
    db.flush()
    assert seg_files(d) == ["interval.0.generation0002.segment0000.seg",
                            "interval.0.generation0003.segment0000.seg",
                            f"interval.{HOUR}.generation0000.segment0000.seg"]
    assert dict_files(d) == ["dictionary.dim1.generation0002.json"]
    assert json.loads((d / "dictionary.dim1.generation0002.json").read_text()) == ["a", "b"]
    check_files(db)
    db.flush()  # nothing new: nothing rewritten
    assert seg_files(d)[1] == "interval.0.generation0003.segment0000.seg"
    db.close()
    with DB(cfg) as db:
        check(db, [{"at": 0, "dim1": "a", "metric1": 1}] * 2 + [
            {"at": 0, "dim1": "b", "metric1": 1}, {"at": HOUR, "dim1": "a"}])
        assert db.snapshot().strings("dim1").tolist() == ["a", "b"]


def test_t9_segment_size_splits_intervals(tmp_path: Path) -> None:
    """Full row width 8 + (4+1) + 8 = 21 bytes: at least 4 rows per 100-byte segment. As
    stored, count and metric1 take a byte each (narrow), no row is nil: 1 + 4 + 1 = 6 bytes,
    so a segment holds 16 rows."""
    d = tmp_path / "db"
    cfg = make_config(d, [("dim1", "string:uint32")], [("metric1", "uint32")], segment_size=100)
    db = DB(cfg)
    assert db.schema.rows_per_segment == 4
    raw = [{"at": 0, "dim1": f"s{i:02d}", "metric1": 1} for i in range(40)]
    db.insert(raw)
    db.flush()
    [iv] = db.snapshot().intervals
    assert [s.rows for s in iv.segments] == [16, 16, 8]
    assert seg_files(d) == [f"interval.0.generation0000.segment000{i}.seg" for i in range(3)]
    codes = [c for s in iv.segments for c in s.block.dims["dim1"].tolist()]
    assert codes == sorted(codes) == list(range(40))  # key order across segments, each once
    db.close()
    with DB(cfg) as db:
        assert [s.rows for s in db.snapshot().intervals[0].segments] == [16, 16, 8]
        check(db, raw)


def test_unreferenced_files_are_removed_at_open(tmp_path: Path) -> None:
    d = tmp_path / "db"
    cfg = make_config(d)
    with DB(cfg) as db:
        db.insert([{"at": 0, "name": "a"}])
    (d / "interval.0.generation0007.segment0000.seg").write_bytes(b"orphan")
    (d / "dictionary.name.generation0009.json").write_text('["x"]')
    (d / "db.json.tmp").write_text("{")
    (d / "notes.txt").write_text("mine")
    with DB(cfg) as db:
        check_files(db)
        check(db, [{"at": 0, "name": "a"}])
    assert (d / "notes.txt").exists()  # only our own kinds of files are touched


# -- insert atomicity --------------------------------------------------------------------------

def test_invalid_batch_changes_nothing(where: str) -> None:
    db = DB(make_config(where, [("name", "string:uint16"), ("age", "uint8")]))
    db.insert([{"at": 5, "name": "kept", "age": 1}])
    stats = dict(db.stats)
    bad = [{"at": 10, "name": "new1", "age": 2}, {"at": HOUR * 5, "name": "new2"},
           {"at": 11, "name": "new3", "age": -1}]
    with pytest.raises(InsertError, match=r"rows\[2\]\.age"):
        db.insert(bad)
    assert db.stats == stats
    assert db.snapshot().strings("name").tolist() == ["kept"]
    check(db, [{"at": 5, "name": "kept", "age": 1}])
    db.flush()
    db.close()


def test_lone_surrogate_is_an_insert_error(where: str) -> None:
    db = DB(make_config(where))
    rows = json.loads('[{"at": 0, "name": "a"}, {"at": 0, "name": "x\\ud800"}]')
    with pytest.raises(InsertError, match=r"rows\[1\]\.name: .* not valid Unicode"):
        db.insert(rows)
    assert db.snapshot().intervals == () and db.failed is None
    db.insert([{"at": 0, "name": "x\U0001F600"}])
    db.close()


def test_empty_batches(where: str) -> None:
    db = DB(make_config(where))
    r = db.insert([])
    assert (r.inserted, r.rejected) == (0, 0)
    assert db.insert(None).inserted == 0
    assert db.snapshot().intervals == ()
    db.close()


def test_insert_after_close_fails(where: str) -> None:
    db = DB(make_config(where))
    db.close()
    with pytest.raises(StorageFailedError, match="closed"):
        db.insert([{"at": 0}])


def test_dictionary_overflow_is_atomic_and_does_not_pollute(where: str) -> None:
    """V15/T7 done right: a string:uint8 dimension holds 256 strings; the 257th is an error
    naming its row, the batch is not applied and no string of it enters the dictionary."""
    cfg = make_config(where, [("s", "string:uint8")], [("m", "uint8")])
    db = DB(cfg)
    with pytest.raises(InsertError) as e:
        db.insert([{"at": 0, "s": str(i), "m": 1} for i in range(257)])
    assert str(e.value).startswith("rows[256].s:") and "'256'" in str(e.value)
    assert db.snapshot().dict_sizes == {"s": 0}
    assert db.snapshot().intervals == ()
    assert db.insert([{"at": 0, "s": str(i), "m": 1} for i in range(256)]).inserted == 256
    with pytest.raises(InsertError, match=r"rows\[1\]\.s: adding the new value 'another'"):
        db.insert([{"at": 0, "s": "0"}, {"at": 0, "s": "another"}])
    assert db.insert([{"at": 0, "s": "0", "m": 200}]).inserted == 1  # known strings still fine
    db.flush()
    assert db.snapshot().dict_sizes == {"s": 256}
    table = snapshot_table(db.snapshot())
    assert len(table) == 256 and table[(0, ("0",))] == {"count": 2, "m": 201}
    db.close()
    if where != "MEMORY":
        with DB(cfg) as db:
            assert db.snapshot().dict_sizes == {"s": 256}
            assert "another" not in db.snapshot().strings("s").tolist()


def test_overflow_error_names_the_original_row_when_retention_rejects_some(
        tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "db", [("s", "string:uint8")], [("m", "uint8")],
                      retention_days=1)
    db = DB(cfg, clock=lambda: T0)
    db.insert([{"at": T0, "s": str(i)} for i in range(255)])
    old = T0 - 3 * DAY
    with pytest.raises(InsertError) as e:
        db.insert([{"at": old, "s": "x"}, {"at": old, "s": "y"}, {"at": T0, "s": "ok"},
                   {"at": T0, "s": "overflow"}])
    assert str(e.value).startswith("rows[3].s:"), str(e.value)
    db.close()


# -- retention ---------------------------------------------------------------------------------

def test_t8_retention_at_insert_reports_rejected_rows(where: str) -> None:
    cfg = make_config(where, [("dim1", "string:uint8")], [("metric1", "uint8")],
                      retention_days=1)
    db = DB(cfg, clock=lambda: T0)
    r = db.insert([{"at": T0 - 22 * HOUR, "dim1": "foo", "metric1": 1},
                   {"at": T0 - 26 * HOUR, "dim1": "bar", "metric1": 1}])
    assert (r.inserted, r.rejected) == (1, 1)
    assert db.stats["rejected_rows"] == 1
    assert db.snapshot().strings("dim1").tolist() == ["foo"]  # "bar" did not pollute
    db.flush()
    check(db, [{"at": T0 - 22 * HOUR, "dim1": "foo", "metric1": 1}])
    db.close()


def test_retention_boundary_is_strict(where: str) -> None:
    """Out of retention when now - (start + duration) > retention_days."""
    db = DB(make_config(where, retention_days=1), clock=lambda: T0)
    edge = T0 - DAY - HOUR  # its interval ends exactly one day ago: kept
    r = db.insert([{"at": edge}, {"at": edge - 1}, {"at": T0 + 5 * DAY}])
    assert (r.inserted, r.rejected) == (2, 1)
    assert [iv.start for iv in db.snapshot().intervals] == [edge, T0 + 5 * DAY]
    db.close()


def test_t5_retention_at_flush_drops_whole_intervals(tmp_path: Path) -> None:
    d = tmp_path / "db"
    now = [T0]
    cfg = make_config(d, [("dim1", "string:uint8")], [("metric1", "uint8")], retention_days=1)
    db = DB(cfg, clock=lambda: now[0])
    raw = [{"at": T0 - h * HOUR, "dim1": "a", "metric1": 1} for h in (2, 12, 20)]
    db.insert(raw)
    db.flush()
    assert len(seg_files(d)) == 3
    now[0] = T0 + 10 * HOUR  # the T0-20h interval ages out (ends 29h before now)
    db.insert([{"at": T0 - 12 * HOUR, "dim1": "b", "metric1": 2}])
    check(db, raw + [{"at": T0 - 12 * HOUR, "dim1": "b", "metric1": 2}])  # until the flush
    db.flush()
    cutoff = now[0] - DAY - HOUR
    check(db, raw + [{"at": T0 - 12 * HOUR, "dim1": "b", "metric1": 2}], cutoff)
    # the T0-12h interval holds a second run
    assert len(db.snapshot().intervals) == 2 and len(seg_files(d)) == 3
    check_files(db)
    # unflushed rows whose interval ages out before the flush are dropped by it
    db.insert([{"at": T0 - 14 * HOUR, "dim1": "c", "metric1": 3}])
    now[0] = T0 + 2 * DAY
    db.flush()
    assert db.snapshot().intervals == () and seg_files(d) == []
    assert db.snapshot().strings("dim1").tolist() == ["a", "b", "c"]  # never pruned
    db.close()
    with DB(cfg, clock=lambda: now[0]) as db:
        assert db.snapshot().intervals == ()


# -- opening: locks and schemas ----------------------------------------------------------------

def test_t14_second_opener_gets_a_clear_error(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "db")
    db = DB(cfg)
    with pytest.raises(DBLockedError, match="is in use: its directory is locked"):
        DB(cfg)
    db.insert([{"at": 0, "name": "a"}])
    db.close()
    with DB(cfg) as again:  # the lock is released on close
        check(again, [{"at": 0, "name": "a"}])


def test_schema_mismatch_points_to_gumtool_migrate(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "db", [("name", "string:uint16"), ("age", "uint8")])
    with DB(cfg) as db:
        db.insert([{"at": 0, "name": "a", "age": 3}])
    for other in (make_config(tmp_path / "db", [("name", "string:uint16"), ("age", "uint16")]),
                  make_config(tmp_path / "db", [("name", "string:uint16"), ("age", "uint8")],
                              [("visits", "uint8"), ("clicks", "uint8")]),
                  make_config(tmp_path / "db", [("name", "string:uint16"), ("age", "uint8")],
                              interval=60),
                  make_config(tmp_path / "db", [("name", "string:uint16"), ("age", "uint8")],
                              segment_size=2 * 10**6)):
        with pytest.raises(SchemaMismatchError, match="gumtool migrate"):
            DB(other)
    with DB(cfg) as db:  # a failed open leaves the directory unlocked and intact
        check(db, [{"at": 0, "name": "a", "age": 3}])


@pytest.mark.parametrize("damage", ["truncated", "not an object", "no schema", "bad interval",
                                    "bad schema", "unknown format"])
def test_damaged_metadata_is_corrupt_data(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "db"
    cfg = make_config(d)
    with DB(cfg) as db:
        db.insert([{"at": 0, "name": "a"}])
    meta = json.loads((d / META).read_bytes())
    data = {"truncated": (d / META).read_bytes()[:40],
            "not an object": b"[1]",
            "no schema": json.dumps({"format": meta["format"]}).encode(),
            "bad interval": json.dumps({**meta, "intervals": [{"start": 0}]}).encode(),
            "bad schema": json.dumps({**meta, "schema": {**meta["schema"],
                                                         "metric_columns": []}}).encode(),
            "unknown format": json.dumps({**meta, "format": "gumshoe/99"}).encode()}[damage]
    (d / META).write_bytes(data)
    with pytest.raises(CorruptDataError, match="db.json"):
        DB(cfg)
    (d / META).write_text(json.dumps(meta))
    with DB(cfg) as db:  # the failed opens released the lock
        check(db, [{"at": 0, "name": "a"}])


@pytest.mark.parametrize(("content", "fragment"), [
    (b'["a", ', "damaged dictionary file"), (b'{"a": 1}', "list of strings"),
    (b"[1]", "list of strings"), (b'["a", "b"]', "has 2 strings, metadata says 1")])
@pytest.mark.parametrize("checksummed", [True, False])
def test_damaged_dictionary_is_corrupt_data(tmp_path: Path, content: bytes, fragment: str,
                                            checksummed: bool) -> None:
    """A recorded checksum catches any change; without one (a dictionary written before
    checksums) the file's shape and size are still checked."""
    d = tmp_path / "db"
    cfg = make_config(d)
    with DB(cfg) as db:
        db.insert([{"at": 0, "name": "a"}])
    if not checksummed:
        meta = read_meta(d)
        entry = meta.dictionaries["name"]
        write_meta(d, dataclasses.replace(meta, dictionaries={
            "name": dataclasses.replace(entry, crc32=None)}))
    [path] = [d / f for f in dict_files(d)]
    path.write_bytes(content)
    with pytest.raises(CorruptDataError, match=f"{path.name}: .*"
                       + ("dictionary checksum mismatch" if checksummed else fragment)):
        DB(cfg)
    path.unlink()
    with pytest.raises(CorruptDataError, match="dictionary file is missing"):
        DB(cfg)


def test_a_new_directory_is_created_one_level_deep(tmp_path: Path) -> None:
    with DB(make_config(tmp_path / "fresh")) as db:
        assert db.dir is not None and (db.dir / META).exists()


def test_random_schema_configs_open_and_reopen(tmp_path: Path) -> None:
    """Every kind of schema persists and compares equal to itself on reopen."""
    for i, sc in enumerate([SchemaConfig(100, 60, ("ts", "uint32"), (), (("m", "float32"),)),
                            SchemaConfig(5000, 86400, ("time", "uint32"), ALL_DIMS, ALL_METS)]):
        cfg = make_config(tmp_path / f"db{i}", schema=sc)
        DB(cfg).close()
        DB(cfg).close()


def test_concurrent_inserts_flushes_and_snapshots(tmp_path: Path) -> None:
    """An inserter, a flusher and a reader in threads: every snapshot holds at least the rows
    acknowledged before it was taken and at most those inserted by the time it returned."""
    import threading

    db = DB(make_config(tmp_path / "db", [("k", "uint8")], [("v", "uint32")]))
    acked = [0]
    started = [0]
    stop = threading.Event()
    errors: list[Exception] = []

    checked = [0]

    def insert() -> None:
        try:
            for i in range(300):
                if i % 30 == 0:  # let the reader take a snapshot now and then (bounded wait):
                    seen = checked[0]  # inserts are fast enough to finish before it looks
                    deadline = time.monotonic() + 2
                    while checked[0] == seen and time.monotonic() < deadline:
                        time.sleep(0.0005)
                started[0] += 5
                db.insert([{"at": (i % 7) * HOUR, "k": (i + j) % 11, "v": 1} for j in range(5)])
                acked[0] += 5
        except Exception as e:  # noqa: BLE001  (reported by the main thread)
            errors.append(e)
        finally:
            stop.set()

    def flush() -> None:
        while not stop.is_set():
            db.flush()

    threads = [threading.Thread(target=insert), threading.Thread(target=flush)]
    for t in threads:
        t.start()
    checks = 0
    while not stop.is_set() or checks == 0:
        low = acked[0]
        total = sum(e["count"] for e in snapshot_table(db.snapshot()).values())
        high = started[0]
        assert low <= total <= high, (low, total, high)
        checks += 1
        checked[0] = checks
    for t in threads:
        t.join()
    assert not errors and checks > 5
    check(db, [{"at": (i % 7) * HOUR, "k": (i + j) % 11, "v": 1}
               for i in range(300) for j in range(5)])
    db.close()
