"""Fail-stop through the HTTP app with a real on-disk database and injected I/O errors: a failed
log fsync or write is a 503 (never a 200), later inserts are refused, queries keep working, and
after a restart every acknowledged batch is there exactly once."""

from __future__ import annotations

import errno
import json
import warnings
from typing import TYPE_CHECKING, Any

import pytest

from gumshoe import fileio
from gumshoe.db import DB
from gumshoe.server import create_app
from tests.crash.helpers import batch_rows, expected, make_config, problems, totals

if TYPE_CHECKING:
    from pathlib import Path

with warnings.catch_warnings():  # starlette warns when it finds httpx rather than httpx2
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

QUERY = {"aggregates": [{"type": "sum", "column": "v", "name": "v"}], "groupings": ["batch"]}


def put(client: TestClient, b: int) -> Any:
    return client.put("/insert", content=json.dumps(batch_rows(b)),
                      headers={"X-Batch-Id": f"b{b}"})


@pytest.mark.parametrize("kind", ["fsync", "write"])
def test_io_error_is_503_and_fail_stop(tmp_path: Path, kind: str) -> None:
    cfg = make_config(tmp_path / "db")
    db = DB(cfg)
    acked = set()
    with TestClient(create_app(db, cfg, periodic_flush=False),
                    raise_server_exceptions=False) as client:
        for b in (1, 2):
            assert put(client, b).status_code == 200
            acked.add(b)
        with fileio.inject(fileio.FaultyIO(1, errno.ENOSPC, kinds=(kind,))):
            r = put(client, 3)
        assert r.status_code == 503, r.text
        assert "storage failure" in r.json()["error"]
        assert "No space left" in r.json()["error"]
        r = put(client, 4)  # the disk is fine again, but the database stays read-only
        assert r.status_code == 503
        assert put(client, 1).json() == {"inserted": 0, "rejected": 0, "duplicate": True}
        q = client.post("/query", json=QUERY)
        assert q.status_code == 200
        got = {row["batch"]: (row["rowCount"], row["v"]) for row in q.json()["results"]}
        assert got["b1"] == expected(1)
        assert got["b2"] == expected(2)
        assert got.get("b3", expected(3)) == expected(3)  # visible or not, never partial
    db = DB(cfg)
    assert problems(totals(db), acked, {1, 2, 3}) == []
    assert "b4" not in totals(db)
    db.close()
