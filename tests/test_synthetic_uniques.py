"""Smoke test of synthetic/bench_uniques.py at its --quick size: it runs, the exact range is
exact, the estimates meet their targets and the sizes add up. No timing assertions."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("duckdb")

from synthetic import bench_uniques


def test_quick_run(tmp_path, capsys):
    out = tmp_path / "uniques.json"
    assert bench_uniques.main(["--quick", "--repeats", "1", "--rows", "20000",
                               "--events", "20000", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["failures"] == []
    exact = [r for r in doc["accuracy"] if r["exact"]]
    assert [r["n"] for r in exact] == [10, 100, 1000, 2048] and all(r["max"] == 0 for r in exact)
    assert all(r["rms"] < 0.03 for r in doc["accuracy"])
    size = doc["size"]
    assert size["rows"] > 0 and size["bytes_per_row"] <= 64
    assert {(r["groups"], r["order"]) for r in doc["speed"]} == \
        {(1, "random"), (1, "sorted"), (1000, "random"), (1000, "sorted")}
    assert "| distinct |" in capsys.readouterr().out
