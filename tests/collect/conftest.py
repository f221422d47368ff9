"""Fixtures of the collect tests: a real redis-server on a free loopback port (skipped where
the Debian package is missing)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import free_port, wait_until


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        import redis

        self.client = redis.Redis(port=self.port, socket_timeout=10)
        wait_until(self._up, 10, "redis-server up")

    def _up(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:
            return False

    def stop(self) -> None:
        self.client.close()
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; .ci/run "
                    "installs it)")
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()
