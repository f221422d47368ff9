"""Smoke test of the benchmark suite (synthetic/): the one command at a tiny size.

Correctness only, no timing assertions: every query's answer through gumshoe (in-engine and
over HTTP) must equal DuckDB's on the same rolled-up table, the ideal kernel's, and a
pure-Python evaluation over the raw input rows; the stored table must equal the ideal roll-up.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("duckdb")

from synthetic import run


def test_quick_mode_at_a_tiny_size(tmp_path):
    status = run.main(["--quick", "--rows", "20000", "--hours", "12", "--repeats", "1",
                       "--python-reference", "--no-http-insert", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "results.json").read_text())
    (res,) = doc["runs"]
    assert res["failures"] == []
    assert status == 0
    assert res["ingest"]["queryable_rows"] == 20000
    assert res["stored_rows"] == res["ingest"]["ideal_rolled_rows"] > 0
    engines = {name for q in res["queries"] for name in q["engines"]}
    assert {"gumshoe", "duckdb", "ideal", "http"} <= engines
    assert len(res["queries"]) >= 12
    report = (tmp_path / "report.md").read_text()
    assert "| by_country (low-card.) |" in report
    assert "every answer matched DuckDB's" in report


def test_write_amplification_bench_at_a_tiny_size(tmp_path):
    """bench_writeamp: runs answer as the never-merged appends and the old rewrite do (it
    checks), and write less than the rewrite."""
    from synthetic import bench_writeamp

    out = tmp_path / "writeamp.json"
    assert bench_writeamp.main(["--flushes", "20", "--batch", "300", "--days", "1",
                                "--base-rows", "200", "--late-flushes", "10",
                                "--late-batch", "500", "--anchor-flushes", "10",
                                "--repeats", "1", "--dir", str(tmp_path / "scratch"),
                                "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    for scenario in ("stream", "late"):
        amp = {m: doc[scenario][m]["amplification"]["stream"] for m in ("runs", "anchor")}
        assert 1 <= amp["runs"] < amp["anchor"], (scenario, amp)


def test_uniques_query_bench_at_a_tiny_size(capsys):
    """bench_uniques_query: every grouping's estimates match DuckDB's exact distinct counts
    group for group (it asserts the same groups; 2,000 events: fewer than 2,048 distinct, so exact)."""
    from synthetic import bench_uniques_query

    assert bench_uniques_query.main(["--events", "2000", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for name, _ in bench_uniques_query.GROUPINGS:
        row = next(line for line in out.splitlines() if line.startswith(f"| {name} |"))
        assert row.rstrip().endswith("| 0.00% |"), row  # exact: few distinct per group
