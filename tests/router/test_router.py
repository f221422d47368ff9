"""The router equals one server holding all the rows: inserts sharded by roll-up key,
queries merged from msgpack partials (averages, nils, metric filters, several groupings, and
the #14 additions: having, post-aggregations, offset, calendar zones, zero-fill, matching)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from gumshoe.batch import parse_rows
from gumshoe.config import parse_config
from gumshoe.schema import Schema
from gumshoe.sharding import shard_of

from ..http.harness import SAMPLE_QUERIES, T0, write_config
from ..http.harness import SCHEMA as HARNESS_SCHEMA
from ..http.harness import sample_rows as make_rows
from ..strategies import queries
from .conftest import Cluster, RouterProcess

SCHEMA = Schema.from_config(parse_config(HARNESS_SCHEMA).schema)


@pytest.fixture(scope="module")
def loaded(cluster: Cluster) -> Cluster:
    for i in range(4):
        rows = make_rows(500, seed=i)
        r = cluster.router.insert(rows, headers={"X-Batch-Id": f"load-{i}"})
        assert r.status_code == 200, r.text
        assert r.json() == {"inserted": 500, "rejected": 0}
        assert cluster.lone.insert(rows).status_code == 200
    return cluster


def both(c: Cluster, q: dict[str, Any], **kw: Any) -> tuple[Any, Any]:
    a, b = c.router.query(q, **kw), c.lone.query(q, **kw)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    return a, b


QUERIES = [
    *SAMPLE_QUERIES,
    {"aggregates": [{"type": "average", "column": "score"}], "groupings": ["country"],
     "filters": [{"column": "name", "value": "nobody"}]},
]


@pytest.mark.parametrize("q", QUERIES)
def test_router_equals_one_server(loaded: Cluster, q: dict[str, Any]) -> None:
    a, b = both(loaded, q)
    assert a.json()["results"] == b.json()["results"]


def test_stream_format_through_the_router(loaded: Cluster) -> None:
    q = {"aggregates": [{"column": "clicks"}], "groupings": ["country"]}
    a, b = both(loaded, q, params={"format": "stream"})
    assert a.text.splitlines()[1:] == b.text.splitlines()[1:]
    assert '"num_rows":4' in a.text.splitlines()[0]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=queries(SCHEMA, base=T0))
def test_random_queries_router_equals_one_server(loaded: Cluster, data: dict[str, Any]) -> None:
    a, b = both(loaded, data)
    assert a.json()["results"] == b.json()["results"]


def test_every_rollup_key_lives_on_one_shard(loaded: Cluster) -> None:
    q = {"groupings": [{"column": "at", "name": "t"}, "name", "country", "age"]}
    seen: dict[tuple[Any, ...], int] = {}
    for i, shard in enumerate(loaded.shards):
        rows = shard.query(q).json()["results"]
        assert rows, f"shard {i} received nothing"
        for r in rows:
            key = (r["t"], r["name"], r["country"], r["age"])
            assert seen.setdefault(key, i) == i, f"{key} on shards {seen[key]} and {i}"
    assert len(seen) == len(loaded.lone.query(q).json()["results"])


def test_bad_input_is_refused_before_any_shard_is_written(loaded: Cluster) -> None:
    before = loaded.router.query({}).json()["results"]
    bad = [{"at": T0, "name": "ok"}, {"at": T0, "age": 300}]
    r, lone = loaded.router.insert(bad), loaded.lone.insert(bad)
    assert r.status_code == lone.status_code == 400
    assert r.json() == lone.json() == {"error": "rows[1].age: value 300 is out of range for "
                                                "uint8 [0, 255]"}
    assert loaded.router.query({}).json()["results"] == before
    r = loaded.router.query({"groupings": ["nope"]})
    assert r.status_code == 400 and r.json()["error"].startswith("groupings[0].column")


def test_a_retried_batch_id_is_applied_once(loaded: Cluster) -> None:
    rows = make_rows(50, seed=99)
    q = {"aggregates": [{"column": "clicks"}]}
    before = loaded.router.query(q).json()["results"][0]
    for _ in range(2):
        r = loaded.router.insert(rows, headers={"X-Batch-Id": "retry-me"})
        assert r.status_code == 200, r.text
    assert r.json().get("duplicate") is True
    after = loaded.router.query(q).json()["results"][0]
    assert after["rowCount"] == before["rowCount"] + 50
    assert loaded.lone.insert(rows).status_code == 200  # keep the lone server equal


def test_other_routes(loaded: Cluster) -> None:
    r = loaded.router.client.get("/dimension_tables/country")
    assert r.status_code == 200 and r.json() == ["CA", "MX", "US"]
    tables = loaded.router.client.get("/dimension_tables").json()
    assert set(tables) == {"name", "country"} and "Starbuck" in tables["name"]
    assert loaded.router.client.get("/dimension_tables/age").status_code == 400
    status = loaded.router.client.get("/statusz").json()
    assert status["OldestInterval"] == T0 and status["LastUpdated"] >= T0
    assert loaded.router.client.get("/").text.startswith("shards:\n127.0.0.1:")
    health = loaded.router.client.get("/metricz", params={"format": "json"}).json()
    assert [h["ok"] for h in health["shards"]] == [True, True, True]
    assert "gumshoe_router_shard_up" in loaded.router.client.get("/metrics").text


def test_shard_down_fails_clearly_unless_partial_is_allowed(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    c = Cluster(tmp_path_factory.mktemp("down"), n_shards=2).start()
    try:
        rows = make_rows(100, seed=7)
        assert c.router.insert(rows, headers={"X-Batch-Id": "b1"}).status_code == 200
        down = c.shards[1]
        assert down.stop() == 0
        r = c.router.query({})
        assert r.status_code == 502
        assert f"shard 127.0.0.1:{down.port}: unreachable" in r.json()["error"]
        r = c.router.query({"allowPartial": True})
        assert r.status_code == 200
        assert r.json()["missingShards"] == [f"127.0.0.1:{down.port}"]
        assert 0 < r.json()["results"][0]["rowCount"] < 100
        more = make_rows(100, seed=8)
        r = c.router.insert(more, headers={"X-Batch-Id": "b2"})
        assert r.status_code == 502 and f"127.0.0.1:{down.port}" in r.json()["error"]
        down.start()  # the same port and database directory
        r = c.router.insert(more, headers={"X-Batch-Id": "b2"})  # the client's retry completes
        assert r.status_code == 200, r.text
        assert c.router.query({}).json()["results"] == [{"rowCount": 200}]
    finally:
        c.stop()


def test_a_hung_shard_times_out_with_504(tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("hung")
    with socket.socket() as hung:  # accepts connections (backlog) but never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        addr = f"127.0.0.1:{hung.getsockname()[1]}"
        router = RouterProcess(write_config(tmp, "MEMORY"), tmp / "router.log", [addr],
                               extra=("--timeout", "0.5")).start()
        try:
            r = router.query({})
            assert r.status_code == 504
            assert r.json() == {"error": f"shard {addr}: timed out after 0.5s"}
        finally:
            assert router.stop() == 0
            router.client.close()


def test_batch_ids_too_long_for_the_shards_are_refused(loaded: Cluster) -> None:
    r = loaded.router.insert(make_rows(3, seed=5), headers={"X-Batch-Id": "x" * 241})
    assert r.status_code == 400
    assert r.json() == {"error": "X-Batch-Id: expected at most 240 printable ASCII characters, "
                                 "got 241 characters"}


# -- the #14 query-language additions through the router ----------------------------------------

LANGUAGE_QUERIES = [
    {"aggregates": [{"column": "clicks"}, {"column": "visits"}],
     "groupings": ["country", "age"],
     "postAggregations": [{"name": "ctr", "expression": "clicks / visits"},
                          {"name": "x", "expression": "-(ctr * 100) + rowCount / 2"}],
     "having": {"type": "and", "filters": [{"type": ">", "column": "ctr", "value": 10},
                                           {"type": "!=", "column": "country", "value": "MX"}]},
     "orderBy": [{"column": "x", "descending": True}], "limit": 5, "offset": 2},
    {"aggregates": [{"type": "average", "column": "score", "name": "s"}],
     "groupings": ["name"], "having": {"type": "or", "filters": [
         {"column": "s", "value": None}, {"column": "name", "type": "<", "value": "B"}]}},
    {"groupings": [{"column": "at", "name": "d", "timeTransform": "day",
                    "timeZone": "Europe/Berlin"}, "country"],
     "aggregates": [{"column": "clicks"}]},
    {"groupings": [{"column": "at", "name": "h", "timeTransform": "hour",
                    "timeZone": "Asia/Kathmandu", "fill": True}, "country"],
     "aggregates": [{"column": "visits"}, {"type": "average", "column": "clicks"}],
     "filters": [{"type": ">=", "column": "at", "value": T0 - 5 * 3600},
                 {"type": "<", "column": "at", "value": T0 + 8 * 3600}]},
    {"groupings": [{"column": "at", "fill": True}], "aggregates": [{"column": "clicks"}],
     "filters": [{"type": "prefix", "column": "name", "value": "A"}]},
    {"groupings": [{"column": "at", "name": "w", "timeTransform": "week",
                    "timeZone": "America/St_Johns", "fill": True}],
     "filters": [{"type": "regex", "column": "name", "value": "^(star|helo)",
                  "caseInsensitive": True}]},
    {"groupings": ["name"], "aggregates": [{"column": "clicks"}],
     "filters": [{"type": "not", "filter": {"type": "contains", "column": "name",
                                            "value": "o"}}],
     "orderBy": [{"column": "clicks"}], "offset": 1},
]


@pytest.mark.parametrize("q", LANGUAGE_QUERIES)
def test_language_additions_router_equals_one_server(loaded: Cluster, q: dict[str, Any]
                                                     ) -> None:
    a, b = both(loaded, q)
    assert a.json()["results"] == b.json()["results"]
    assert a.json()["results"], "the query should select something"


def test_a_fill_beyond_max_groups_is_refused_by_the_router(loaded: Cluster) -> None:
    q = {"groupings": [{"column": "at", "timeTransform": "minute", "fill": True}],
         "filters": [{"type": ">=", "column": "at", "value": 0}]}
    a, b = loaded.router.query(q), loaded.lone.query(q)
    assert a.status_code == b.status_code == 400
    assert a.json() == b.json()
    assert "max_groups" in a.json()["error"]


def _shard_of_row(row: dict[str, Any], n: int) -> int:
    batch = parse_rows(SCHEMA, [row])
    return int(shard_of(SCHEMA, SCHEMA.interval_start(batch.timestamps), batch.dims,
                        batch.nils, n)[0])


def test_fill_extent_is_the_union_of_the_shards_extents(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The earliest interval lives on one shard and the latest on another: a fill over the
    data's extent must span both, as one server holding every row does."""
    c = Cluster(tmp_path_factory.mktemp("extent"), n_shards=2).start()
    try:
        early = next(r for r in ({"at": T0 - 48 * 3600, "name": f"e{i}", "clicks": 1}
                                 for i in range(100)) if _shard_of_row(r, 2) == 0)
        late = next(r for r in ({"at": T0 + 48 * 3600, "name": f"l{i}", "clicks": 2}
                                for i in range(100)) if _shard_of_row(r, 2) == 1)
        rows = [early, late, *make_rows(60, seed=3)]
        assert c.router.insert(rows).status_code == 200
        assert c.lone.insert(rows).status_code == 200
        q = {"groupings": [{"column": "at", "name": "h", "timeTransform": "hour",
                            "fill": True}], "aggregates": [{"column": "clicks"}],
             "filters": [{"type": "!=", "column": "name", "value": "nobody"}]}
        a, b = both(c, q)
        assert a.json()["results"] == b.json()["results"]
        hours = [r["h"] for r in a.json()["results"]]
        assert hours == list(range(T0 - 48 * 3600, T0 + 48 * 3600 + 1, 3600))
        alone = c.shards[0].query(q).json()["results"]  # shard 0 lacks the latest interval
        assert alone[0]["h"] == T0 - 48 * 3600 and alone[-1]["h"] < T0 + 48 * 3600
    finally:
        assert c.stop() == [0] * 4
