"""`gumtool merge`: the shards of a router merged equal one server holding every row."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gumshoe.config import load_config
from gumshoe.schema import Schema

from .helpers import (
    METRICS,
    QUERIES,
    answers,
    build_db,
    dump,
    make_rows,
    run,
    shard_rows,
    write_config,
)


def test_merge_of_shards_equals_one_server(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    lone = write_config(tmp_path / "lone.toml", tmp_path / "lone")
    schema = Schema.from_config(load_config(lone).schema)
    batches = [make_rows(600, seed) for seed in range(3)]
    build_db(lone, batches[:2], unflushed=batches[2])
    paths = []
    for k in range(3):
        cfg = write_config(tmp_path / f"s{k}.toml", tmp_path / f"shard{k}", segment_size="2KB")
        parts = [shard_rows(schema, rows, 3)[k] for rows in batches]
        build_db(cfg, parts[:2], unflushed=parts[2])
        paths.append(str(tmp_path / f"shard{k}"))
    merged = write_config(tmp_path / "merged.toml", tmp_path / "merged")
    assert run("merge", "--new-db-config", str(merged), "--db-paths", ",".join(paths[:2]),
               "--db-paths", paths[2], "--parallelism", "2") == 0
    out = capsys.readouterr().out
    assert out.startswith("merged 3 databases (") and out.endswith("done\n")
    assert answers(merged, QUERIES) == answers(lone, QUERIES)
    assert dump(merged) == dump(lone)


def test_keys_in_several_sources_are_rolled_up(tmp_path: Path) -> None:
    a = write_config(tmp_path / "a.toml", tmp_path / "a")
    build_db(a, [make_rows(300, 7)])
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    merged = write_config(tmp_path / "m.toml", tmp_path / "m")
    assert run("merge", "--new-db-config", str(merged), "--db-paths",
               f"{tmp_path / 'a'},{tmp_path / 'b'}", "-q") == 0
    once, twice = dump(a), dump(merged)
    assert len(once) == len(twice)  # each key stored once
    for x, y in zip(once, twice):
        assert y["rowCount"] == 2 * x["rowCount"]
        assert y["clicks"] == 2 * x["clicks"]


def test_merge_needs_the_same_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_config(tmp_path / "a.toml", tmp_path / "a")
    build_db(a, [make_rows(50, 1)])
    merged = write_config(tmp_path / "m.toml", tmp_path / "m", metrics=METRICS[:2])
    assert run("merge", "--new-db-config", str(merged), "--db-paths", str(tmp_path / "a")) == 1
    err = capsys.readouterr().err
    assert "schemas do not match: metric columns are [visits:uint8, clicks:uint32, " \
           "score:float64], config has [visits:uint8, clicks:uint32]" in err
    assert "use `gumtool migrate` to change a schema" in err
    assert not (tmp_path / "m").exists()


def test_merge_refuses_its_own_source_as_destination(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    a = write_config(tmp_path / "a.toml", tmp_path / "a")
    build_db(a, [make_rows(50, 1)])
    assert run("merge", "--new-db-config", str(a), "--db-paths", str(tmp_path / "a")) == 1
    assert "is one of the sources" in capsys.readouterr().err


def test_retention_of_the_new_config_applies(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    a = write_config(tmp_path / "a.toml", tmp_path / "a")
    build_db(a, [make_rows(50, 1)])  # rows of 2023: outside a 7-day retention
    merged = write_config(tmp_path / "m.toml", tmp_path / "m", retention_days=7)
    assert run("merge", "--new-db-config", str(merged), "--db-paths", str(tmp_path / "a"),
               "-q") == 0
    assert "dropped 6 intervals outside the new config's retention (7 days)" in \
        capsys.readouterr().out
    assert dump(merged) == []
