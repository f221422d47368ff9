"""Pruning (docs/storage.md §4): segments skipped by their header's min/max without reading
their data, row ranges of the leading dimension by binary search, nothing scanned for a
string that is not in the dictionary; unflushed blocks scanned whole. And the response's
"granularity" over tiered intervals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gumshoe.block import Block
from gumshoe.config import parse_config
from gumshoe.db import DB
from gumshoe.engine import Prepared
from gumshoe.query import parse_query
from gumshoe.segment import Segment
from gumshoe.snapshot import IntervalView, Snapshot
from gumshoe.service import query_rows

H, D = 3600, 86400
T0 = 1_700_000_000 - 1_700_000_000 % D
APPS, NAMES = 300, 20


def config(directory: Path | str, tiers: str = "[]") -> Any:
    return parse_config(f"""database_dir = "{directory}"
durability = "none"
{'retention_days = 0' if tiers == "[]" else ""}
[schema]
segment_size = "1KB"
{'interval_duration = "1h"' if tiers == "[]" else ""}
timestamp_column = ["at", "uint32"]
dimension_columns = [["app", "uint16"], ["name", "string:uint8"]]
metric_columns = [["value", "uint32"]]
tiers = {tiers}
""")


def rows(n: int, hours: int = 3, seed: int = 0, t0: int = T0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [{"at": t0 + int(rng.integers(0, hours * H)), "app": int(rng.integers(0, APPS)),
             "name": f"n{int(rng.integers(0, NAMES))}", "value": int(rng.integers(0, 9))}
            for _ in range(n)]


@pytest.fixture(scope="module")
def data() -> list[dict[str, Any]]:
    return rows(20_000)


@pytest.fixture
def db(tmp_path: Path, data: list[dict[str, Any]]) -> Any:
    d = DB(config(tmp_path / "db"))
    d.insert(data)
    d.flush()
    yield d
    d.close()


def total(q: dict[str, Any]) -> dict[str, Any]:
    return {"aggregates": [{"column": "value", "name": "v"}], **q}


def want(data: list[dict[str, Any]], keep: Any) -> tuple[int, int]:
    picked = [r for r in data if keep(r)]
    return len(picked), sum(r["value"] for r in picked)


def run(db: DB, q: dict[str, Any]) -> tuple[Prepared, list[dict[str, Any]]]:
    p = Prepared(parse_query(q, db.schema), db.snapshot())
    return p, p.rows()


def test_leading_equality_skips_segments_and_rows(db: DB, data: list[dict[str, Any]]) -> None:
    stored = sum(s.rows for v in db.snapshot().intervals for s in v.segments)
    segments = sum(len(v.segments) for v in db.snapshot().intervals)
    assert segments > 20 and all(all(v.sorted) for v in db.snapshot().intervals)
    p, out = run(db, total({"filters": [{"column": "app", "value": 17}]}))
    n, v = want(data, lambda r: r["app"] == 17)
    assert out == [{"v": v, "rowCount": n}]
    assert p.scanner.pruned["segments"] >= segments - 2 * len(db.snapshot().intervals)
    scanned = sum(b.n for t in p.tasks for _, b, _ in t)
    assert p.scanner.pruned["rows"] == stored - scanned and scanned < stored / 50


def test_in_and_or_become_several_ranges(db: DB, data: list[dict[str, Any]]) -> None:
    q = total({"groupings": ["name"], "filters": [
        {"type": "or", "filters": [{"type": "in", "column": "app", "value": [3, 4, 250]},
                                   {"column": "app", "value": 100}]},
        {"column": "name", "type": "!=", "value": "n1"}]})
    p, out = run(db, q)
    keep = {3, 4, 100, 250}
    for row in out:
        n, v = want(data, lambda r, name=row["name"]: r["app"] in keep and r["name"] == name)
        assert (row["rowCount"], row["v"]) == (n, v)
    assert sum(r["rowCount"] for r in out) == want(
        data, lambda r: r["app"] in keep and r["name"] != "n1")[0]
    assert p.scanner.pruned["rows"] > 0.9 * sum(
        s.rows for v in db.snapshot().intervals for s in v.segments)


def test_a_range_filter_on_the_leading_dimension(db: DB, data: list[dict[str, Any]]) -> None:
    p, out = run(db, total({"filters": [{"column": "app", "type": ">=", "value": 280}]}))
    n, v = want(data, lambda r: r["app"] >= 280)
    assert out == [{"v": v, "rowCount": n}] and p.scanner.pruned["segments"] > 0


def test_unknown_string_scans_nothing(db: DB, data: list[dict[str, Any]]) -> None:
    db.insert(rows(100, seed=9))  # unflushed too: not scanned either
    p, out = run(db, total({"filters": [{"column": "name", "value": "no-such-name"},
                                        {"column": "app", "type": ">", "value": 3}]}))
    assert out == [{"v": 0, "rowCount": 0}] and p.tasks == []
    # != of an unknown string matches every row (nil included): nothing is pruned
    p, out = run(db, total({"filters": [{"column": "name", "type": "!=",
                                         "value": "no-such-name"}]}))
    assert out[0]["rowCount"] == len(data) + 100 and p.scanner.pruned == {"segments": 0,
                                                                         "rows": 0}


def test_unflushed_blocks_are_scanned_whole(db: DB, data: list[dict[str, Any]]) -> None:
    more = rows(500, seed=3)
    db.insert(more)
    p, out = run(db, total({"filters": [{"column": "app", "value": 17}]}))
    n, v = want(data + more, lambda r: r["app"] == 17)
    assert out == [{"v": v, "rowCount": n}]
    mem = [b for t in p.tasks for _, b, stats in t if not stats]
    assert sum(b.n for b in mem) == sum(b.n for v in db.snapshot().intervals for b in v.mem)


def test_nil_on_the_leading_dimension(tmp_path: Path) -> None:
    db = DB(config(tmp_path / "db"))
    data = rows(3000, seed=4)
    for r in data[::7]:
        r["app"] = None
    db.insert(data)
    db.flush()
    for f, keep in (({"column": "app", "value": None}, lambda r: r["app"] is None),
                    ({"type": "in", "column": "app", "value": [None, 5]},
                     lambda r: r["app"] in (None, 5)),
                    ({"column": "app", "value": 5}, lambda r: r["app"] == 5)):
        p, out = run(db, total({"filters": [f]}))
        n, v = want(data, keep)
        assert out == [{"v": v, "rowCount": n}], f
        assert p.scanner.pruned["rows"] > 0
    db.close()


class Untouchable(dict):  # type: ignore[type-arg]
    """Column arrays that fail the test when read."""

    def __getitem__(self, key: Any) -> Any:
        raise AssertionError(f"read column {key!r} of a segment that should be skipped")


def test_a_skipped_segment_is_never_read(db: DB, data: list[dict[str, Any]]) -> None:
    """A segment whose header excludes the filter: its columns are never touched."""
    snap = db.snapshot()
    n = 1000
    fake = Block(n, Untouchable(), Untouchable(), {"app": None, "name": None},  # type: ignore
                 Untouchable())
    stats = {"d:app": (1000, 2000), "d:name": (0, 3), "m:value": (0, 9)}
    seg = Segment(fake, stats, 4096, Path("fake.seg"))
    view = IntervalView(T0 + 10 * H, (seg,), (), H, (True,))
    snap = Snapshot(snap.schema, (*snap.intervals, view), snap.dictionaries, snap.dict_sizes)
    for q in (total({"filters": [{"column": "app", "value": 17}]}),
              total({"filters": [{"type": "in", "column": "app", "value": [1, 2, 999]}],
                     "groupings": ["name"]}),
              total({"filters": [{"column": "name", "value": "n7"},
                                 {"column": "app", "type": "<", "value": 1000}]})):
        p = Prepared(parse_query(q, snap.schema), snap)
        p.rows()  # raises if the fake segment is read
        assert p.scanner.pruned["segments"] >= 1


# -- granularity ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiered(tmp_path_factory: pytest.TempPathFactory) -> Any:
    now = T0 + 7 * H
    db = DB(config(tmp_path_factory.mktemp("tiered") / "db",
                   '[["5m", "1d"], ["1h", "3d"], ["1d", "30d"]]'), clock=lambda: now)
    data = rows(5000, hours=6 * 24, seed=5, t0=now - 6 * D)
    db.insert(data)
    db.flush()
    db.compact()
    assert {v.duration for v in db.snapshot().intervals} == {300, H, D}
    yield db, data, now
    db.close()


@pytest.mark.parametrize(("grouping", "granularity"), [
    ({"column": "at", "timeTransform": "day"}, None),
    ({"column": "at", "timeTransform": "week"}, None),
    ({"column": "at", "timeTransform": "hour"}, "1d"),
    ({"column": "at", "timeTransform": "minute"}, "1d"),
    ({"column": "at"}, "1d"),
    ({"column": "at", "timeTransform": "day", "timeZone": "America/New_York"}, "1d"),
    ({"column": "at", "timeTransform": "day", "timeZone": "Europe/London"}, None),  # UTC+0
    ("app", None),
])
def test_granularity_of_time_groupings(tiered: Any, grouping: Any,
                                       granularity: str | None) -> None:
    db, data, _ = tiered
    p = Prepared(parse_query(total({"groupings": [grouping]}), db.schema), db.snapshot())
    rows_out = p.rows()
    assert sum(r["rowCount"] for r in rows_out) == len(data)  # every total as before
    assert p.extra() == ({} if granularity is None else {"granularity": granularity})


def test_granularity_of_recent_ranges_and_filters(tiered: Any) -> None:
    db, data, now = tiered
    recent = {"column": "at", "type": ">=", "value": now - 3 * H}  # only 5-minute intervals
    for q, granularity in (
            (total({"groupings": [{"column": "at", "timeTransform": "hour"}],
                    "filters": [recent]}), None),
            (total({"groupings": [{"column": "at", "timeTransform": "minute"}],
                    "filters": [recent]}), "5m"),
            (total({"filters": [{"column": "at", "type": ">=", "value": now - 4 * D}]}),
             None if (now - 4 * D) % D == 0 else "1d"),
            (total({"filters": [{"column": "at", "type": "<", "value": now - 4 * D + 5 * H}]}),
             "1d"),
            (total({"filters": [{"column": "value", "type": ">", "value": 3}]}), "1d")):
        p = Prepared(parse_query(q, db.schema), db.snapshot())
        p.rows()
        assert p.extra() == ({} if granularity is None else {"granularity": granularity}), q


def test_query_rows_over_tiers(tiered: Any) -> None:
    db, data, _ = tiered
    out = query_rows(db, total({"groupings": ["name"]}))
    for r in out:
        assert (r["rowCount"], r["v"]) == want(data, lambda x, n=r["name"]: x["name"] == n)


def test_two_sort_columns_narrow_to_their_rows(db: DB, data: list[dict[str, Any]]) -> None:
    """`app = 17 and name = n3`: within app 17's rows (ordered by name), n3's: one stored row
    per interval at most, gathered from every interval into one block."""
    q = total({"filters": [{"column": "app", "value": 17}, {"column": "name", "value": "n3"}]})
    p, out = run(db, q)
    assert out == [dict(zip(("v", "rowCount"), reversed(want(
        data, lambda r: r["app"] == 17 and r["name"] == "n3"))))]
    scanned = [b for t in p.tasks for _, b, _ in t]
    assert sum(b.n for b in scanned) <= len(db.snapshot().intervals)


def test_key_order_is_checked_not_assumed() -> None:
    """A segment is range-searched only if its rows are in roll-up order in every dimension
    (gumtool balance re-encodes string codes: the second dimension may not be)."""
    from gumshoe.interval import key_sorted
    from gumshoe.schema import Schema
    schema = Schema.from_config(config("MEMORY").schema)

    def block(apps: list[int], names: list[int], nil: list[bool] | None = None) -> Block:
        n = len(apps)
        return Block(n, np.ones(n, np.int64), {"app": np.array(apps, np.uint16),
                                               "name": np.array(names, np.uint8)},
                     {"app": None if nil is None else np.array(nil),
                      "name": None}, {"value": np.zeros(n, np.int64)})

    assert key_sorted(schema, block([1, 1, 2, 2], [3, 4, 0, 9]))
    assert not key_sorted(schema, block([1, 1, 2, 2], [4, 3, 0, 9]))  # second out of order
    assert not key_sorted(schema, block([2, 1], [0, 0]))
    assert key_sorted(schema, block([0, 0, 1], [5, 6, 0], [True, True, False]))  # nil first
    assert not key_sorted(schema, block([1, 0], [0, 0], [False, True]))


def test_coalesced_pieces_keep_exact_sums(tmp_path: Path) -> None:
    """Pieces of many intervals scanned as one block still sum 64-bit metrics exactly (their
    segments' bounds come along: split sums where a sum could wrap)."""
    text = (f'database_dir = "{tmp_path / "db"}"\ndurability = "none"\nretention_days = 0\n'
            '[schema]\nsegment_size = "1KB"\ninterval_duration = "1h"\n'
            'timestamp_column = ["at", "uint32"]\ndimension_columns = [["app", "uint16"]]\n'
            'metric_columns = [["big", "uint64"]]\n')
    db = DB(parse_config(text))
    big = 2**59 + 12345  # a day's sum (24 of them) fits uint64 only just
    data = [{"at": T0 + h * H, "app": a, "big": big} for h in range(40) for a in range(50)]
    assert T0 % D == 0
    db.insert(data)
    db.flush()
    q = {"aggregates": [{"column": "big"}], "filters": [{"column": "app", "value": 7}],
         "groupings": [{"column": "at", "timeTransform": "day", "name": "day"}]}
    p, out = run(db, q)
    assert any(start is None for t in p.tasks for start, _, _ in t)  # coalesced
    assert p.scanner.split == ["big"]  # the sums could wrap: summed in two exact halves
    assert [r["big"] for r in out] == [24 * big, 16 * big]
    assert [r["rowCount"] for r in out] == [24, 16]
    db.close()


@pytest.mark.parametrize("time_filter", [
    {"type": "in", "column": "at", "value": []},  # no cut at all
    {"column": "at", "value": 2**32 - 1},  # not an interval start: no cut either
    {"type": "!=", "column": "at", "value": 2**32 - 1},
])
def test_a_timestamp_comparison_without_cuts_is_not_coalesced(tmp_path: Path,
                                                              time_filter: Any) -> None:
    """Found by the pruning property test: a filter comparing the timestamp where no interval
    start changes its answer must still keep every block's interval start (no coalescing),
    and answer as the reference."""
    text = (f'database_dir = "{tmp_path / "db"}"\ndurability = "none"\nretention_days = 0\n'
            '[schema]\nsegment_size = "1KB"\ninterval_duration = "1h"\n'
            'timestamp_column = ["at", "uint32"]\ndimension_columns = [["app", "uint16"]]\n'
            'metric_columns = [["n", "uint32"]]\n')
    db = DB(parse_config(text))
    db.insert([{"at": T0 + h * H, "app": a, "n": 1} for h in range(40) for a in range(50)])
    db.flush()
    q = {"aggregates": [{"column": "n"}],
         "filters": [{"type": "and", "filters": [{"column": "app", "value": 7}, time_filter]}]}
    p, out = run(db, q)
    assert all(start is not None for t in p.tasks for start, _, _ in t)
    want = 40 if time_filter.get("type") == "!=" else 0
    assert (out[0]["n"] if out else 0) == want
    db.close()
