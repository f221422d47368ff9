"""`gumshoe serve` as a process: clean stops, restarts that keep the data, and the one-line
exit-2 errors for a bad config, a locked database directory and a port in use."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from .harness import T0, ServerProcess, free_port, run_gumshoe, write_config

ROWS = [{"at": T0, "name": "Starbuck", "country": "USA", "visits": 2, "clicks": 5},
        {"at": T0 + 1, "name": "Starbuck", "country": "USA", "visits": 1, "clicks": 1},
        {"at": T0 + 7200, "name": "Boomer", "visits": 1}]


def totals(server: ServerProcess) -> list[dict[str, object]]:
    r = server.query({"aggregates": [{"column": "clicks"}, {"column": "visits"}],
                      "groupings": ["name"]})
    assert r.status_code == 200, r.text
    return r.json()["results"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_flushes_and_a_restart_keeps_the_data(tmp_path: Path, sig: int) -> None:
    config = write_config(tmp_path, tmp_path / "db")
    first = ServerProcess(config, tmp_path / "server.log").start()
    assert first.insert(ROWS).status_code == 200
    expected = totals(first)
    dictionaries = first.client.get("/dimension_tables").json()
    assert first.stop(sig) == 0, first.log_text()
    assert list((tmp_path / "db").glob("*.seg"))  # the stop flushed

    second = ServerProcess(config, tmp_path / "server.log").start()
    try:
        assert totals(second) == expected
        assert second.client.get("/dimension_tables").json() == dictionaries
        assert second.client.get("/statusz").json()["OldestInterval"] == T0
    finally:
        assert second.stop() == 0


def test_periodic_flush_writes_segments(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "db", flush_interval="200ms")
    server = ServerProcess(config, tmp_path / "server.log").start()
    try:
        assert server.insert(ROWS).status_code == 200
        segments = 0
        for _ in range(100):  # bounded: up to ~10 s
            metricz = server.client.get("/metricz", params={"format": "json"}).json()
            segments = metricz["totals"]["segments"]
            if segments:
                break
            time.sleep(0.1)
        assert segments == 2  # one per interval
        assert "gumshoe_flush_duration_seconds_count" in server.client.get("/metrics").text
    finally:
        assert server.stop() == 0


def test_memory_database_serves_and_stops(tmp_path: Path) -> None:
    server = ServerProcess(write_config(tmp_path, "MEMORY"), tmp_path / "server.log").start()
    try:
        assert server.insert(ROWS).status_code == 200
        assert totals(server)[0]["rowCount"] == 1
    finally:
        assert server.stop() == 0


def test_flags_override_the_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "configured")
    server = ServerProcess(config, tmp_path / "server.log",
                           extra=("--db", str(tmp_path / "flagged"))).start()
    try:
        assert server.insert(ROWS).status_code == 200
    finally:
        assert server.stop() == 0
    assert (tmp_path / "flagged" / "db.json").exists()
    assert not (tmp_path / "configured").exists()


# -- start-up failures: one line on stderr, exit status 2 -------------------------------------
def assert_one_line_error(result: object, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    assert lines[0].startswith("gumshoe: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(("text", "fragment"), [
    ("listen_adr = \"127.0.0.1:1\"\n", "listen_adr"),  # a typo must not pass silently
    ("retention_days = \"seven\"\n", "retention_days"),
    ("[schema]\nmetric_columns = [[\"m\", \"string:uint8\"]]\n", "metric column"),
    ("this is not toml\n", "invalid TOML"),
])
def test_bad_config_exits_2(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert_one_line_error(run_gumshoe("serve", "--config", str(path), "--listen",
                                      f"127.0.0.1:{free_port()}"), fragment)


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    assert_one_line_error(run_gumshoe("serve", "--config", str(tmp_path / "nope.toml")),
                          "nope.toml")


@pytest.mark.parametrize("listen", ["127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000"])
def test_bad_listen_address_exits_2(tmp_path: Path, listen: str) -> None:
    config = write_config(tmp_path, "MEMORY")
    assert_one_line_error(run_gumshoe("serve", "--config", str(config), "--listen", listen),
                          "listen address")


def test_locked_database_directory_exits_2(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "db")
    holder = ServerProcess(config, tmp_path / "server.log").start()
    try:
        result = run_gumshoe("serve", "--config", str(config), "--listen",
                             f"127.0.0.1:{free_port()}")
        assert_one_line_error(result, "lock", str(tmp_path / "db"))
        assert holder.client.get("/").status_code == 200  # the holder is unharmed
    finally:
        assert holder.stop() == 0


def test_port_in_use_exits_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, tmp_path / "db")
        result = run_gumshoe("serve", "--config", str(config), "--listen", f"127.0.0.1:{port}")
    assert_one_line_error(result, "cannot listen", str(port))
    assert not (tmp_path / "db" / "db.json").exists()


def test_no_command_is_a_usage_error() -> None:
    result = run_gumshoe()
    assert result.returncode == 2
    assert "serve" in result.stderr


def test_help_lists_the_flags() -> None:
    result = run_gumshoe("serve", "--help")
    assert result.returncode == 0
    for flag in ("--config", "--listen", "--db"):
        assert flag in result.stdout


def test_a_retried_batch_id_is_applied_once_also_after_a_restart(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "db")
    rows = [{"at": T0, "name": "Retry", "clicks": 7}]
    headers = {"X-Batch-Id": "client-42-batch-1"}
    first = ServerProcess(config, tmp_path / "server.log").start()
    try:
        assert first.insert(rows, headers=headers).json() == {"inserted": 1, "rejected": 0}
        again = first.insert(rows, headers=headers).json()
        assert again["duplicate"] is True
        assert again["inserted"] == 0
    finally:
        assert first.stop() == 0
    second = ServerProcess(config, tmp_path / "server.log").start()
    try:
        assert second.insert(rows, headers=headers).json()["duplicate"] is True
        assert totals(second) == [{"name": "Retry", "clicks": 7, "visits": 0, "rowCount": 1}]
    finally:
        assert second.stop() == 0
