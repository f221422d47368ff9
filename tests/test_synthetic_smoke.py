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
