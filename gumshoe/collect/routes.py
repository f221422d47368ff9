"""The collect routes of an app (server, router, funnel), on the shared HTTP edge:

- `GET|POST /pixel.gif?<column>=<value>&...`: one event -> a 1x1 GIF once it is durable;
- `POST /track`: CSV (header row) or NDJSON rows, atomic -> `{"inserted": n, "rejected": m}`;
- `GET <template>` for each [[collect.routes]] entry: one event -> `{"inserted": 1, ...}`;
- `GET /script.js`: the tracker.

Imports edge, wire, config, schema, errors and the collect modules, plus starlette and
prometheus_client. The routes need the collect role (edge.Role.COLLECT: a collect key only when
[auth] collect_keys is set) and answer cross-origin requests from [collect] allowed_origins;
the script is open. Every refusal is the edge's JSON error naming the part at fault, counted by
reason in /metrics.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from .. import wire
from ..batch import Batch
from ..config import Config
from ..edge import Endpoint, PayloadTooLarge, Role, json_response, read_body
from ..errors import ClientError, GumshoeError, InsertError, OverloadedError
from ..schema import Schema
from .coalesce import Coalescer, FunctionSink, Sink, check_event
from .enrich import Enricher
from .formats import UnsupportedFormat, media_type, parse_body
from .script import tracker
from .sources import sources
from .templates import RouteTemplate

# A 1x1 transparent GIF (43 bytes).
PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c000000000100"
                      "01000002024401003b")
RESERVED = frozenset({"key"})  # query parameters that are not columns (and any "_name")
MAX_BEACON_BODY = 64 * 1024
MAX_FIELDS = 1000
_BEACON_TYPES = ("", "text/plain", "application/x-www-form-urlencoded")


def reason(e: Exception) -> str:
    """A label for /metrics: why a collect request was refused."""
    if isinstance(e, PayloadTooLarge):
        return "too_large"
    if isinstance(e, UnsupportedFormat):
        return "unsupported_format"
    if isinstance(e, InsertError):
        return "unknown_column" if str(e).endswith("unknown column") else "invalid_value"
    if isinstance(e, OverloadedError):
        return "overloaded"
    if isinstance(e, ClientError):
        return "bad_request"
    return "unavailable" if isinstance(e, GumshoeError) else "error"


class Collector:
    """Handlers of the collect routes over one sink."""

    def __init__(self, config: Config, schema: Schema, sink: Sink,
                 registry: CollectorRegistry) -> None:
        c = config.collect
        self.schema = schema
        self.sink = sink
        self.ts = schema.timestamp.name
        self.enricher = Enricher(c.enrich, schema)
        self.templates = [RouteTemplate(r, schema, i) for i, r in enumerate(c.routes)]
        self.script = tracker(c.script, schema) if c.script.enabled else b""
        self.coalescer = Coalescer(schema, sink)
        self.columns = frozenset(c.name for c in schema.columns)
        self._counters: dict[str, tuple[Any, Any]] = {}
        self.events = Counter("gumshoe_collect_events", "Events accepted by the collect "
                              "routes, by route and result (inserted; rejected: outside "
                              "retention).", ["route", "result"], registry=registry)
        self.refused = Counter("gumshoe_collect_refused", "Collect requests refused, by route "
                               "and reason.", ["route", "reason"], registry=registry)

    # -- one-event routes ---------------------------------------------------------------------
    async def _one(self, route: str, event: dict[str, str], request: Request,
                   what: str) -> bool:
        try:
            if not event.keys() <= self.columns:
                check_event(self.schema, event, what)  # names the unknown one
            if self.enricher.active:
                self.enricher.apply(event, request.headers)
            if not event.get(self.ts):
                event[self.ts] = str(int(time.time()))
            inserted = await self.coalescer.add(event, lambda i, c: f"{what} {c}")
        except Exception as e:
            self.refused.labels(route, reason(e)).inc()
            raise
        counters = self._counters.get(route)
        if counters is None:
            counters = self._counters[route] = (self.events.labels(route, "inserted"),
                                                self.events.labels(route, "rejected"))
        counters[0 if inserted else 1].inc()
        return inserted

    async def pixel(self, request: Request) -> Response:
        query = request.scope["query_string"].decode("latin-1")
        try:
            event = dict(urllib.parse.parse_qsl(query, keep_blank_values=True,
                                                max_num_fields=MAX_FIELDS))
        except ValueError:
            self.refused.labels("/pixel.gif", "bad_request").inc()
            raise ClientError(f"more than {MAX_FIELDS} query parameters") from None
        for k in [k for k in event if k in RESERVED or k.startswith("_")]:
            del event[k]
        if request.method == "POST":  # navigator.sendBeacon: the parameters in the body
            try:
                body = await read_body(request, MAX_BEACON_BODY)
                if media_type(request.headers.get("content-type")) not in _BEACON_TYPES:
                    raise UnsupportedFormat("POST /pixel.gif: send the parameters as text/plain"
                                            " or application/x-www-form-urlencoded")
                try:
                    pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                                   max_num_fields=MAX_FIELDS)
                except (UnicodeDecodeError, ValueError) as e:
                    raise ClientError(f"POST /pixel.gif body: not a query string ({e})"
                                      ) from None
            except Exception as e:
                self.refused.labels("/pixel.gif", reason(e)).inc()
                raise
            event.update((k, v) for k, v in pairs if k not in RESERVED and not k.startswith("_"))
        await self._one("/pixel.gif", event, request, "parameter")
        return Response(PIXEL, media_type="image/gif", headers={"Cache-Control": "no-store"})

    def template_handler(self, t: RouteTemplate) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            event = {**t.fixed, **request.path_params}
            inserted = await self._one(t.path, event, request, "path part")
            return json_response({"inserted": int(inserted), "rejected": int(not inserted)})
        return handler

    # -- many rows --------------------------------------------------------------------------
    async def track(self, request: Request) -> Response:
        try:
            body = await read_body(request)
            batch_id = wire.check_batch_id(request.headers.get("x-batch-id"))
            batch = await run_in_threadpool(parse_body, body, request.headers.get(
                "content-type"), self.schema, int(time.time()))
            result = await self.sink.insert(batch, batch_id)
        except Exception as e:
            self.refused.labels("/track", reason(e)).inc()
            raise
        self.events.labels("/track", "inserted").inc(int(result.get("inserted", 0)))
        self.events.labels("/track", "rejected").inc(int(result.get("rejected", 0)))
        return json_response(result)

    async def script_js(self, request: Request) -> Response:
        return Response(self.script, media_type="text/javascript; charset=utf-8",
                        headers={"Cache-Control": "public, max-age=3600"})


def validate(config: Config, schema: Schema) -> None:
    """Check [collect] against the schema (ConfigError naming the key), as building an app's
    collect routes and sources would, without building them."""
    Enricher(config.collect.enrich, schema)
    for i, r in enumerate(config.collect.routes):
        RouteTemplate(r, schema, i)
    if config.collect.script.enabled:
        tracker(config.collect.script, schema)
    sources(config, schema, FunctionSink(_no_insert))


async def _no_insert(batch: Batch, batch_id: str | None) -> dict[str, Any]:
    raise AssertionError("validate() never inserts")


def endpoints(config: Config, schema: Schema, sink: Sink,
              registry: CollectorRegistry | None = None) -> list[Endpoint]:
    """Every collect route of an app whose way in is `sink`; their counters go to `registry`
    (the app's /metrics). Raises ConfigError when [collect] names columns the schema lacks."""
    c = Collector(config, schema, sink, registry or CollectorRegistry(auto_describe=False))
    out = [Endpoint("/pixel.gif", c.pixel, ("GET", "POST"), Role.COLLECT, cors=True, fast=True),
           Endpoint("/track", c.track, ("POST",), Role.COLLECT, cors=True)]
    out += [Endpoint(t.path, c.template_handler(t), ("GET",), Role.COLLECT, cors=True)
            for t in c.templates]
    if config.collect.script.enabled:
        out.append(Endpoint("/script.js", c.script_js, ("GET",), Role.OPEN))
    return out

