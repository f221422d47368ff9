"""A cluster of real processes: three shard servers and a router over them, plus one lone
server that receives the same rows (the answer the router must reproduce)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..http.harness import SCHEMA, ServerProcess, free_port, write_config


class RouterProcess(ServerProcess):
    """`python -m gumshoe router` over the given shard addresses."""

    def __init__(self, config: Path, log: Path, shards: list[str],
                 extra: tuple[str, ...] = ()) -> None:
        super().__init__(config, log, extra=extra)
        self.shards = shards

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "gumshoe", "router", "--config", str(self.config),
                "--shards", ",".join(self.shards), "--listen", f"127.0.0.1:{self.port}",
                *self.extra]


class Cluster:
    def __init__(self, tmp: Path, n_shards: int = 3, schema: str = SCHEMA) -> None:
        self.shards = []
        for i in range(n_shards):
            d = tmp / f"shard{i}"
            d.mkdir()
            self.shards.append(ServerProcess(write_config(d, d / "db", schema=schema),
                                             d / "server.log"))
        lone = tmp / "lone"
        lone.mkdir()
        self.lone = ServerProcess(write_config(lone, lone / "db", schema=schema),
                                  lone / "server.log")
        self.router = RouterProcess(write_config(tmp, "MEMORY", schema=schema),
                                    tmp / "router.log",
                                    [f"127.0.0.1:{s.port}" for s in self.shards],
                                    extra=("--timeout", "5"))

    def start(self) -> Cluster:
        for p in (*self.shards, self.lone, self.router):
            p.start()
        return self

    def stop(self) -> list[int]:
        statuses = [p.stop() for p in (self.router, *self.shards, self.lone)]
        for p in (self.router, *self.shards, self.lone):
            p.client.close()
        return statuses

    def insert_both(self, rows: list[dict[str, Any]]) -> None:
        """The same rows through the router and into the lone server."""
        assert self.router.insert(rows).status_code == 200
        assert self.lone.insert(rows).status_code == 200

    def same_answer(self, q: dict[str, Any]) -> dict[str, Any]:
        """The router's answer, which must equal the lone server's (results, and which outputs
        are approximate)."""
        a, b = self.router.query(q), self.lone.query(q)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert a.json()["results"] == b.json()["results"]
        assert a.json().get("approximate") == b.json().get("approximate")
        return dict(a.json())


@contextlib.contextmanager
def loaded_cluster(tmp: Path, schema: str, batches: list[list[dict[str, Any]]]
                   ) -> Iterator[Cluster]:
    """A started cluster over `schema` holding `batches` (router and lone server alike)."""
    c = Cluster(tmp, schema=schema).start()
    try:
        for rows in batches:
            c.insert_both(rows)
        yield c
    finally:
        assert c.stop() == [0] * 5, c.router.log_text()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield c
    finally:
        assert c.stop() == [0] * 5, c.router.log_text()


__all__ = ["Cluster", "RouterProcess", "free_port", "loaded_cluster"]
