"""Insert latency while heavy queries run (hardening issue): a real server, a data set with
many groups, an inserter sending 100-row batches one after another, alone and then beside
three clients running "group by every dimension + minute" in a loop. Reports the inserts'
p50/p99/max and what the heavy queries got (200, 400 over query_memory, 503 pool full).

    python -m synthetic.bench_contention [--rows 1000000] [--inserts 300] [--budget 1GB]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.http.harness import T0, ServerProcess, write_config

HEAVY = {"groupings": ["name", "country", "age", {"column": "at", "timeTransform": "minute"}],
         "aggregates": [{"column": "clicks"}, {"column": "visits"}]}


def load(server: ServerProcess, rows: int) -> None:
    rnd = random.Random(1)
    names = [f"user{i}" for i in range(20_000)]
    countries = ["US", "CA", "MX", "DE", "FR", "GB", "JP", "BR"]
    with httpx.Client(base_url=server.url, timeout=120) as c:
        for lo in range(0, rows, 50_000):
            batch = [{"at": T0 + rnd.randrange(48 * 3600), "name": rnd.choice(names),
                      "country": rnd.choice(countries), "age": rnd.randrange(18, 80),
                      "visits": 1, "clicks": rnd.randrange(5)} for _ in range(50_000)]
            assert c.put("/insert", json=batch).status_code == 200


def inserts(url: str, n: int) -> list[float]:
    rnd = random.Random(2)
    out = []
    with httpx.Client(base_url=url, timeout=120) as c:
        for _ in range(n):
            batch = [{"at": T0 + 47 * 3600, "name": f"new{rnd.randrange(100)}", "visits": 1}
                     for _ in range(100)]
            t0 = time.perf_counter()
            assert c.put("/insert", json=batch).status_code == 200
            out.append(time.perf_counter() - t0)
    return out


def heavy(url: str, stop: threading.Event, outcomes: dict[int, int]) -> None:
    with httpx.Client(base_url=url, timeout=300) as c:
        while not stop.is_set():
            r = c.post("/query", json=HEAVY)
            outcomes[r.status_code] = outcomes.get(r.status_code, 0) + 1


def summary(lat: list[float]) -> dict[str, float]:
    s = sorted(lat)
    return {"p50_ms": round(statistics.median(s) * 1000, 2),
            "p99_ms": round(s[int(len(s) * 0.99) - 1] * 1000, 2),
            "max_ms": round(s[-1] * 1000, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--inserts", type=int, default=300)
    p.add_argument("--budget", default="1GB", help="query_memory (and the pool: twice it)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        budget = args.budget
        cfg = write_config(d, d / "db", durability="fsync", query_memory=budget,
                           query_memory_pool=budget, flush_interval="10s")
        server = ServerProcess(cfg, d / "server.log").start()
        try:
            load(server, args.rows)
            alone = summary(inserts(server.url, args.inserts))
            stop, outcomes = threading.Event(), {}
            threads = [threading.Thread(target=heavy, args=(server.url, stop, outcomes))
                       for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            busy = summary(inserts(server.url, args.inserts))
            stop.set()
            for t in threads:
                t.join()
        finally:
            server.stop()
    result = {"rows": args.rows, "query_memory": args.budget, "inserts_alone": alone,
              "inserts_with_3_heavy_queries": busy, "heavy_query_statuses": outcomes}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
