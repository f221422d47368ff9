"""layout.py: file names and the one "is this ours" test, typed metadata (round trip, damage,
checksum), databases written before layout.py (format gumshoe/1) still open, dictionary
checksums, the directory lock, atomic writes, the retention cutoff, LastUpdated across
restarts."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from gumshoe import fileio
from gumshoe.db import DB
from gumshoe.dictionary import read_dictionary_file
from gumshoe.errors import CorruptDataError, DBLockedError
from gumshoe.layout import (
    META,
    DictMeta,
    DirLock,
    IntervalMeta,
    LayoutError,
    Meta,
    SegmentMeta,
    dictionary_filename,
    is_ours,
    kind_of,
    meta_bytes,
    parse_meta,
    partial_path,
    read_meta,
    retention_cutoff,
    segment_filename,
    staging_prefix,
    tmp_name,
    wal_filename,
    wal_files,
    write_atomic,
    write_meta,
)
from gumshoe.schema import Schema
from tests import reference
from tests.storage.contents import check_files, dict_files, make_config, snapshot_table

FORMAT1 = Path(__file__).parent / "data" / "format1_db"
T0 = 1_700_000_000 - 1_700_000_000 % 3600


def test_file_names_and_kinds() -> None:
    assert segment_filename(3600, 2, 11) == "interval.3600.generation0002.segment0011.seg"
    assert dictionary_filename("country", 3) == "dictionary.country.generation0003.json"
    assert wal_filename(17) == "wal.0000000000000017.log"
    ours = {META: "meta", segment_filename(0, 0, 0): "segment",
            dictionary_filename("a.b", 12345): "dictionary", wal_filename(1): "wal",
            tmp_name(META): "tmp", tmp_name(dictionary_filename("x", 1)): "tmp",
            tmp_name(segment_filename(7200, 1, 3)): "tmp"}
    for name, kind in ours.items():
        assert kind_of(name) == kind and is_ours(name), name
    # Anything else is someone else's, however close the name (the two checks that existed
    # before disagreed on "interval.*" files that are not segments).
    for name in ("notes.txt", "interval.backup", "interval.0.generation0000.segment0000.seg.bak",
                 "dictionary.x.json", "wal.log", "wal.12.log.gz", "foo.tmp", "db.json.tmp.tmp",
                 "db.json.bak", ".db.json.swp"):
        assert kind_of(name) is None and not is_ours(name), name
    assert staging_prefix(Path("/srv/s0")) == ".s0.gumtool-"
    assert partial_path("/srv/s0/", "gumtool-7") == "/srv/.s0.gumtool-7.partial"
    assert partial_path("/d/s0/db", "t") == "/d/s0/.db.t.partial"


def test_wal_files_ignore_other_names(tmp_path: Path) -> None:
    for name in (wal_filename(5), wal_filename(1), "wal.x.log", "wal.3.log.bak"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / wal_filename(9)).mkdir()
    assert wal_files(tmp_path) == [(1, tmp_path / wal_filename(1)),
                                   (5, tmp_path / wal_filename(5))]


SCHEMA = Schema.from_json({"timestamp_column": ["at", "uint32"],
                           "dimension_columns": [["name", "string:uint16"], ["age", "uint8"]],
                           "metric_columns": [["visits", "uint32"]],
                           "segment_size": 4096, "interval_duration": 3600})


def sample_meta() -> Meta:
    return Meta(SCHEMA, wal_seq=12, intervals=(
        IntervalMeta(T0, 2, (SegmentMeta(segment_filename(T0, 2, 0), 5),
                             SegmentMeta(segment_filename(T0, 2, 1), 3))),
        IntervalMeta(T0 + 3600, 0, ())),
        dictionaries={"name": DictMeta(dictionary_filename("name", 4), 4, 9, 0xDEADBEEF)},
        batch_ids={"b1": 1_700_000_123.25}, last_updated=T0 + 3599)


def test_meta_round_trip(tmp_path: Path) -> None:
    meta = sample_meta()
    write_meta(tmp_path, meta, fsync=False)
    assert read_meta(tmp_path) == meta
    assert meta.files() == {META, segment_filename(T0, 2, 0), segment_filename(T0, 2, 1),
                            dictionary_filename("name", 4)}
    obj = json.loads((tmp_path / META).read_bytes())
    assert obj["format"] == "gumshoe/2" and isinstance(obj["crc32"], int)
    assert obj["last_updated"] == T0 + 3599
    assert not list(tmp_path.glob("*.tmp"))


def mutations() -> dict[str, Any]:
    """Ways to damage a db.json (its checksum recomputed, so the contents are what is
    checked), each with a fragment of the error expected."""
    base = sample_meta().to_json()
    iv = base["intervals"][0]

    def with_(**kw: Any) -> dict[str, Any]:
        return {**base, **kw}

    return {
        "no schema": ({k: v for k, v in base.items() if k != "schema"}, "no 'schema'"),
        "bad schema": (with_(schema={**base["schema"], "metric_columns": []}), "bad schema"),
        "unknown format": (with_(format="gumshoe/99"), "unknown format 'gumshoe/99'"),
        "not an object": ([1, 2], "unknown format"),
        "interval without start": (with_(intervals=[{"generation": 0, "segments": []}]),
                                   "intervals[0]: no 'start'"),
        "string generation": (with_(intervals=[{**iv, "generation": "2"}]),
                              "intervals[0].generation"),
        "renamed segment": (with_(intervals=[{**iv, "segments": [
            {"file": "other.seg", "rows": 5}]}]), "intervals[0].segments[0].file"),
        "negative rows": (with_(intervals=[{**iv, "segments": [
            {"file": segment_filename(T0, 2, 0), "rows": -1}]}]), "segments[0].rows"),
        "interval twice": (with_(intervals=[iv, iv]), "an interval is listed twice"),
        "unaligned interval": (with_(intervals=[{**iv, "start": T0 + 1, "segments": []}]),
                               "not a multiple of the interval duration"),
        "dictionary of a number": (with_(dictionaries={"age": base["dictionaries"]["name"]}),
                                   "not a string dimension"),
        "dictionary file": (with_(dictionaries={"name": {
            **base["dictionaries"]["name"], "file": "x.json"}}), "dictionaries.name.file"),
        "bad crc": (with_(dictionaries={"name": {
            **base["dictionaries"]["name"], "crc32": 1 << 40}}), "is not a crc32"),
        "bad batch ids": (with_(batch_ids=["x"]), "'batch_ids'"),
        "bad last_updated": (with_(last_updated="yesterday"), "last_updated"),
    }


@pytest.mark.parametrize("case", sorted(mutations()))
def test_damaged_meta_names_the_file(tmp_path: Path, case: str) -> None:
    obj, fragment = mutations()[case]
    data = meta_bytes(obj) if isinstance(obj, dict) else json.dumps(obj).encode()
    (tmp_path / META).write_bytes(data)
    with pytest.raises(CorruptDataError, match=f"{META}: .*{re.escape(fragment)}"):
        read_meta(tmp_path)


def test_meta_checksum_catches_what_json_cannot(tmp_path: Path) -> None:
    write_meta(tmp_path, sample_meta(), fsync=False)
    good = (tmp_path / META).read_bytes()
    bad = good.replace(b'"rows": 5', b'"rows": 4')  # still valid JSON, still plausible
    assert bad != good
    (tmp_path / META).write_bytes(bad)
    with pytest.raises(CorruptDataError, match=f"{META}: metadata checksum mismatch"):
        read_meta(tmp_path)
    without = json.loads(good)
    del without["crc32"]
    with pytest.raises(CorruptDataError, match="checksum mismatch"):
        parse_meta(json.dumps(without).encode(), tmp_path / META)
    with pytest.raises(CorruptDataError, match="damaged metadata"):
        parse_meta(good[:50], tmp_path / META)
    with pytest.raises(FileNotFoundError):
        read_meta(tmp_path / "nowhere")


# -- databases written before layout.py ------------------------------------------------------
def format1_copy(tmp_path: Path) -> tuple[Path, Any]:
    d = tmp_path / "db"
    shutil.copytree(FORMAT1, d)
    return d, make_config(d, (("name", "string:uint16"), ("age", "uint8")),
                          (("visits", "uint32"),), segment_size=4096)


def format1_rows() -> list[dict[str, Any]]:
    """What tests/storage/data/make_format1_db.py inserted (its last batch only logged)."""
    return ([{"at": T0 + i * 600, "name": f"n{i % 5}", "age": i % 3, "visits": i}
             for i in range(20)]
            + [{"at": T0 + 3600 + i, "name": f"m{i % 4}", "age": None, "visits": 1}
               for i in range(10)]
            + [{"at": T0 + 7200 + i, "name": ["n0", "z1", "z2"][i % 3], "age": 7, "visits": 2}
               for i in range(6)])


def test_a_format1_database_opens_and_is_upgraded(tmp_path: Path) -> None:
    """A db.json as written before layout.py: no checksums, no last_updated. It opens with
    every row (flushed and logged), and its next flush writes format 2 with the dictionary's
    checksum; a later damage to that dictionary is then caught."""
    raw = json.loads((FORMAT1 / META).read_bytes())
    assert raw["format"] == "gumshoe/1" and "crc32" not in raw and "last_updated" not in raw
    assert "crc32" not in raw["dictionaries"]["name"]
    d, cfg = format1_copy(tmp_path)
    meta = read_meta(d)
    assert meta.format == "gumshoe/1" and meta.last_updated is None
    assert meta.dictionaries["name"].crc32 is None
    want = reference.rollup(meta.schema, format1_rows())
    then = raw["batch_ids"]["second"] + 60  # within the batch id window of the old inserts
    with DB(cfg, clock=lambda: then) as db:
        assert snapshot_table(db.snapshot()) == want
        # LastUpdated: the old metadata has none; the replayed batch gives it
        assert db.last_updated == T0 + 7205
        assert db.wal is not None and db.wal.stats["replayed"] == 1
        for bid in ("first", "second", "third"):  # from db.json and from the log
            assert db.insert(format1_rows()[:1], bid).duplicate
    meta = read_meta(d)
    assert meta.format == "gumshoe/2" and meta.last_updated == T0 + 7205
    entry = meta.dictionaries["name"]
    assert entry.crc32 is not None and (entry.generation, entry.size) == (3, 11)
    with DB(cfg) as db:
        check_files(db)
        assert db.last_updated == T0 + 7205
        assert snapshot_table(db.snapshot()) == want
    swap_two_strings(d / entry.file)
    with pytest.raises(CorruptDataError, match=f"{entry.file}: dictionary checksum mismatch"):
        DB(cfg)


def test_an_old_dictionary_gets_its_checksum_at_the_first_flush(tmp_path: Path) -> None:
    """A dictionary written before checksums is not rewritten: the checksum of the file as
    read at the first start is recorded by the first flush, and checked from then on."""
    d, cfg = format1_copy(tmp_path)
    for _, p in wal_files(d):
        p.unlink()  # only the flushed rows: no new strings, so no new dictionary generation
    old = read_meta(d).dictionaries["name"]
    data = (d / old.file).read_bytes()
    with DB(cfg) as db:
        assert snapshot_table(db.snapshot()) == reference.rollup(db.schema, format1_rows()[:30])
        assert db.last_updated is None  # nothing says what it was
    entry = read_meta(d).dictionaries["name"]
    assert (entry.file, entry.size) == (old.file, old.size) and entry.crc32 is not None
    assert (d / old.file).read_bytes() == data
    with DB(cfg):
        pass
    swap_two_strings(d / entry.file)
    with pytest.raises(CorruptDataError, match=f"{entry.file}: dictionary checksum mismatch"):
        DB(cfg)


def swap_two_strings(path: Path) -> None:
    values = json.loads(path.read_bytes())
    values[0], values[1] = values[1], values[0]
    path.write_text(json.dumps(values))


def test_swapped_strings_in_a_dictionary_stop_start_up(tmp_path: Path) -> None:
    """Two strings swapped in a dictionary file (same count, still valid) used to start and
    change every answer; now start-up stops naming the file."""
    d = tmp_path / "db"
    cfg = make_config(d, (("name", "string:uint16"), ("country", "string:uint8")))
    rows = [{"at": T0 + i, "name": f"user{i % 7}", "country": ["US", "CA", "DE"][i % 3]}
            for i in range(50)]
    with DB(cfg) as db:
        db.insert(rows)
    meta = read_meta(d)
    [path] = [d / meta.dictionaries["country"].file]
    before = path.read_bytes()
    swap_two_strings(path)
    assert len(path.read_bytes()) == len(before) and path.read_bytes() != before
    with pytest.raises(CorruptDataError, match=f"{path.name}: dictionary checksum mismatch"):
        DB(cfg)
    path.write_bytes(before)
    with DB(cfg) as db:
        assert snapshot_table(db.snapshot()) == reference.rollup(db.schema, rows)


def test_every_dictionary_generation_is_checksummed(tmp_path: Path) -> None:
    d = tmp_path / "db"
    cfg = make_config(d)
    with DB(cfg) as db:
        for i in range(3):
            db.insert([{"at": T0, "name": f"s{i}"}])
            db.flush()
            entry = read_meta(d).dictionaries["name"]
            assert entry.generation == i + 1 and entry.size == i + 1
            values, crc = read_dictionary_file(d / entry.file, entry.size, entry.crc32)
            assert values == [f"s{k}" for k in range(i + 1)] and crc == entry.crc32
    assert dict_files(d) == [dictionary_filename("name", 3)]


def test_a_dictionary_with_a_string_twice_is_corrupt(tmp_path: Path) -> None:
    p = tmp_path / "dictionary.x.generation0001.json"
    p.write_text('["a", "b", "a"]')
    with pytest.raises(CorruptDataError, match="a string appears twice"):
        read_dictionary_file(p, 3)


# -- LastUpdated ------------------------------------------------------------------------------
def test_last_updated_survives_restarts(tmp_path: Path) -> None:
    """db.json keeps the largest row timestamp ever inserted; after a restart DB.last_updated
    is the larger of it and the replayed log records' timestamps."""
    d = tmp_path / "db"
    cfg = make_config(d)
    with DB(cfg) as db:
        assert db.last_updated is None
        db.insert([{"at": T0 + 50, "name": "a"}, {"at": T0 + 10, "name": "b"}])
        assert db.last_updated == T0 + 50
    assert read_meta(d).last_updated == T0 + 50
    db = DB(cfg)  # flushed: from db.json
    assert db.last_updated == T0 + 50
    db.insert([{"at": T0 + 20, "name": "c"}])  # older rows do not lower it
    db.close(flush=False)
    db = DB(cfg)
    assert db.last_updated == T0 + 50
    db.insert([{"at": T0 + 9000, "name": "d"}])
    db.close(flush=False)  # only in the log: the replay raises it
    assert read_meta(d).last_updated == T0 + 50
    with DB(cfg) as db:
        assert db.last_updated == T0 + 9000
    with DB(cfg) as db:
        assert db.last_updated == T0 + 9000


def test_last_updated_is_not_raised_by_rows_outside_retention(tmp_path: Path) -> None:
    now = T0 + 30 * 86400
    cfg = make_config(tmp_path / "db", retention_days=1)
    with DB(cfg, clock=lambda: now) as db:
        r = db.insert([{"at": T0, "name": "old"}])
        assert r.rejected == 1 and db.last_updated is None
        db.insert([{"at": now - 60, "name": "new"}])
    with DB(cfg, clock=lambda: now) as db:
        assert db.last_updated == now - 60


# -- the lock, atomic writes, retention ------------------------------------------------------
def test_dir_lock(tmp_path: Path) -> None:
    with DirLock(tmp_path) as lock:
        assert lock.fd is not None
        with pytest.raises(DBLockedError, match="is in use: its directory is locked"):
            DirLock(tmp_path)
        with pytest.raises(DBLockedError):
            DB(make_config(tmp_path))  # the DB takes the same lock
    DirLock(tmp_path).release()
    with pytest.raises(LayoutError, match="no such database directory"):
        DirLock(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(LayoutError, match="not a directory"):
        DirLock(tmp_path / "f")


@pytest.mark.parametrize("kind", ["open", "write", "fsync", "replace"])
def test_write_atomic_leaves_the_old_file_or_the_new(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b"old")
    with fileio.inject(fileio.FaultyIO(1, kinds=(kind,))), pytest.raises(OSError):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]  # no temporary file
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"


def test_retention_cutoff() -> None:
    assert retention_cutoff(0, 3600, 1e9) is None
    assert retention_cutoff(7, 3600, 1_000_000_000.9) == 1_000_000_000 - 7 * 86400 - 3600
