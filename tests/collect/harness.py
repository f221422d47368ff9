"""Processes for the collect tests: the funnel (`python -m gumshoe funnel`), beside the shard
server of tests/http/harness.py; redis-server and chromium when the machine has them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.http.harness import ServerProcess, free_port, write_config

__all__ = ["FunnelProcess", "ServerProcess", "free_port", "needs", "wait_until",
           "write_config"]


def needs(program: str, package: str) -> pytest.MarkDecorator:
    """Skip a test when `program` is not installed (apt-get install `package`)."""
    return pytest.mark.skipif(shutil.which(program) is None,
                              reason=f"{program} is not installed (Debian package {package}; "
                              ".ci/run installs it)")


def wait_until(check: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `check()` until it returns a truthy value (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not reached within {timeout}s")


class FunnelProcess(ServerProcess):
    """One `python -m gumshoe funnel` subprocess in front of `upstreams`."""

    def __init__(self, config: Path, log: Path, upstreams: list[str],
                 port: int | None = None) -> None:
        super().__init__(config, log, port)
        self.upstreams = upstreams

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "gumshoe", "funnel", "--config", str(self.config),
                "--listen", f"127.0.0.1:{self.port}", "--upstream", ",".join(self.upstreams)]

    def status(self) -> dict[str, Any]:
        return dict(self.client.get("/statusz").json())


def rows_in(server: ServerProcess, column: str = "visits") -> tuple[int, int]:
    """(rowCount, sum of `column`) over the whole database."""
    r = server.query({"aggregates": [{"column": column}]})
    assert r.status_code == 200, r.text
    row = r.json()["results"][0]
    return int(row["rowCount"]), int(row[column])


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, **kw)


def get(client: httpx.Client, url: str, **kw: Any) -> httpx.Response:
    return client.get(url, **kw)
