"""`gumtool stats`: every number equals what queries report (all intervals, not one worker's
partial), strings as values, unflushed rows counted as a flush would store them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gumshoe.config import load_config
from gumshoe.schema import Schema

from .helpers import build_db, dump, make_rows, run, write_config


def stats(d: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    assert run("stats", "--dir", str(d), "--json", "-q", *extra) == 0
    return json.loads(capsys.readouterr().out)


def test_stats_equal_what_queries_report(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db", segment_size="2KB")
    build_db(cfg, [make_rows(700, 1), make_rows(700, 2)], unflushed=make_rows(300, 3))
    s = stats(tmp_path / "db", capsys, "--parallelism", "3")
    meta = json.loads((tmp_path / "db" / "db.json").read_bytes())
    files = {x["file"] for iv in meta["intervals"] for x in iv["segments"]}
    nbytes = sum(p.stat().st_size for p in (tmp_path / "db").glob("*.seg") if p.name in files)
    rows = dump(cfg)  # every stored row (opening replays and closing flushes the log)
    schema = Schema.from_config(load_config(cfg).schema)
    assert s["intervals"] == len({r["_t"] for r in rows}) == 6
    assert s["rows"] == len(rows)
    assert s["input_rows"] == sum(r["rowCount"] for r in rows) == 1700
    assert s["unflushed_input_rows"] == 300
    assert s["segments"] == sum(len(iv["segments"]) for iv in meta["intervals"])
    assert s["bytes"] == nbytes
    assert s["compression_ratio"] == round(s["input_rows"] / s["rows"], 2)
    for d, col in zip(s["dimensions"], schema.dimensions):
        values = [r[col.name] for r in rows if r[col.name] is not None]
        assert d["name"] == col.name and d["type"] == col.type_name
        assert (d["min"], d["max"]) == (min(values), max(values))
        assert d["nil_rows"] == sum(1 for r in rows if r[col.name] is None)
        if col.is_string:
            assert d["distinct"] == len(set(values))
    for m, col in zip(s["metrics"], schema.metrics):
        values = [r[col.name] for r in rows]
        assert (m["min"], m["max"], m["sum"]) == (min(values), max(values), sum(values))
    assert s["dimensions"][1]["min"] == "CA" and s["dimensions"][1]["max"] == "US"


def test_stats_after_the_flush_match(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    build_db(cfg, [make_rows(200, 1)], unflushed=make_rows(200, 2))
    before = stats(tmp_path / "db", capsys)
    dump(cfg)  # replays the log and flushes
    after = stats(tmp_path / "db", capsys)
    assert after["unflushed_input_rows"] == 0
    for key in ("intervals", "rows", "input_rows", "dimensions", "metrics"):
        assert before[key] == after[key]


def test_human_readable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    build_db(cfg, [[{"at": 1_700_000_000, "name": "x", "visits": 3, "clicks": 1}]])
    assert run("stats", "--dir", str(tmp_path / "db"), "-q") == 0
    out = capsys.readouterr().out
    assert "Intervals:         1 (2023-11-14T22:00:00Z .. 2023-11-14T22:00:00Z)\n" in out
    assert "Input rows:        1\n" in out
    assert "Compression ratio: 1.00 (input rows per stored row)" in out
    assert "\nname     string:uint16  \"x\"    \"x\"    0         1\n" in out
    assert "\ncountry  string:uint8   <nil>  <nil>  1         0\n" in out
    assert "\nvisits  uint8    3    3    3\n" in out


def test_empty_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    build_db(cfg, [])
    s = stats(tmp_path / "db", capsys)
    assert (s["intervals"], s["rows"], s["input_rows"], s["compression_ratio"]) == (0, 0, 0, None)
    assert s["metrics"][0] == {"name": "visits", "type": "uint8", "min": None, "max": None,
                               "sum": 0}


def test_stats_of_min_max_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A min/max metric: its extremes over the rows that had a value (a row without one holds
    the kind's identity, which is no value), and no sum (a sum of minima means nothing)."""
    metrics = [["visits", "uint8"], ["lo", "min:int64"], ["hi", "max:float32"]]
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db", metrics=metrics)
    rows = [{"at": 1_700_000_000 + i, "name": "a", "visits": 1, "lo": v, "hi": v / 4}
            for i, v in enumerate([5, -3, 8])] + [{"at": 1_700_000_100, "name": "b"}]
    build_db(cfg, [rows])
    got = {m["name"]: (m["min"], m["max"], m["sum"])
           for m in stats(tmp_path / "db", capsys)["metrics"]}
    # stored rows: "a" rolled up (lo -3, hi 2.0) and "b" without values
    assert got == {"visits": (0, 3, 3), "lo": (-3, -3, None), "hi": (2.0, 2.0, None)}
    assert run("stats", "--dir", str(tmp_path / "db"), "-q") == 0  # the table prints <nil>
    assert "<nil>" in capsys.readouterr().out
