"""Small pure functions of the command line and the metricz page."""

from __future__ import annotations

import pytest

from gumshoe.cli import parse_listen
from gumshoe.errors import ConfigError
from gumshoe.metrics import go_duration, si_bytes


@pytest.mark.parametrize(("addr", "expected"), [
    ("127.0.0.1:9000", ("127.0.0.1", 9000)),
    (":9000", ("0.0.0.0", 9000)),  # the original's configs: every interface
    ("", ("0.0.0.0", 80)),  # Go's net/http: "" is ":80"
    ("localhost:0", ("localhost", 0)),
    ("[::1]:9000", ("::1", 9000)),
])
def test_parse_listen(addr: str, expected: tuple[str, int]) -> None:
    assert parse_listen(addr) == expected


@pytest.mark.parametrize("addr", ["9000", "host:", "host:port", "host:65536", "host:-1"])
def test_parse_listen_rejects(addr: str) -> None:
    with pytest.raises(ConfigError, match="listen address"):
        parse_listen(addr)


@pytest.mark.parametrize(("seconds", "text"), [
    (10, "10s"), (3600, "1h0m0s"), (5400, "1h30m0s"), (90, "1m30s"), (1.5, "1.5s"),
    (0.5, "500ms"), (0, "0s"), (86400, "24h0m0s"),
])
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


@pytest.mark.parametrize(("n", "text"), [
    (0, "0B"), (132, "132B"), (1000, "1.0kB"), (1_000_000, "1.0MB"), (12_345_678, "12MB"),
    (999_999, "1.0MB"), (999_400, "999kB"),
])
def test_si_bytes(n: int, text: str) -> None:
    assert si_bytes(n) == text
