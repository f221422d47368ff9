"""`gumshoe funnel` with real processes: forwarding, a down upstream, SIGTERM, kill -9 and
replay, exactly-once batch ids, and the never-lose test (beacons and CSV through a funnel
into a server that is stopped and killed mid-load while the funnel is kill -9'd once)."""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Self

import httpx
import pytest

from .harness import FunnelProcess, ServerProcess, wait_until, write_config

FUNNEL_KEYS = {"durability": "fsync"}
FUNNEL_TABLE = ('\n[funnel]\nbatch_rows = 300\nbatch_wait = "50ms"\nretry_max = "300ms"\n'
                'shutdown_timeout = "5s"\n')


def setup(tmp_path: Path, funnel_table: str = FUNNEL_TABLE) -> tuple[ServerProcess,
                                                                      FunnelProcess]:
    (tmp_path / "s").mkdir()
    (tmp_path / "f").mkdir()
    server = ServerProcess(write_config(tmp_path / "s", tmp_path / "s" / "db"),
                           tmp_path / "server.log")
    fcfg = write_config(tmp_path / "f", tmp_path / "f" / "fdb", **FUNNEL_KEYS)
    fcfg.write_text(fcfg.read_text() + funnel_table)
    funnel = FunnelProcess(fcfg, tmp_path / "funnel.log", [server.url])
    return server, funnel


def names(server: ServerProcess) -> Counter[str]:
    r = server.query({"groupings": ["name"]})
    assert r.status_code == 200, r.text
    return Counter({row["name"]: row["rowCount"] for row in r.json()["results"]})


def drained(funnel: FunnelProcess) -> bool:
    try:
        return funnel.status()["spooled_batches"] == 0
    except httpx.TransportError:
        return False


def test_forwards_and_keeps_accepting_while_upstream_is_down(tmp_path: Path) -> None:
    server, funnel = setup(tmp_path)
    server.start()
    funnel.start()
    try:
        for i in range(30):
            assert funnel.client.get(f"/pixel.gif?name=a{i}&visits=1").status_code == 200
        r = funnel.client.post("/track", content=b"name,visits\nb,2\nc,3\n",
                               headers={"content-type": "text/csv"})
        assert r.json() == {"inserted": 2, "rejected": 0}
        wait_until(lambda: sum(names(server).values()) == 32, 20, "forwarded")
        assert server.stop() == 0
        for i in range(20):
            assert funnel.client.get(f"/pixel.gif?name=d{i}").status_code == 200
        status = funnel.status()
        assert status["spooled_batches"] > 0 and status["spooled_bytes"] > 0
        metrics = wait_until(lambda: (m if 'upstream_errors_total{kind="unreachable"' in (
            m := funnel.client.get("/metrics").text) else None), 10, "upstream errors counted")
        assert "gumshoe_funnel_oldest_spooled_age_seconds" in metrics
        server.start()
        wait_until(lambda: drained(funnel), 20, "drained after upstream returned")
        assert sum(names(server).values()) == 52
        # a client batch id is applied once, also when retried
        for _ in range(2):
            r = funnel.client.put("/insert", json=[{"at": 1_700_000_000, "name": "x"}],
                                  headers={"x-batch-id": "client-7"})
            assert r.status_code == 200
        assert r.json()["duplicate"] is True
        wait_until(lambda: names(server)["x"] == 1, 20, "client batch forwarded")
    finally:
        funnel.stop()
        server.stop()


def test_bad_input_is_refused_with_the_servers_messages(tmp_path: Path) -> None:
    _, funnel = setup(tmp_path)
    funnel.start()
    try:
        r = funnel.client.get("/pixel.gif?visits=300")
        assert r.status_code == 400
        assert r.json() == {"error": "parameter visits: value '300' is out of range for uint8 "
                                     "[0, 255]"}
        r = funnel.client.put("/insert", json=[{"at": 1, "cuntry": "x"}])
        assert r.status_code == 400 and "unknown column 'cuntry'" in r.json()["error"]
        r = funnel.client.post("/track", content=b"visits\n1\nx\n",
                               headers={"content-type": "text/csv"})
        assert r.json() == {"error": "line 3, column visits: 'x' is not a number"}
        metrics = funnel.client.get("/metrics").text
        assert 'gumshoe_collect_refused_total{reason="invalid_value",route="/pixel.gif"} 1.0' \
            in metrics
    finally:
        funnel.stop()


def test_sigterm_and_kill_9_keep_every_acknowledged_event(tmp_path: Path) -> None:
    server, funnel = setup(tmp_path, FUNNEL_TABLE.replace('"50ms"', '"10s"')
                           .replace("300", "100000"))  # nothing forwarded before the stops
    server.start()
    funnel.start()
    try:
        for i in range(10):
            assert funnel.client.get(f"/pixel.gif?name=t{i}").status_code == 200
        assert funnel.stop(signal.SIGTERM) == 0  # graceful: forwards what it holds
        assert sum(names(server).values()) == 10
        funnel.start()
        for i in range(10):
            assert funnel.client.get(f"/pixel.gif?name=k{i}").status_code == 200
        funnel.stop(signal.SIGKILL)
        assert sum(names(server).values()) == 10
        funnel.start()  # replays its spool
        wait_until(lambda: sum(names(server).values()) == 20, 20, "replayed after kill -9")
    finally:
        funnel.stop()
        server.stop()


class Load:
    """Threads sending beacons and CSV bodies with unique names to a funnel; each event is
    acknowledged (200), refused, or unknown (no answer: it may or may not have been taken)."""

    def __init__(self, url: str, threads: int = 3, limit: int = 50_000) -> None:
        self.url = url
        self.ids = itertools.count()
        self.limit = limit
        self.acked: set[str] = set()
        self.unknown: set[str] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(k,)) for k in range(threads)]

    def run(self, k: int) -> None:
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            for n in itertools.count():
                if self.stop.is_set():
                    return
                csv = n % 5 == 4
                batch = [f"e{next(self.ids)}" for _ in range(20 if csv else 1)]
                if int(batch[-1][1:]) >= self.limit:
                    return
                try:
                    if csv:
                        r = client.post("/track", headers={"content-type": "text/csv"},
                                        content="name,visits\n" + "".join(
                                            f"{b},1\n" for b in batch))
                    else:
                        r = client.get(f"/pixel.gif?name={batch[0]}&visits=1")
                except httpx.ConnectError:
                    time.sleep(0.05)  # nothing was sent: the funnel is down
                    continue
                except httpx.TransportError:
                    with self.lock:
                        self.unknown.update(batch)
                    continue
                if r.status_code == 200:
                    with self.lock:
                        self.acked.update(batch)
                else:
                    time.sleep(0.05)

    def __enter__(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


def never_lose(tmp_path: Path, down: float) -> None:
    server, funnel = setup(tmp_path)
    server.start()
    funnel.start()
    load = Load(funnel.url)
    try:
        with load:
            time.sleep(3)
            assert server.stop(signal.SIGTERM) == 0  # upstream stopped mid-load...
            time.sleep(down / 2)
            funnel.stop(signal.SIGKILL)  # ...and the funnel killed while it spools
            funnel.start()
            time.sleep(down / 2)
            server.start()
            time.sleep(3)
            server.stop(signal.SIGKILL)  # upstream killed mid-load
            time.sleep(1)
            server.start()
            time.sleep(3)
        wait_until(lambda: drained(funnel), 60, "spool drained")
        stored = names(server)
    finally:
        funnel.stop()
        server.stop()
    doubled = {k: v for k, v in stored.items() if v != 1}
    lost = load.acked - set(stored)
    unexplained = set(stored) - load.acked - load.unknown
    print(f"acked {len(load.acked)}, unknown {len(load.unknown)}, stored {len(stored)}")
    assert len(load.acked) > 500, "the load did not get going"
    assert not doubled, f"events stored more than once: {list(doubled.items())[:10]}"
    assert not lost, f"{len(lost)} acknowledged events missing: {sorted(lost)[:10]}"
    assert not unexplained, f"events nobody sent: {sorted(unexplained)[:10]}"


def test_never_lose(tmp_path: Path) -> None:
    never_lose(tmp_path, down=6)


@pytest.mark.slow
def test_never_lose_long_outage(tmp_path: Path) -> None:
    never_lose(tmp_path, down=30)


def test_through_a_router_to_shards(tmp_path: Path) -> None:
    """funnel -> router -> 2 shards: the router takes the funnel's msgpack batches and the
    shards drop a resent batch (the funnel is killed before it records the acknowledgement
    often enough that some batches are sent twice)."""
    from ..router.conftest import RouterProcess

    shards = []
    for i in range(2):
        d = tmp_path / f"shard{i}"
        d.mkdir()
        shards.append(ServerProcess(write_config(d, d / "db"), d / "log").start())
    (tmp_path / "r").mkdir()
    router = RouterProcess(write_config(tmp_path / "r", "MEMORY"), tmp_path / "router.log",
                           [f"127.0.0.1:{s.port}" for s in shards]).start()
    (tmp_path / "f").mkdir()
    fcfg = write_config(tmp_path / "f", tmp_path / "f" / "fdb", **FUNNEL_KEYS)
    fcfg.write_text(fcfg.read_text() + FUNNEL_TABLE)
    funnel = FunnelProcess(fcfg, tmp_path / "funnel.log", [router.url])
    try:
        sent = 0
        for _ in range(3):
            funnel.start()
            for _ in range(100):
                r = funnel.client.get(f"/pixel.gif?name=r{sent}&visits=1")
                assert r.status_code == 200, r.text
                sent += 1
            funnel.stop(signal.SIGKILL)
        funnel.start()
        wait_until(lambda: drained(funnel), 30, "drained")
        per_shard = [sum(names(s).values()) for s in shards]
        assert sum(per_shard) == sent and min(per_shard) > 0
        assert set(names(router)) == {f"r{i}" for i in range(sent)}
        assert max(names(router).values()) == 1
    finally:
        funnel.stop()
        router.stop()
        for s in shards:
            s.stop()
