"""Runs (docs/storage.md section 6): a flush appends a run to each interval it touches, merges
combine runs size-tiered and past quiet intervals into one; db.json lists the runs of an
interval only when it has several (so databases without runs write what they always wrote),
checked on load; queries, metric filters and gumtool see one roll-up."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gumshoe.db import DB
from gumshoe.errors import CorruptDataError
from gumshoe.interval import cap_plan, merge_plan
from gumshoe.layout import META, IntervalMeta, Meta, SegmentMeta, meta_bytes, read_meta, \
    segment_filename, write_meta
from gumshoe.schema import Schema
from gumshoe.service import query_rows
from tests import reference
from tests.storage.contents import check_files, check_structure, make_config, seg_files, \
    snapshot_table

HOUR = 3600
T0 = 1_700_000_000 - 1_700_000_000 % HOUR


def runs_meta(tmp_path: Path) -> Meta:
    schema = Schema.from_config(make_config(tmp_path).schema)
    segs = (SegmentMeta(segment_filename(T0, 3, 0), 5), SegmentMeta(segment_filename(T0, 3, 1), 2),
            SegmentMeta(segment_filename(T0, 7, 0), 1))
    return Meta(schema, intervals=(IntervalMeta(T0, 7, segs, HOUR, ((3, 2), (7, 1))),
                                   IntervalMeta(T0 + HOUR, 0, (SegmentMeta(
                                       segment_filename(T0 + HOUR, 0, 0), 4),))))


def test_runs_round_trip_and_are_written_only_when_several(tmp_path: Path) -> None:
    meta = runs_meta(tmp_path)
    write_meta(tmp_path, meta, fsync=False)
    assert read_meta(tmp_path) == meta
    obj = json.loads((tmp_path / META).read_bytes())
    assert obj["intervals"][0]["runs"] == [[3, 2], [7, 1]]
    assert set(obj["intervals"][1]) == {"start", "generation", "segments"}  # as before runs
    assert meta.intervals[0].rows == 8 and meta.intervals[1].run_list == ((0, 1),)
    assert meta.files() >= {segment_filename(T0, 3, 1), segment_filename(T0, 7, 0)}


def damaged_runs() -> dict[str, tuple[Any, str]]:
    return {
        "one run": ([[7, 3]], "at least two"),
        "not pairs": ([[3, 2, 1], [7, 1]], "at least two"),
        "a run without segments": ([[3, 3], [5, 0], [7, 0]], "without segments"),
        "descending": ([[7, 2], [3, 1]], "not ascending"),
        "not ending at the generation": ([[3, 2], [6, 1]], "to the interval's generation 7"),
        "segments do not add up": ([[3, 1], [7, 1]], "2 segments, the interval lists 3"),
        "a segment of another run": ([[3, 1], [7, 2]], "segments[1].file"),
    }


@pytest.mark.parametrize("case", sorted(damaged_runs()))
def test_damaged_runs_name_the_interval(tmp_path: Path, case: str) -> None:
    runs, fragment = damaged_runs()[case]
    obj = runs_meta(tmp_path).to_json()
    obj["intervals"][0]["runs"] = runs
    (tmp_path / META).write_bytes(meta_bytes(obj))
    with pytest.raises(CorruptDataError, match=f"{META}: .*intervals\\[0\\].*"
                                               f"{re.escape(fragment)}"):
        read_meta(tmp_path)


def test_merge_plan_is_size_tiered() -> None:
    assert merge_plan([100] * 7) == ()
    assert merge_plan([100] * 8) == tuple(range(8))
    # a large run does not take part in the merge of small ones
    assert merge_plan([100_000] + [100] * 8) == tuple(range(1, 9))
    assert merge_plan([100_000, 5, 900, 100, 100]) == ()
    assert merge_plan([1] * 3, fanout=2) == (0, 1, 2)
    assert merge_plan([10, 1000, 10**5, 10**7], fanout=8, max_runs=3) == (0, 1)
    assert cap_plan([5, 1, 9], 3) == () and cap_plan([5, 1, 9], 1) == (0, 1, 2)
    assert cap_plan([5, 1, 9, 2], 3) == (1, 3)


def make_db(tmp_path: Path, **changes: Any) -> DB:
    return DB(make_config(tmp_path / "db", (("name", "string:uint16"),),
                          (("visits", "uint32"),), **changes))


def test_flushes_append_runs_and_merges_combine_them(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    raw: list[dict[str, Any]] = []
    for i in range(5):
        batch = [{"at": T0 + i, "name": f"n{(i + j) % 4}", "visits": j} for j in range(3)]
        db.insert(batch)
        raw += batch
        db.flush()
    view = db.snapshot().intervals[0]
    assert view.runs == 5 and not view.fully_rolled_up
    assert len(seg_files(tmp_path / "db")) == 5  # nothing rewritten
    assert snapshot_table(db.snapshot()) == reference.rollup(db.schema, raw)
    check_files(db)
    db.fanout = 2  # size-tiered: runs of similar size merge
    assert db.merge(settle=float("inf")) >= 1
    assert db.snapshot().intervals[0].runs < 5
    check_structure(db.snapshot())
    assert snapshot_table(db.snapshot()) == reference.rollup(db.schema, raw)
    runs = db.snapshot().intervals[0].runs
    db.insert([{"at": T0, "name": "n9", "visits": 1}])
    raw.append({"at": T0, "name": "n9", "visits": 1})
    db.close()  # its flush: one more run
    with make_db(tmp_path) as db:  # the runs are reopened as written
        assert db.snapshot().intervals[0].runs == runs + 1
        assert snapshot_table(db.snapshot()) == reference.rollup(db.schema, raw)
        assert db.merge(settle=0) == 1  # a past interval, to one run
        assert db.snapshot().intervals[0].runs == 1 and len(seg_files(tmp_path / "db")) == 1
        check_files(db)
        assert snapshot_table(db.snapshot()) == reference.rollup(db.schema, raw)


def test_the_current_interval_is_not_merged_to_one_run(tmp_path: Path) -> None:
    now = [T0 + 10]
    db = DB(make_config(tmp_path / "db"), clock=lambda: now[0])
    for i in range(3):
        db.insert([{"at": T0 + i, "name": "a", "visits": 1}])
        db.flush()
    assert db.merge(settle=0) == 0 and db.snapshot().intervals[0].runs == 3
    now[0] += HOUR  # the interval is past now; the flush touched it just now
    assert db.merge() == 0
    assert db.merge(settle=0) == 1 and db.snapshot().intervals[0].runs == 1
    db.close()


def test_max_runs_caps_runs_at_the_flush(tmp_path: Path) -> None:
    db = make_db(tmp_path)
    db.max_runs = 3
    for i in range(7):
        db.insert([{"at": T0, "name": f"n{i}", "visits": 1}])
        db.flush()
        assert db.snapshot().intervals[0].runs == min(i + 1, 3)
    check_files(db)
    assert len(seg_files(tmp_path / "db")) == 3
    db.max_runs = 1  # the behaviour before runs: every flush rewrites the interval whole
    db.insert([{"at": T0, "name": "n0", "visits": 1}])
    db.flush()
    assert db.snapshot().intervals[0].runs == 1 and len(seg_files(tmp_path / "db")) == 1
    assert query_rows(db, {"aggregates": [{"column": "visits"}]})[0]["visits"] == 8
    db.close()


def test_metric_filters_see_one_roll_up_of_the_runs(tmp_path: Path) -> None:
    """visits > 5 holds for the key rolled up over both runs (3 + 3), for neither run alone;
    the roll-up of the runs is made once per run set."""
    db = make_db(tmp_path)
    for visits in (3, 3):
        db.insert([{"at": T0, "name": "a", "visits": visits},
                   {"at": T0, "name": "b", "visits": 1}])
        db.flush()
    db.insert([{"at": T0 + HOUR, "name": "a", "visits": 9}])
    db.flush()
    q = {"aggregates": [{"column": "visits"}], "groupings": ["name"],
         "filters": [{"type": ">", "column": "visits", "value": 5}]}
    want = [{"name": "a", "visits": 15, "rowCount": 3}]
    assert query_rows(db, q) == want
    iv = db.snapshot().intervals[0].interval
    assert iv is not None and iv.nruns == 2
    rolled = iv.rolled(db.schema)
    assert rolled.n == 2 and iv.rolled(db.schema) is rolled
    db.insert([{"at": T0, "name": "b", "visits": 9}])  # unflushed: rolled up with the runs
    assert query_rows(db, q) == [{"name": "a", "visits": 15, "rowCount": 3},
                                 {"name": "b", "visits": 11, "rowCount": 3}]
    db.insert([{"at": T0 + HOUR, "name": "c", "visits": 9}])
    db.flush()  # another run for both intervals: a new run set, a new roll-up
    assert db.snapshot().intervals[0].interval is not iv
    assert query_rows(db, q) == [{"name": "a", "visits": 15, "rowCount": 3},
                                 {"name": "b", "visits": 11, "rowCount": 3},
                                 {"name": "c", "visits": 9, "rowCount": 1}]
    db.close()


def test_stats_and_debug_rows_do_not_double_count(tmp_path: Path) -> None:
    from gumshoe.metrics import metricz_json, storage_stats
    from gumshoe.server import debug_rows
    db = make_db(tmp_path)
    for _ in range(3):
        db.insert([{"at": T0, "name": "a", "visits": 1}])
        db.flush()
    snap = db.snapshot()
    stats = storage_stats(snap)
    assert stats.runs == 3 and stats.rows == 3  # stored rows: an upper bound while unmerged
    rows = debug_rows(snap)
    assert rows is not None and len(rows) == 1 and rows[0]["Count"] == 3
    assert metricz_json(db.config, snap)["totals"]["logical_rows"] == 3
    db.merge(settle=0)
    assert storage_stats(db.snapshot()).rows == 1
    db.close()


def test_past_the_segment_budget_the_intervals_with_most_runs_merge(tmp_path: Path) -> None:
    """Every mapped segment holds a file descriptor: over `segment_budget` segments, a merge
    takes the intervals with the most runs down to one, even one just flushed into."""
    now = [T0 + 3 * HOUR + 10]
    db = DB(make_config(tmp_path / "db"), clock=lambda: now[0])
    for i in range(4):
        db.insert([{"at": T0 + h * HOUR, "name": f"n{i}", "visits": 1} for h in range(i + 1)])
        db.flush()
    assert [v.runs for v in db.snapshot().intervals] == [4, 3, 2, 1]
    assert db.merge() == 0  # flushed just now; no size level holds 8 runs
    db.segment_budget = 8  # 10 segments: the interval of 4 runs merges
    assert db.merge() == 1
    assert [v.runs for v in db.snapshot().intervals] == [1, 3, 2, 1]
    check_files(db)
    db.close()
