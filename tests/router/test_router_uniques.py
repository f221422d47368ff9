"""`uniques` metrics through the router equal one server: the shards send per-group sketches
(never estimates), the router unites them, and says `approximate` as one server does."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from gumshoe.config import parse_config
from gumshoe.schema import Schema
from gumshoe.sketch import SPARSE_MAX

from ..http.harness import T0
from ..http.test_uniques import AGGS, SCHEMA as UNIQUES_SCHEMA
from ..strategies import queries
from .conftest import Cluster, loaded_cluster

SCHEMA = Schema.from_config(parse_config(UNIQUES_SCHEMA).schema)


def make_rows(n: int, seed: int, ids: int = 500) -> list[dict[str, Any]]:
    """Seeded rows over 6 hours; identities as strings or integers, null or missing now and
    then, the same identity on several shards."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        row: dict[str, Any] = {"at": T0 + rnd.randrange(0, 6 * 3600),
                               "country": rnd.choice(["US", "CA", "MX", None]),
                               "visits": rnd.randrange(0, 4)}
        who = rnd.randrange(0, ids)
        pick = rnd.random()
        if pick < 0.4:
            row["visitors"] = who
        elif pick < 0.8:
            row["visitors"] = str(who)
        elif pick < 0.9:
            row["visitors"] = None
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with loaded_cluster(tmp_path_factory.mktemp("cluster"), UNIQUES_SCHEMA,
                        [make_rows(300, seed=i) for i in range(3)]) as c:
        yield c




@pytest.mark.parametrize("q", [
    {"aggregates": AGGS},
    {"aggregates": AGGS, "groupings": ["country"]},
    {"aggregates": AGGS, "groupings": [{"column": "at", "timeTransform": "hour"}, "country"],
     "orderBy": [{"column": "visitors", "descending": True}], "limit": 5},
    {"aggregates": AGGS, "groupings": ["country"],
     "having": {"type": ">", "column": "visitors", "value": 100}},
])
def test_router_equals_one_server(loaded: Cluster, q: dict[str, Any]) -> None:
    got = loaded.same_answer(q)["results"]
    assert got and any(r["rowCount"] for r in got)


def test_the_router_unites_identities_across_shards(loaded: Cluster) -> None:
    rows = [r for i in range(3) for r in make_rows(300, seed=i)]
    got = loaded.same_answer({"aggregates": AGGS})
    assert got["results"][0]["visitors"] == len({str(r["visitors"]) for r in rows
                                                 if r.get("visitors") is not None})
    assert "approximate" not in got
    r = loaded.router.query({"aggregates": [{"type": "sum", "column": "visitors"}]})
    assert r.status_code == 400 and "aggregates[0]: sum of 'visitors'" in r.json()["error"]


def test_an_estimate_through_the_router(tmp_path: Any) -> None:
    c = Cluster(tmp_path, schema=UNIQUES_SCHEMA).start()
    try:
        n = 2 * SPARSE_MAX
        rows = [{"at": T0 + i % 7200, "country": "US", "visitors": i} for i in range(n)]
        for lo in range(0, n, 1500):
            assert c.router.insert(rows[lo:lo + 1500]).status_code == 200
            assert c.lone.insert(rows[lo:lo + 1500]).status_code == 200
        got = c.same_answer({"aggregates": AGGS, "groupings": ["country"]})
        assert got["approximate"] == ["visitors"]
        assert abs(got["results"][0]["visitors"] - n) < 0.03 * n
        # decided on the rows returned, after the merge: none left, none approximate
        got = c.same_answer({"aggregates": AGGS, "groupings": ["country"],
                             "having": {"type": "<", "column": "visitors", "value": 10}})
        assert got["results"] == [] and "approximate" not in got
    finally:
        assert c.stop() == [0] * 5, c.router.log_text()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=queries(SCHEMA, base=T0))
def test_random_queries_router_equals_one_server(loaded: Cluster, data: dict[str, Any]) -> None:
    loaded.same_answer(data)
