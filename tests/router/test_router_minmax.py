"""min:<type> / max:<type> metrics through the router equal one server: the shards' partials
carry each column's kind over the wire, and the router takes the extremes (never adds them)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from gumshoe.config import parse_config
from gumshoe.schema import Schema

from ..http.harness import T0
from ..http.test_minmax import AGGS, SCHEMA as MINMAX_SCHEMA
from ..strategies import queries
from .conftest import Cluster, loaded_cluster

SCHEMA = Schema.from_config(parse_config(MINMAX_SCHEMA).schema)


def make_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Seeded rows over 6 hours; each min/max value missing or null now and then."""
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        row: dict[str, Any] = {"at": T0 + rnd.randrange(0, 6 * 3600),
                               "country": rnd.choice(["US", "CA", "MX", None]),
                               "visits": rnd.randrange(0, 4)}
        for name, value in (("fastest", rnd.randrange(0, 2**32)),
                            ("slowest", rnd.choice([0.5, -1.25, 3.0, 1e300])),
                            ("lo", rnd.randrange(-2**63, 2**63 - 1)),
                            ("hi", rnd.randrange(1, 2**64))):
            if rnd.random() < 0.8:
                row[name] = value
            elif rnd.random() < 0.5:
                row[name] = None
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with loaded_cluster(tmp_path_factory.mktemp("cluster"), MINMAX_SCHEMA,
                        [make_rows(300, seed=i) for i in range(3)]) as c:
        yield c


def both(c: Cluster, q: dict[str, Any]) -> list[dict[str, Any]]:
    return list(c.same_answer(q)["results"])


@pytest.mark.parametrize("q", [
    {"aggregates": AGGS},
    {"aggregates": AGGS, "groupings": ["country"]},
    {"aggregates": AGGS, "groupings": [{"column": "at", "timeTransform": "hour"}, "country"],
     "orderBy": [{"column": "fastest", "descending": True}], "limit": 5},
    {"aggregates": AGGS, "groupings": ["country"],
     "filters": [{"type": "<", "column": "fastest", "value": 2**31}]},
])
def test_router_equals_one_server(loaded: Cluster, q: dict[str, Any]) -> None:
    got = both(loaded, q)
    assert got and any(r["rowCount"] for r in got)


def test_null_over_no_rows_through_the_router(loaded: Cluster) -> None:
    got = both(loaded, {"aggregates": AGGS, "filters": [{"column": "country",
                                                         "value": "nowhere"}]})
    assert got == [{"fastest": None, "slowest": None, "lo": None, "hi": None, "visits": 0,
                    "rowCount": 0}]


def test_the_router_takes_the_extremes(loaded: Cluster) -> None:
    rows = [r for i in range(3) for r in make_rows(300, seed=i)]
    got = both(loaded, {"aggregates": AGGS})[0]
    for name, pick in (("fastest", min), ("slowest", max), ("lo", min), ("hi", max)):
        assert got[name] == pick(r[name] for r in rows if r.get(name) is not None)
    r = loaded.router.query({"aggregates": [{"type": "sum", "column": "hi"}]})
    assert r.status_code == 400 and "aggregates[0]: sum of 'hi'" in r.json()["error"]
    r = loaded.router.insert([{"at": T0, "hi": 0}])
    assert r.status_code == 400 and "reserved" in r.json()["error"]


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=queries(SCHEMA, base=T0))
def test_random_queries_router_equals_one_server(loaded: Cluster, data: dict[str, Any]) -> None:
    both(loaded, data)
