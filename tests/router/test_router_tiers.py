"""A router over tiered shards answers as one tiered server: rows routed by their coarsest
bucket (so a key stays on one shard through every re-roll, and metric filters agree), the
shards' "granularity" merged (the coarsest), the wire carrying it."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from gumshoe.partials import Partial, merge
from gumshoe.wire import decode_partial, encode_partial

from ..http.harness import ServerProcess
from .conftest import RouterProcess

D = 86400
CONFIG = """database_dir = "{db}"
durability = "os"
flush_interval = "1h"
[schema]
segment_size = "8KB"
timestamp_column = ["at", "uint32"]
dimension_columns = [["appid", "uint32"], ["name", "string:uint16"]]
metric_columns = [["value", "uint32"]]
tiers = [["5m", "1h"], ["1h", "2d"], ["1d", "30d"]]
"""
QUERIES: list[dict[str, Any]] = [
    {"aggregates": [{"column": "value"}], "groupings": ["appid"]},
    {"aggregates": [{"column": "value"}], "groupings": [{"column": "at", "timeTransform": "day",
                                                         "name": "day"}, "name"]},
    {"aggregates": [{"column": "value"}], "groupings": [{"column": "at", "name": "t",
                                                         "timeTransform": "hour"}],
     "filters": [{"column": "appid", "value": 3}]},
    {"aggregates": [{"column": "value"}], "groupings": ["name"],
     "filters": [{"column": "value", "type": ">", "value": 40}]},
    {"aggregates": [{"column": "value"}],
     "filters": [{"column": "at", "type": ">=", "value": int(time.time()) - 30 * 60}]},
]


def test_wire_and_merge_carry_the_coarsest_granularity() -> None:
    def part(g: int | None) -> Partial:
        return Partial([], [], np.array([1], np.int64), {}, decoded=True, granularity=g)

    assert decode_partial(encode_partial(part(86400))).granularity == 86400
    assert decode_partial(encode_partial(part(None))).granularity is None
    assert merge([part(None), part(3600), part(86400)]).granularity == 86400
    assert merge([part(None), part(None)]).granularity is None


def server(tmp: Path, name: str) -> ServerProcess:
    d = tmp / name
    d.mkdir()
    (d / "config.toml").write_text(CONFIG.format(db=d / "db"))
    return ServerProcess(d / "config.toml", d / "server.log")


def caught_up(s: ServerProcess) -> bool:
    m = re.search(r"^gumshoe_compaction_lag_seconds (\S+)$", s.client.get("/metrics").text, re.M)
    return m is not None and float(m.group(1)) == 0


def test_router_over_tiered_shards(tmp_path: Path) -> None:
    shards = [server(tmp_path, f"shard{i}") for i in range(2)]
    lone = server(tmp_path, "lone")
    (tmp_path / "router.toml").write_text(CONFIG.format(db="MEMORY"))
    router = RouterProcess(tmp_path / "router.toml", tmp_path / "router.log",
                           [f"127.0.0.1:{s.port}" for s in shards])
    rnd = random.Random(5)
    now = int(time.time())
    rows = [{"at": now - rnd.randrange(0, 5 * D), "appid": rnd.randrange(0, 8),
             "name": rnd.choice(["open", "click", "buy"]), "value": rnd.randrange(0, 30)}
            for _ in range(3000)]
    procs = [*shards, lone, router]
    try:
        for p in procs:
            p.start()
        for i in range(0, len(rows), 500):
            assert router.insert(rows[i:i + 500]).json()["inserted"] == 500
            assert lone.insert(rows[i:i + 500]).json()["inserted"] == 500
        for s in (*shards, lone):  # restart: flushed on the way down, compacted at start-up
            assert s.stop() == 0
            s.start()
        deadline = time.monotonic() + 60
        while not all(caught_up(s) for s in (*shards, lone)):
            assert time.monotonic() < deadline, "the compactor did not catch up"
            time.sleep(0.2)
        granularities = []
        for q in QUERIES:
            got, want = router.query(q).json(), lone.query(q).json()
            assert got["results"] == want["results"], q
            assert got.get("granularity") == want.get("granularity"), q
            granularities.append(want.get("granularity"))
        assert granularities == [None, None, "1d", "1d", None]
    finally:
        for p in procs:
            if p.proc is not None:
                p.stop()
            p.client.close()
