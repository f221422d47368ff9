"""`gumtool migrate`: every value kept, queries answer as before, new columns nil/0, dropped
dimensions roll up, widening, checked narrowing, atomic output."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import gumshoe.bulk

from .helpers import (
    DIMS,
    METRICS,
    QUERIES,
    answers,
    build_db,
    dump,
    make_rows,
    open_db,
    run,
    write_config,
)


@pytest.fixture
def old(tmp_path: Path) -> Path:
    cfg = write_config(tmp_path / "old.toml", tmp_path / "old", segment_size="4KB")
    build_db(cfg, [make_rows(400, 1), make_rows(400, 2)], unflushed=make_rows(150, 3))
    return cfg


def test_migrate_keeps_every_value_and_answers_as_before(
        old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = answers(old, QUERIES)
    rows_before = dump(old)
    dims = [["name", "string:uint32"], ["country", "string:uint16"], ["age", "uint64"],
            ["device", "string:uint8"], ["weight", "float32"]]
    metrics = [["visits", "uint64"], ["clicks", "int64"], ["score", "float32"],
               ["errors", "uint16"]]
    new = write_config(tmp_path / "new.toml", tmp_path / "new", dims=dims, metrics=metrics)
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config", str(new),
               "--parallelism", "2") == 0
    out = capsys.readouterr()
    assert out.out.splitlines()[-1] == "done"
    assert "migrate: add dimension device (string:uint8): nil in every stored row" in out.err
    assert "migrate: convert age: uint8 -> uint64" in out.err
    assert answers(new, QUERIES) == before
    after = dump(new)
    assert len(after) == len(rows_before)
    for a, b in zip(after, rows_before):
        assert a.pop("device") is None and a.pop("weight") is None and a.pop("errors") == 0
        assert a == b
    assert answers(old, QUERIES) == before  # the old database is untouched
    (tmp_path / "plain").mkdir()
    assert (tmp_path / "new").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_dropped_dimension_rolls_up_identical_rows(old: Path, tmp_path: Path) -> None:
    q = {"groupings": [{"column": "at", "name": "_t"}, "name", "country"],
         "aggregates": [{"column": "visits"}, {"column": "clicks"}, {"column": "score"}]}
    expected = answers(old, [q])[0]
    new = write_config(tmp_path / "new.toml", tmp_path / "new", dims=DIMS[:2])
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config",
               str(new), "-q", "--drop", "age") == 0
    assert dump(new) == expected  # one stored row per remaining key, counts and sums added
    with open_db(new) as db:
        snap = db.snapshot()
        assert sum(len(s.block.count) for v in snap.intervals for s in v.segments) == \
            len(expected)


def test_narrowing_when_every_value_fits(old: Path, tmp_path: Path) -> None:
    before = answers(old, QUERIES)
    dims = [["name", "string:uint8"], ["country", "string:uint8"], ["age", "int8"]]
    metrics = [["visits", "uint8"], ["clicks", "uint8"], ["score", "float32"]]
    new = write_config(tmp_path / "new.toml", tmp_path / "new", dims=dims, metrics=metrics)
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config",
               str(new), "-q") == 0
    assert answers(new, QUERIES) == before  # sums above 255 are kept: metrics never wrap


def _db_with(tmp_path: Path, dims: list[list[str]], metrics: list[list[str]],
             rows: list[dict[str, Any]]) -> Path:
    cfg = write_config(tmp_path / "old.toml", tmp_path / "old", dims=dims, metrics=metrics)
    build_db(cfg, [rows])
    return tmp_path / "old"


@pytest.mark.parametrize("old_type,new_type,values,bad", [
    ("uint32", "uint16", [5, 70000, 12], "70000"),
    ("int16", "uint8", [3, -4, 9], "-4"),
    ("int64", "float32", [1, 2**40 + 1], str(2**40 + 1)),
    ("float64", "int32", [1.0, 2.5], "2.5"),
    ("float64", "float32", [1.0, 1e300], "1e+300"),
])
def test_narrowing_error_names_the_column_and_a_value(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], old_type: str, new_type: str,
        values: list[Any], bad: str) -> None:
    T = 1_700_000_000
    src = _db_with(tmp_path, [["big", old_type]], [["n", "uint8"]],
                   [{"at": T, "big": v, "n": 1} for v in values] + [{"at": T, "n": 1}])
    new = write_config(tmp_path / "new.toml", tmp_path / "new", dims=[["big", new_type]],
                       metrics=[["n", "uint8"]])
    assert run("migrate", "--old-db-path", str(src), "--new-db-config", str(new), "-q") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"gumtool migrate: error: column 'big': stored value {bad} does not "
                          f"fit the new type {new_type}")
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if "gumtool" in p.name] == []


def test_metric_narrowing_checks_the_stored_sums(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    T = 1_700_000_000
    src = _db_with(tmp_path, [["d", "uint8"]], [["m", "uint64"]],
                   [{"at": T, "d": 1, "m": 2**63}, {"at": T, "d": 2, "m": 7}])
    new = write_config(tmp_path / "new.toml", tmp_path / "new", dims=[["d", "uint8"]],
                       metrics=[["m", "int32"]])
    assert run("migrate", "--old-db-path", str(src), "--new-db-config", str(new), "-q") == 1
    assert (f"column 'm': stored sum {2**63} does not fit the new type int32 (stored as int64)"
            in capsys.readouterr().err)


def test_min_max_metrics_change_type_never_kind(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    T = 1_700_000_000
    src = _db_with(tmp_path, [["d", "uint8"]], [["lo", "min:int32"], ["hi", "max:uint16"]],
                   [{"at": T, "d": 1, "lo": -4, "hi": 9}, {"at": T, "d": 1, "lo": 6, "hi": 2},
                    {"at": T, "d": 2}])
    new = write_config(tmp_path / "new.toml", tmp_path / "new", dims=[["d", "uint8"]],
                       metrics=[["lo", "min:int64"], ["hi", "max:uint64"], ["top", "max:int8"]])
    assert run("migrate", "--old-db-path", str(src), "--new-db-config", str(new), "-q") == 0
    got = [(r["d"], r["lo"], r["hi"], r["top"]) for r in dump(new)]
    assert got == [(1, -4, 9, None), (2, None, None, None)]  # no value stays null
    bad = write_config(tmp_path / "bad.toml", tmp_path / "bad", dims=[["d", "uint8"]],
                       metrics=[["lo", "int64"], ["hi", "max:uint16"]])
    assert run("migrate", "--old-db-path", str(src), "--new-db-config", str(bad), "-q") == 1
    assert ("column 'lo': a min metric cannot become a sum metric (min:int32 -> int64)"
            in capsys.readouterr().err)


def test_too_many_strings_for_a_narrower_code_type(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    T = 1_700_000_000
    src = _db_with(tmp_path, [["s", "string:uint16"]], [["n", "uint8"]],
                   [{"at": T, "s": f"v{i}", "n": 1} for i in range(300)])
    new = write_config(tmp_path / "new.toml", tmp_path / "new", dims=[["s", "string:uint8"]],
                       metrics=[["n", "uint8"]])
    assert run("migrate", "--old-db-path", str(src), "--new-db-config", str(new), "-q") == 1
    assert ("column 's': the strings in use do not fit string:uint8, which holds 256 distinct "
            "strings (found at least 300, e.g. 'v299')" in capsys.readouterr().err)


@pytest.mark.parametrize("dims,message", [
    ([["name", "uint16"], ["country", "string:uint8"], ["age", "uint8"]],
     "column 'name': conversion between string and non-string columns is not allowed"),
    ([["name", "string:uint16"], ["visits", "uint8"]],
     "column 'visits' is a metric column in the source database and a dimension column"),
])
def test_refused_conversions(old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             dims: list[list[str]], message: str) -> None:
    metrics = [m for m in METRICS if m[0] not in {d[0] for d in dims}]
    new = write_config(tmp_path / "new.toml", tmp_path / "new", dims=dims, metrics=metrics)
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config",
               str(new), "-q") == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_coarser_intervals_merge_stored_intervals(old: Path, tmp_path: Path) -> None:
    q = {"groupings": [{"column": "at", "timeTransform": "day", "name": "d"}, "name"],
         "aggregates": [{"column": "clicks"}]}
    before = answers(old, [q, {}])
    new = write_config(tmp_path / "new.toml", tmp_path / "new", interval="2h")
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config",
               str(new), "-q") == 0
    assert answers(new, [q, {}]) == before
    with open_db(new) as db:
        starts = [v.start for v in db.snapshot().intervals]
    assert len(starts) == 3 and all(s % 7200 == 0 for s in starts)


def test_destination_must_be_new(old: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "keep.txt").write_text("x")
    new = write_config(tmp_path / "new.toml", tmp_path / "new")
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config",
               str(new), "-q") == 1
    assert "already exists and is not empty" in capsys.readouterr().err
    (tmp_path / "new" / "keep.txt").unlink()  # an empty directory is fine
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config",
               str(new), "-q") == 0
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config",
               str(new), "-q") == 1
    assert "already exists and holds a gumshoe database" in capsys.readouterr().err


def test_interrupted_migrate_leaves_no_output(old: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in (tmp_path / "old").iterdir())
    real = gumshoe.bulk.NewDB.add_interval
    calls = []

    def add_interval(self: Any, start: int, block: Any, duration: Any = None) -> None:
        calls.append(start)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(self, start, block, duration)

    monkeypatch.setattr(gumshoe.bulk.NewDB, "add_interval", add_interval)
    new = write_config(tmp_path / "new.toml", tmp_path / "new")
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config",
               str(new), "--parallelism", "1", "-q") == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if "gumtool" in p.name] == []
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == before
    monkeypatch.undo()
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config",
               str(new), "-q") == 0


def test_sigterm_mid_run_cleans_up_like_ctrl_c(old: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    real = gumshoe.bulk.NewDB.add_interval
    calls = []

    def add_interval(self: Any, start: int, block: Any, duration: Any = None) -> None:
        calls.append(start)
        if len(calls) == 2:  # a worker thread; the handler runs in the main thread
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
        real(self, start, block, duration)

    monkeypatch.setattr(gumshoe.bulk.NewDB, "add_interval", add_interval)
    handler = signal.getsignal(signal.SIGTERM)
    new = write_config(tmp_path / "new.toml", tmp_path / "new")
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config",
               str(new), "--parallelism", "2", "-q") == 130
    assert "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if "gumtool" in p.name] == []
    assert signal.getsignal(signal.SIGTERM) is handler  # restored


def test_dropping_a_column_must_be_asked_for(old: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A new config that omits dimension_columns gets the defaults (name, country, age) and
    metric_columns the defaults (visits, clicks): the old database's `score` would go. migrate
    refuses and names it (also with -q) until it is dropped on purpose."""
    new = tmp_path / "new.toml"
    new.write_text(f'database_dir = "{tmp_path / "new"}"\nretention_days = 0\n')
    argv = ["migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config", str(new), "-q"]
    assert run(*argv) == 1
    err = capsys.readouterr().err
    assert ("lacks column(s) of the old database: metric score; migrate would drop them and "
            "their data") in err and err.rstrip().endswith("with --drop score")
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir() if "gumtool" in p.name] == []
    assert run(*argv, "--drop", "score") == 0
    rows = dump(new)
    assert rows and all("score" not in r for r in rows)


@pytest.mark.parametrize("drop", [["--drop", "age,clicks"], ["--drop", "age", "--drop", "clicks"]])
def test_drop_lists(old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                    drop: list[str]) -> None:
    new = write_config(tmp_path / "new.toml", tmp_path / "new", dims=DIMS[:2],
                       metrics=[m for m in METRICS if m[0] != "clicks"])
    argv = ["migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config", str(new)]
    assert run(*argv, "--drop", "age") == 1
    err = capsys.readouterr().err
    assert "lacks column(s) of the old database: metric clicks;" in err
    assert err.rstrip().endswith("with --drop clicks")
    assert run(*argv, *drop, "-q") == 0
    assert set(dump(new)[0]) == {"_t", "name", "country", "visits", "score", "rowCount"}


@pytest.mark.parametrize(("drop", "message"), [
    ("nope", ("--drop nope: the old database has no column 'nope' to drop (its columns: name, "
              "country, age, visits, clicks, score)")),
    ("at", "--drop at: the old database has no column 'at' to drop"),
    ("name", "--drop name: the new config {new} keeps column 'name'"),
])
def test_bad_drops_are_refused(old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               drop: str, message: str) -> None:
    new = write_config(tmp_path / "new.toml", tmp_path / "new")
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config", str(new),
               "--drop", drop) == 1
    assert message.format(new=new) in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
