"""Fixtures of the end-to-end tests (see harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import ServerProcess, write_config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on a fresh database directory, shared by the tests of one module."""
    tmp = tmp_path_factory.mktemp("server")
    proc = ServerProcess(write_config(tmp, tmp / "db"), tmp / "server.log").start()
    try:
        yield proc
    finally:
        status = proc.stop()
        proc.client.close()
        assert status == 0, proc.log_text()
