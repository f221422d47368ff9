"""The funnel: a front tier that takes events (the collect routes and PUT /insert), validates
them with the schema's own rules and messages, spools them to disk and forwards them in
batches to a router or server, on the shared HTTP edge.

Imports config, schema, batch, jsonio, wire, edge, errors and collect (its routes, sink seam
and spool), plus starlette, aiohttp and prometheus_client; never the storage engine. A 200
means the events are fsync'd in the spool (collect/spool.py); the forwarder sends the spool in
order as msgpack batches (`wire.encode_batch`, as the router sends shards) of up to
`funnel.batch_rows` rows or after `funnel.batch_wait`, each with the batch id
`<funnel id>-<k>`, fixed in the spool before the first try, so every retry, after any failure
or crash, repeats the same rows under the same id and upstream applies them once. While
upstream is down, slow or answering 5xx, events keep being accepted into the spool (503 with
Retry-After once it holds `funnel.spool_size`), and it drains in order when upstream returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from . import collect, jsonio, openapi, wire
from .batch import Batch, check_future
from .collect.routes import reason
from .collect.spool import Cut, Entry, Spool
from .config import Config
from .edge import Endpoint, Role, json_response, read_body, settle_heap
from .edge import create_app as create_edge_app
from .errors import ConfigError, GumshoeError
from .schema import Schema

log = logging.getLogger(__name__)

SPOOL_DIR = "spool"
FIRST_RETRY = 0.05  # seconds; doubles up to funnel.retry_max
DEAD_STATUSES = (400, 422)  # upstream will never take this batch: set it aside


def concat(schema: Schema, batches: list[Batch]) -> Batch:
    """Batches -> one, column by column (numpy concatenation, lists joined)."""
    if len(batches) == 1:
        return batches[0]
    dims: dict[str, Any] = {}
    nils: dict[str, np.ndarray | None] = {}
    for d in schema.dimensions:
        parts = [b.dims[d.name] for b in batches]
        dims[d.name] = (list(itertools.chain.from_iterable(parts)) if d.is_string
                        else np.concatenate(parts))
        masks = [b.nils[d.name] for b in batches]
        nils[d.name] = (None if all(m is None for m in masks) else np.concatenate(
            [np.zeros(b.n, bool) if m is None else m for b, m in zip(batches, masks,
                                                                   strict=True)]))
    counts = [b.counts for b in batches]
    return Batch(sum(b.n for b in batches), np.concatenate([b.timestamps for b in batches]),
                 dims, nils, {m.name: np.concatenate([b.metrics[m.name] for b in batches])
                              for m in schema.metrics},
                 None if all(c is None for c in counts) else np.concatenate(
                     [np.ones(b.n, np.int64) if c is None else c
                      for b, c in zip(batches, counts, strict=True)]),
                 identities={u.name: (np.concatenate([b.identities[u.name][0] for b in batches]),
                                      np.concatenate([b.identities[u.name][1] for b in batches]))
                             for u in schema.uniques})


class FunnelMetrics:
    def __init__(self, spool: Spool) -> None:
        self.registry = r = CollectorRegistry(auto_describe=False)
        self.accepted = Counter("gumshoe_funnel_accepted_rows", "Rows accepted (spooled and "
                                "acknowledged to the client).", registry=r)
        self.rejected = Counter("gumshoe_funnel_rejected", "Requests refused, by reason.",
                                ["reason"], registry=r)
        self.forwarded = Counter("gumshoe_funnel_forwarded_rows", "Rows acknowledged by "
                                 "upstream, by upstream's result (inserted, rejected: outside "
                                 "its retention, duplicate: a repeat it had applied, dead: "
                                 "refused as invalid and set aside).", ["result"], registry=r)
        self.batches = Counter("gumshoe_funnel_forwarded_batches", "Batches acknowledged by "
                               "upstream.", registry=r)
        self.upstream_errors = Counter("gumshoe_funnel_upstream_errors", "Failed sends to "
                                       "upstream, by upstream and kind.", ["upstream", "kind"],
                                       registry=r)
        Gauge("gumshoe_funnel_spooled_bytes", "Bytes of accepted events not yet forwarded.",
              registry=r).set_function(lambda: spool.pending_bytes)
        Gauge("gumshoe_funnel_spooled_rows", "Rows accepted and not yet forwarded.",
              registry=r).set_function(lambda: sum(e.rows for e in spool.pending))
        Gauge("gumshoe_funnel_oldest_spooled_age_seconds", "Age of the oldest event not yet "
              "forwarded (0 when none).", registry=r).set_function(
            lambda: 0 if spool.oldest is None else max(0.0, time.time() - spool.oldest))


@dataclasses.dataclass(frozen=True, slots=True)
class Upstream:
    url: str  # http://host:port

    @classmethod
    def parse(cls, text: str) -> Upstream:
        text = text.strip().rstrip("/")
        if not text:
            raise ConfigError("--upstream: empty address")
        if "://" not in text:
            text = "http://" + text
        if not text.startswith(("http://", "https://")):
            raise ConfigError(f"--upstream {text!r}: expected http://HOST:PORT")
        return cls(text)


class Funnel:
    """The funnel's state: its spool, the forwarder task and the collect sink."""

    def __init__(self, config: Config, upstreams: list[Upstream]) -> None:
        if config.in_memory:
            raise ConfigError("database_dir: a funnel keeps its spool on disk; \"MEMORY\" "
                              "cannot hold it")
        if not upstreams:
            raise ConfigError("--upstream: at least one URL is required")
        self.config = config
        self.fc = config.funnel
        self.schema = Schema.from_config(config.schema)
        self.upstreams = upstreams
        self.spool = Spool(Path(config.database_dir) / SPOOL_DIR, self.fc.spool_size,
                           sync=config.durability == "fsync", id_window=config.batch_id_window)
        self.metrics = FunnelMetrics(self.spool)
        self.auth = ({"authorization": f"Bearer {config.auth.shard_key}"}
                     if config.auth.shard_key else {})
        self._wake = asyncio.Event()
        self._draining = False
        self._current = 0  # index of the upstream tried first
        self.client: aiohttp.ClientSession | None = None

    # -- accepting ------------------------------------------------------------------------
    async def insert(self, batch: Batch, batch_id: str | None) -> dict[str, Any]:
        """The sink: spool a validated batch and answer once it is on disk."""
        check_future(batch, self.schema.timestamp.name, self.config.max_future)
        if batch_id is not None:
            seen = self.spool.seen(batch_id)
            if seen is not None:
                await self.spool.commit(seen)
                return {"inserted": 0, "rejected": 0, "duplicate": True}
        if batch.n == 0:
            return {"inserted": 0, "rejected": 0}
        payload = (wire.encode_batch(batch) if batch.n < 2000 else
                   await run_in_threadpool(wire.encode_batch, batch))
        seq = self.spool.append(payload, batch.n, batch_id)
        await self.spool.commit(seq)
        self.metrics.accepted.inc(batch.n)
        self._wake.set()
        return {"inserted": batch.n, "rejected": 0}

    async def put_insert(self, request: Request) -> Response:
        try:
            body = await read_body(request)
            batch_id = wire.check_batch_id(request.headers.get("x-batch-id"))
            ctype = request.headers.get("content-type")
            if collect.is_row_format(ctype):
                batch = await run_in_threadpool(collect.parse_body, body, ctype, self.schema,
                                                int(time.time()))
            else:
                batch = await run_in_threadpool(jsonio.parse_insert_body, body, self.schema)
            result = await self.insert(batch, batch_id)
        except Exception as e:
            self.metrics.rejected.labels(reason(e)).inc()
            raise
        return json_response(result)

    # -- forwarding -----------------------------------------------------------------------
    def _next_group(self, flush: bool) -> list[Entry] | None:
        """The entries of the next batch to send, or None when it is not time yet."""
        pending = self.spool.pending
        if not pending:
            return None
        planned = self.spool.planned
        if planned is not None:
            return [e for e in pending if e.seq <= planned.last]
        group: list[Entry] = []
        rows = 0
        for e in pending:
            if group and rows + e.rows > self.fc.batch_rows:
                break
            group.append(e)
            rows += e.rows
        if rows >= self.fc.batch_rows or len(group) < len(pending) or flush or (
                time.time() - group[0].time >= self.fc.batch_wait):
            return group
        return None

    async def forward_loop(self) -> None:
        while True:
            group = self._next_group(self._draining)
            if group is None:
                if self._draining and not self.spool.pending:
                    return
                self._wake.clear()
                oldest = self.spool.oldest
                wait = (self.fc.batch_wait if oldest is None
                        else max(0.001, oldest + self.fc.batch_wait - time.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            try:
                cut = self.spool.planned or await self.spool.cut(group[-1].seq)
                await self._send(cut, group)
            except asyncio.CancelledError:
                raise
            except Exception:  # a spool failure: log it, keep the events, try again later
                log.exception("forwarding failed; retrying in %gs", self.fc.retry_max)
                await asyncio.sleep(self.fc.retry_max)

    async def _send(self, cut: Cut, group: list[Entry]) -> None:
        payloads = await run_in_threadpool(self.spool.read, group)
        batch = await run_in_threadpool(
            lambda: concat(self.schema, [wire.decode_batch(self.schema, p) for p in payloads]))
        body = await run_in_threadpool(wire.encode_batch, batch)
        batch_id = f"{cut.funnel}-{cut.k}"
        delay = FIRST_RETRY
        while True:
            upstream = self.upstreams[self._current % len(self.upstreams)]
            status, reply = await self._put(upstream, body, batch_id)
            if status == 200:
                result = jsonio.loads(reply, "upstream reply", strict=False)
                if result.get("duplicate"):
                    self.metrics.forwarded.labels("duplicate").inc(batch.n)
                else:
                    self.metrics.forwarded.labels("inserted").inc(int(result["inserted"]))
                    self.metrics.forwarded.labels("rejected").inc(int(result["rejected"]))
                break
            if status in DEAD_STATUSES:
                self._set_aside(cut, body, reply)
                self.metrics.forwarded.labels("dead").inc(batch.n)
                break
            self._current += 1  # the next upstream, if there are several
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.fc.retry_max)
        self.spool.ack(cut)
        self.metrics.batches.inc()

    async def _put(self, upstream: Upstream, body: bytes, batch_id: str) -> tuple[int, bytes]:
        assert self.client is not None
        headers = {**self.auth, "content-type": wire.CONTENT_TYPE, "x-batch-id": batch_id}
        try:
            async with self.client.put(f"{upstream.url}/insert", data=body,
                                       headers=headers) as r:
                reply = await r.read()
        except TimeoutError:
            self.metrics.upstream_errors.labels(upstream.url, "timeout").inc()
            return 0, b""
        except aiohttp.ClientError as e:
            self.metrics.upstream_errors.labels(upstream.url, "unreachable").inc()
            log.debug("upstream %s unreachable: %s", upstream.url, e)
            return 0, b""
        if r.status != 200:
            self.metrics.upstream_errors.labels(upstream.url, str(r.status)).inc()
            log.warning("upstream %s answered %d to batch %s: %s", upstream.url, r.status,
                        batch_id, reply[:300].decode(errors="replace"))
        return r.status, reply

    def _set_aside(self, cut: Cut, body: bytes, reply: bytes) -> None:
        """A batch upstream refuses as invalid (its schema differs?): kept in a file, never
        retried, so the spool behind it drains."""
        path = self.spool.dir / f"rejected.{cut.funnel}-{cut.k}.msgpack"
        path.write_bytes(body)
        log.error("upstream refused batch %s-%d as invalid (%s); kept in %s", cut.funnel, cut.k,
                  reply[:300].decode(errors="replace"), path)

    # -- routes and lifecycle ---------------------------------------------------------------
    async def statusz(self, request: Request) -> Response:
        oldest = self.spool.oldest
        return json_response({"funnel": self.spool.funnel,
                              "upstreams": [u.url for u in self.upstreams],
                              "spooled_batches": len(self.spool.pending),
                              "spooled_bytes": self.spool.pending_bytes,
                              "oldest_spooled_age": (None if oldest is None
                                                     else round(time.time() - oldest, 3))})

    async def prometheus(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def root(self, request: Request) -> Response:
        return PlainTextResponse(f"gumshoe funnel {self.spool.funnel} -> "
                                 + ", ".join(u.url for u in self.upstreams) + "\n")

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=self.fc.upstream_timeout)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False,
                                         connector=aiohttp.TCPConnector(limit=8)) as client:
            self.client = client
            settle_heap()
            forwarder = asyncio.create_task(self.forward_loop())
            try:
                yield
            finally:
                # SIGTERM: everything acknowledged is spooled already; forward what we can
                # within shutdown_timeout, and leave the rest for the next start.
                self._draining = True
                self._wake.set()
                try:
                    await asyncio.wait_for(asyncio.shield(forwarder), self.fc.shutdown_timeout)
                except (TimeoutError, GumshoeError) as e:
                    log.warning("stopping with %d batches (%d bytes) still spooled%s",
                                len(self.spool.pending), self.spool.pending_bytes,
                                f" ({e})" if str(e) else "")
                forwarder.cancel()
                with contextlib.suppress(asyncio.CancelledError, GumshoeError):
                    await forwarder
                self.client = None
                self.spool.close()


def create_funnel_app(config: Config, upstreams: list[str],
                      listen_host: str | None = None) -> Starlette:
    """The funnel app. Opens (locks and replays) its spool now: a locked or damaged spool is a
    start-up error."""
    f = Funnel(config, [Upstream.parse(u) for u in upstreams])
    f.spool.open(config.funnel.id)
    endpoints = [
        *collect.endpoints(config, f.schema, f, f.metrics.registry),
        Endpoint("/insert", f.put_insert, ("PUT",), Role.WRITE),
        Endpoint("/statusz", f.statusz, ("GET",), Role.READ),
        Endpoint("/metrics", f.prometheus, ("GET",), Role.ADMIN),
        Endpoint("/", f.root, ("GET",), Role.OPEN),
    ]
    endpoints.append(openapi.endpoint(endpoints, config, "funnel"))
    app = create_edge_app(endpoints, config,
                          lifespan=collect.with_sources(config, f.schema, f, f.lifespan),
                          listen_host="0.0.0.0" if listen_host is None else listen_host,
                          cors_origins=config.collect.allowed_origins)
    app.state.funnel = f
    return app
