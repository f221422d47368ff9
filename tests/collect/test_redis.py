"""[[collect.sources]]: Redis lists and streams consumed by a real server process (and a
funnel), exactly once across kill -9 (tests/collect/conftest.py starts redis-server)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from .harness import FunnelProcess, ServerProcess, wait_until, write_config

DAY = "2023-11-14"


def source_config(tmp_path: Path, url: str, **source: Any) -> Path:
    keys = {"type": "redis", "url": url, "key": "webstat:events", "poll_interval": "50ms",
            **source}
    path = write_config(tmp_path, tmp_path / "db")
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in keys.items())
    path.write_text(path.read_text() + "\n[[collect.sources]]\n" + table + "\n")
    return path


def total(server: ServerProcess) -> tuple[int, int]:
    r = server.query({"aggregates": [{"column": "clicks"}]})
    assert r.status_code == 200, r.text
    row = r.json()["results"][0]
    return int(row["rowCount"]), int(row["clicks"])


def test_list_template_items_are_counted_once(redis_server: Any, tmp_path: Path) -> None:
    cfg = source_config(tmp_path, redis_server.url, batch_size=100,
                        format="{age}/{name}/{at:date}/{clicks}")
    r = redis_server.client
    r.lpush("webstat:events", *[f"{i % 7}/btn_click/{DAY}/{i}" for i in range(1000)])
    r.lpush("webstat:events", "bad/btn/2023-11-14/1", f"1/ok/{DAY}T10:00:00Z/5")
    server = ServerProcess(cfg, tmp_path / "server.log").start()
    try:
        wait_until(lambda: total(server)[0] == 1001, 30, "all items consumed")
        assert total(server) == (1001, sum(range(1000)) + 5)
        assert r.llen("webstat:events") == 0
        assert r.lrange("webstat:events:gumshoe:gumshoe:rejected", 0, -1) == [
            b"bad/btn/2023-11-14/1"]
        by_day = server.query({"groupings": [{"column": "at", "timeTransform": "day"}]}).json()
        assert by_day["results"] == [{"at": 1699920000, "rowCount": 1001}]
    finally:
        assert server.stop() == 0


def test_kill_9_mid_consumption_loses_and_doubles_nothing(redis_server: Any,
                                                          tmp_path: Path) -> None:
    """Items are pushed while the server consumes them; it is kill -9'd twice mid-way and
    restarted: every item is counted exactly once."""
    cfg = source_config(tmp_path, redis_server.url, batch_size=50, format="json")
    r = redis_server.client
    server = ServerProcess(cfg, tmp_path / "server.log")
    pushed = 0

    def push(n: int) -> None:
        nonlocal pushed
        r.lpush("webstat:events", *[json.dumps({"name": f"e{(pushed + i) % 5}", "clicks": 1})
                                    for i in range(n)])
        pushed += n

    push(2000)
    for _ in range(2):
        server.start()
        deadline = time.monotonic() + 20
        while r.llen("webstat:events") > 1000 and time.monotonic() < deadline:
            push(20)
            time.sleep(0.01)
        server.stop(signal.SIGKILL)
    push(500)
    server.start()
    try:
        wait_until(lambda: r.llen("webstat:events") == 0
                   and r.llen("webstat:events:gumshoe:gumshoe:processing") == 0, 30,
                   "queue drained")
        assert total(server) == (pushed, pushed)
    finally:
        assert server.stop() == 0


def test_stream_consumer_group_through_a_funnel(redis_server: Any, tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "f").mkdir()
    server = ServerProcess(write_config(tmp_path / "s", tmp_path / "s" / "db"),
                           tmp_path / "server.log").start()
    fcfg = source_config(tmp_path / "f", redis_server.url, stream=True, batch_size=30,
                         key="events", format="json")
    funnel = FunnelProcess(fcfg, tmp_path / "funnel.log", [server.url])
    r = redis_server.client
    try:
        for i in range(300):
            r.xadd("events", {"data": json.dumps({"name": "s", "clicks": 2, "age": i % 9})})
        funnel.start()
        wait_until(lambda: total(server)[0] >= 300, 30, "stream forwarded")
        funnel.stop(signal.SIGKILL)
        for _ in range(100):
            r.xadd("events", {"data": json.dumps({"name": "s", "clicks": 2})})
        funnel.start()
        wait_until(lambda: total(server)[0] >= 400, 30, "rest forwarded")
        time.sleep(0.5)
        assert total(server) == (400, 800)
        assert r.xpending("events", "gumshoe")["pending"] == 0
    finally:
        funnel.stop()
        assert server.stop() == 0
