"""The query service's fast path: small queries of cheap plans answered on the caller's
thread (no hand-off), big ones and those that would wait for the write lock handed to a
coordinator thread, with the same answers; parsed queries cached by request body."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from gumshoe import service as service_module
from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.errors import ClientError
from gumshoe.service import QueryService

T0 = 1_700_000_000 // 3600 * 3600
CONFIG = load_config().replace(database_dir="MEMORY", retention_days=0)
SUMS = {"aggregates": [{"column": "clicks"}], "groupings": ["name"]}


@pytest.fixture
def svc() -> Iterator[tuple[DB, QueryService]]:
    db = DB(CONFIG)
    db.insert([{"at": T0 + i % 7200, "name": f"n{i % 5}", "clicks": i % 3}
               for i in range(1000)])
    db.flush()
    service = QueryService(db, CONFIG)
    yield db, service
    service.close()
    db.close()


def answer(service: QueryService, obj: dict[str, Any]) -> list[dict[str, Any]]:
    return asyncio.run(service.answer(obj))[1]


def test_a_small_query_is_answered_inline_and_equals_the_threaded_answer(
        svc: tuple[DB, QueryService], monkeypatch: pytest.MonkeyPatch) -> None:
    db, service = svc
    inline = answer(service, SUMS)
    assert service.stats["inline"] == 1
    monkeypatch.setattr(service_module, "INLINE_ROWS", -1)  # everything through a thread
    assert answer(service, SUMS) == inline
    assert service.stats["inline"] == 1
    assert sorted(r["clicks"] for r in inline) == sorted(
        sum(i % 3 for i in range(1000) if i % 5 == k) for k in range(5))


def test_text_matching_and_metric_filters_plan_in_a_thread(
        svc: tuple[DB, QueryService]) -> None:
    _, service = svc
    answer(service, {**SUMS, "filters": [{"type": "prefix", "column": "name", "value": "n"}]})
    answer(service, {**SUMS, "filters": [{"type": ">", "column": "clicks", "value": 0}]})
    assert service.stats["inline"] == 0


def test_a_query_never_waits_for_the_write_lock_on_the_loop(
        svc: tuple[DB, QueryService]) -> None:
    db, service = svc
    expected = answer(service, SUMS)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db._write_lock:
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)

    async def run() -> list[dict[str, Any]]:
        task = asyncio.create_task(service.answer(SUMS))
        await asyncio.sleep(0.05)
        assert not task.done()  # waiting in a coordinator thread, not on this loop
        release.set()
        return (await task)[1]

    t0 = time.monotonic()
    assert asyncio.run(run()) == expected
    assert time.monotonic() - t0 < 5
    holder.join()
    assert service.stats["inline"] == 1  # only the first query


def test_parsed_queries_are_cached_by_body_and_bad_ones_never(
        svc: tuple[DB, QueryService], monkeypatch: pytest.MonkeyPatch) -> None:
    _, service = svc
    body = orjson.dumps(SUMS)
    assert service.parse_body(body) is service.parse_body(body)
    for bad in (b"[]", b'{"aggregates": 3}', b"{"):
        for _ in range(2):
            with pytest.raises(ClientError):
                service.parse_body(bad)
    monkeypatch.setattr(service_module, "PARSE_CACHE", 4)
    bodies = [orjson.dumps({**SUMS, "limit": n}) for n in range(10)]
    parsed = [service.parse_body(b) for b in bodies]
    assert len(service._parsed) <= 4
    assert service.parse_body(bodies[-1]) is parsed[-1]
    assert service.parse_body(bodies[0]) is not parsed[0]  # evicted, parsed anew
    assert service.parse_body(bodies[0]).limit == 0
