"""gumtool over databases with a `uniques` metric: merge and balance move the sketches with
their rows (the shards merged equal one server), stats reads such a database."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from gumshoe.config import load_config
from gumshoe.schema import Schema

from .helpers import (
    METRICS,
    answers,
    build_db,
    make_rows,
    router_answer,
    run,
    shard_rows,
    write_config,
)

UMETRICS = [*METRICS, ["who", "uniques"]]
UAGG = {"type": "uniques", "column": "who", "name": "who"}
QUERIES: list[dict[str, Any]] = [
    {"aggregates": [UAGG, {"column": "visits"}]},
    {"aggregates": [UAGG], "groupings": ["country"]},
    {"aggregates": [UAGG], "groupings": [{"column": "at", "timeTransform": "hour"}, "name"]},
]


def rows_with_identities(n: int, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for r in make_rows(n, seed):
        pick = rnd.random()
        if pick < 0.8:
            r = {**r, "who": rnd.choice([rnd.randrange(200), f"u{rnd.randrange(200)}"])}
        elif pick < 0.9:
            r = {**r, "who": None}
        out.append(r)
    return out


def config(path: Path, db: Path, **kw: Any) -> Path:
    return write_config(path, db, metrics=UMETRICS, **kw)


def make_shards(tmp_path: Path, n: int) -> tuple[Path, list[Path], list[str]]:
    lone = config(tmp_path / "lone.toml", tmp_path / "lone")
    schema = Schema.from_config(load_config(lone).schema)
    batches = [rows_with_identities(500, seed) for seed in range(3)]
    build_db(lone, batches[:2], unflushed=batches[2])
    cfgs, dirs = [], []
    for k in range(n):
        cfg = config(tmp_path / f"s{k}.toml", tmp_path / f"shard{k}", segment_size="2KB")
        parts = [shard_rows(schema, rows, n)[k] for rows in batches]
        build_db(cfg, parts[:2], unflushed=parts[2])
        cfgs.append(cfg)
        dirs.append(str(tmp_path / f"shard{k}"))
    return lone, cfgs, dirs


def test_merge_and_balance_keep_the_sketches(tmp_path: Path) -> None:
    lone, cfgs, dirs = make_shards(tmp_path, 3)
    expected = answers(lone, QUERIES)
    assert expected[0][0]["who"] > 100  # identities seen on several shards count once
    assert [router_answer(cfgs, q) for q in QUERIES] == expected
    merged = config(tmp_path / "merged.toml", tmp_path / "merged")
    assert run("merge", "--new-db-config", str(merged), "--db-paths", ",".join(dirs),
               "-q") == 0
    assert answers(merged, QUERIES) == expected
    two = [config(tmp_path / f"two{k}.toml", tmp_path / f"two{k}") for k in range(2)]
    assert run("balance", "--source-db-dirs", ",".join(dirs), "--dest-db-configs",
               ",".join(map(str, two)), "-q") == 0
    assert [router_answer(two, q) for q in QUERIES] == expected


def test_stats_reads_a_uniques_database(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path / "db.toml", tmp_path / "db")
    build_db(cfg, [rows_with_identities(300, 1)])
    assert run("stats", "--dir", str(tmp_path / "db"), "--json", "-q") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input_rows"] == 300 and out["rows"] > 0


def test_migrate_keeps_adds_and_refuses_uniques(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    old = config(tmp_path / "old.toml", tmp_path / "old")
    build_db(old, [rows_with_identities(400, 2)])
    expected = answers(old, QUERIES)
    new = write_config(tmp_path / "new.toml", tmp_path / "new",
                       metrics=[*UMETRICS, ["who2", "uniques"]], segment_size="2KB")
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config",
               str(new)) == 0
    assert "add metric who2 (uniques): no identity in every stored row" in \
        capsys.readouterr().err
    assert answers(new, QUERIES) == expected
    assert answers(new, [{"aggregates": [{"column": "who2"}]}])[0][0]["who2"] == 0
    bad = write_config(tmp_path / "bad.toml", tmp_path / "bad",
                       metrics=[*METRICS, ["who", "uint32"]])
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config",
               str(bad)) != 0
    assert "a uniques metric cannot become a sum metric" in capsys.readouterr().err
