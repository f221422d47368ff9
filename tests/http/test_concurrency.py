"""Concurrent clients against the real server: inserts from several threads sum exactly, and
queries run while inserts are going on."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from .harness import T0, TIMEOUT, ServerProcess

THREADS = 4
BATCHES = 10
ROWS_PER_BATCH = 500


def batch(thread: int, b: int) -> list[dict[str, object]]:
    return [{"at": T0 + (i % 3) * 3600, "name": f"t{thread}", "age": i % 7,
             "clicks": thread + 1, "visits": 1}
            for i in range(ROWS_PER_BATCH)]


def test_concurrent_inserts_sum_exactly(server: ServerProcess) -> None:
    start = threading.Barrier(THREADS + 1)
    errors: list[str] = []

    def inserter(thread: int) -> int:
        inserted = 0
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
            start.wait(TIMEOUT)
            for b in range(BATCHES):
                r = client.put("/insert", json=batch(thread, b))
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    inserted += r.json()["inserted"]
        return inserted

    def reader() -> int:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
            start.wait(TIMEOUT)
            ok = 0
            for _ in range(BATCHES):
                r = client.post("/query", json={"groupings": ["name"]})
                ok += r.status_code == 200
            return ok

    with ThreadPoolExecutor(THREADS + 1) as pool:
        inserts = [pool.submit(inserter, t) for t in range(THREADS)]
        reads = pool.submit(reader)
        inserted = [f.result(60) for f in inserts]
        read_ok = reads.result(60)
    assert not errors
    assert inserted == [BATCHES * ROWS_PER_BATCH] * THREADS
    assert read_ok == BATCHES

    r = server.query({"aggregates": [{"column": "clicks"}, {"column": "visits"}],
                      "groupings": ["name"]})
    expected = [{"name": f"t{t}", "rowCount": BATCHES * ROWS_PER_BATCH,
                 "visits": BATCHES * ROWS_PER_BATCH,
                 "clicks": (t + 1) * BATCHES * ROWS_PER_BATCH} for t in range(THREADS)]
    assert r.json()["results"] == expected
    debug = server.client.get("/debug/rows").json()
    assert sum(row["Count"] for row in debug) <= THREADS * BATCHES * ROWS_PER_BATCH
    # rolled up: one physical row per (interval, name, age)
    assert len(debug) == min(100, 3 * THREADS * 7)
