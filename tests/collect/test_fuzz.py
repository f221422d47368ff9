"""A bounded fuzz of the collect routes of a real server: mutated query strings, paths and
bodies (CSV, NDJSON, gzip, binary junk) get 4xx or 200, never a 5xx, and the valid events
sent in between are all stored."""

from __future__ import annotations

import gzip
import random
import urllib.parse
from pathlib import Path

import httpx
import pytest

from .harness import ServerProcess
from .test_routes import config

NAMES = ["at", "name", "country", "age", "visits", "clicks", "score", "key", "_", "cuntry",
         "", "naïve", "a" * 300, "%00", "name[]", "visits "]
VALUES = ["0", "1", "255", "256", "-1", "1.5", "1e3", "1e400", "nan", "inf", "", " ", "x",
          "2023-11-14", "2023-13-45", "2023-11-14T10:00:00+25:00", "9" * 40, "0x10", "１２",
          "\u0000", "zoë", "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"),
          "a" * 5000, "1_000", "+3", "true", "null"]


def mutate(rnd: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randrange(1, 6)):
        op = rnd.randrange(4)
        pos = rnd.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(pos, len(b) - 1)] = rnd.randrange(256)
        elif op == 1:
            b[pos:pos] = rnd.choice([b",", b"\n", b'"', b"\r", b"{", b"\xff", b"\x00", b"9" * 30])
        elif op == 2:
            del b[pos:pos + rnd.randrange(1, 20)]
        else:
            b[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 30)))
    return bytes(b)


def request(rnd: random.Random, client: httpx.Client) -> httpx.Response:
    kind = rnd.randrange(6)
    params = [(rnd.choice(NAMES), rnd.choice(VALUES)) for _ in range(rnd.randrange(0, 5))]
    query = urllib.parse.urlencode(params)
    if kind == 0:
        return client.get(f"/pixel.gif?{query}")
    if kind == 1:
        body = query.encode() if rnd.random() < 0.7 else mutate(rnd, query.encode())
        return client.post("/pixel.gif", content=body, headers={
            "content-type": rnd.choice(["text/plain", "application/x-www-form-urlencoded",
                                        "image/png", ""])})
    if kind == 2:
        parts = [urllib.parse.quote(rnd.choice(VALUES), safe="") or "x" for _ in range(3)]
        return client.get("/add_event/" + "/".join(parts))
    header = ",".join(rnd.choice(NAMES[:8]) for _ in range(rnd.randrange(1, 5)))
    rows = "".join(",".join(rnd.choice(VALUES[:17]) for _ in header.split(",")) + "\n"
                   for _ in range(rnd.randrange(0, 20)))
    csv = (header + "\n" + rows).encode()
    nd = b"\n".join(b'{"%s": %s}' % (rnd.choice(NAMES).encode(), rnd.choice(
        [b"1", b'"x"', b"null", b"[]", b"{}", b"1e999", b"-5", b'"\\ud800"']))
        for _ in range(rnd.randrange(0, 10)))
    body, ctype = rnd.choice([(csv, "text/csv"), (nd, "application/x-ndjson")])
    if rnd.random() < 0.5:
        body = mutate(rnd, body)
    headers = {"content-type": rnd.choice([ctype, ctype, "application/json", "text/plain"])}
    if rnd.random() < 0.2:
        body = gzip.compress(body) if rnd.random() < 0.7 else mutate(rnd, gzip.compress(body))
        headers["content-encoding"] = "gzip"
    method, path = rnd.choice([("POST", "/track"), ("PUT", "/insert")])
    return client.request(method, path, content=body, headers=headers)


def fuzz(tmp_path: Path, n: int, seed: int) -> None:
    s = ServerProcess(config(tmp_path), tmp_path / "server.log").start()
    rnd = random.Random(seed)
    statuses: dict[int, int] = {}
    valid = 0
    try:
        for i in range(n):
            r = request(rnd, s.client)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, (r.status_code, r.text)
            if r.status_code >= 400:
                assert "error" in r.json()
            if i % 10 == 0:  # a valid event between the fuzzed ones
                assert s.client.get(f"/pixel.gif?name=valid&clicks={i}").status_code == 200
                valid += 1
        got = s.query({"aggregates": [{"column": "clicks"}], "filters": [
            {"column": "name", "type": "=", "value": "valid"}]}).json()["results"][0]
        assert got["rowCount"] == valid
        assert got["clicks"] == sum(range(0, n, 10))
    finally:
        assert s.stop() == 0
    assert statuses.get(200, 0) > n // 20 and sum(v for k, v in statuses.items()
                                                  if 400 <= k < 500) > n // 3, statuses


def test_fuzz_collect_routes(tmp_path: Path) -> None:
    fuzz(tmp_path, 1500, seed=13)


@pytest.mark.slow
def test_fuzz_collect_routes_long(tmp_path: Path) -> None:
    fuzz(tmp_path, 12_000, seed=1913)
