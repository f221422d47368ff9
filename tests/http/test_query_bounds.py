"""Query bounds against the real server: a query past its time limit gets 504 at once, its scan
threads stop (the server goes idle) and its memory is freed; a query whose estimated memory is
over query_memory is refused before anything is allocated; running queries share
query_memory_pool."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .harness import T0, ServerProcess, write_config

HEAVY = {"groupings": ["name", "age", {"column": "at", "timeTransform": "minute"}],
         "aggregates": [{"column": "clicks"}, {"type": "average", "column": "score"}]}
ROWS = 400_000


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def load(server: ServerProcess) -> None:
    for lo in range(0, ROWS, 50_000):
        rows = [{"at": T0 + (i * 7) % (48 * 3600), "name": f"user{i % 60_000}",
                 "age": i % 100, "clicks": i % 13, "score": 0.5}
                for i in range(lo, lo + 50_000)]
        assert server.insert(rows).status_code == 200


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("bounds")
    cfg = write_config(tmp, tmp / "db", query_memory="4GB", query_memory_pool="8GB")
    server = ServerProcess(cfg, tmp / "server.log").start()
    try:
        load(server)
        server.client.put("/insert", json=[])  # (flushes happen at stop)
        yield server
    finally:
        assert server.stop() == 0, server.log_text()[-2000:]


def reserved_bytes(server: ServerProcess) -> float:
    text = server.client.get("/metrics").text
    return float(re.search(r"^gumshoe_query_memory_reserved_bytes (\S+)$", text, re.M)[1])


def test_a_query_past_its_timeout_is_504_and_stops(big: ServerProcess) -> None:
    assert big.proc is not None
    pid = big.proc.pid
    t0 = time.monotonic()
    full = big.query(HEAVY)
    took = time.monotonic() - t0
    assert full.status_code == 200 and len(full.json()["results"]) > 100_000
    limit_ms = max(5, int(took * 1000 / 10))  # a tenth of what the query needs
    timed_out = {**HEAVY, "timeout": limit_ms}
    assert big.query(timed_out).status_code == 504
    time.sleep(0.5)
    # RSS after the same query timed out once: the allocator's own high-water marks (one arena
    # per thread that ran a query) are then in the baseline, and what is measured is growth.
    before = rss_bytes(pid)
    for _ in range(3):
        t0 = time.monotonic()
        r = big.query(timed_out)
        answered = time.monotonic() - t0
        assert r.status_code == 504, r.text[:300]
        assert r.json() == {"error": f"query timed out after {limit_ms} ms (query_timeout)"}
        assert answered < took  # the answer does not wait for the scan
    time.sleep(0.5)  # the scan threads stop at their next block
    c0 = cpu_seconds(pid)
    time.sleep(1.0)
    assert cpu_seconds(pid) - c0 < 0.3, "the server kept working after the timeout"
    assert reserved_bytes(big) == 0  # the pool got the reservations back
    assert rss_bytes(pid) < before + 64 * 2**20, (before, rss_bytes(pid))
    assert big.query({"aggregates": [{"column": "clicks"}]}).status_code == 200


def test_a_timeout_key_of_another_type_is_a_400(big: ServerProcess) -> None:
    for bad in (0, -5, "10", 1.5, True):
        r = big.query({"timeout": bad})
        assert r.status_code == 400 and r.json()["error"].startswith("timeout:"), bad


def test_an_over_budget_query_is_refused_before_it_runs(tmp_path: Path,
                                                        big: ServerProcess) -> None:
    cfg = write_config(tmp_path, big.config.parent / "db", query_memory="20MB")
    # the same data, served read-only by a second server with a small budget
    assert big.stop() == 0
    small = ServerProcess(cfg, tmp_path / "small.log").start()
    try:
        r = small.query(HEAVY)
        assert r.status_code == 400
        error = r.json()["error"]
        assert "query_memory" in error and "estimated" in error and "groups" in error
        assert 'gumshoe_query_bounds_total{reason="memory"} 1.0' in small.client.get(
            "/metrics").text
        ok = small.query({"groupings": ["age"], "aggregates": [{"column": "clicks"}]})
        assert ok.status_code == 200 and len(ok.json()["results"]) == 100
    finally:
        assert small.stop() == 0
        big.start()


def test_queries_share_the_memory_pool(tmp_path: Path, big: ServerProcess) -> None:
    """Three heavy queries at once with a pool that holds one: at least one waits and gets
    503 with Retry-After (or runs after the others), none fails otherwise."""
    cfg = write_config(tmp_path, big.config.parent / "db", query_memory="1GB",
                       query_memory_pool="1GB")
    assert big.stop() == 0
    pooled = ServerProcess(cfg, tmp_path / "pooled.log").start()
    try:
        with ThreadPoolExecutor(3) as ex:
            answers = list(ex.map(lambda _: pooled.query(HEAVY), range(3)))
        codes = sorted(r.status_code for r in answers)
        assert set(codes) <= {200, 503}, [r.text[:200] for r in answers]
        assert 200 in codes
        for r in answers:
            if r.status_code == 503:
                assert "query_memory_pool" in r.json()["error"] and r.headers["retry-after"]
        metrics = pooled.client.get("/metrics").text
        assert f'gumshoe_query_bounds_total{{reason="overloaded"}} {codes.count(503)}.0' in metrics
        assert "gumshoe_query_memory_pool_bytes 1e+09" in metrics
        assert reserved_bytes(pooled) == 0
    finally:
        assert pooled.stop() == 0
        big.start()
