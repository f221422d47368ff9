"""End-to-end harness: the real `python -m gumshoe serve` process on a free loopback port.

Every wait is a bounded loop and every request has a timeout; servers are stopped with SIGTERM
and must exit 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

T0 = 1_700_000_000 - 1_700_000_000 % 3600  # an hour boundary; retention is off in tests
TIMEOUT = 10.0  # seconds, for every request

SCHEMA = """
[schema]
segment_size = "1MB"
interval_duration = "1h"
timestamp_column = ["at", "uint32"]
dimension_columns = [["name", "string:uint16"], ["country", "string:uint8"], ["age", "uint8"]]
metric_columns = [["visits", "uint8"], ["clicks", "uint32"], ["score", "float64"]]
"""


def sample_rows(n: int, seed: int, hours: int = 6) -> list[dict[str, Any]]:
    """n seeded random rows of SCHEMA over `hours` hours from T0: nils, missing keys, unicode,
    repeats (so they roll up)."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        row: dict[str, Any] = {"at": T0 + rnd.randrange(0, hours * 3600),
                               "visits": rnd.randrange(0, 4), "clicks": rnd.randrange(0, 100)}
        if rnd.random() < 0.9:
            row["name"] = rnd.choice(["Starbuck", "Boomer", "Helo", "Apollo", "Athena", "",
                                      "Zoë ünïcode", "line\nbreak"])
        if rnd.random() < 0.8:
            row["country"] = rnd.choice(["US", "CA", "MX", None])
        if rnd.random() < 0.7:
            row["age"] = rnd.randrange(18, 25)
        if rnd.random() < 0.5:
            row["score"] = rnd.choice([0.5, -1.25, 3.0])
        rows.append(row)
    return rows


# Queries over SCHEMA covering sums, averages, nils, several groupings, time truncation, metric
# and string filters, orderBy/limit: the router and gumtool tests expect equal answers for them.
SAMPLE_QUERIES: list[dict[str, Any]] = [
    {},
    {"aggregates": [{"column": "clicks"}, {"type": "average", "column": "visits"},
                    {"column": "score"}]},
    {"aggregates": [{"column": "clicks"}], "groupings": ["country"]},
    {"aggregates": [{"type": "average", "column": "clicks", "name": "avg"}],
     "groupings": ["name", "age"]},
    {"groupings": [{"column": "at", "timeTransform": "hour", "name": "h"}, "country"],
     "aggregates": [{"column": "visits"}]},
    {"aggregates": [{"column": "clicks"}], "filters": [{"column": "clicks", "type": ">",
                                                        "value": 150}]},
    {"aggregates": [{"column": "visits"}], "groupings": ["name"],
     "filters": [{"column": "visits", "type": ">=", "value": 6},
                 {"column": "country", "type": "!=", "value": "US"}]},
    {"aggregates": [{"column": "clicks"}], "groupings": ["name"],
     "orderBy": [{"column": "clicks", "descending": True}], "limit": 2},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path, db: str | Path, tables: str = "", schema: str = SCHEMA,
                 **keys: Any) -> Path:
    """A config file for tests: retention off, no periodic flush unless asked. `tables` is
    TOML text appended after [schema] (e.g. an [auth] table); `schema` replaces SCHEMA."""
    settings = {"database_dir": str(db), "retention_days": 0, "flush_interval": "1h",
                "durability": "os", **keys}
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n" + schema + "\n" + tables)
    return path


class ServerProcess:
    """One `python -m gumshoe serve` subprocess."""

    def __init__(self, config: Path, log: Path, port: int | None = None,
                 extra: tuple[str, ...] = (), key: str | None = None,
                 preexec: Any = None) -> None:
        self.config = config
        self.log = log
        self.port = port or free_port()
        self.extra = extra
        self.preexec = preexec  # run in the child before exec (e.g. a lower fd limit)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        headers = {"authorization": f"Bearer {key}"} if key else None
        self.client = httpx.Client(base_url=self.url, timeout=TIMEOUT, headers=headers)

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "gumshoe", "serve", "--config", str(self.config),
                "--listen", f"127.0.0.1:{self.port}", *self.extra]

    def start(self, ready: bool = True) -> ServerProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=self.preexec)
        if ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n"
                                     f"{self.log_text()}")
            try:
                if self.client.get("/", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the server and wait for it; returns its exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
            raise AssertionError(f"server ignored {sig} for {timeout}s:\n{self.log_text()}"
                                 ) from None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- conveniences ---------------------------------------------------------------------
    def insert(self, rows: list[dict[str, Any]], **kw: Any) -> httpx.Response:
        return self.client.put("/insert", json=rows, **kw)

    def query(self, query: dict[str, Any], **kw: Any) -> httpx.Response:
        return self.client.post("/query", json=query, **kw)

    def results(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        """The results of a query that must answer 200."""
        r = self.query(query)
        assert r.status_code == 200, r.text
        return list(r.json()["results"])


@contextlib.contextmanager
def loaded_server(tmp: Path, rows: list[dict[str, Any]], schema: str = SCHEMA,
                  **keys: Any) -> Iterator[ServerProcess]:
    """A server over a new database in `tmp` holding `rows` (write_config's `schema` and
    settings); stopped at the end, which must exit 0."""
    proc = ServerProcess(write_config(tmp, tmp / "db", schema=schema, **keys),
                         tmp / "server.log").start()
    try:
        assert proc.insert(rows).status_code == 200
        yield proc
    finally:
        status = proc.stop()
        proc.client.close()
        assert status == 0, proc.log_text()


def run_gumshoe(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run `python -m gumshoe ...` to completion (for start-up failures)."""
    return subprocess.run([sys.executable, "-m", "gumshoe", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
