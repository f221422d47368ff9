"""The HTTP edge against the real server: idle and slow connections are closed within their
timeouts, connections are capped below the fd limit (and running out of descriptors never
makes the server refuse inserts for good), request bodies in flight are bounded, gzip bodies
are decoded within the size limit, and the start-up gate answers 503 until the DB is open."""

from __future__ import annotations

import contextlib
import gzip
import os
import resource
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gumshoe.config import load_config
from gumshoe.server import create_app

from .harness import T0, ServerProcess, sample_rows, write_config

with warnings.catch_warnings():  # starlette warns when it finds httpx rather than httpx2
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(condition: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.settimeout(10)
    return s


def closed_by_peer(s: socket.socket) -> bool:
    """True when the server has closed `s` (EOF or reset), reading any answer first."""
    s.setblocking(False)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[ServerProcess]:
    cfg = write_config(tmp_path, tmp_path / "db", idle_timeout="1s", request_timeout="2s")
    server = ServerProcess(cfg, tmp_path / "server.log").start()
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log_text()


def test_idle_and_slow_header_connections_are_closed(limited: ServerProcess) -> None:
    assert limited.proc is not None
    pid, before = limited.proc.pid, open_fds(limited.proc.pid)
    idle = [connect(limited.port) for _ in range(60)]
    slow = [connect(limited.port) for _ in range(60)]
    t0 = time.monotonic()
    for s in slow:  # a request line and one header, then a header line every 0.3 s
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
    assert wait_until(lambda: open_fds(pid) >= before + 100, 2), open_fds(pid)
    while time.monotonic() - t0 < 4 and not all(closed_by_peer(s) for s in idle + slow):
        for s in slow:
            with contextlib.suppress(OSError):
                s.sendall(b"X-Slow: 1\r\n")
        time.sleep(0.3)
    elapsed = time.monotonic() - t0
    assert all(closed_by_peer(s) for s in idle + slow), "connections still open after 4 s"
    assert elapsed < 4  # idle_timeout 1 s, request_timeout 2 s
    for s in idle + slow:
        s.close()
    assert wait_until(lambda: open_fds(pid) <= before + 2, 5), (before, open_fds(pid))
    assert limited.client.get("/").status_code == 200  # and it still serves


def test_a_body_that_stalls_midway_gets_408_and_is_dropped(limited: ServerProcess) -> None:
    s = connect(limited.port)
    s.sendall(b"PUT /insert HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n[{")
    t0 = time.monotonic()
    answer = b""
    while time.monotonic() - t0 < 5:
        chunk = s.recv(65536)
        if not chunk:
            break
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request_timeout" in answer
    assert time.monotonic() - t0 < 4
    s.close()
    # nothing of the stalled batch was applied
    assert limited.query({}).json()["results"] == [{"rowCount": 0}]


def test_connections_over_the_cap_are_refused_and_the_rest_go_on(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, tmp_path / "db", max_connections=20, idle_timeout="30s")
    server = ServerProcess(cfg, tmp_path / "server.log").start()
    held: list[socket.socket] = []
    try:
        held = [connect(server.port) for _ in range(19)]  # + the harness's keep-alive one
        time.sleep(0.2)
        extra = connect(server.port)
        answer = extra.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"max_connections" in answer
        extra.close()
        # the connections already open are served
        held[0].sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert held[0].recv(65536).startswith(b"HTTP/1.1 200")
        for s in held:
            s.close()
        held = []
        assert wait_until(lambda: httpx.get(server.url + "/", timeout=2).status_code == 200, 5)
    finally:
        for s in held:
            s.close()
        assert server.stop() == 0, server.log_text()


def _low_fd_limit() -> None:  # in the server child, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))


def test_running_out_of_descriptors_never_stops_inserts_for_good(tmp_path: Path) -> None:
    """The reported failure: with a limit of 300 descriptors, ~300 idle connections made
    the next flush fail with EMFILE and every later insert a 503 until a restart. Now the
    connections are capped below the limit (headroom for storage), flushes keep working and
    inserts succeed while and after the connections are held."""
    cfg = write_config(tmp_path, tmp_path / "db", open_file_limit=0, flush_interval="200ms",
                       idle_timeout="60s")
    server = ServerProcess(cfg, tmp_path / "server.log", preexec=_low_fd_limit).start()
    held: list[socket.socket] = []
    rows = sample_rows(200, seed=1)
    try:
        assert server.insert(rows).status_code == 200  # its keep-alive connection stays open
        for _ in range(320):
            with contextlib.suppress(OSError):
                held.append(connect(server.port))
        # the cap is 300 descriptors minus a quarter kept for storage: 225 connections
        assert wait_until(lambda: sum(closed_by_peer(s) for s in held) >= 320 - 225, 5)
        # inserts on the open connection, and flushes every 200 ms, while the cap is full
        for _ in range(3):
            assert server.insert(rows).status_code == 200, server.log_text()[-3000:]
            time.sleep(0.3)
        for s in held:
            s.close()
        held = []
        with httpx.Client(base_url=server.url, timeout=10) as c:  # new connections again
            assert wait_until(lambda: c.put("/insert", json=rows).status_code == 200, 5)
            total = c.post("/query", json={}).json()["results"][0]["rowCount"]
        assert total == 1000
        assert "storage failure" not in server.log_text()
        assert "EMFILE" not in server.log_text() and "Too many open files" not in \
            server.log_text()
    finally:
        for s in held:
            s.close()
        assert server.stop() == 0, server.log_text()


def test_request_bodies_in_flight_are_bounded(tmp_path: Path) -> None:
    """One body holds most of max_inflight_body while it trickles in; a second one that
    does not fit waits, then gets 503 with Retry-After naming the key."""
    cfg = write_config(tmp_path, tmp_path / "db", max_inflight_body="1MB",
                       request_timeout="2s")
    server = ServerProcess(cfg, tmp_path / "server.log").start()
    try:
        first = connect(server.port)
        first.sendall(b"PUT /insert HTTP/1.1\r\nHost: localhost\r\nContent-Length: 900000\r\n"
                      b"\r\n[")
        time.sleep(0.3)
        r = server.client.put("/insert", content=b" " * 800_000 + b"[]")
        assert r.status_code == 503, r.text
        assert "max_inflight_body" in r.json()["error"]
        assert r.headers["retry-after"]
        first.close()
        # once the first body is gone, the budget is free again
        assert wait_until(lambda: server.client.put("/insert", content=b" " * 800_000 + b"[]"
                                                    ).status_code == 200, 5)
    finally:
        assert server.stop() == 0, server.log_text()


def test_gzip_bodies(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, tmp_path / "db", max_body_size="100KB")
    server = ServerProcess(cfg, tmp_path / "server.log").start()
    try:
        c = server.client
        rows = sample_rows(300, seed=2)
        import orjson

        body = gzip.compress(orjson.dumps(rows))
        r = c.put("/insert", content=body, headers={"content-encoding": "gzip"})
        assert r.status_code == 200 and r.json()["inserted"] == 300
        r = c.put("/insert", content=b"\x1f\x8b not gzip", headers={"content-encoding": "gzip"})
        assert r.status_code == 400 and "gzip" in r.json()["error"]
        bomb = gzip.compress(b"[" + b" " * 5_000_000 + b"]")  # 5 MB of spaces, ~5 KB packed
        r = c.put("/insert", content=bomb, headers={"content-encoding": "gzip"})
        assert r.status_code == 413 and "max_body_size" in r.json()["error"]
        r = c.put("/insert", content=b"[]", headers={"content-encoding": "br"})
        assert r.status_code == 415
        assert c.post("/query", json={}).json()["results"][0]["rowCount"] == 300
    finally:
        assert server.stop() == 0, server.log_text()


def test_the_start_up_gate_answers_503_until_the_database_is_open() -> None:
    from gumshoe.db import DB

    config = load_config().replace(database_dir="MEMORY", retention_days=0)
    release = threading.Event()

    def open_db(progress: Any) -> DB:
        progress("replaying the write-ahead log, 43%")
        assert release.wait(10)
        return DB(config)

    with TestClient(create_app(None, config, open_db=open_db)) as c:
        for path in ("/", "/query", "/statusz"):
            r = c.request("POST" if path == "/query" else "GET", path, json={})
            assert r.status_code == 503, (path, r.text)
            assert r.json()["error"] == "starting: replaying the write-ahead log, 43%"
            assert int(r.headers["retry-after"]) >= 1
        release.set()
        assert wait_until(lambda: c.get("/").status_code == 200, 10)
        r = c.put("/insert", json=[{"at": T0, "visits": 1}])
        assert r.status_code == 200


def test_version_flag() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "gumshoe", "--version"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("gumshoe ")
