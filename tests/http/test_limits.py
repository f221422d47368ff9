"""max_body_size: a larger body gets 413 with the JSON error shape, whether its size is declared
(Content-Length, refused before reading) or only found out while it streams in (chunked)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from .harness import T0, ServerProcess, write_config

LIMIT = 2000  # "2KB"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("limits")
    server = ServerProcess(write_config(tmp, "MEMORY", max_body_size="2KB"),
                           tmp / "server.log").start()
    try:
        yield server
    finally:
        assert server.stop() == 0


def body_of(size: int) -> bytes:
    """A valid one-row insert body padded with whitespace to exactly `size` bytes."""
    body = orjson.dumps([{"at": T0, "visits": 1}])
    return body + b" " * (size - len(body))


def assert_413(r: object) -> None:
    assert r.status_code == 413, r.text  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert list(body) == ["error"]
    assert "max_body_size" in body["error"]


@pytest.mark.parametrize("path", ["/insert", "/query"])
def test_declared_oversize_body_is_413(small: ServerProcess, path: str) -> None:
    method = "PUT" if path == "/insert" else "POST"
    assert_413(small.client.request(method, path, content=body_of(LIMIT + 1)))
    assert small.client.get("/").status_code == 200


def test_streamed_oversize_body_is_413(small: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding chunked
        body = body_of(LIMIT + 500)
        for i in range(0, len(body), 100):
            yield body[i:i + 100]

    assert_413(small.client.put("/insert", content=chunks()))
    assert small.client.get("/").status_code == 200


def test_body_at_the_limit_is_accepted(small: ServerProcess) -> None:
    r = small.client.put("/insert", content=body_of(LIMIT))
    assert r.status_code == 200, r.text
    assert r.json() == {"inserted": 1, "rejected": 0}
