"""A bounded fuzzer against real processes: a server (a shard) and a router over two shards get
mutated requests on every route (JSON and msgpack bodies mutated from valid ones, random
bytes, gzip, odd headers and parameters, raw malformed HTTP) and must never answer 5xx. Valid
batches are interleaved, and at the end the database holds exactly the rows of the inserts
that were acknowledged (nothing of a refused batch is applied).

CI runs a short run (FUZZ_REQUESTS); `--runslow` runs the long one (>= 10,000 requests per
target). Seeded: a failure prints the seed and the request that failed."""

from __future__ import annotations

import copy
import gzip
import json
import random
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import msgpack
import pytest

from gumshoe import wire
from gumshoe.batch import parse_rows
from gumshoe.config import parse_config
from gumshoe.schema import Schema

from ..router.conftest import RouterProcess
from .harness import SAMPLE_QUERIES, SCHEMA, ServerProcess, sample_rows, write_config

FUZZ_REQUESTS = 1500  # per target in the default run
LONG_FUZZ_REQUESTS = 10_000
SCHEMA_OBJ = Schema.from_config(parse_config(SCHEMA).schema)
# the same with every metric kind: min/max (reserved extremes, nulls) and uniques (sketches in
# batches, partials and the router's merge)
KINDS_SCHEMA = SCHEMA.replace(
    'metric_columns = [["visits", "uint8"], ["clicks", "uint32"], ["score", "float64"]]',
    'metric_columns = [["visits", "uint8"], ["clicks", "uint32"], ["score", "float64"], '
    '["fastest", "min:uint32"], ["slowest", "max:int64"], ["visitors", "uniques"]]')
assert KINDS_SCHEMA != SCHEMA
KINDS_OBJ = Schema.from_config(parse_config(KINDS_SCHEMA).schema)

ROUTES = [("PUT", "/insert"), ("POST", "/query"), ("POST", "/partial"),
          ("GET", "/dimension_tables"), ("GET", "/dimension_tables/name"),
          ("GET", "/dimension_tables/age"), ("GET", "/statusz"), ("GET", "/metricz"),
          ("GET", "/metrics"), ("GET", "/debug/rows"), ("GET", "/schema"), ("GET", "/")]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
WEIRD_VALUES: list[Any] = [None, True, False, 0, -1, 1.5, -0.0, 2**63, -(2**63) - 1, 2**64,
                           10**30, 1e308, "", "x", "at", "name", "🙂", "\u0000", "a" * 3000,
                           [], {}, [None], {"": None}, [[[]]], {"type": "and"}]
FILTER_TYPES = ["=", "!=", ">", ">=", "<", "<=", "in", "and", "or", "not", "like", "", None, 5]


def mutate(obj: Any, rnd: random.Random, depth: int = 0) -> Any:
    """A random structural mutation of a JSON value."""
    if depth > 6 or rnd.random() < 0.15:
        return copy.deepcopy(rnd.choice(WEIRD_VALUES + [obj]))
    if isinstance(obj, dict) and obj:
        out = dict(obj)
        key = rnd.choice(list(out))
        op = rnd.random()
        if op < 0.25:
            del out[key]
        elif op < 0.4:
            out[rnd.choice([key.upper(), key + "x", "", "type", "column", "value"])] = \
                mutate(out[key], rnd, depth + 1)
        else:
            out[key] = mutate(out[key], rnd, depth + 1)
        return out
    if isinstance(obj, list) and obj:
        out = list(obj)
        i = rnd.randrange(len(out))
        op = rnd.random()
        if op < 0.2:
            del out[i]
        elif op < 0.35:
            out.insert(i, mutate(out[i], rnd, depth + 1))
        else:
            out[i] = mutate(out[i], rnd, depth + 1)
        return out
    if isinstance(obj, str):
        return rnd.choice([obj.upper(), obj + "_", obj[:1], "", rnd.choice(FILTER_TYPES) or ""])
    if isinstance(obj, bool):
        return not obj
    if isinstance(obj, (int, float)):
        return rnd.choice([obj + 1, -obj, obj * 10**12, float(obj) + 0.5, str(obj)])
    return copy.deepcopy(rnd.choice(WEIRD_VALUES))


def kinds_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """sample_rows with min/max values and visitor identities (strings, integers, none)."""
    rnd = random.Random(seed + 1)
    rows = sample_rows(n, seed)
    for r in rows:
        if rnd.random() < 0.8:
            r["fastest"] = rnd.randrange(0, 5000)
        if rnd.random() < 0.8:
            r["slowest"] = rnd.randrange(-10**12, 10**12)
        if rnd.random() < 0.9:
            r["visitors"] = rnd.choice([rnd.randrange(0, 300), f"v{rnd.randrange(300)}", None])
    return rows


KINDS_QUERIES: list[dict[str, Any]] = [
    {"aggregates": [{"type": "uniques", "column": "visitors", "name": "u"},
                    {"type": "min", "column": "fastest"}, {"type": "max", "column": "slowest"}],
     "groupings": ["country"], "having": {"column": "u", "type": ">", "value": 1},
     "orderBy": [{"column": "u", "descending": True}]},
    {"aggregates": [{"type": "uniques", "column": "visitors", "name": "u"}],
     "groupings": [{"column": "at", "timeTransform": "hour", "fill": True}],
     "postAggregations": [{"name": "per", "expression": "u / rowCount"}]},
]


def seed_queries() -> list[dict[str, Any]]:
    return SAMPLE_QUERIES + [
        {"filters": [{"type": "or", "filters": [{"column": "name", "value": "Helo"},
                                                 {"type": "not", "filter": {
                                                     "column": "age", "type": "<",
                                                     "value": 20}}]}],
         "groupings": [{"column": "at", "timeTransform": "day"}], "limit": 3, "timeout": 5000},
        {"filters": [{"column": "country", "type": "in", "value": ["US", None]}],
         "orderBy": [{"column": "rowCount", "descending": True}]},
    ]


class Fuzzer:
    def __init__(self, seed: int, kinds: bool = False) -> None:
        self.rnd = random.Random(seed)
        self.schema = KINDS_OBJ if kinds else SCHEMA_OBJ
        self.valid_rows = kinds_rows(400, seed) if kinds else sample_rows(400, seed)
        self.queries = seed_queries() + (KINDS_QUERIES if kinds else [])

    def body(self, path: str) -> tuple[bytes, dict[str, str]]:
        rnd = self.rnd
        headers: dict[str, str] = {}
        kind = rnd.random()
        if path == "/insert" and kind < 0.2:  # a mutated binary batch
            batch = parse_rows(self.schema, rnd.sample(self.valid_rows, 5))
            obj = msgpack.unpackb(wire.encode_batch(batch), raw=False)
            raw = msgpack.packb(obj, use_bin_type=True)
            for _ in range(5):  # (msgpack cannot carry integers beyond 64 bits: try again)
                try:
                    raw = msgpack.packb(mutate(obj, rnd), use_bin_type=True)
                    break
                except (OverflowError, TypeError, ValueError):
                    continue
            if rnd.random() < 0.3:
                b = bytearray(raw)
                for _ in range(rnd.randint(1, 4)):
                    b[rnd.randrange(len(b))] = rnd.randrange(256)
                raw = bytes(b)
            headers["content-type"] = wire.CONTENT_TYPE
            return raw, headers
        if kind < 0.55:
            base: Any = (rnd.sample(self.valid_rows, rnd.randint(0, 4)) if path == "/insert"
                         else rnd.choice(self.queries))
            for _ in range(rnd.randint(1, 3)):
                base = mutate(base, rnd)
            body = json.dumps(base, allow_nan=True).encode(errors="surrogatepass")
        elif kind < 0.65:
            body = bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 200)))
        elif kind < 0.72:
            n = rnd.choice([10, 300, 5000, 100_000])
            body = (rnd.choice([b"[", b"{\"a\":"]) * n)
        elif kind < 0.8:
            text = json.dumps(rnd.choice(self.queries))
            body = text[:rnd.randint(0, len(text))].encode()
        else:
            body = json.dumps(rnd.choice(WEIRD_VALUES)).encode()
        if rnd.random() < 0.08:
            body = gzip.compress(body) if rnd.random() < 0.7 else b"\x1f\x8b" + body
            headers["content-encoding"] = "gzip"
        if rnd.random() < 0.1:
            headers["content-type"] = rnd.choice(["text/csv", "application/x-ndjson",
                                                  "application/msgpack", "x/y", ""])
        return body, headers

    def request(self) -> tuple[str, str, bytes, dict[str, str], dict[str, str]]:
        rnd = self.rnd
        method, path = rnd.choice(ROUTES)
        if rnd.random() < 0.08:
            method = rnd.choice(METHODS)
        if rnd.random() < 0.05:
            path = rnd.choice(["/nope", "/insertXYZ", "/dimension_tables/" + "%00",
                               "/dimension_tables/🙂", "//", "/query/", "/debug"])
        body, headers = self.body(path)
        params: dict[str, str] = {}
        if rnd.random() < 0.1:
            params["format"] = rnd.choice(["json", "stream", "csv", "xml", "", "STREAM"])
        if rnd.random() < 0.05:
            headers["x-batch-id"] = rnd.choice(["", "a" * 300, "id-" + str(rnd.random()),
                                                "bad id ~"])
        return method, path, body, headers, params


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    procs: dict[str, ServerProcess] = {}
    for name in ("server", "shard0", "shard1", "kinds-server", "kshard0", "kshard1"):
        d = tmp / name
        d.mkdir()
        schema = KINDS_SCHEMA if name.startswith("k") else SCHEMA
        procs[name] = ServerProcess(write_config(d, d / "db", schema=schema,
                                                 request_timeout="5s"),
                                    d / "server.log").start()
    for router, shards, schema in (("router", ("shard0", "shard1"), SCHEMA),
                                   ("kinds-router", ("kshard0", "kshard1"), KINDS_SCHEMA)):
        d = tmp / router
        d.mkdir()
        procs[router] = RouterProcess(
            write_config(d, "MEMORY", schema=schema), d / "router.log",
            [f"127.0.0.1:{procs[s].port}" for s in shards], extra=("--timeout", "10")).start()
    try:
        yield procs
    finally:
        for p in procs.values():
            assert p.stop() == 0, p.log_text()[-3000:]


def logical_rows(body: bytes, headers: dict[str, str]) -> int:
    """Input rows an acknowledged insert body adds (a binary batch may carry counts)."""
    if headers.get("content-type") == wire.CONTENT_TYPE:
        obj = msgpack.unpackb(body, raw=False)  # (a server only takes a valid batch)
        if obj.get("counts") is not None:
            return int(wire._dec(obj["counts"]).sum())
        return int(obj["n"])
    return -1  # JSON: the answer's "inserted" says it


def fuzz(target: ServerProcess, n: int, seed: int, kinds: bool = False) -> None:
    f = Fuzzer(seed, kinds)
    expected = 0
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=target.url, timeout=20) as c:
        start = c.post("/query", json={}).json()["results"][0]["rowCount"]
        for i in range(n):
            if i % 50 == 0:  # a valid batch, interleaved
                rows = f.rnd.sample(f.valid_rows, 20)
                r = c.put("/insert", json=rows)
                assert r.status_code == 200, r.text
                expected += 20
            method, path, body, headers, params = f.request()
            try:
                r = c.request(method, path, content=body, headers=headers, params=params)
            except httpx.TransportError as e:  # the server may close a connection; never 5xx
                statuses[-1] = statuses.get(-1, 0) + 1
                assert isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError)), e
                continue
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert r.status_code < 500, (f"seed {seed} request {i}: {method} {path} {params} "
                                         f"{headers} {body[:300]!r} -> {r.status_code} "
                                         f"{r.text[:500]}")
            if r.status_code >= 400 and method != "HEAD":
                assert isinstance(r.json().get("error"), str), r.text[:300]
            if method == "PUT" and path == "/insert" and r.status_code == 200:
                if r.json().get("duplicate"):  # a batch id seen before: applied once, then
                    continue                      # (the fuzzer reuses its few odd ids)
                n_rows = logical_rows(body, headers)
                expected += r.json()["inserted"] if n_rows < 0 else n_rows
        total = c.post("/query", json={}).json()["results"][0]["rowCount"]
    print(f"fuzz {target.url} seed {seed}: {n} requests, statuses {sorted(statuses.items())}")
    assert total - start == expected, (total, start, expected)


def raw_garbage(target: ServerProcess, n: int, seed: int) -> None:
    """Malformed HTTP on raw sockets: answered with a 4xx or closed, never a 5xx."""
    rnd = random.Random(seed)
    lines = [b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", b"\x00\x01\x02\r\n\r\n",
             b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
             b"PUT /insert HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
             b"PUT /insert HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n[]",
             b"POST /query HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
             b"GET / HTTP/9.9\r\n\r\n", b"\r\n\r\n\r\n"]
    for _ in range(n):
        data = rnd.choice(lines)
        if rnd.random() < 0.5:
            data = bytes(b if rnd.random() > 0.05 else rnd.randrange(256) for b in data)
        with socket.create_connection(("127.0.0.1", target.port), timeout=10) as s:
            s.settimeout(10)
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                answer = s.recv(100)
            except OSError:
                continue
        if answer.startswith(b"HTTP/1.1 "):
            assert not answer[9:10] == b"5", (data[:200], answer)


def fuzz_count(request: pytest.FixtureRequest) -> int:
    return LONG_FUZZ_REQUESTS if request.config.getoption("--runslow") else FUZZ_REQUESTS


@pytest.mark.parametrize("name", ["server", "router", "kinds-server", "kinds-router"])
def test_fuzz_never_5xx_and_acknowledged_rows_are_exact(targets: dict[str, ServerProcess],
                                                         name: str,
                                                         request: pytest.FixtureRequest) -> None:
    seed = {"server": 17, "router": 29, "kinds-server": 41, "kinds-router": 43}[name]
    fuzz(targets[name], fuzz_count(request), seed, kinds=name.startswith("kinds"))


@pytest.mark.parametrize("name", ["server", "router"])
def test_raw_malformed_http_never_5xx(targets: dict[str, ServerProcess], name: str) -> None:
    raw_garbage(targets[name], 200, seed=5)


def test_the_targets_logged_no_internal_error(targets: dict[str, ServerProcess]) -> None:
    for name, p in targets.items():
        text = p.log_text()
        assert "internal error" not in text and "Traceback" not in text, (name, text[-3000:])


def test_fuzzer_mutations_are_varied() -> None:
    f = Fuzzer(1)
    seen = {f.request()[1] for _ in range(300)}
    assert len(seen) >= 8
    bodies = {f.body("/query")[0] for _ in range(100)}
    assert len(bodies) > 50

