"""The router on the shared edge: the same error shape as a server for 404/405/bad input and a
failed shard, an escaped /metricz, Prometheus metrics that promtool-style parsers accept (help
text, types, per-shard latency), and the batch id it used on every insert answer, so that a
client's retry after a 502 is exactly-once."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..http.harness import T0, ServerProcess, free_port, sample_rows, write_config
from .conftest import RouterProcess

EVIL = "<script>alert(1)</script>"


class _EvilShard(http.server.BaseHTTPRequestHandler):
    """A 'shard' that fails every request with a hostile error text."""

    def _fail(self) -> None:
        body = json.dumps({"error": EVIL}).encode()
        self.send_response(500)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _fail

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def evil_shard() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EvilShard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def pair(tmp_path: Path, evil_shard: str) -> Iterator[tuple[RouterProcess, ServerProcess]]:
    """A router over one real shard and one that fails everything."""
    d = tmp_path / "shard"
    d.mkdir()
    shard = ServerProcess(write_config(d, d / "db"), d / "server.log").start()
    router = RouterProcess(write_config(tmp_path, "MEMORY"), tmp_path / "router.log",
                           [f"127.0.0.1:{shard.port}", evil_shard], extra=("--timeout", "5"))
    router.start()
    try:
        yield router, shard
    finally:
        assert router.stop() == 0
        assert shard.stop() == 0


def test_error_shape_matches_the_server(pair: tuple[RouterProcess, ServerProcess]) -> None:
    router, shard = pair
    for target in (router, shard):
        c = target.client
        r = c.get("/nope")
        assert r.status_code == 404
        assert r.json() == {"error": "no such route: GET /nope"}
        r = c.delete("/query")
        assert r.status_code == 405
        assert r.json() == {"error": "method DELETE not allowed on /query"}
        r = c.post("/query", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"].startswith("query: invalid JSON")
        r = c.post("/query", json={"orderBy": [{"column": []}]})  # was a plain-text 500
        assert r.status_code == 400
        assert r.json()["error"].startswith("orderBy[0].column: an array")


def test_metricz_escapes_shard_errors(pair: tuple[RouterProcess, ServerProcess]) -> None:
    router, _ = pair
    page = router.client.get("/metricz").text
    assert EVIL not in page
    assert "&lt;script&gt;" in page


def test_metrics_are_prometheus_with_help_types_and_shard_latency(
        pair: tuple[RouterProcess, ServerProcess]) -> None:
    router, shard = pair
    router.client.post("/query", json={"allowPartial": True})
    text = router.client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    up = families["gumshoe_router_shard_up"]
    assert up.type == "gauge" and up.documentation
    values = {s.labels["shard"]: s.value for s in up.samples}
    assert values[f"127.0.0.1:{shard.port}"] == 1.0
    assert sorted(values.values()) == [0.0, 1.0]
    calls = families["gumshoe_router_shard_request_duration_seconds"]
    assert calls.type == "histogram"
    assert {s.labels["route"] for s in calls.samples if "route" in s.labels} >= {"/partial"}
    for f in families.values():
        assert f.documentation, f.name


def test_a_failed_insert_names_the_batch_id_and_a_retry_with_it_is_exactly_once(
        tmp_path: Path) -> None:
    """Two shards; one is down while a batch is inserted (502: the batch is applied on the
    other). The answer carries the batch id; once the shard is back, a retry with that id
    applies each row exactly once."""
    dirs = []
    for i in range(2):
        d = tmp_path / f"s{i}"
        d.mkdir()
        dirs.append(d)
    shards = [ServerProcess(write_config(d, d / "db"), d / "server.log") for d in dirs]
    for s in shards:
        s.start()
    router = RouterProcess(write_config(tmp_path, "MEMORY"), tmp_path / "router.log",
                           [f"127.0.0.1:{s.port}" for s in shards], extra=("--timeout", "5"))
    router.start()
    try:
        rows = sample_rows(300, seed=7)
        ok = router.insert(rows)
        assert ok.status_code == 200 and len(ok.headers["x-batch-id"]) >= 16
        assert shards[1].stop() == 0
        r = router.insert(rows)
        assert r.status_code == 502
        body = r.json()
        batch_id = body["batch_id"]
        assert r.headers["x-batch-id"] == batch_id
        assert "retry with X-Batch-Id" in body["error"]
        shards[1] = ServerProcess(shards[1].config, shards[1].log, port=shards[1].port).start()
        r2 = router.insert(rows, headers={"x-batch-id": batch_id})
        assert r2.status_code == 200
        total = router.query({}).json()["results"][0]["rowCount"]
        assert total == 600  # the first batch and the retried one, each once
    finally:
        assert router.stop() == 0
        for s in shards:
            if s.proc is not None and s.proc.poll() is None:
                assert s.stop() == 0


def test_unreachable_shard_message_has_no_client_internals(tmp_path: Path) -> None:
    router = RouterProcess(write_config(tmp_path, "MEMORY"), tmp_path / "router.log",
                           [f"127.0.0.1:{free_port()}"], extra=("--timeout", "5"))
    router.start()
    try:
        r = router.insert([{"at": T0, "visits": 1}])
        assert r.status_code == 502
        error = r.json()["error"]
        assert "unreachable: cannot connect" in error and "ssl:default" not in error
        r = httpx.post(router.url + "/query", json={}, timeout=10)
        assert r.status_code == 502 and "ssl:default" not in r.json()["error"]
    finally:
        assert router.stop() == 0


def test_csv_through_the_router(pair: tuple[RouterProcess, ServerProcess]) -> None:
    router, shard = pair
    assert router.insert(sample_rows(50, seed=3)).status_code in (200, 502)
    q = {"groupings": ["country"], "aggregates": [{"column": "clicks"}], "allowPartial": True}
    r = router.client.post("/query", params={"format": "csv"}, json=q)
    assert r.status_code == 200 and r.text.splitlines()[0] == "country,clicks,rowCount"
