"""The app in-process (starlette TestClient) for cases a real process cannot easily stage:
storage failure, the X-Batch-Id pass-through, numpy/NaN in results, internal errors."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.errors import StorageFailedError
from gumshoe.server import create_app

from .harness import T0

with warnings.catch_warnings():  # starlette warns when it finds httpx rather than httpx2
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

CONFIG = load_config().replace(database_dir="MEMORY", retention_days=0)


@pytest.fixture
def db() -> Iterator[DB]:
    database = DB(CONFIG)
    yield database
    database.close()


@pytest.fixture
def client(db: DB) -> Iterator[TestClient]:
    with TestClient(create_app(db, CONFIG), raise_server_exceptions=False) as c:
        yield c


def test_storage_failure_is_503_with_the_error_shape(db: DB, client: TestClient,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(batch: Any, batch_id: str | None = None) -> Any:
        raise StorageFailedError("fsync failed: disk full")

    monkeypatch.setattr(db, "insert_batch", failing)
    r = client.put("/insert", json=[{"at": T0}])
    assert r.status_code == 503
    assert r.json() == {"error": "storage failure, not accepting writes: fsync failed: disk full"}
    assert 'gumshoe_insert_errors_total{reason="storage_failed"} 1.0' in client.get("/metrics").text


def test_batch_id_header_is_passed_to_the_db(db: DB, client: TestClient,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | None] = []
    insert = db.insert_batch

    def recording(batch: Any, batch_id: str | None = None) -> Any:
        seen.append(batch_id)
        return insert(batch, batch_id=batch_id)

    monkeypatch.setattr(db, "insert_batch", recording)
    assert client.put("/insert", json=[{"at": T0}], headers={"X-Batch-Id": "b-1"}).status_code \
        == 200
    assert client.put("/insert", json=[{"at": T0}]).status_code == 200
    assert seen == ["b-1", None]


def test_numpy_values_and_nan_never_reach_json_raw(db: DB, client: TestClient,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"n": np.int64(3), "u": np.uint64(2**64 - 1), "f": np.float32(0.5),
             "nan": float("nan"), "npnan": np.float64("nan"), "inf": np.inf,
             "big": 2**70, "arr": np.arange(2)}]
    service = client.app.state.server.service  # type: ignore[attr-defined]

    async def fake_result(query: Any) -> Any:
        return query, rows, {}

    monkeypatch.setattr(service, "answer_query", fake_result)
    for params in ({}, {"format": "stream"}):
        r = client.post("/query", json={}, params=params)
        assert r.status_code == 200
        line = r.content.splitlines()[-1]
        result = orjson.loads(line)
        result = result["results"][0] if "results" in result else result
        assert result == {"n": 3, "u": 2**64 - 1, "f": 0.5, "nan": None, "npnan": None,
                          "inf": None, "big": 2**70, "arr": [0, 1]}


def test_stream_sends_every_row(db: DB, client: TestClient,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"i": i} for i in range(2500)]
    service = client.app.state.server.service  # type: ignore[attr-defined]

    async def fake_result(query: Any) -> Any:
        return query, rows, {}

    monkeypatch.setattr(service, "answer_query", fake_result)
    lines = client.post("/query?format=stream", json={}).content.splitlines()
    assert orjson.loads(lines[0])["num_rows"] == 2500
    assert [orjson.loads(line)["i"] for line in lines[1:]] == list(range(2500))


def test_a_server_bug_is_a_500_with_the_error_shape(db: DB, client: TestClient,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(obj: Any) -> Any:
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(client.app.state.server.service, "answer_query", broken)  # type: ignore
    r = client.post("/query", json={})
    assert r.status_code == 500
    assert list(r.json()) == ["error"]
    assert "kernel exploded" in r.json()["error"]
    assert client.get("/").status_code == 200


def test_two_apps_in_one_process_have_separate_metrics() -> None:
    with DB(CONFIG) as db1, DB(CONFIG) as db2, \
            TestClient(create_app(db1, CONFIG, periodic_flush=False)) as c1, \
            TestClient(create_app(db2, CONFIG, periodic_flush=False)) as c2:
        c1.put("/insert", json=[{"at": T0}] * 3)
        assert 'gumshoe_insert_rows_total{result="inserted"} 3.0' in c1.get("/metrics").text
        assert 'gumshoe_insert_rows_total{result="inserted"} 0.0' in c2.get("/metrics").text


def test_shutdown_closes_the_db(db: DB) -> None:
    with TestClient(create_app(db, CONFIG)) as c:
        c.put("/insert", json=[{"at": T0}])
    assert db.closed


def test_head_and_root(client: TestClient) -> None:
    assert client.head("/").status_code == 200
    assert client.get("/").text == "Gumshoe is on the case!"
