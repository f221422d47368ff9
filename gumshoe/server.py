"""The HTTP shard server: the original's routes over one DB, on the shared HTTP edge.

Imports db-level objects (the DB is duck-typed and opened by the caller, or in the
background at start-up), block (for /debug/rows), jsonio, wire, metrics, edge, service,
errors and config, plus starlette. Numpy work (decode + insert, debug views) runs in the
thread pool and queries in the query service's threads, so the event loop only moves bytes;
large JSON insert bodies are decoded in worker processes (InsertDecoder); inserts serialise on
the DB's write lock, queries run concurrently. Errors, keys, body limits and the start-up gate
are the edge's (edge.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse

from . import collect, console, jsonio, openapi, rawformat, rawscan, sql, wire
from .batch import check_future
from .block import Block, concat, rollup
from .config import Config, format_duration
from .edge import (
    Endpoint,
    Role,
    json_response,
    insert_role,
    is_binary,
    query_response,
    read_body,
    result_format,
    settle_heap,
    sql_text,
)
from .edge import create_app as create_edge_app
from .errors import (
    ClientError,
    OverloadedError,
    QueryError,
    StorageFailedError,
    TransientStorageError,
)
from .metrics import (
    CONTENT_TYPE_LATEST,
    Metrics,
    metricz_html,
    metricz_json,
    request_hook,
    storage_stats,
)
from .schema import Schema, describe
from .service import QueryService

log = logging.getLogger(__name__)

ROOT_TEXT = "Gumshoe is on the case!"
COMPACT_EVERY = 60.0  # seconds between compactor runs (tiers)
DEBUG_ROWS = 100


def default_insert_workers() -> int:
    """Worker processes decoding large insert bodies: one per core, none on one core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(cores or 1, 4) if (cores or 1) > 1 else 0


class InsertDecoder:
    """JSON decoding and row validation of large insert bodies in worker processes.

    The C scanner (gumshoe._jsonl, rowdecoder.py) reads plain bodies without the GIL, in the
    calling thread: that is the common case, and cheaper than any hand-off (measured with
    synthetic/http_insert.py: 1.4-1.6M rows/s with 2 clients against 1.2M through the pool).
    The bodies it declines go through msgspec and parse_rows, which hold the GIL (orjson builds
    a dict per row; parse_rows walks the columns), so in one process they would use one core
    however many clients insert at once. Such bodies of at least
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
        """Blocking: call from a worker thread. A plain body the C scanner reads (without the
        GIL: insert threads scan in parallel) never goes to the pool."""
        if len(body) >= self.min_bytes and self.workers:
            batch = jsonio.scan_insert_body(body, self.schema)
            if batch is not None:
                return batch
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
        values = block.metrics[m.name][:n]
        missing = m.kind.missing(values)  # a min/max without a value: null
        out[m.name] = values.tolist() if missing is None else [
            None if x else v for v, x in zip(values.tolist(), missing.tolist(), strict=True)]
    for u in schema.uniques:  # a uniques row: its distinct count (estimate when dense)
        est = block.sketches[u.name].slice(0, n).estimate()[0]
        out[u.name] = np.rint(est).astype(np.int64).tolist()
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
        # A flushed run holds each key once; unflushed chunks (a single one too) and runs
        # may repeat keys.
        blocks = iv.blocks
        block = rollup(schema, blocks) if iv.mem or iv.runs > 1 else concat(schema, blocks)
        n = min(block.n, limit - len(out))
        columns = _column_values(snapshot, block, n)
        counts = block.count[:n].tolist()
        for i in range(n):  # at most `limit` rows: a debug view, not a data path
            row = {name: values[i] for name, values in columns.items()}
            row[schema.timestamp.name] = iv.start
            out.append({"RowMap": row, "Count": counts[i]})
    return out or None




# -- the app ------------------------------------------------------------------------------------
class ShardServer:
    """Route handlers over one DB. The DB is given, or opened in the background by `open_db`
    while the edge answers 503 "starting"."""

    def __init__(self, config: Config, db: Any, insert_workers: int,
                 open_db: Callable[[Callable[[str], None]], Any] | None) -> None:
        self.config = config
        self.insert_workers = insert_workers
        self.open_db = open_db
        self.db: Any = None
        self.service: QueryService | None = None
        self.decoder: InsertDecoder | None = None
        self.startup_error: str | None = None
        self.metrics = Metrics(lambda: self.db, lambda: self.service)
        if db is not None:
            self._attach(db)

    def _attach(self, db: Any) -> None:
        self.decoder = InsertDecoder(db.schema, self.config.schema, self.insert_workers)
        self.service = QueryService(db, self.config)
        self.db = db

    @property
    def ready_db(self) -> Any:
        assert self.db is not None, "routes other than GET / run only once the DB is open"
        return self.db

    # -- insert ---------------------------------------------------------------------------
    async def insert(self, request: Request) -> Response:
        binary = is_binary(request)
        body = await read_body(request)
        batch_id = wire.check_batch_id(request.headers.get("x-batch-id"))
        result = await run_in_threadpool(self._insert, body, batch_id, binary,
                                         request.headers.get("content-type"))
        return json_response(result.to_json())

    async def insert_batch(self, batch: Any, batch_id: str | None) -> dict[str, Any]:
        """The collect routes' sink: apply a validated batch (503 while the DB opens)."""
        if self.db is None:
            raise OverloadedError("starting: the database is opening", retry_after=2)
        result = await run_in_threadpool(self._insert, b"", batch_id, False, None, batch)
        return dict(result.to_json())

    def _insert(self, body: bytes, batch_id: str | None, binary: bool = False,
                content_type: str | None = None, batch: Any = None) -> Any:
        """Apply one batch: JSON rows, CSV or NDJSON rows (collect.parse_body), (from a
        router) a validated msgpack batch, or an already validated `batch`."""
        m, db = self.metrics, self.ready_db
        assert self.decoder is not None
        try:
            if batch is None and binary:
                batch = wire.decode_batch(db.schema, body)
            elif batch is None and collect.is_row_format(content_type):
                batch = collect.parse_body(body, content_type, db.schema, int(time.time()))
            elif batch is None:
                batch = self.decoder.parse(body)
            check_future(batch, db.schema.timestamp.name, self.config.max_future)
            result = db.insert_batch(batch, batch_id=batch_id)
        except ClientError:
            m.insert_errors.labels("bad_request").inc()
            raise
        except StorageFailedError:
            m.insert_errors.labels("storage_failed").inc()
            raise
        except TransientStorageError:  # out of file descriptors: 503, retry later
            m.insert_errors.labels("transient").inc()
            raise
        m.insert_batches.inc()
        m.insert_rows.labels("inserted").inc(result.inserted)
        m.insert_rows.labels("rejected").inc(result.rejected)
        return result

    # -- query ----------------------------------------------------------------------------
    async def query(self, request: Request) -> Response:
        t0 = time.perf_counter()
        body = await read_body(request)
        fmt = result_format(request)
        assert self.service is not None
        try:
            query, rows, extra = await self.service.answer_query(self.service.parse_body(body))
        except Exception as e:
            self.metrics.queries.labels(
                "error" if isinstance(e, ClientError) else "failed").inc()
            raise
        elapsed = time.perf_counter() - t0
        self.metrics.queries.labels("ok").inc()
        self.metrics.query_duration.observe(elapsed)
        return await query_response(rows, elapsed, fmt, extra, query=query)

    async def sql(self, request: Request) -> Response:
        """POST /sql: the SQL subset, answered exactly like /query (EXPLAIN: the JSON query)."""
        t0 = time.perf_counter()
        text = sql_text(await read_body(request))
        fmt = result_format(request)
        assert self.service is not None
        translation = sql.translate(text, self.ready_db.schema)
        if translation.explain:
            return json_response(translation.query)
        try:
            query, rows, extra = await self.service.answer(translation.query)
        except Exception as e:
            self.metrics.queries.labels(
                "error" if isinstance(e, ClientError) else "failed").inc()
            raise
        elapsed = time.perf_counter() - t0
        self.metrics.queries.labels("ok").inc()
        self.metrics.query_duration.observe(elapsed)
        return await query_response(rows, elapsed, fmt, extra, query=query)

    async def partial(self, request: Request) -> Response:
        """The router's fan-out endpoint: a query's mergeable partial result, as msgpack."""
        body = await read_body(request)
        assert self.service is not None
        partial = await self.service.partial(self.service.parse_body(body))
        data = await run_in_threadpool(wire.encode_partial, partial)
        return Response(data, media_type=wire.CONTENT_TYPE)

    # -- read-only views (a snapshot takes the DB's write lock briefly: never on the loop) ----
    def _dictionaries(self) -> dict[str, list[str] | None]:
        snap = self.ready_db.snapshot()
        return {name: (d.values[:snap.dict_sizes[name]] or None)
                for name, d in snap.dictionaries.items()}

    async def dimension_tables(self, request: Request) -> Response:
        return json_response(await run_in_threadpool(self._dictionaries))

    async def dimension_table(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.ready_db.schema.dictionary_column(name)
        tables = await run_in_threadpool(self._dictionaries)
        return json_response(tables[name])

    async def statusz(self, request: Request) -> Response:
        db = self.ready_db
        stats = await run_in_threadpool(lambda: storage_stats(db.snapshot()))
        return json_response({"LastUpdated": db.last_updated,
                              "OldestInterval": stats.oldest_interval})

    async def schema(self, request: Request) -> Response:
        return json_response(describe(self.config))

    async def metricz(self, request: Request) -> Response:
        db = self.ready_db
        data = await run_in_threadpool(lambda: metricz_json(self.config, db.snapshot()))
        if request.query_params.get("format") == "json":
            return json_response(data)
        return HTMLResponse(metricz_html(data))

    async def debug_rows(self, request: Request) -> Response:
        db = self.ready_db
        return json_response(await run_in_threadpool(lambda: debug_rows(db.snapshot())))

    async def prometheus(self, request: Request) -> Response:
        body = await run_in_threadpool(self.metrics.exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def root(self, request: Request) -> Response:
        return PlainTextResponse(ROOT_TEXT)

    async def raw(self, request: Request) -> Response:
        """GET /raw: the archived rows of a time range in time order (README "Archive")."""
        req = rawformat.parse_request(request.query_params.multi_items(), time.time())
        archive = self.ready_db.archive
        if archive is None:
            raise rawformat.NoArchive("no raw archive on this server ([archive] enabled is "
                                      "false)")
        scan = await run_in_threadpool(rawscan.scan_archive, archive, req.lo_excl, req.hi_incl)
        schema = self.ready_db.schema
        names = list(scan.columns) or [c.name for c in (*schema.dimensions, *schema.metrics)]
        columns = rawformat.header_columns(scan.ts_name or schema.timestamp.name, names,
                                           scan.counted)
        count = columns[-1] if scan.counted else None
        body = (rawformat.csv(scan.chunks(), columns, count) if req.format == "csv" else
                rawformat.ndjson(scan.chunks(), count or "_count"))
        return StreamingResponse(body, media_type=req.media_type,
                                 headers=rawformat.response_headers(columns, count))

    # -- lifecycle ------------------------------------------------------------------------
    async def _open(self, app: Starlette) -> None:
        """Open the database off the loop while every route but GET / answers 503; on
        failure, stop the server (the command reports `startup_error`, exit status 2)."""
        edge = app.state.edge
        edge.not_ready("opening the database and replaying its write-ahead log")
        assert self.open_db is not None
        try:
            db = await run_in_threadpool(self.open_db, edge.not_ready)
        except Exception as e:  # a locked, damaged or mismatched database
            self.startup_error = str(e)
            log.error("cannot open the database: %s", e)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self._attach(db)
        settle_heap()  # the DB's dictionaries and all: out of the collector's way
        edge.ready = True
        log.info("ready: database %s open", self.config.database_dir)

    async def flush_loop(self) -> None:
        """Flush every flush_interval (after the previous flush ended, as the original), then
        merge the runs that are due (DB.merge_if_due: at most every 30 s)."""
        while True:
            await asyncio.sleep(self.config.flush_interval)
            if self.db is None:
                continue
            t0 = time.perf_counter()
            try:
                await run_in_threadpool(self.db.flush)
            except Exception:
                log.exception("periodic flush failed")
                continue
            self.metrics.flush_duration.observe(time.perf_counter() - t0)
            try:  # the runs the flushes appended (docs/storage.md section 6)
                if hasattr(self.db, "merge_if_due"):
                    await run_in_threadpool(self.db.merge_if_due)
            except Exception:
                log.exception("merging runs failed")

    async def compact_loop(self) -> None:
        """With tiers: the compactor, once the database is open and every COMPACT_EVERY
        seconds after a run ended (a run commits step by step; at shutdown the DB stops it
        after the step under way)."""
        while True:
            db = self.db
            if db is None or getattr(db, "tiers", None) is None:
                await asyncio.sleep(0.5 if db is None else 3600)
                continue
            try:
                await run_in_threadpool(db.compact)
            except Exception:
                log.exception("compaction failed")
            await asyncio.sleep(COMPACT_EVERY)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette, periodic_flush: bool) -> AsyncIterator[None]:
        opening = asyncio.create_task(self._open(app)) if self.db is None else None
        flusher = asyncio.create_task(self.flush_loop()) if periodic_flush else None
        compactor = asyncio.create_task(self.compact_loop()) if periodic_flush else None
        try:
            yield
        finally:
            if self.db is not None and hasattr(self.db, "stop_background"):
                self.db.stop_background()  # a compaction run ends after its current step
            for task in (flusher, compactor):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if opening is not None:
                await opening  # a replay in progress finishes, then the DB closes cleanly
            log.info("shutting down: flushing and closing the database")
            if self.decoder is not None:
                await run_in_threadpool(self.decoder.close)
            if self.service is not None:
                self.service.close()
            if self.db is not None:
                await run_in_threadpool(self.db.close)


def server_endpoints(s: ShardServer) -> list[Endpoint]:
    return [
        Endpoint("/insert", s.insert, ("PUT",), Role.WRITE, role_for=insert_role),
        Endpoint("/query", s.query, ("POST",), Role.READ),
        Endpoint("/sql", s.sql, ("POST",), Role.READ),
        Endpoint("/partial", s.partial, ("POST",), Role.ADMIN),
        Endpoint("/dimension_tables", s.dimension_tables, ("GET",), Role.READ),
        Endpoint("/dimension_tables/", s.dimension_tables, ("GET",), Role.READ),
        Endpoint("/dimension_tables/{name}", s.dimension_table, ("GET",), Role.READ),
        Endpoint("/statusz", s.statusz, ("GET",), Role.READ),
        Endpoint("/schema", s.schema, ("GET",), Role.READ),
        Endpoint("/metricz", s.metricz, ("GET",), Role.ADMIN),
        Endpoint("/metrics", s.prometheus, ("GET",), Role.ADMIN),
        Endpoint("/debug/rows", s.debug_rows, ("GET",), Role.ADMIN),
        Endpoint("/raw", s.raw, ("GET",), Role.READ),
        Endpoint("/", s.root, ("GET",), Role.OPEN),
    ]


def create_app(db: Any, config: Config, *, periodic_flush: bool = True,
               insert_workers: int | None = 0, listen_host: str | None = None,
               open_db: Callable[[Callable[[str], None]], Any] | None = None) -> Starlette:
    """The shard server app over `db` (closed by the app's shutdown), or over the database
    `open_db(progress)` returns, opened in the background once the app starts (it may call
    `progress(message)`: the 503 "starting: <message>" answers say it).

    periodic_flush: flush every `config.flush_interval` (turn off for a DB that runs its own
    flush thread). insert_workers: processes decoding large insert bodies (InsertDecoder);
    None picks one per core (none on one core), 0 decodes in the server process.
    listen_host: the address served (the Host check's default; None accepts any Host)."""
    if db is None and open_db is None:
        raise ValueError("create_app needs a db or an open_db")
    if insert_workers is None:
        insert_workers = default_insert_workers()
    s = ShardServer(config, db, insert_workers, open_db)

    on_request = request_hook(s.metrics.requests, s.metrics.request_duration)

    schema = Schema.from_config(config.schema)
    sink = collect.FunctionSink(s.insert_batch)
    # collect routes first: beacons are the most frequent request (templates cannot shadow
    # the routes after them: collect.templates.RESERVED_SEGMENTS)
    endpoints = (collect.endpoints(config, schema, sink, s.metrics.registry)
                 + server_endpoints(s) + console.endpoints())
    endpoints.append(openapi.endpoint(endpoints, config, "server"))
    app = create_edge_app(endpoints, config,
                          lifespan=collect.with_sources(
                              config, schema, sink, lambda app: s.lifespan(app, periodic_flush)),
                          listen_host="0.0.0.0" if listen_host is None else listen_host,
                          on_request=on_request, cors_origins=config.collect.allowed_origins)
    app.state.server = s
    return app
