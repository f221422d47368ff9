"""The router: one HTTP front for N shard servers, answering exactly as one server would.

Imports config, schema, batch, sharding, query, scan, wire, jsonio, edge, metrics and errors,
plus starlette and aiohttp (the shard client); never the storage engine. Its routes, keys,
limits and error shape are the shared HTTP edge's (edge.py), as for a server. Inserts are validated here (same rules and messages as a
shard), split by the shard function (every roll-up key on one shard) and sent in parallel as
msgpack columns (wire.encode_batch: no second JSON decode or row validation on the shard) with
per-shard batch ids, so a retry never double counts. Queries are validated once, fanned out to
each shard's POST /partial (msgpack partials), merged and finished with the shards' own code.
The router keeps no state: run as many as you like side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import html

import aiohttp
import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse

from . import collect, console, jsonio, openapi, rawformat, sql, wire
from .batch import Batch, check_future
from .config import Config, format_duration
from .edge import (
    Endpoint,
    Role,
    insert_role,
    json_response,
    query_response,
    read_body,
    result_format,
    settle_heap,
    sql_text,
)
from .edge import create_app as create_edge_app
from .errors import ConfigError, GumshoeError, QueryError
from .metrics import CONTENT_TYPE_LATEST, RouterMetrics, request_hook
from .query import Query, parse_query
from .partials import (
    Partial,
    empty_partial,
    finalize,
    merge,
    value_columns,
)
from .schema import Schema, describe
from .sharding import shard_of

log = logging.getLogger(__name__)

INSERT_RETRIES = 3


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """A shard's 200 answer."""

    status: int
    content: bytes

    def json(self) -> Any:
        return jsonio.loads(self.content, "shard reply", strict=False)


class ShardError(GumshoeError):
    """A shard failed a request: unreachable (502), timed out (504) or answered an error (its
    4xx, else 502). `fields` go into the error JSON (the batch id of a failed insert)."""

    def __init__(self, shard: str, status: int, message: str) -> None:
        super().__init__(f"shard {shard}: {message}")
        self.shard = shard
        self.status = status
        self.fields: dict[str, Any] = {}
        self.headers: dict[str, str] = {}


def _unreachable(e: aiohttp.ClientError) -> str:
    """What went wrong connecting, without aiohttp's internals ("ssl:default ...")."""
    if isinstance(e, aiohttp.ClientConnectorError):
        return f"cannot connect ({e.os_error.strerror or e.os_error})"
    if isinstance(e, aiohttp.ServerDisconnectedError):
        return "the shard closed the connection"
    return str(e) or type(e).__name__


class Router:
    def __init__(self, config: Config, shards: list[str], timeout: float = 30.0) -> None:
        if not shards or any(not s for s in shards):
            raise ConfigError("--shards: at least one HOST:PORT is required, and none empty")
        self.config = config
        self.schema = Schema.from_config(config.schema)
        self.shards = shards
        self.timeout = timeout
        self.client: aiohttp.ClientSession | None = None
        self.metrics = RouterMetrics()
        self.stats = {"inserts": 0, "queries": 0}  # for /metricz
        self.auth_headers = ({"authorization": f"Bearer {config.auth.shard_key}"}
                             if config.auth.shard_key else {})

    # -- shard calls ------------------------------------------------------------------------
    async def call(self, shard: str, method: str, path: str, content: bytes | None = None,
                   headers: dict[str, str] | None = None) -> Reply:
        assert self.client is not None
        t0 = time.perf_counter()
        try:
            async with self.client.request(method, f"http://{shard}{path}", data=content,
                                           headers={**self.auth_headers, **(headers or {})}
                                           ) as r:
                reply = Reply(r.status, await r.read())
        except asyncio.TimeoutError:
            self.metrics.shard_errors.labels(shard, "timeout").inc()
            raise ShardError(shard, 504, f"timed out after {self.timeout:g}s") from None
        except aiohttp.ClientError as e:
            self.metrics.shard_errors.labels(shard, "unreachable").inc()
            raise ShardError(shard, 502, f"unreachable: {_unreachable(e)}") from None
        finally:
            self.metrics.shard_calls.labels(shard, path.split("?")[0]).observe(
                time.perf_counter() - t0)
        if reply.status != 200:
            self.metrics.shard_errors.labels(shard, str(reply.status)).inc()
            try:
                message = reply.json()["error"]
            except Exception:
                message = reply.content.decode(errors="replace").strip()[:500]
            status = reply.status if 400 <= reply.status < 500 else 502
            raise ShardError(shard, status, f"HTTP {reply.status}: {message}")
        return reply

    async def fan_out(self, method: str, path: str, **kwargs: Any
                      ) -> list[Reply | ShardError]:
        return list(await asyncio.gather(*(self._safe(s, method, path, **kwargs)
                                           for s in self.shards)))

    async def _safe(self, shard: str, method: str, path: str, **kwargs: Any
                    ) -> Reply | ShardError:
        try:
            return await self.call(shard, method, path, **kwargs)
        except ShardError as e:
            return e

    # -- insert -----------------------------------------------------------------------------
    async def insert(self, request: Request) -> Response:
        """Validate, split by shard and send. The batch id used (the client's X-Batch-Id, or
        a new one) comes back in the X-Batch-Id response header and, on failure, in the error
        JSON as `batch_id`: a retry with it is exactly-once even when some shards applied
        their part (a 502 can leave the batch applied on some shards and not others)."""
        ctype = request.headers.get("content-type")
        body = await read_body(request)
        batch_id = (wire.check_batch_id(request.headers.get("x-batch-id"),
                                        wire.ROUTER_BATCH_ID) or uuid.uuid4().hex)
        batch = await run_in_threadpool(self._parse, body, ctype)
        out = await self.insert_batch(batch, batch_id)
        return json_response(out, headers={"X-Batch-Id": batch_id})

    def _parse(self, body: bytes, content_type: str | None) -> Batch:
        """400 with the shard's own message for a bad body (JSON, CSV/NDJSON rows, or a
        msgpack batch checked as strictly as a shard checks it)."""
        if (content_type or "").startswith(wire.CONTENT_TYPE):
            return wire.decode_batch(self.schema, body)
        if collect.is_row_format(content_type):
            return collect.parse_body(body, content_type, self.schema, int(time.time()))
        return jsonio.parse_insert_body(body, self.schema)

    async def insert_batch(self, batch: Batch, batch_id: str | None = None) -> dict[str, Any]:
        """Split a validated batch by shard and send it (also the collect routes' sink)."""
        check_future(batch, self.schema.timestamp.name, self.config.max_future)
        batch_id = batch_id or uuid.uuid4().hex
        parts = await run_in_threadpool(self._split, batch)
        results = await asyncio.gather(*(self._send(i, rows, batch_id)
                                         for i, rows in parts.items()))
        errors = [r for r in results if isinstance(r, ShardError)]
        if errors:
            # 4xx from a shard first (the client's fault), then the worst failure.
            worst = min(errors, key=lambda e: (e.status >= 500, e.status))
            worst.fields["batch_id"] = batch_id
            worst.headers["X-Batch-Id"] = batch_id
            if worst.status >= 500:
                worst.args = (f"{worst}; some shards may have applied their part: retry with "
                              f"X-Batch-Id: {batch_id} (exactly-once)",)
            raise worst
        out = {"inserted": 0, "rejected": 0}
        replies = [r for r in results if not isinstance(r, ShardError)]
        for r in replies:
            out["inserted"] += r["inserted"]
            out["rejected"] += r["rejected"]
        if replies and all(r.get("duplicate") for r in replies):
            out["duplicate"] = True
        self.metrics.inserts.inc()
        self.stats["inserts"] += 1
        return out

    def _split(self, batch: Batch) -> dict[int, bytes]:
        if batch.n == 0:
            return {}
        shard = shard_of(self.schema, self.schema.shard_start(batch.timestamps),
                         batch.dims, batch.nils, len(self.shards))
        order = np.argsort(shard, kind="stable")
        cuts = np.searchsorted(shard[order], np.arange(len(self.shards) + 1))
        return {i: wire.encode_batch(batch.take(order[cuts[i]:cuts[i + 1]]))
                for i in range(len(self.shards)) if cuts[i + 1] > cuts[i]}

    async def _send(self, i: int, body: bytes, batch_id: str) -> dict[str, Any] | ShardError:
        """PUT one shard's rows, retrying transient failures with the same batch id."""
        headers = {"content-type": wire.CONTENT_TYPE, "x-batch-id": f"{batch_id}#{i}"}
        for attempt in range(INSERT_RETRIES):
            try:
                r = await self.call(self.shards[i], "PUT", "/insert", content=body,
                                    headers=headers)
                return dict(r.json())
            except ShardError as e:
                if e.status < 500 or attempt == INSERT_RETRIES - 1:
                    return e
                await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    # -- query ------------------------------------------------------------------------------
    async def query(self, request: Request) -> Response:
        t0 = time.perf_counter()
        body = await read_body(request)
        fmt = result_format(request)
        obj = jsonio.loads(body, "query")
        if not isinstance(obj, dict):
            raise QueryError(f"query must be a JSON object, got {type(obj).__name__}")
        return await self._answer(parse_query(obj, self.schema), fmt, t0)

    async def sql(self, request: Request) -> Response:
        """POST /sql: the SQL subset, answered exactly like /query (EXPLAIN: the JSON query)."""
        t0 = time.perf_counter()
        text = sql_text(await read_body(request))
        fmt = result_format(request)
        translation = sql.translate(text, self.schema)
        if translation.explain:
            return json_response(translation.query)
        return await self._answer(parse_query(translation.query, self.schema), fmt, t0)

    async def _answer(self, query: Query, fmt: str, t0: float) -> Response:
        canonical = jsonio.dumps(query.to_json(), newline=False)
        responses = await self.fan_out("POST", "/partial", content=canonical,
                                       headers={"content-type": "application/json"})
        failed = [r for r in responses if isinstance(r, ShardError)]
        if failed and not query.allow_partial:
            raise min(failed, key=lambda e: (e.status >= 500, e.status))
        payloads = [r.content for r in responses if not isinstance(r, ShardError)]
        rows, granularity, approximate = await run_in_threadpool(self._finish, query, payloads)
        self.metrics.queries.inc()
        self.stats["queries"] += 1
        extra: dict[str, Any] = {"granularity": granularity} if granularity else {}
        if approximate:
            extra["approximate"] = approximate
        if query.allow_partial:
            extra["missingShards"] = [e.shard for e in failed]
        return await query_response(rows, time.perf_counter() - t0, fmt, extra, query=query)

    def _finish(self, query: Query, payloads: list[bytes]
                ) -> tuple[list[dict[str, Any]], str | None, list[str]]:
        """The result rows, the granularity (the coarsest of the shards', when coarser
        than asked) and the approximate uniques outputs (the shards' sketches merged, never
        their estimates)."""
        partials: list[Partial] = [wire.decode_partial(p) for p in payloads]
        if not partials:
            dtypes = {c: self.schema.column(c).store_dtype  # type: ignore[union-attr]
                      for c in value_columns(query)}
            partials = [empty_partial(query, dtypes, decoded=True)]
        merged = merge(partials, self.config.max_groups)
        g = merged.granularity
        approximate: list[str] = []
        rows = finalize(query, merged, approximate)
        return rows, (format_duration(g) if g else None), approximate

    # -- other routes -----------------------------------------------------------------------
    async def dimension_tables(self, request: Request) -> Response:
        tables: dict[str, set[str]] = {d.name: set() for d in self.schema.string_dimensions}
        for r in await self._all("GET", "/dimension_tables"):
            for name, values in r.json().items():
                tables.setdefault(name, set()).update(values or ())
        return json_response({k: (sorted(v) or None) for k, v in tables.items()})

    async def dimension_table(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.schema.dictionary_column(name)
        union: set[str] = set()
        for r in await self._all("GET", f"/dimension_tables/{name}"):
            union.update(r.json() or ())
        return json_response(sorted(union) or None)

    async def statusz(self, request: Request) -> Response:
        last, oldest = None, None
        for r in await self._all("GET", "/statusz"):
            s = r.json()
            if s.get("LastUpdated") is not None:
                last = max(last or s["LastUpdated"], s["LastUpdated"])
            if s.get("OldestInterval") is not None:
                oldest = min(oldest or s["OldestInterval"], s["OldestInterval"])
        return json_response({"LastUpdated": last, "OldestInterval": oldest})

    async def _all(self, method: str, path: str) -> list[Reply]:
        responses = await self.fan_out(method, path)
        for r in responses:
            if isinstance(r, ShardError):
                raise r
        return responses  # type: ignore[return-value]

    async def health(self) -> list[dict[str, Any]]:
        out = []
        for shard, r in zip(self.shards, await self.fan_out("GET", "/statusz")):
            ok = not isinstance(r, ShardError)
            self.metrics.shard_up.labels(shard).set(1 if ok else 0)
            out.append({"shard": shard, "ok": ok, "error": None if ok else str(r)})
        return out

    async def metricz(self, request: Request) -> Response:
        shards = await self.health()
        if request.query_params.get("format") == "json":
            return json_response({"shards": shards, "stats": self.stats})
        esc = html.escape  # shard error texts come from elsewhere: never raw into the page
        rows = "".join(f"<tr><td>{esc(h['shard'])}</td><td>{'up' if h['ok'] else 'DOWN'}</td>"
                       f"<td>{esc(h['error'] or '')}</td></tr>" for h in shards)
        return HTMLResponse(f"<!doctype html><title>metricz</title><h1>gumshoe router</h1>"
                            f"<table><tr><th>Shard</th><th>State</th><th>Error</th></tr>{rows}"
                            f"</table><pre>{esc(jsonio.dumps(self.stats).decode())}</pre>")

    async def prometheus(self, request: Request) -> Response:
        await self.health()  # shard_up as of this scrape
        body = await run_in_threadpool(self.metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def raw(self, request: Request) -> Response:
        """GET /raw: every shard's archived rows of the range, merged in time order."""
        req = rawformat.parse_request(request.query_params.multi_items(), time.time())
        opened = await asyncio.gather(*(self._open_raw(s, req) for s in self.shards),
                                      return_exceptions=True)
        replies = [r for r in opened if isinstance(r, aiohttp.ClientResponse)]
        failed = [r for r in opened if not isinstance(r, aiohttp.ClientResponse)]
        if failed:
            for r in replies:
                r.close()
            errors = [e for e in failed if isinstance(e, ShardError)]
            if len(errors) < len(failed):
                raise next(e for e in failed if not isinstance(e, ShardError))
            raise min(errors, key=lambda e: (e.status >= 500, e.status))
        cols, count = rawformat.union_columns(
            [(r.headers.get(rawformat.COLUMNS_HEADER), r.headers.get(rawformat.COUNT_HEADER))
             for r in replies], self.schema.timestamp.name)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for data in rawformat.merged([r.content.iter_any() for r in replies],
                                                   cols, count, req.format):
                    yield data
            finally:
                for r in replies:
                    r.close()

        return StreamingResponse(body(), media_type=req.media_type,
                                 headers=rawformat.response_headers(cols, count))

    async def _open_raw(self, shard: str, req: rawformat.RawRequest) -> aiohttp.ClientResponse:
        """A shard's GET /raw, its status checked (the body is read by the caller). No total
        timeout: a long range streams for a while; each read waits at most --timeout."""
        assert self.client is not None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout,
                                        sock_read=self.timeout)
        try:
            r = await self.client.get(f"http://{shard}/raw?{req.query_string()}",
                                      headers=self.auth_headers, timeout=timeout)
        except asyncio.TimeoutError:
            raise ShardError(shard, 504, f"timed out after {self.timeout:g}s") from None
        except aiohttp.ClientError as e:
            raise ShardError(shard, 502, f"unreachable: {_unreachable(e)}") from None
        if r.status != 200:
            content = await r.read()
            r.close()
            try:
                message = jsonio.loads(content, "shard reply", strict=False)["error"]
            except Exception:
                message = content.decode(errors="replace").strip()[:500]
            raise ShardError(shard, r.status if 400 <= r.status < 500 else 502,
                             f"HTTP {r.status}: {message}")
        return r

    async def schema_route(self, request: Request) -> Response:
        return json_response(describe(self.config))

    async def root(self, request: Request) -> Response:
        return PlainTextResponse("shards:\n" + "".join(f"{s}\n" for s in self.shards))

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=64, limit_per_host=16, keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         auto_decompress=False) as client:
            self.client = client
            settle_heap()
            yield
        self.client = None


def create_router_app(config: Config, shards: list[str], timeout: float = 30.0,
                      listen_host: str | None = None) -> Starlette:
    r = Router(config, shards, timeout)

    on_request = request_hook(r.metrics.requests, r.metrics.request_duration)

    endpoints = [
        *collect.endpoints(config, r.schema, collect.FunctionSink(r.insert_batch),
                           r.metrics.registry),  # first: beacons are the most frequent
        Endpoint("/insert", r.insert, ("PUT",), Role.WRITE, role_for=insert_role),
        Endpoint("/query", r.query, ("POST",), Role.READ),
        Endpoint("/sql", r.sql, ("POST",), Role.READ),
        Endpoint("/dimension_tables", r.dimension_tables, ("GET",), Role.READ),
        Endpoint("/dimension_tables/", r.dimension_tables, ("GET",), Role.READ),
        Endpoint("/dimension_tables/{name}", r.dimension_table, ("GET",), Role.READ),
        Endpoint("/statusz", r.statusz, ("GET",), Role.READ),
        Endpoint("/schema", r.schema_route, ("GET",), Role.READ),
        Endpoint("/metricz", r.metricz, ("GET",), Role.ADMIN),
        Endpoint("/metrics", r.prometheus, ("GET",), Role.ADMIN),
        Endpoint("/raw", r.raw, ("GET",), Role.READ),
        Endpoint("/", r.root, ("GET",), Role.OPEN),
        *console.endpoints(),
    ]
    endpoints.append(openapi.endpoint(endpoints, config, "router"))
    app = create_edge_app(endpoints, config, lifespan=r.lifespan,
                          listen_host="0.0.0.0" if listen_host is None else listen_host,
                          on_request=on_request, cors_origins=config.collect.allowed_origins)
    app.state.router = r
    return app
