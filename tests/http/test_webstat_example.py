"""examples/webstat.toml end to end: a real server with the webstat schema and tiers, events
through GET /add_event/{appid}/{name}/{value}, old rows through /insert, the compactor at
start-up, queries that span tiers (totals unchanged, "granularity" when finer than stored)
and the tier gauges in /metrics."""

from __future__ import annotations

import re
import time
from pathlib import Path

from .harness import ServerProcess, run_gumshoe

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "webstat.toml"
D = 86400


def gauge(text: str, name: str, tier: str | None = None) -> float:
    label = f'{{tier="{tier}"}}' if tier else ""
    m = re.search(rf"^{re.escape(name + label)} (\S+)$", text, re.M)
    assert m, f"{name}{label} not in /metrics"
    return float(m.group(1))


def test_webstat_example(tmp_path: Path) -> None:
    server = ServerProcess(EXAMPLE, tmp_path / "server.log", extra=("--db", str(tmp_path / "db")))
    server.start()
    try:
        for appid, name, value in ((100, "btn_click", 3), (100, "btn_click", 4),
                                   (7, "signup", 1)):
            r = server.client.get(f"/add_event/{appid}/{name}/{value}")
            assert r.status_code == 200 and r.json() == {"inserted": 1, "rejected": 0}
        bad = server.client.get("/add_event/x/btn_click/3")
        assert bad.status_code == 400 and "appid" in bad.json()["error"]
        now = int(time.time())
        old = [{"at": now - days * D - k * 3600, "appid": 100, "name": "btn_click", "value": 1}
               for days in (3, 40) for k in range(5)]
        assert server.insert(old).json() == {"inserted": 10, "rejected": 0}
        too_old = [{"at": now - 4 * 365 * D, "appid": 1, "name": "x", "value": 1}]
        assert server.insert(too_old).json() == {"inserted": 0, "rejected": 1}
        q = {"aggregates": [{"column": "value", "name": "total"}], "groupings": ["appid"],
             "filters": [{"column": "appid", "type": "in", "value": [7, 100]}]}
        before = server.query(q).json()["results"]
        assert before == [{"appid": 7, "total": 1, "rowCount": 1},
                          {"appid": 100, "total": 17, "rowCount": 12}]
    finally:
        assert server.stop() == 0  # flushes
    server.start()  # the compactor runs at start-up
    try:
        deadline = time.monotonic() + 30
        while True:
            metrics = server.client.get("/metrics").text
            if (gauge(metrics, "gumshoe_compaction_lag_seconds") == 0
                    and gauge(metrics, "gumshoe_tier_rows", "1d") > 0):
                break
            assert time.monotonic() < deadline, metrics
            time.sleep(0.2)
        for tier in ("5m", "1h", "1d"):
            assert gauge(metrics, "gumshoe_tier_rows", tier) > 0
            assert gauge(metrics, "gumshoe_tier_bytes", tier) > 0
        r = server.query(q).json()
        assert r["results"] == before and "granularity" not in r  # totals span the tiers
        daily = server.query({**q, "groupings": [{"column": "at", "timeTransform": "day"}]})
        assert "granularity" not in daily.json()
        hourly = server.query({**q, "groupings": [{"column": "at", "timeTransform": "hour"}]})
        assert hourly.json()["granularity"] == "1d"
        assert hourly.headers["gumshoe-granularity"] == "1d"
        stream = server.client.post("/query?format=stream", json={
            **q, "groupings": [{"column": "at", "timeTransform": "hour"}]})
        assert stream.headers["gumshoe-granularity"] == "1d"
        assert "gumshoe-granularity" not in daily.headers
        assert sum(row["total"] for row in hourly.json()["results"]) == 18
    finally:
        assert server.stop() == 0


def test_bad_tiers_stop_start_up_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(EXAMPLE.read_text().replace('["1h", "30d"]', '["7m", "30d"]'))
    r = run_gumshoe("serve", "--config", str(cfg), "--db", str(tmp_path / "db"),
                    "--listen", "127.0.0.1:0")
    assert r.returncode == 2 and "schema.tiers[1][0]" in r.stderr, r.stderr
    assert not (tmp_path / "db").exists()
