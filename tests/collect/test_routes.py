"""The collect routes on a real server process and through a router: beacons (GET and
sendBeacon's POST), URL templates, POST /track and PUT /insert in CSV, NDJSON and gzip, the
tracker script, CORS, collect keys, retention and the error shape."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gumshoe.collect.routes import PIXEL

from ..router.conftest import RouterProcess
from .harness import ServerProcess, write_config

CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
T = 1_700_000_000 - 1_700_000_000 % 3600  # an hour boundary
COLLECT = """
[collect]
allowed_origins = ["https://shop.example"]
[[collect.routes]]
path = "/add_event/{age}/{name}/{clicks}"
set = {country = "webstat"}
[collect.script]
event = "name"
path = "country"
[collect.enrich]
browser = "country"
"""
KEY_ADMIN, KEY_COLLECT = "a" * 24, "c" * 24


def config(tmp: Path, extra: str = "", **keys: object) -> Path:
    path = write_config(tmp, tmp / "db", **keys)
    path.write_text(path.read_text() + COLLECT + extra)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("collect")
    s = ServerProcess(config(tmp), tmp / "server.log").start()
    try:
        yield s
    finally:
        assert s.stop() == 0


def count(server: ServerProcess, **where: object) -> int:
    filters = [{"column": k, "type": "=", "value": v} for k, v in where.items()]
    r = server.query({"filters": filters})
    assert r.status_code == 200, r.text
    return int(r.json()["results"][0]["rowCount"])


def test_pixel(server: ServerProcess) -> None:
    r = server.client.get(f"/pixel.gif?name=px&visits=2&age=30&at={T}&key=ignored&_=123",
                          headers={"user-agent": CHROME})
    assert r.status_code == 200 and r.content == PIXEL
    assert r.headers["content-type"] == "image/gif"
    assert r.headers["cache-control"] == "no-store"
    rows = server.query({"groupings": ["name", "country", "age", "at"],
                         "aggregates": [{"column": "visits"}],
                         "filters": [{"column": "name", "type": "=", "value": "px"}]}).json()
    assert rows["results"] == [{"name": "px", "country": "Chrome", "age": 30, "at": T,
                                "visits": 2, "rowCount": 1}]
    # sendBeacon: POST, the parameters in a text/plain body; no timestamp: the arrival time
    before = int(time.time())
    r = server.client.post("/pixel.gif", content="name=beacon&clicks=5",
                           headers={"content-type": "text/plain;charset=UTF-8"})
    assert r.status_code == 200
    got = server.query({"groupings": ["at"], "filters": [
        {"column": "name", "type": "=", "value": "beacon"}]}).json()["results"]
    assert len(got) == 1 and before - 3600 <= got[0]["at"] <= time.time()


@pytest.mark.parametrize(("url", "message"), [
    ("/pixel.gif?visits=300", "parameter visits: value '300' is out of range for uint8 [0, 255]"),
    ("/pixel.gif?cuntry=US", "parameter cuntry: unknown column"),
    ("/pixel.gif?age=old", "parameter age: 'old' is not a number"),
    ("/pixel.gif?at=yesterday", "parameter at: timestamp 'yesterday' is neither Unix seconds"),
    ("/add_event/300/x/1", "path part age: value '300' is out of range for uint8 [0, 255]"),
])
def test_bad_events_are_400_naming_the_part(server: ServerProcess, url: str,
                                            message: str) -> None:
    r = server.client.get(url)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"].startswith(message)


def test_url_template(server: ServerProcess) -> None:
    r = server.client.get("/add_event/100/btn_click/3")
    assert r.json() == {"inserted": 1, "rejected": 0}
    assert count(server, name="btn_click", country="webstat", age=100) == 1


def test_track_and_insert_formats(server: ServerProcess) -> None:
    csv = b"name,visits,at\ntr,1,\ntr,2,2023-11-14T22:13:20Z\n"
    r = server.client.post("/track", content=csv, headers={"content-type": "text/csv"})
    assert r.json() == {"inserted": 2, "rejected": 0}
    nd = b'{"name": "tr", "clicks": 4}\n{"name": "tr", "at": 1700000000}\n'
    r = server.client.post("/track", content=nd,
                           headers={"content-type": "application/x-ndjson"})
    assert r.json() == {"inserted": 2, "rejected": 0}
    for ctype, body in (("text/csv", b"name\ntr\n"), ("application/x-ndjson", b'{"name":"tr"}'),
                        ("application/json", json.dumps([{"at": T, "name": "tr"}]).encode())):
        r = server.client.put("/insert", content=gzip.compress(body),
                              headers={"content-type": ctype, "content-encoding": "gzip"})
        assert r.json() == {"inserted": 1, "rejected": 0}, (ctype, r.text)
    assert count(server, name="tr") == 7
    r = server.client.post("/track", content=b"name,visits\nok,1\nbad,x\n",
                           headers={"content-type": "text/csv"})
    assert r.status_code == 400
    assert r.json() == {"error": "line 3, column visits: 'x' is not a number"}
    assert count(server, name="ok") == 0  # atomic
    r = server.client.post("/track", content=b"<x/>", headers={"content-type": "text/xml"})
    assert r.status_code == 415 and "text/csv" in r.json()["error"]
    r = server.client.put("/insert", content=b"name\ntr\n",
                          headers={"content-type": "text/csv", "x-batch-id": "csv-1"})
    r = server.client.put("/insert", content=b"name\ntr\n",
                          headers={"content-type": "text/csv", "x-batch-id": "csv-1"})
    assert r.json()["duplicate"] is True


def test_script(server: ServerProcess) -> None:
    r = server.client.get("/script.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert len(gzip.compress(r.content, 9)) <= 2048
    assert b'"f":{"event":"name","path":"country","referrer":"","device":""}' in r.content
    assert b"__GUMSHOE__" not in r.content


def test_cors(server: ServerProcess) -> None:
    ok = {"origin": "https://shop.example", "access-control-request-method": "POST"}
    r = server.client.options("/track", headers=ok)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://shop.example"
    r = server.client.get("/pixel.gif?name=cors", headers={"origin": "https://shop.example"})
    assert r.headers["access-control-allow-origin"] == "https://shop.example"
    r = server.client.options("/track", headers={**ok, "origin": "https://evil.example"})
    assert r.status_code == 403 and "collect.allowed_origins" in r.json()["error"]
    r = server.client.post("/query", json={}, headers={"origin": "https://shop.example"})
    assert "access-control-allow-origin" not in r.headers  # query routes are not cross-origin
    assert server.client.options("/query", headers=ok).status_code == 405


def test_collect_keys_and_retention(tmp_path: Path) -> None:
    auth = f'\n[auth]\nadmin_keys = ["{KEY_ADMIN}"]\ncollect_keys = ["{KEY_COLLECT}"]\n'
    s = ServerProcess(config(tmp_path, auth, retention_days=7), tmp_path / "s.log").start()
    try:
        assert s.client.get("/pixel.gif?name=k").status_code == 401
        assert s.client.get(f"/pixel.gif?name=k&key={KEY_COLLECT}").status_code == 200
        bearer = {"authorization": f"Bearer {KEY_COLLECT}"}
        r = s.client.post("/track", content=b"name\nk\n", headers={
            **bearer, "content-type": "text/csv"})
        assert r.json() == {"inserted": 1, "rejected": 0}
        assert s.client.get("/script.js").status_code == 200  # the script is public
        r = s.client.post("/query", json={}, headers=bearer)
        assert r.status_code == 403  # a collect key allows nothing else
        assert s.client.put("/insert", json=[], headers=bearer).status_code == 403
        # outside retention: the beacon is answered (its row is rejected, as /insert's are)
        r = s.client.get(f"/add_event/1/old/1?key={KEY_COLLECT}&at={T}")
        assert r.json() == {"inserted": 1, "rejected": 0}  # `at` is not a template part
        old = s.client.get(f"/pixel.gif?name=old&at={T}&key={KEY_COLLECT}")
        assert old.status_code == 200
        admin = {"authorization": f"Bearer {KEY_ADMIN}"}
        metrics = s.client.get("/metrics", headers=admin).text
        assert 'gumshoe_collect_events_total{result="rejected",route="/pixel.gif"} 1.0' in metrics
        r = s.query({"filters": [{"column": "name", "type": "=", "value": "k"}]}, headers=admin)
        assert r.json()["results"][0]["rowCount"] == 2
    finally:
        assert s.stop() == 0


def test_through_a_router(tmp_path: Path) -> None:
    shards = []
    for i in range(2):
        d = tmp_path / f"s{i}"
        d.mkdir()
        shards.append(ServerProcess(write_config(d, d / "db"), d / "log").start())
    router = RouterProcess(config(tmp_path, database_dir="MEMORY"), tmp_path / "router.log",
                           [f"127.0.0.1:{s.port}" for s in shards])
    router.start()
    try:
        for i in range(20):
            assert router.client.get(f"/pixel.gif?name=r{i}&at={T}").status_code == 200
        r = router.client.post("/track", content=b"name,at\n" + b"".join(
            b"t%d,%d\n" % (i, T) for i in range(30)), headers={"content-type": "text/csv"})
        assert r.json() == {"inserted": 30, "rejected": 0}
        assert router.client.get("/add_event/3/tpl/1").json()["inserted"] == 1
        per_shard = [s.query({}).json()["results"][0]["rowCount"] for s in shards]
        assert sum(per_shard) == 51 and min(per_shard) > 0
        assert router.query({}).json()["results"][0]["rowCount"] == 51
    finally:
        router.stop()
        for s in shards:
            s.stop()
