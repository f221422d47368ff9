"""The HTTP shard server: a Starlette app over one DB, with the original's routes.

Imports db-level objects (duck-typed DB), block (for /debug/rows), jsonio, wire, metrics, errors
and config, plus starlette and uvicorn. Numpy work (decode + insert, queries, debug views) runs
in the thread pool, so the event loop only moves bytes; large JSON insert bodies are decoded in
worker processes (InsertDecoder); inserts serialise on the DB's write lock, queries run
concurrently. Every error is `{"error": "..."}` with a 4xx status for the client's faults
(ClientError.status), 503 once storage failed, 500 only for the server's own bugs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import jsonio, wire
from .block import Block, concat, rollup
from .config import Config
from .errors import ClientError, QueryError, StorageFailedError
from .metrics import CONTENT_TYPE_LATEST, Metrics, metricz_html, metricz_json, storage_stats

log = logging.getLogger(__name__)

ROOT_TEXT = "Gumshoe is on the case!"
DEBUG_ROWS = 100
STREAM_CHUNK_ROWS = 1000  # the original flushes the stream after rows 0, 1000, 2000, ...
_ENCODE_IN_THREAD_ROWS = 2000  # larger results are JSON-encoded off the event loop


class PayloadTooLarge(ClientError):
    status = 413


def default_insert_workers() -> int:
    """Worker processes decoding large insert bodies: one per core, none on one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(cores or 1, 4) if (cores or 1) > 1 else 0


class InsertDecoder:
    """JSON decoding and row validation of large insert bodies in worker processes.

    Both hold the GIL (orjson builds a dict per row; parse_rows walks the columns), so in one
    process they use one core however many clients insert at once. Bodies of at least
    `min_bytes` are parsed by a pool of `workers` processes (forkserver: no fork of a threaded
    server) and come back as a validated Batch; the server process only applies it. Smaller
    bodies, or every body when `workers` is 0, are parsed in the calling thread; so is the first
    large body, while the pool starts (lazily: a server that never sees one never starts it).
    Errors raised in a worker (JSONBodyError, InsertError) reach the caller unchanged."""

    def __init__(self, schema: Any, schema_config: Any, workers: int,
                 min_bytes: int = 256 * 1024) -> None:
        self.schema = schema
        self.schema_config = schema_config
        self.workers = workers
        self.min_bytes = min_bytes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def parse(self, body: bytes) -> Any:
        """Blocking: call from a worker thread."""
        pool = self._pool
        if len(body) < self.min_bytes or self.workers == 0 or pool is None:
            if pool is None and self.workers > 0 and len(body) >= self.min_bytes:
                self._start()  # this body is parsed here while the workers start
            return jsonio.parse_insert_body(body, self.schema)
        try:
            return pool.submit(jsonio.parse_in_worker, body).result()
        except BrokenProcessPool:
            log.error("an insert worker process died; starting new ones")
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            return jsonio.parse_insert_body(body, self.schema)

    def _start(self) -> None:
        """Start the pool without waiting for it (workers import numpy: ~0.5 s each)."""
        with self._lock:
            if self._pool is not None or self.workers == 0:
                return
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("forkserver"),
                initializer=jsonio.init_insert_worker,
                initargs=(self.schema_config, os.getpid()))
            for _ in range(self.workers):
                self._pool.submit(int)
            log.info("started %d insert decoding processes", self.workers)

    def close(self) -> None:
        with self._lock:
            pool, self._pool, self.workers = self._pool, None, 0
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(jsonio.dumps(obj), status_code=status, media_type="application/json")


def error_response(message: str, status: int) -> Response:
    return json_response({"error": message}, status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (the declared
    Content-Length is checked before reading anything)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ClientError(f"bad Content-Length header: {declared!r}")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of "
                                  f"{limit} bytes (max_body_size)")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes "
                                  "(max_body_size)")
        chunks.append(chunk)
    return b"".join(chunks)


# -- /debug/rows -------------------------------------------------------------------------------
def _column_values(snapshot: Any, block: Block, n: int) -> dict[str, list[Any]]:
    schema = snapshot.schema
    out: dict[str, list[Any]] = {}
    for d in schema.dimensions:
        codes = block.dims[d.name][:n]
        nil = block.nils[d.name]
        if d.is_string:
            strings = snapshot.strings(d.name)
            if nil is not None:
                codes = np.where(nil[:n], 0, codes)
            values = strings[codes.astype(np.intp)].tolist() if len(strings) else [None] * n
        else:
            values = codes.tolist()
        if nil is not None:
            flags = nil[:n].tolist()
            values = [None if is_nil else v for v, is_nil in zip(values, flags, strict=True)]
        out[d.name] = values
    for m in schema.metrics:
        out[m.name] = block.metrics[m.name][:n].tolist()
    return out


def debug_rows(snapshot: Any, limit: int = DEBUG_ROWS) -> list[dict[str, Any]] | None:
    """The first `limit` physical rows, intervals ascending, key order within each, in the
    original's shape: {"RowMap": {column: value, timestamp: interval start}, "Count": n}.
    Unflushed rows are rolled up with their interval first (they are visible to queries)."""
    schema = snapshot.schema
    out: list[dict[str, Any]] = []
    for iv in snapshot.intervals:
        if len(out) >= limit:
            break
        # Flushed segments hold each key once; unflushed chunks may repeat keys (a single
        # chunk too, so IntervalView.fully_rolled_up is not relied on here).
        blocks = iv.blocks
        block = rollup(schema, blocks) if iv.mem else concat(schema, blocks)
        n = min(block.n, limit - len(out))
        columns = _column_values(snapshot, block, n)
        counts = block.count[:n].tolist()
        for i in range(n):  # at most `limit` rows: a debug view, not a data path
            row = {name: values[i] for name, values in columns.items()}
            row[schema.timestamp.name] = iv.start
            out.append({"RowMap": row, "Count": counts[i]})
    return out or None


# -- request log --------------------------------------------------------------------------------
_ROUTE_LABELS = {"/insert", "/query", "/dimension_tables", "/statusz", "/metricz", "/metrics",
                 "/debug/rows", "/"}


class AccessLog:
    """One info line per request (client, method, path, status, time) and a request counter."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"]
            route = path if path in _ROUTE_LABELS else (
                "/dimension_tables" if path.startswith("/dimension_tables/") else "other")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            client = scope.get("client")
            log.info("%s %s %s %d %.1fms", client[0] if client else "-", scope["method"],
                     path + ("?" + scope["query_string"].decode("latin-1")
                             if scope.get("query_string") else ""),
                     status, (time.perf_counter() - t0) * 1000)


# -- the app ------------------------------------------------------------------------------------
class ShardServer:
    """Route handlers over one DB. `create_app` wraps it in a Starlette app."""

    def __init__(self, db: Any, config: Config, insert_workers: int) -> None:
        self.db = db
        self.config = config
        self.metrics = Metrics(db)
        self.decoder = InsertDecoder(db.schema, config.schema, insert_workers)

    # -- insert ---------------------------------------------------------------------------
    async def insert(self, request: Request) -> Response:
        body = await read_body(request, self.config.max_body_size)
        batch_id = wire.check_batch_id(request.headers.get("x-batch-id"))
        binary = request.headers.get("content-type", "").startswith(wire.CONTENT_TYPE)
        result = await run_in_threadpool(self._insert, body, batch_id, binary)
        return json_response(result.to_json())

    def _insert(self, body: bytes, batch_id: str | None, binary: bool = False) -> Any:
        """Apply one batch: JSON rows, or (from a router) a validated msgpack batch."""
        m = self.metrics
        try:
            if binary:
                result = self.db.insert_batch(wire.decode_batch(self.db.schema, body),
                                              batch_id=batch_id)
            else:
                result = self.db.insert_batch(self.decoder.parse(body), batch_id=batch_id)
        except ClientError:
            m.insert_errors.labels("bad_request").inc()
            raise
        except StorageFailedError:
            m.insert_errors.labels("storage_failed").inc()
            raise
        m.insert_batches.inc()
        m.insert_rows.labels("inserted").inc(result.inserted)
        m.insert_rows.labels("rejected").inc(result.rejected)
        return result

    # -- query ----------------------------------------------------------------------------
    async def query(self, request: Request) -> Response:
        t0 = time.perf_counter()
        body = await read_body(request, self.config.max_body_size)
        try:
            obj = jsonio.loads(body, "query")
            if not isinstance(obj, dict):
                raise QueryError(f"query must be a JSON object, got {type(obj).__name__}")
            rows = await run_in_threadpool(self.db.query, obj)
        except ClientError:
            self.metrics.queries.labels("error").inc()
            raise
        elapsed = time.perf_counter() - t0
        self.metrics.queries.labels("ok").inc()
        self.metrics.query_duration.observe(elapsed)
        duration_ms = int(elapsed * 1000)
        if request.query_params.get("format") == "stream":
            return StreamingResponse(
                jsonio.ndjson_chunks(rows, duration_ms, STREAM_CHUNK_ROWS),
                                     media_type="application/x-ndjson")
        payload = {"duration_ms": duration_ms, "results": rows}
        if len(rows) > _ENCODE_IN_THREAD_ROWS:
            return Response(await run_in_threadpool(jsonio.dumps, payload),
                            media_type="application/json")
        return json_response(payload)

    async def partial(self, request: Request) -> Response:
        """The router's fan-out endpoint: a query's mergeable partial result, as msgpack."""
        body = await read_body(request, self.config.max_body_size)
        obj = jsonio.loads(body, "query")
        data = await run_in_threadpool(
            lambda: wire.encode_partial(self.db.query_partial(obj)))
        return Response(data, media_type=wire.CONTENT_TYPE)

    # -- read-only views (a snapshot takes the DB's write lock briefly: never on the loop) ----
    def _dictionaries(self) -> dict[str, list[str] | None]:
        snap = self.db.snapshot()
        return {name: (d.values[:snap.dict_sizes[name]] or None)
                for name, d in snap.dictionaries.items()}

    async def dimension_tables(self, request: Request) -> Response:
        return json_response(await run_in_threadpool(self._dictionaries))

    async def dimension_table(self, request: Request) -> Response:
        name = request.path_params["name"]
        tables = await run_in_threadpool(self._dictionaries)
        if name not in tables:
            raise ClientError(f"No such dimension: {name}")
        return json_response(tables[name])

    async def statusz(self, request: Request) -> Response:
        stats = await run_in_threadpool(lambda: storage_stats(self.db.snapshot()))
        return json_response({"LastUpdated": self.db.last_updated,
                              "OldestInterval": stats.oldest_interval})

    async def metricz(self, request: Request) -> Response:
        data = await run_in_threadpool(lambda: metricz_json(self.config, self.db.snapshot()))
        if request.query_params.get("format") == "json":
            return json_response(data)
        return HTMLResponse(metricz_html(data))

    async def debug_rows(self, request: Request) -> Response:
        return json_response(await run_in_threadpool(lambda: debug_rows(self.db.snapshot())))

    async def prometheus(self, request: Request) -> Response:
        body = await run_in_threadpool(self.metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def root(self, request: Request) -> Response:
        return PlainTextResponse(ROOT_TEXT)

    # -- lifecycle ------------------------------------------------------------------------
    async def flush_loop(self) -> None:
        """Flush every flush_interval (after the previous flush ended, as the original)."""
        while True:
            await asyncio.sleep(self.config.flush_interval)
            t0 = time.perf_counter()
            try:
                await run_in_threadpool(self.db.flush)
            except Exception:
                log.exception("periodic flush failed")
            else:
                self.metrics.flush_duration.observe(time.perf_counter() - t0)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette, periodic_flush: bool) -> AsyncIterator[None]:
        task = asyncio.create_task(self.flush_loop()) if periodic_flush else None
        log.info("serving database %s", self.config.database_dir)
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            log.info("shutting down: flushing and closing the database")
            await run_in_threadpool(self.decoder.close)
            await run_in_threadpool(self.db.close)


# -- error handlers -------------------------------------------------------------------------------
async def _client_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ClientError)
    return error_response(str(exc), exc.status)


async def _storage_failed(request: Request, exc: Exception) -> Response:
    return error_response(f"storage failure, not accepting writes: {exc}", 503)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such route: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(message, exc.status_code)


async def _disconnect(request: Request, exc: Exception) -> Response:
    return error_response("client disconnected", 400)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(f"internal server error: {type(exc).__name__}: {exc}", 500)


Handler = Callable[[Request, Exception], Awaitable[Response]]


def create_app(db: Any, config: Config, *, periodic_flush: bool = True,
               insert_workers: int | None = 0) -> Starlette:
    """The shard server app over `db` (opened by the caller, closed by the app's shutdown).

    periodic_flush: flush every `config.flush_interval` (turn off for a DB that runs its own
    flush thread). insert_workers: processes decoding large insert bodies (InsertDecoder);
    None picks one per core (none on one core), 0 decodes in the server process."""
    if insert_workers is None:
        insert_workers = default_insert_workers()
    s = ShardServer(db, config, insert_workers)
    routes = [
        Route("/insert", s.insert, methods=["PUT"]),
        Route("/query", s.query, methods=["POST"]),
        Route("/partial", s.partial, methods=["POST"]),
        Route("/dimension_tables", s.dimension_tables, methods=["GET"]),
        Route("/dimension_tables/", s.dimension_tables, methods=["GET"]),
        Route("/dimension_tables/{name}", s.dimension_table, methods=["GET"]),
        Route("/statusz", s.statusz, methods=["GET"]),
        Route("/metricz", s.metricz, methods=["GET"]),
        Route("/metrics", s.prometheus, methods=["GET"]),
        Route("/debug/rows", s.debug_rows, methods=["GET"]),
        Route("/", s.root, methods=["GET"]),
    ]
    handlers: dict[Any, Handler] = {
        ClientError: _client_error,
        StorageFailedError: _storage_failed,
        HTTPException: _http_error,
        ClientDisconnect: _disconnect,
        Exception: _internal_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers,
                    lifespan=lambda app: s.lifespan(app, periodic_flush))
    app.add_middleware(AccessLog, metrics=s.metrics)
    app.state.server = s
    return app


def run(app: Starlette, sock: Any) -> bool:
    """Serve `app` with uvicorn on an already-bound socket until SIGINT/SIGTERM (graceful:
    in-flight requests finish, then the app's shutdown closes the DB). Returns whether the
    server started."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=30,
        server_header=False))
    server.run(sockets=[sock])
    return bool(server.started)
