"""gumtool on tiered databases: stats per tier, migrate (to and from tiers), merge of sources
compacted to different points, balance (keys placed by the coarsest bucket), clean."""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gumshoe.batch import parse_rows
from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.layout import read_meta
from gumshoe.schema import Schema
from gumshoe.service import query_rows
from gumshoe.sharding import shard_of

from .helpers import DIMS, METRICS, router_answer, run, shard_rows

H, D = 3600, 86400
TIERS = [["5m", "1h"], ["1h", "1d"], ["1d", "30d"]]
QUERIES: list[dict[str, Any]] = [
    {"aggregates": [{"column": "clicks"}, {"column": "visits"}]},
    {"aggregates": [{"column": "clicks"}], "groupings": ["name", "country"]},
    {"aggregates": [{"column": "clicks"}],
     "groupings": [{"column": "at", "timeTransform": "day", "name": "day"}]},
]


def tiered_config(path: Path, db: Path, tiers: list[list[str]] | None = TIERS,
                  interval: str | None = None, segment_size: str = "2KB") -> Path:
    lines = [f'database_dir = "{db}"', 'durability = "os"', 'flush_interval = "1h"']
    if tiers is None:
        lines.append("retention_days = 0")
    lines += ["[schema]", f'segment_size = "{segment_size}"',
              'timestamp_column = ["at", "uint32"]', f"dimension_columns = {json.dumps(DIMS)}",
              f"metric_columns = {json.dumps(METRICS)}"]
    if tiers is not None:
        lines.append(f"tiers = {json.dumps(tiers)}")
    if interval is not None:
        lines.append(f'interval_duration = "{interval}"')
    path.write_text("\n".join(lines) + "\n")
    return path


def rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    now = int(time.time())
    return [{"at": now - int(rng.integers(0, 4 * D)),
             "name": ["a", "b", "c", "d"][int(rng.integers(0, 4))],
             "country": ["US", "CA", None][int(rng.integers(0, 3))],
             "age": int(rng.integers(18, 22)), "visits": int(rng.integers(0, 3)),
             "clicks": int(rng.integers(0, 100))} for _ in range(n)]


def build(config: Path, data: list[dict[str, Any]], compact: bool = True,
          unflushed: list[dict[str, Any]] | None = None) -> None:
    db = DB(load_config(config))
    db.insert(data)
    db.flush()
    if compact:
        db.compact()
    if unflushed:
        db.insert(unflushed)
        db.close(flush=False)
    else:
        db.close()


def answers(config: Path) -> list[Any]:
    with DB(load_config(config)) as db:
        return [query_rows(db, q) for q in QUERIES[:2]]


def durations(directory: Path) -> dict[int, int]:
    return dict(collections.Counter(im.duration for im in read_meta(directory).intervals))


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    cfg = tiered_config(tmp_path / "src.toml", tmp_path / "src")
    data = rows(3000, 1)
    build(cfg, data[:2500], unflushed=data[2500:])
    assert set(durations(tmp_path / "src")) == {300, H, D}
    return cfg, data


def test_stats_per_tier(source: tuple[Path, list[dict[str, Any]]], tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    assert run("stats", "--dir", str(tmp_path / "src"), "--json", "-q") == 0
    s = json.loads(capsys.readouterr().out)
    assert [t["duration"] for t in s["tiers"]] == ["5m", "1h", "1d"]
    assert sum(t["rows"] for t in s["tiers"]) == s["rows"]
    assert sum(t["bytes"] for t in s["tiers"]) == s["bytes"]
    assert all(t["intervals"] > 0 for t in s["tiers"])
    assert len(s["watermarks"]) == 2 and s["compaction_lag_seconds"] >= 0
    assert s["input_rows"] + s["unflushed_input_rows"] >= 3000
    assert run("stats", "--dir", str(tmp_path / "src"), "-q") == 0
    assert "Tiers (compaction lag" in capsys.readouterr().out


def test_migrate_keeps_tiers_and_totals(source: tuple[Path, list[dict[str, Any]]],
                                        tmp_path: Path) -> None:
    cfg, _ = source
    same = tiered_config(tmp_path / "same.toml", tmp_path / "same", segment_size="8KB")
    assert run("migrate", "--old-db-path", str(tmp_path / "src"), "--new-db-config",
               str(same), "-q") == 0
    assert answers(same) == answers(cfg)
    assert read_meta(tmp_path / "same").watermarks == read_meta(tmp_path / "src").watermarks
    # to one interval duration: each stored interval moves to the interval holding its start
    plain = tiered_config(tmp_path / "plain.toml", tmp_path / "plain", tiers=None,
                          interval="1h")
    assert run("migrate", "--old-db-path", str(tmp_path / "same"), "--new-db-config",
               str(plain), "-q") == 0
    assert answers(plain) == answers(cfg) and set(durations(tmp_path / "plain")) == {H}
    # and back to tiers: hourly data cannot be finer than 1h: it starts at the 1h tier
    again = tiered_config(tmp_path / "again.toml", tmp_path / "again")
    assert run("migrate", "--old-db-path", str(tmp_path / "plain"), "--new-db-config",
               str(again), "-q") == 0
    assert answers(again) == answers(cfg) and set(durations(tmp_path / "again")) == {H}
    with DB(load_config(again)) as db:
        assert db.compact() > 0 and set(durations(tmp_path / "again")) == {H, D}
        assert [query_rows(db, q) for q in QUERIES[:2]] == answers(cfg)


def test_merge_of_differently_compacted_sources(tmp_path: Path) -> None:
    a = tiered_config(tmp_path / "a.toml", tmp_path / "a")
    b = tiered_config(tmp_path / "b.toml", tmp_path / "b")
    lone = tiered_config(tmp_path / "lone.toml", tmp_path / "lone")
    da, db_ = rows(1500, 2), rows(1500, 3)
    build(a, da, compact=True)
    build(b, db_, compact=False)  # all in 5-minute intervals
    build(lone, da + db_, compact=True)
    merged = tiered_config(tmp_path / "m.toml", tmp_path / "m")
    assert run("merge", "--new-db-config", str(merged), "--db-paths",
               f"{tmp_path / 'a'},{tmp_path / 'b'}", "-q") == 0
    assert answers(merged) == answers(lone)
    assert read_meta(tmp_path / "m").watermarks == read_meta(tmp_path / "a").watermarks
    assert durations(tmp_path / "m").keys() == durations(tmp_path / "lone").keys()


def test_balance_places_keys_by_the_coarsest_bucket(tmp_path: Path) -> None:
    lone = tiered_config(tmp_path / "lone.toml", tmp_path / "lone")
    data = rows(3000, 4)
    build(lone, data)
    schema = Schema.from_config(load_config(lone).schema)
    srcs = []
    for k, part in enumerate(shard_rows(schema, data, 2)):
        cfg = tiered_config(tmp_path / f"s{k}.toml", tmp_path / f"s{k}")
        build(cfg, part)
        srcs.append(cfg)
    expected = [router_answer([lone], q) for q in QUERIES]
    assert [router_answer(srcs, q) for q in QUERIES] == expected
    three = [tiered_config(tmp_path / f"t{k}.toml", tmp_path / f"t{k}") for k in range(3)]
    assert run("balance", "--source-db-dirs", f"{tmp_path / 's0'},{tmp_path / 's1'}",
               "--dest-db-configs", ",".join(map(str, three)), "-q") == 0
    assert [router_answer(three, q) for q in QUERIES] == expected
    for k, cfg in enumerate(three):  # every stored key where the router sends it
        with DB(load_config(cfg)) as db:
            out = query_rows(db, {"groupings": ["at", "name", "country", "age"]})
        batch = parse_rows(schema, [{c: r[c] for c in ("at", "name", "country", "age")}
                                    for r in out])
        shard = shard_of(schema, schema.shard_start(batch.timestamps), batch.dims, batch.nils,
                         3)
        assert out and np.all(shard == k)


def test_clean_checks_a_tiered_database(source: tuple[Path, list[dict[str, Any]]],
                                        tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    stray = tmp_path / "src" / "interval.0.generation0009.segment0000.seg"
    stray.write_bytes(b"left by a crash")
    assert run("clean", "--dir", str(tmp_path / "src")) == 0
    out = capsys.readouterr().out
    assert not stray.exists() and "metadata ok" in out
