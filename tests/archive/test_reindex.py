"""`gumtool reindex`: a database rebuilt from the raw archive under a new schema answers like a
database that had that schema from the start (a metric made a dimension gets its history, a
dimension the raw rows lack is nil, a dropped one rolls up), --from/--to, errors that name the
column, the archive of a running database, atomic output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.service import query_rows
from gumtool.cli import main

from ..gumtool.helpers import QUERIES, approx_rows, dump_query
from .helpers import T0, archive_rows, sample_rows

DIMS = [["name", "string:uint16"], ["country", "string:uint8"]]
METRICS = [["visits", "uint8"], ["clicks", "uint32"], ["score", "float64"], ["age", "uint8"]]


def write(path: Path, db: Path | str, dims: list[list[str]], metrics: list[list[str]],
          archive: bool = False, **keys: Any) -> Path:
    settings = {"database_dir": str(db), "retention_days": 0, "durability": "os", **keys}
    path.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
                    + "\n[schema]\ninterval_duration = \"1h\"\nsegment_size = \"4KB\"\n"
                    + 'timestamp_column = ["at", "uint32"]\n'
                    + f"dimension_columns = {json.dumps(dims)}\n"
                    + f"metric_columns = {json.dumps(metrics)}\n"
                    + ("[archive]\nenabled = true\nrotate = \"16KB\"\n" if archive else ""))
    return path


def rows_with_age(n: int, seed: int) -> list[dict[str, Any]]:
    rows = sample_rows(n, seed, hours=30)
    for i, r in enumerate(rows):
        r["age"] = 18 + (i * 7 + seed) % 9  # a metric the old schema only sums
    return rows


def build(cfg: Path, rows: list[dict[str, Any]], keep: set[str] | None = None,
          close: bool = True) -> DB:
    db = DB(load_config(cfg))
    for i in range(0, len(rows), 97):
        part = rows[i:i + 97]
        if keep is not None:
            part = [{k: v for k, v in r.items() if k in keep} for r in part]
        db.insert(part)
        if i % 3 == 0:
            db.flush()
    if close:
        db.close()
    return db


def answers(cfg: Path, queries: list[dict[str, Any]]) -> list[Any]:
    with DB(load_config(cfg)) as db:
        return [approx_rows(query_rows(db, q)) for q in [*queries, dump_query(db.schema)]]


@pytest.fixture
def archived(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """A database whose schema sums `age`, with its archive; returns the archive."""
    rows = rows_with_age(1200, 1)
    build(write(tmp_path / "old.toml", tmp_path / "old", DIMS, METRICS, archive=True), rows)
    return tmp_path / "old" / "archive", rows


OLD_QUERIES = [*[q for q in QUERIES if '"age"' not in json.dumps(q)],
               {"groupings": ["country"], "aggregates": [{"column": "age"},
                                                         {"type": "average", "column": "age",
                                                          "name": "avg"}]}]
WIDE_DIMS = [["name", "string:uint16"], ["age", "uint8"], ["device", "string:uint8"]]
WIDE_METRICS = [["visits", "uint8"], ["clicks", "uint32"], ["score", "float64"]]
WIDE_QUERIES = [*QUERIES[:2],
                {"groupings": ["age"], "aggregates": [{"column": "clicks"}]},
                {"groupings": ["age", "device", "name"],
                 "aggregates": [{"column": "visits"}, {"type": "average", "column": "score"}]},
                {"filters": [{"column": "age", "type": ">", "value": 21}],
                 "groupings": [{"column": "at", "timeTransform": "hour", "name": "h"}],
                 "aggregates": [{"column": "clicks"}]}]


def test_a_new_dimension_gets_its_history(archived: tuple[Path, list[dict[str, Any]]],
                                          tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """age was a metric (only its sums stored): reindexed as a dimension it answers like a
    database that had it as a dimension from the start; device (not in the raw rows) is nil;
    country (dropped) rolls up."""
    arch, rows = archived
    new = write(tmp_path / "new.toml", tmp_path / "new", WIDE_DIMS, WIDE_METRICS)
    assert main(["reindex", "--archive", str(arch), "--new-db-config", str(new)]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[-1] == "done"
    assert "reindex: dimension device: not in the raw rows, nil in every row" in out.err
    assert "reindex: drop country" in out.err
    reference = write(tmp_path / "ref.toml", tmp_path / "ref", WIDE_DIMS, WIDE_METRICS)
    build(reference, rows, keep={"at", "name", "age", "visits", "clicks", "score"})
    assert answers(new, WIDE_QUERIES) == answers(reference, WIDE_QUERIES)


def test_the_same_schema_gives_the_same_database(archived: tuple[Path, list[dict[str, Any]]],
                                                 tmp_path: Path) -> None:
    arch, _ = archived
    new = write(tmp_path / "same.toml", tmp_path / "same", DIMS, METRICS)
    assert main(["reindex", "--archive", str(arch), "--new-db-config", str(new), "-q",
                 "--flush-rows", "300"]) == 0
    assert answers(new, OLD_QUERIES) == answers(tmp_path / "old.toml", OLD_QUERIES)


def test_from_and_to(archived: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    arch, rows = archived
    new = write(tmp_path / "part.toml", tmp_path / "part", DIMS, METRICS)
    start, end = T0 + 5 * 3600 + 17, T0 + 20 * 3600
    assert main(["reindex", "--archive", str(arch), "--new-db-config", str(new), "-q",
                 "--from", str(start), "--to", "2023-11-15T18:00:00Z"]) == 0
    assert end == 1_700_071_200  # 2023-11-15T18:00:00Z
    reference = write(tmp_path / "ref.toml", tmp_path / "ref", DIMS, METRICS)
    build(reference, [r for r in rows if start <= r["at"] < end])
    assert answers(new, OLD_QUERIES) == answers(reference, OLD_QUERIES)


def test_the_archive_of_a_running_database(tmp_path: Path) -> None:
    """The server may be writing the archive: its active file is read, up to its last record."""
    rows = rows_with_age(600, 2)
    db = build(write(tmp_path / "live.toml", tmp_path / "live", DIMS, METRICS, archive=True),
               rows, close=False)
    try:
        new = write(tmp_path / "new.toml", tmp_path / "new", DIMS, METRICS)
        assert main(["reindex", "--archive", str(tmp_path / "live" / "archive"),
                     "--new-db-config", str(new), "-q"]) == 0
    finally:
        db.close()
    assert answers(new, OLD_QUERIES) == answers(tmp_path / "live.toml", OLD_QUERIES)


@pytest.mark.parametrize(("dims", "metrics", "message"), [
    ([["name", "uint8"]], [["visits", "uint8"]],
     "column 'name': the raw rows hold strings; the new config makes it uint8"),
    ([["age", "string:uint8"]], [["visits", "uint8"]],
     "column 'age': the raw rows hold numbers (int64); the new config makes it a string"),
    ([["name", "string:uint8"]], [["clicks", "uint8"]],
     "column 'clicks': raw value 1000 does not fit the new type uint8"),
])
def test_values_that_do_not_fit_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          dims: list[list[str]], metrics: list[list[str]],
                                          message: str) -> None:
    rows = rows_with_age(100, 3)
    rows[40]["clicks"] = 1000
    build(write(tmp_path / "old.toml", tmp_path / "old", DIMS, METRICS, archive=True), rows)
    new = write(tmp_path / "new.toml", tmp_path / "new", dims, metrics)
    assert main(["reindex", "--archive", str(tmp_path / "old" / "archive"), "--new-db-config",
                 str(new), "-q"]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".new.")]


def test_refusals(archived: tuple[Path, list[dict[str, Any]]], tmp_path: Path,
                  capsys: pytest.CaptureFixture[str]) -> None:
    arch, _ = archived
    new = write(tmp_path / "new.toml", tmp_path / "old", DIMS, METRICS)  # the old database
    assert main(["reindex", "--archive", str(arch), "--new-db-config", str(new)]) == 1
    assert "already exists and holds a gumshoe database" in capsys.readouterr().err
    new = write(tmp_path / "new.toml", tmp_path / "new", DIMS, METRICS)
    assert main(["reindex", "--archive", str(tmp_path / "nope"), "--new-db-config",
                 str(new)]) == 1
    assert "--archive" in capsys.readouterr().err
    assert main(["reindex", "--archive", str(arch), "--new-db-config", str(new),
                 "--from", "tomorrow"]) == 1
    assert "--from: expected an ISO 8601 time" in capsys.readouterr().err
    assert main(["reindex", "--archive", str(arch), "--new-db-config", str(new),
                 "--from", "10", "--to", "10"]) == 1
    assert "--from must be before --to" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


U_METRICS = [*METRICS, ["who", "uniques"]]
U_QUERIES = [{"aggregates": [{"type": "uniques", "column": "who", "name": "who"}]},
             {"groupings": ["country"],
              "aggregates": [{"type": "uniques", "column": "who", "name": "who"},
                             {"column": "visits"}]},
             {"groupings": [{"column": "at", "timeTransform": "hour", "name": "h"}],
              "aggregates": [{"type": "uniques", "column": "who", "name": "who"}]}]


def test_uniques_are_archived_as_identity_hashes_and_reindexed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The archive keeps a uniques metric as its identities' hashes (what validation keeps of
    them), one or none per row; a reindex rebuilds the same sketches: the same distinct counts
    as the database inserted into, and a reindex that drops the column or makes a dimension
    of it says so."""
    rows = rows_with_age(1500, 3)
    for i, r in enumerate(rows):
        if i % 5:
            r["who"] = f"u{i % 700}" if i % 3 else i % 700  # "u5" and 5 differ; 5 and "5" not
    # (past 2,048 distinct in the total: an estimate, the same one from the same hashes)
    rows += [{**rows[0], "who": f"many{i}"} for i in range(2500)]
    old = write(tmp_path / "old.toml", tmp_path / "old", DIMS, U_METRICS, archive=True)
    build(old, rows)
    arch = tmp_path / "old" / "archive"
    raw = archive_rows(arch)
    assert len(raw) == len(rows) and {type(r["who"]) for r in raw} == {int, type(None)}
    new = write(tmp_path / "new.toml", tmp_path / "new", DIMS, U_METRICS)
    assert main(["reindex", "--archive", str(arch), "--new-db-config", str(new), "-q"]) == 0
    assert answers(new, U_QUERIES) == answers(old, U_QUERIES)
    dropped = write(tmp_path / "dropped.toml", tmp_path / "dropped", DIMS, METRICS)
    assert main(["reindex", "--archive", str(arch), "--new-db-config", str(dropped), "-q"]) == 0
    assert answers(dropped, OLD_QUERIES) == answers(old, OLD_QUERIES)
    as_dim = write(tmp_path / "dim.toml", tmp_path / "dim", [*DIMS, ["who", "uint64"]], METRICS)
    capsys.readouterr()
    assert main(["reindex", "--archive", str(arch), "--new-db-config", str(as_dim), "-q"]) == 1
    assert "column 'who': the raw rows hold identity hashes" in capsys.readouterr().err
