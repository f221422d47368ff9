"""Tiered retention: [schema] tiers, the tier arithmetic, interval durations and watermarks in
db.json, rows assigned by the watermarks (insert, replay, late data), the compactor (re-roll,
drop, step by step, memtable rows moved along; sums, minima and maxima) -- against the
reference model."""

from __future__ import annotations

import collections
import errno
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gumshoe import fileio
from gumshoe.config import config_toml, parse_config
from gumshoe.db import DB
from gumshoe.errors import (
    ConfigError,
    CorruptDataError,
    SchemaMismatchError,
    StorageFailedError,
    TransientStorageError,
)
from gumshoe.layout import META, kind_of, meta_bytes, read_meta, write_meta
from gumshoe.tiers import Tiers
from tests import reference
from tests.storage.contents import check_structure, snapshot_table

M, H, D = 60, 3600, 86400
NOW = 1_700_000_000 - 1_700_000_000 % D + 7 * H  # 07:00 on a day
TIERS = '[["1m", "1h"], ["1h", "1d"], ["1d", "30d"]]'


def config_text(directory: str, tiers: str = TIERS, extra: str = "") -> str:
    return f"""database_dir = "{directory}"
durability = "none"
{extra}
[schema]
segment_size = "2KB"
timestamp_column = ["at", "uint32"]
dimension_columns = [["app", "uint16"], ["name", "string:uint8"]]
metric_columns = [["value", "uint32"], ["low", "min:int16"], ["peak", "max:float32"]]
tiers = {tiers}
"""


def open_db(directory: str | Path, now: list[int], **kw: Any) -> DB:
    return DB(parse_config(config_text(str(directory), **kw)), clock=lambda: now[0])


def make_rows(n: int, span: int, seed: int = 0, now: int = NOW) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = [{"at": int(now - rng.integers(0, span)), "app": int(rng.integers(0, 6)),
             "name": f"e{int(rng.integers(0, 5))}", "value": int(rng.integers(0, 50)),
             "low": int(rng.integers(-2**15, 2**15)), "peak": float(rng.integers(-8, 8)) / 4}
            for _ in range(n)]
    for r in rows[::7]:  # min/max without a value: re-rolled as the kind's identity
        del r["low"], r["peak"]
    return rows


def stored(db: DB, raw: list[dict[str, Any]]) -> reference.Table:
    """The reference roll-up of `raw` with each row at the start of the interval that holds
    it now (the watermarks decide the tier)."""
    starts = db.interval_starts(np.array([r["at"] for r in raw], np.int64))
    return reference.rollup(db.schema, [{**r, "at": int(s)} for r, s in zip(raw, starts)])


def check(db: DB, raw: list[dict[str, Any]]) -> None:
    snap = db.snapshot()
    check_structure(snap)
    assert snapshot_table(snap) == stored(db, raw)
    for view in snap.intervals:  # every interval at its tier's duration, never overlapping
        assert view.duration == db.duration_at(view.start)
        assert view.start % view.duration == 0
    ends = [(v.start, v.start + v.duration) for v in snap.intervals]
    assert all(a[1] <= b[0] for a, b in zip(ends, ends[1:]))


def durations(db: DB) -> dict[int, int]:
    return dict(collections.Counter(iv.duration for iv in db.intervals.values()))


# -- config ------------------------------------------------------------------------------------
def test_tiers_config() -> None:
    cfg = parse_config('[schema]\ntiers = [["5m", "1d"], ["1h", "30d"], ["1d", "3y"]]\n')
    assert cfg.schema.tiers == ((300, D), (H, 30 * D), (D, 3 * 365 * D))
    assert cfg.schema.interval_duration == 300 and cfg.retention_days == 3 * 365
    assert parse_config(config_toml(cfg)) == cfg
    same = parse_config('retention_days = 1095\n[schema]\ninterval_duration = "5m"\n'
                        'tiers = [["5m", "1d"], ["1h", "30d"], ["1d", "3y"]]\n')
    assert same == cfg
    odd = parse_config('[schema]\ntiers = [["1m", "1h"], ["1h", "36h"]]\n')
    assert odd.retention_days == 0 and parse_config(config_toml(odd)) == odd
    assert parse_config("").schema.tiers == ()  # without tiers nothing changes


@pytest.mark.parametrize(("tiers", "extra", "names"), [
    ('"5m"', "", "schema.tiers"),
    ('[["5m"]]', "", "schema.tiers[0]"),
    ('[["5x", "1d"]]', "", "schema.tiers[0][0]"),
    ('[["5m", 3]]', "", "schema.tiers[0][1]"),
    ('[["30s", "1d"]]', "", "schema.tiers[0][0]"),
    ('[["1h", "30m"]]', "", "schema.tiers[0][1]"),
    ('[["5m", "1d"], ["7m", "2d"]]', "", "schema.tiers[1][0]"),
    ('[["1h", "1d"], ["5m", "2d"]]', "", "schema.tiers[1][0]"),
    ('[["5m", "2d"], ["1h", "1d"]]', "", "schema.tiers[1][1]"),
    ('[["5m", "1d"]]', "retention_days = 7", "retention_days"),
    ('[["5m", "1d"]]', '[schema]\ninterval_duration = "1h"', "schema.interval_duration"),
])
def test_bad_tiers_name_the_key(tiers: str, extra: str, names: str) -> None:
    text = f"{extra}\n[schema]\ntiers = {tiers}\n" if not extra.startswith("[schema]") else \
        f"{extra}\ntiers = {tiers}\n"
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert str(e.value).startswith(names + ":"), str(e.value)


# -- arithmetic --------------------------------------------------------------------------------
def test_tier_arithmetic() -> None:
    t = Tiers((M, H, D), (H, D, 30 * D))
    w = (NOW - 2 * H, NOW - 3 * D - 7 * H)  # w_1 (a whole hour), w_2 (a whole day)
    ts = np.array([NOW, NOW - 2 * H, NOW - 2 * H - 1, w[1], w[1] - 1, 0], np.int64)
    assert t.tier_of(ts, w).tolist() == [0, 0, 1, 1, 2, 2]
    assert t.interval_starts(ts, w).tolist() == [NOW, NOW - 2 * H, NOW - 3 * H, w[1],
                                                 w[1] - D, 0]
    assert [t.duration_at(int(s), w) for s in t.interval_starts(ts, w)] == [M, M, H, H, D, D]
    # buckets wholly older than the keep: w_1 to the hour that started an hour ago, w_2 to
    # the day that ended a day ago; never back, and w_2 never past w_1
    assert t.targets(NOW, (0, 0)) == (NOW - H, NOW - 7 * H - D)
    assert t.targets(NOW, (NOW, NOW - D)) == (NOW, NOW - D)
    assert t.lag(NOW, (0, 0)) == NOW - H
    assert t.lag(NOW, t.targets(NOW, (0, 0))) == 0
    cut = t.retention_cutoff(NOW)
    assert cut % D == 0 and cut + D >= NOW - 30 * D - D and cut < NOW - 30 * D


# -- the database ------------------------------------------------------------------------------
@pytest.fixture(params=["memory", "disk"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "MEMORY" if request.param == "memory" else str(tmp_path / "db")


def test_compaction_keeps_every_total(where: str) -> None:
    now = [NOW]
    raw = make_rows(3000, 5 * D)
    db = open_db(where, now)
    db.insert(raw)
    db.flush()
    assert durations(db) == {M: len(db.intervals)}
    totals = snapshot_table_totals(db)
    check(db, raw)
    assert db.compaction_lag() > 0
    steps = db.compact(max_rows=400)  # small steps: many commits
    assert steps > 3 and db.compaction_lag() == 0
    assert set(durations(db)) == {M, H, D}
    check(db, raw)
    assert snapshot_table_totals(db) == totals
    assert db.compact() == 0  # nothing more is due
    if where != "MEMORY":
        db.close()
        db = open_db(where, now)
        check(db, raw)
    db.close()


def snapshot_table_totals(db: DB) -> dict[Any, Any]:
    """Per dimension key (time dropped): count and value."""
    out: dict[Any, list[int]] = {}
    for (_, key), entry in snapshot_table(db.snapshot()).items():
        acc = out.setdefault(key, [0, 0])
        acc[0] += entry["count"]
        acc[1] += entry["value"]
    return out


def test_late_rows_go_to_the_coarser_interval(where: str) -> None:
    now = [NOW]
    raw = make_rows(500, 4 * D, seed=1)
    db = open_db(where, now)
    db.insert(raw)
    db.flush()
    db.compact()
    late = [{"at": NOW - 3 * D + 5, "app": 1, "name": "late", "value": 7},
            {"at": NOW - 5 * H + 5, "app": 1, "name": "late", "value": 8}]
    db.insert(late)
    starts = {v.start: v.duration for v in db.snapshot().intervals}
    day = (NOW - 3 * D) - (NOW - 3 * D) % D
    hour = (NOW - 5 * H) - (NOW - 5 * H) % H
    assert starts[day] == D and starts[hour] == H
    check(db, raw + late)
    db.flush()
    check(db, raw + late)
    assert set(durations(db)) == {M, H, D}
    db.close()


def test_unflushed_rows_of_a_rerolled_range_move_with_it(where: str) -> None:
    now = [NOW]
    raw = make_rows(800, 3 * D, seed=2)
    db = open_db(where, now)
    db.insert(raw[:400])
    db.flush()
    db.insert(raw[400:])  # unflushed, in 1-minute intervals of ranges the compactor re-rolls
    db.compact()
    check(db, raw)
    db.flush()
    check(db, raw)
    db.close()


def test_replay_uses_the_watermarks(tmp_path: Path) -> None:
    """Rows logged but not flushed before a crash are replayed into the intervals the
    watermarks give them then: a re-rolled range's coarser interval."""
    now = [NOW]
    raw = make_rows(600, 3 * D, seed=3)
    text = config_text(str(tmp_path / "db")).replace('durability = "none"',
                                                    'durability = "os"')
    db = DB(parse_config(text), clock=lambda: now[0])
    db.insert(raw[:300])
    db.flush()
    db.compact()
    db.insert(raw[300:])  # logged, not flushed
    db.close(flush=False)
    db = DB(parse_config(text), clock=lambda: now[0])
    assert db.stats["replayed_rows"] == 300
    views = db.snapshot().intervals
    assert {v.duration for v in views if v.mem} == {M, H, D}  # replayed into every tier
    check(db, raw)
    db.close()


def test_data_past_the_last_keep_is_dropped(where: str) -> None:
    now = [NOW]
    raw = make_rows(1000, 20 * D, seed=4)
    db = open_db(where, now, tiers='[["1m", "1h"], ["1h", "1d"], ["1d", "10d"]]')
    assert db.insert(raw).rejected > 0  # rows past the last keep are rejected, as retention
    kept = [r for r in raw if r["at"] - r["at"] % D >= db.retention_cutoff()]
    db.flush()
    db.compact()
    check(db, kept)
    now[0] += 5 * D  # five days later: more is past the keep
    assert db.compact() > 0 and db.stats["dropped_intervals"] > 0
    cut = db.retention_cutoff()
    assert cut is not None and min(db.intervals) >= cut
    check(db, [r for r in kept if r["at"] >= cut])
    db.close()


def test_db_json_of_a_tiered_database(tmp_path: Path) -> None:
    now = [NOW]
    db = open_db(tmp_path / "db", now)
    db.insert(make_rows(300, 3 * D, seed=5))
    db.flush()
    db.compact()
    db.close()
    obj = json.loads((tmp_path / "db" / META).read_text())
    assert len(obj["watermarks"]) == 2 and obj["schema"]["tiers"]
    assert {iv.get("duration") for iv in obj["intervals"]} == {None, H, D}  # 1m: the schema's
    meta = read_meta(tmp_path / "db")
    assert meta.watermarks == tuple(obj["watermarks"])
    # damage: an interval outside its tier's range, a watermark that is not whole
    for change in ({"watermarks": [obj["watermarks"][0] + 60, obj["watermarks"][1]]},
                   {"watermarks": [obj["watermarks"][1] - D, obj["watermarks"][1]]}):
        bad = {**obj, **change}
        bad.pop("crc32")
        (tmp_path / "db" / META).write_bytes(meta_bytes(bad))
        with pytest.raises(CorruptDataError, match="watermark"):
            read_meta(tmp_path / "db")


def test_a_database_without_tiers_is_unchanged(tmp_path: Path) -> None:
    text = config_text(str(tmp_path / "db"), tiers="[]").replace(
        "[schema]", 'retention_days = 0\n[schema]\ninterval_duration = "1h"')
    db = DB(parse_config(text))
    db.insert(make_rows(100, 2 * D))
    db.flush()
    assert db.tiers is None and db.compact() == 0 and db.compaction_lag() == 0
    db.close()
    obj = json.loads((tmp_path / "db" / META).read_text())
    assert "watermarks" not in obj and "tiers" not in obj["schema"]
    assert all(set(iv) == {"start", "generation", "segments"} for iv in obj["intervals"])


def test_tiers_added_to_an_existing_database(tmp_path: Path) -> None:
    """A database of the first tier's duration may gain tiers: its intervals are the finest
    tier's, the compactor re-rolls them; taking tiers away, or changing a duration, is a
    schema mismatch (gumtool migrate)."""
    now = [NOW]
    raw = make_rows(400, 3 * D, seed=6)
    plain = config_text(str(tmp_path / "db"), tiers="[]").replace(
        "[schema]", 'retention_days = 0\n[schema]\ninterval_duration = "1m"')
    db = DB(parse_config(plain), clock=lambda: now[0])
    db.insert(raw)
    db.close()
    db = open_db(tmp_path / "db", now)
    assert db.watermarks == (0, 0)
    db.compact()
    check(db, raw)
    db.close()
    with pytest.raises(SchemaMismatchError, match="tier durations"):
        DB(parse_config(plain), clock=lambda: now[0])
    with pytest.raises(SchemaMismatchError, match="tier durations"):
        open_db(tmp_path / "db", now, tiers='[["1m", "1h"], ["30m", "1d"], ["1d", "30d"]]')
    db = open_db(tmp_path / "db", now, tiers='[["1m", "2h"], ["1h", "2d"], ["1d", "60d"]]')
    check(db, raw)  # keeps may change: the watermarks never move back
    db.close()
    assert read_meta(tmp_path / "db").schema.tiers[2] == (D, 60 * D)


def test_an_old_db_json_still_opens(tmp_path: Path) -> None:
    """db.json written before tiers (no durations, no watermarks) opens as before."""
    text = config_text(str(tmp_path / "db"), tiers="[]").replace(
        "[schema]", 'retention_days = 0\n[schema]\ninterval_duration = "1h"')
    db = DB(parse_config(text))
    raw = make_rows(200, D, seed=7)
    db.insert(raw)
    db.close()
    meta = read_meta(tmp_path / "db")
    write_meta(tmp_path / "db", meta)
    db = DB(parse_config(text))
    assert all(iv.duration == H for iv in db.intervals.values())
    check(db, raw)
    db.close()


# -- faults during compaction ------------------------------------------------------------------
class FastIO(fileio.FaultyIO):
    """Fails the Nth file operation of `kinds` with `err`; no real fsyncs unless failing."""

    def __init__(self, fail_at: int = 0, err: int = errno.EMFILE,
                 kinds: tuple[str, ...] = ("open",)) -> None:
        super().__init__(fail_at, err, kinds=kinds)

    def fsync(self, fd: int) -> None:
        if "fsync" in self.kinds and self._should_fail("fsync"):
            self._raise("fsync")


def test_compaction_out_of_descriptors_changes_nothing(tmp_path: Path) -> None:
    """EMFILE at any open of a compaction step: TransientStorageError, no file left behind,
    the database as before (not failed); the next run does the work."""
    now = [NOW]
    raw = make_rows(400, 3 * D, seed=8)
    probe = open_db(tmp_path / "probe", now)
    probe.insert(raw)
    probe.flush()
    with fileio.inject(FastIO()) as io:
        probe.compact(max_steps=1)
    probe.close()
    assert io.calls >= 3
    for n in range(1, io.calls + 1, max(1, io.calls // 8)):
        db = open_db(tmp_path / f"n{n}", now)
        db.insert(raw)
        db.flush()
        before = {s: iv.duration for s, iv in db.intervals.items()}
        with fileio.inject(FastIO(n)), pytest.raises(TransientStorageError):
            db.compact(max_steps=1)
        assert db.failed is None and {s: iv.duration for s, iv in db.intervals.items()} \
            == before
        assert db.dir is not None
        files = {p.name for p in db.dir.iterdir() if kind_of(p.name) != "wal"}
        assert files == db.referenced_files(), n
        check(db, raw)
        assert db.compact() > 0
        check(db, raw)
        db.close()
        db = open_db(tmp_path / f"n{n}", now)
        check(db, raw)
        db.close()


def test_compaction_disk_fault_is_fail_stop(tmp_path: Path) -> None:
    """EIO while writing a step: the database refuses writes (as after a failed flush); after a
    restart it holds everything, re-rolled or not."""
    now = [NOW]
    raw = make_rows(400, 3 * D, seed=9)
    db = open_db(tmp_path / "db", now)
    db.insert(raw)
    db.flush()
    with fileio.inject(FastIO(2, errno.EIO, kinds=("write",))), \
            pytest.raises(StorageFailedError):
        db.compact()
    assert db.failed is not None
    db.close(flush=False)
    db = open_db(tmp_path / "db", now)
    check(db, raw)
    db.compact()
    check(db, raw)
    db.close()
