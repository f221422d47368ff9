"""Large insert bodies decoded in worker processes (`--insert-workers`): same answers, same
errors, clean stop."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from .harness import T0, ServerProcess, write_config

ROWS = 6000  # ~400 KB of JSON: over the 256 KB threshold


def big_batch(tag: int, plain: bool = False) -> list[dict[str, object]]:
    """ROWS rows; not `plain`: names hold a quote, an escape in JSON, which the C scanner
    declines (so the body goes to the decoding processes)."""
    quote = "" if plain else '"'
    return [{"at": T0 + i, "name": f"n{i % 50}{quote}", "country": "USA", "age": i % 100,
             "visits": 1, "clicks": tag} for i in range(ROWS)]


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("workers")
    server = ServerProcess(write_config(tmp, tmp / "db"), tmp / "server.log",
                           extra=("--insert-workers", "1")).start()
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log_text()


def test_large_bodies_through_the_workers_sum_exactly(pooled: ServerProcess) -> None:
    assert len(orjson.dumps(big_batch(1))) > 256 * 1024
    total = 0
    for tag in range(1, 6):  # the first starts the pool; the later ones go through it
        r = pooled.insert(big_batch(tag))
        assert r.status_code == 200, r.text
        assert r.json() == {"inserted": ROWS, "rejected": 0}
        total += tag * ROWS
    for _ in range(50):  # bounded wait for the pool to have been used (log line)
        if "started 1 insert decoding processes" in pooled.log_text():
            break
        time.sleep(0.1)
    assert "started 1 insert decoding processes" in pooled.log_text()
    r = pooled.query({"aggregates": [{"column": "clicks"}], "groupings": ["country"]})
    assert r.json()["results"] == [{"country": "USA", "clicks": total, "rowCount": 5 * ROWS}]


def test_plain_bodies_are_scanned_in_the_server(tmp_path: Path) -> None:
    """Bodies the C scanner reads never start the decoding processes (cheaper in-thread)."""
    from gumshoe import native
    if native.jsonl is None:
        pytest.skip("gumshoe._jsonl is not built")
    server = ServerProcess(write_config(tmp_path, tmp_path / "db"), tmp_path / "server.log",
                           extra=("--insert-workers", "1")).start()
    try:
        for tag in range(1, 4):
            r = server.insert(big_batch(tag, plain=True))
            assert r.json() == {"inserted": ROWS, "rejected": 0}
        r = server.query({"aggregates": [{"column": "clicks"}]})
        assert r.json()["results"] == [{"clicks": 6 * ROWS, "rowCount": 3 * ROWS}]
    finally:
        assert server.stop() == 0, server.log_text()
    assert "insert decoding processes" not in server.log_text()


def test_errors_from_a_worker_keep_their_shape(pooled: ServerProcess) -> None:
    rows = big_batch(1)
    rows[4321]["visits"] = 300
    r = pooled.insert(rows)
    assert r.status_code == 400
    assert r.json() == {"error": "rows[4321].visits: value 300 is out of range for uint8 "
                                 "[0, 255]"}
    r = pooled.client.put("/insert", content=orjson.dumps(big_batch(1))[:-2])
    assert r.status_code == 400
    assert "invalid JSON" in r.json()["error"]


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_workers_exit_when_the_server_is_killed(tmp_path: Path) -> None:
    server = ServerProcess(write_config(tmp_path, "MEMORY"), tmp_path / "server.log",
                           extra=("--insert-workers", "1")).start()
    assert server.insert(big_batch(1)).status_code == 200  # starts the pool
    assert server.insert(big_batch(2)).status_code == 200
    assert server.proc is not None
    helpers = descendants(server.proc.pid)
    assert helpers  # forkserver, worker, resource tracker
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    for _ in range(100):  # bounded: up to ~10 s
        left = {p for p in helpers if Path(f"/proc/{p}").exists()}
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"helper processes left behind: {sorted(left)}"
