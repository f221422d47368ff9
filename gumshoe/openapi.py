"""GET /openapi.json: an OpenAPI 3.1 description of the routes an app serves (server, router,
funnel), built from the app's own endpoint list and the one table of route descriptions below.

Imports config and edge. `spec(endpoints, config, app)` describes exactly the routes in
`endpoints` (every method; OPTIONS for the cross-origin collect routes): a route without a
description here is an error at start-up, so a new route cannot be left out. Security follows
the endpoint's role and the app's [auth]: READ/WRITE/ADMIN routes need a bearer key when keys
are on; COLLECT routes take a collect key (bearer or `?key=`) when collect_keys is set. Every
error is the one shape, `{"error": "..."}`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import __version__
from .config import Config
from .edge import Endpoint, Role, json_response

JSON = "application/json"
Obj = dict[str, Any]


def _ref(name: str) -> Obj:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: Obj, media: str = JSON) -> Obj:
    return {"required": True, "content": {media: {"schema": schema}}}


def _ok(description: str, schema: Obj | None = None, media: str = JSON) -> Obj:
    out: Obj = {"description": description}
    if schema is not None:
        out["content"] = {media: {"schema": schema}}
    return out


_STRING = {"type": "string"}
_OBJECT = {"type": "object"}
_FORMAT = {"name": "format", "in": "query", "required": False,
           "description": "json (default), stream (NDJSON: a header line, then a row per "
                          "line) or csv; any other value is a 400",
           "schema": {"type": "string", "enum": ["json", "stream", "csv"]}}
_BATCH_ID = {"name": "X-Batch-Id", "in": "header", "required": False,
             "description": "a batch applied within batch_id_window is not applied again",
             "schema": _STRING}
_RESULT_MEDIA = {"application/x-ndjson": {"schema": _STRING},
                 "text/csv": {"schema": _STRING}}
_QUERY_RESULT = {"description": "the result rows (?format=stream: NDJSON; csv: CSV)",
                 "content": {JSON: {"schema": _ref("QueryResult")}, **_RESULT_MEDIA}}

# path -> method -> the operation's summary, request body, parameters and 200 response
ROUTES: dict[str, dict[str, Obj]] = {
    "/insert": {"put": {
        "summary": "Insert a batch of rows (atomic; durable and visible when answered)",
        "parameters": [_BATCH_ID],
        "requestBody": {"required": True, "content": {
            JSON: {"schema": _ref("Rows")}, "text/csv": {"schema": _STRING},
            "application/x-ndjson": {"schema": _STRING},
            "application/msgpack": {"schema": {
                "type": "string", "contentEncoding": "binary",
                "description": "validated columns (router, funnel); needs an admin key"}}}},
        "ok": _ok("inserted", _ref("InsertResult"))}},
    "/query": {"post": {
        "summary": "Run a JSON query", "parameters": [_FORMAT],
        "requestBody": _body(_ref("Query")), "ok": _QUERY_RESULT}},
    "/sql": {"post": {
        "summary": "Run a SQL query over the table `events` (EXPLAIN: the JSON query instead)",
        "parameters": [_FORMAT], "requestBody": _body(_STRING, "text/plain"),
        "ok": {"description": "as POST /query; for EXPLAIN the JSON query", "content": {
            JSON: {"schema": {"oneOf": [_ref("QueryResult"), _ref("Query")]}},
            **_RESULT_MEDIA}}}},
    "/partial": {"post": {
        "summary": "A query's mergeable partial result, for the router",
        "requestBody": _body(_ref("Query")),
        "ok": _ok("the partial as msgpack", {"type": "string", "contentEncoding": "binary"},
                  "application/msgpack")}},
    "/dimension_tables": {"get": {
        "summary": "Every string dimension's strings, in code order",
        "ok": _ok("dimension -> strings (null: none yet)", {
            "type": "object", "additionalProperties": {
                "type": ["array", "null"], "items": {"type": ["string", "null"]}}})}},
    "/dimension_tables/{name}": {"get": {
        "summary": "One string dimension's strings (400 for an unknown or numeric column)",
        "ok": _ok("the strings", {"type": ["array", "null"],
                                  "items": {"type": ["string", "null"]}})}},
    "/statusz": {"get": {
        "summary": "The newest row timestamp and the oldest interval",
        "ok": _ok("status", {"type": "object", "properties": {
            "LastUpdated": {"type": ["integer", "null"]},
            "OldestInterval": {"type": ["integer", "null"]}}})}},
    "/schema": {"get": {"summary": "The columns and storage settings",
                        "ok": _ok("the schema", _ref("Schema"))}},
    "/metricz": {"get": {
        "summary": "Debug statistics (HTML; ?format=json for JSON)",
        "ok": {"description": "statistics", "content": {"text/html": {"schema": _STRING},
                                                        JSON: {"schema": _OBJECT}}}}},
    "/metrics": {"get": {"summary": "Prometheus metrics",
                         "ok": _ok("the text exposition format", _STRING, "text/plain")}},
    "/debug/rows": {"get": {"summary": "The first 100 stored rows",
                            "ok": _ok("rows", {"type": ["array", "null"], "items": _OBJECT})}},
    "/": {"get": {"summary": "Health check", "ok": _ok("a line of text", _STRING,
                                                       "text/plain")}},
    "/console": {"get": {"summary": "The web console (HTML)",
                         "ok": _ok("the page", _STRING, "text/html")}},
    "/console/{file}": {"get": {
        "summary": "The console's script, styles and the vendored uPlot with its licence",
        "ok": {"description": "the file", "content": {
            "text/javascript": {"schema": _STRING}, "text/css": {"schema": _STRING},
            "text/plain": {"schema": _STRING}}}}},
    "/openapi.json": {"get": {"summary": "This description (OpenAPI 3.1)",
                              "ok": _ok("the description", _OBJECT)}},
    "/pixel.gif": {
        "get": {"summary": "One event from query parameters (a beacon)",
                "parameters": [{"name": "params", "in": "query", "required": False,
                                "style": "form", "explode": True,
                                "description": "column=value pairs; `_name` ignored",
                                "schema": {"type": "object",
                                           "additionalProperties": _STRING}}],
                "ok": _ok("a 1x1 GIF", {"type": "string", "contentEncoding": "binary"},
                          "image/gif")},
        "post": {"summary": "One event, the query string as the body (sendBeacon)",
                 "requestBody": {"required": False, "content": {
                     "text/plain": {"schema": _STRING},
                     "application/x-www-form-urlencoded": {"schema": _STRING}}},
                 "ok": _ok("a 1x1 GIF", {"type": "string", "contentEncoding": "binary"},
                           "image/gif")}},
    "/track": {"post": {
        "summary": "Many events as CSV (header row) or NDJSON, atomic",
        "parameters": [_BATCH_ID],
        "requestBody": {"required": True, "content": {"text/csv": {"schema": _STRING},
                                                      "application/x-ndjson": {"schema":
                                                                               _STRING}}},
        "ok": _ok("inserted", _ref("InsertResult"))}},
    "/raw": {"get": {
        "summary": "The archived raw rows of a time range, in time order ([archive]; 404 "
                   "when it is off)",
        "parameters": [
            {"name": "gt", "in": "query", "required": False, "schema": _STRING,
             "description": "rows after this time: ISO 8601 or Unix seconds (default 1970)"},
            {"name": "lte", "in": "query", "required": False, "schema": _STRING,
             "description": "rows at or before this time: ISO 8601 or Unix seconds (default "
                            "now)"},
            {"name": "format", "in": "query", "required": False,
             "description": "ndjson (default) or csv; any other value is a 400",
             "schema": {"type": "string", "enum": ["ndjson", "csv"]}}],
        "ok": {"description": "one row per line (X-Raw-Columns: the columns, a JSON array; "
                              "X-Raw-Count: the column of roll-up counts, if any)",
               "content": _RESULT_MEDIA}}},
    "/script.js": {"get": {"summary": "The tracker script",
                           "ok": _ok("JavaScript", _STRING, "text/javascript")}},
}
# the same answers under another path
ROUTES["/dimension_tables/"] = ROUTES["/dimension_tables"]
TEMPLATE = {"get": {"summary": "One event from a URL template ([[collect.routes]])",
                    "ok": _ok("inserted", _ref("InsertResult"))}}

_FILTER = {"type": "object", "description": "comparison (= != > >= < <= in), string match "
           "(prefix contains regex), or and/or/not", "properties": {
               "type": _STRING, "column": _STRING, "value": {},
               "caseInsensitive": {"type": "boolean"},
               "filters": {"type": "array", "items": {"$ref": "#/components/schemas/Filter"}},
               "filter": {"$ref": "#/components/schemas/Filter"}}}
SCHEMAS: dict[str, Obj] = {
    "Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string", "description": "names the row, column or query part"}}},
    "Rows": {"type": ["array", "null"], "items": {"type": "object"},
             "description": "row objects: the timestamp, dimensions and metrics by name"},
    "InsertResult": {"type": "object", "required": ["inserted", "rejected"], "properties": {
        "inserted": {"type": "integer"}, "rejected": {"type": "integer"},
        "duplicate": {"type": "boolean"}}},
    "Filter": _FILTER,
    "Query": {"type": "object", "description": "keys are matched case-insensitively; an "
              "unknown key is a 400", "properties": {
                  "aggregates": {"type": "array", "items": {"type": "object", "properties": {
                      "type": {"type": "string",
                               "enum": ["sum", "average", "min", "max", "uniques"],
                               "description": "sum/average of a summed metric (the "
                               "default), min of a min:<type> metric, max of a max:<type> "
                               "one, uniques (a distinct count) of a uniques one; any other "
                               "pairing is a 400"},
                      "column": _STRING, "name": _STRING}}},
                  "groupings": {"type": "array", "items": {"oneOf": [_STRING, {
                      "type": "object", "properties": {
                          "column": _STRING, "name": _STRING, "timeTransform": _STRING,
                          "timeZone": _STRING, "fill": {"type": "boolean"}}}]}},
                  "filters": {"type": "array", "items": _ref("Filter")},
                  "postAggregations": {"type": "array", "items": {"type": "object",
                                                                  "properties": {
                      "name": _STRING, "expression": _STRING}}},
                  "having": {"oneOf": [_ref("Filter"),
                                       {"type": "array", "items": _ref("Filter")}]},
                  "orderBy": {"type": "array", "items": {"type": "object", "properties": {
                      "column": _STRING, "descending": {"type": "boolean"}}}},
                  "limit": {"type": "integer", "minimum": 0},
                  "offset": {"type": "integer", "minimum": 0},
                  "allowPartial": {"type": "boolean"}}},
    "QueryResult": {"type": "object", "required": ["duration_ms", "results"], "properties": {
        "duration_ms": {"type": "integer"},
        "results": {"type": "array", "items": {"type": "object"}},
        "missingShards": {"type": "array", "items": _STRING},
        # tiers: the coarsest stored interval the answer used, when coarser than asked
        "granularity": _STRING,
        # uniques outputs whose answer, for some group, is an HLL estimate (not exact)
        "approximate": {"type": "array", "items": _STRING}}},
    "Column": {"type": "object", "properties": {"name": _STRING, "type": _STRING}},
    "Metric": {"type": "object", "properties": {
        "name": _STRING,
        "type": {"type": "string", "description": "uint8 ... float64 (a summed metric), or "
                 "min:<numeric type> / max:<numeric type> (the smallest / largest input "
                 "value through roll-up), or uniques (a distinct count of string or integer "
                 "identities, kept as a mergeable sketch)"},
        "kind": {"type": "string", "enum": ["sum", "min", "max", "uniques"]},
        "aggregates": {"type": "array", "items": _STRING,
                       "description": "the aggregate types this metric answers"}}},
    "Schema": {"type": "object", "properties": {
        "timestamp": _ref("Column"),
        "dimensions": {"type": "array", "items": _ref("Column")},
        "metrics": {"type": "array", "items": _ref("Metric")},
        "aggregateTypes": {"type": "array", "items": _STRING},
        "interval": _STRING,
        "tiers": {"type": "array", "items": {"type": "array", "items": _STRING}}}},
}
_ERRORS = {  # status -> when
    "400": "bad request: the message names the row, column or query part",
    "401": "no valid API key ([auth])", "403": "the key's role may not use this route",
    "404": "no such route or file", "405": "method not allowed",
    "413": "body over max_body_size", "415": "unsupported Content-Type or Content-Encoding",
    "503": "starting, overloaded or storage failing; see Retry-After",
}
_ROUTER_ERRORS = {"502": "a shard failed or is unreachable", "504": "a shard timed out"}
APPS = {"server": "gumshoe server", "router": "gumshoe router", "funnel": "gumshoe funnel"}


def _security(role: Role, config: Config) -> list[Obj]:
    if role == Role.OPEN:
        return []
    if role == Role.COLLECT:
        return [{"apiKey": []}, {"collectKey": []}] if config.auth.collect_keys else []
    return [{"apiKey": []}] if config.auth.enabled else []


def _operation(ep: Endpoint, method: str, config: Config, app: str) -> Obj:
    if method == "options":
        return {"summary": "CORS preflight ([collect] allowed_origins)",
                "responses": {"204": {"description": "allowed"},
                              "403": {"$ref": "#/components/responses/Error"}}}
    routes = ROUTES.get(ep.path) or (TEMPLATE if ep.role == Role.COLLECT else None)
    if routes is None or method not in routes:
        raise KeyError(f"openapi: no description of {method.upper()} {ep.path}")
    info = routes[method]
    role = ep.role  # role_for may ask more of some requests (a msgpack insert: admin)
    op: Obj = {"summary": info["summary"],
               "operationId": _operation_id(method, ep.path),
               "description": f"Role: {role.name.lower()}.",
               "security": _security(role, config),
               "responses": {"200": info["ok"], **{
                   s: {"$ref": "#/components/responses/Error"}
                   for s in (*_ERRORS, *(_ROUTER_ERRORS if app == "router" else ()))}}}
    if "parameters" in info:
        op["parameters"] = info["parameters"]
    if "requestBody" in info:
        op["requestBody"] = info["requestBody"]
    return op


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
    slash = "_slash" if path.endswith("/") and path != "/" else ""
    return f"{method}_{words}{slash}"


def spec(endpoints: Sequence[Endpoint], config: Config, app: str) -> Obj:
    """The OpenAPI 3.1 document for an app (`server`, `router` or `funnel`) serving
    `endpoints`. Raises KeyError for a route this module does not describe."""
    paths: dict[str, Obj] = {}
    for ep in endpoints:
        methods = [m.lower() for m in ep.methods] + (["options"] if ep.cors else [])
        item = paths.setdefault(ep.path, {})
        for m in methods:
            item[m] = _operation(ep, m, config, app)
        placeholders = re.findall(r"{(\w+)}", ep.path)
        if placeholders:  # path parameters belong to the path, for every method
            item["parameters"] = [{"name": p, "in": "path", "required": True, "schema": _STRING}
                                  for p in placeholders]
    return {
        "openapi": "3.1.0",
        "info": {"title": APPS[app], "version": __version__,
                 "description": "Events in, aggregate queries out. Errors are "
                                "`{\"error\": \"...\"}` with a 4xx status (5xx: the server's "
                                "fault). The columns of this instance: GET /schema."},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": {"Error": {"description": "; ".join(
                f"{k}: {v}" for k, v in {**_ERRORS, **_ROUTER_ERRORS}.items()),
                "content": {JSON: {"schema": _ref("Error")}}}},
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer",
                           "description": "a key of [auth]: read_keys, write_keys, admin_keys"},
                "collectKey": {"type": "apiKey", "in": "query", "name": "key",
                               "description": "a collect key ([auth] collect_keys) as ?key=; "
                                              "also accepted as a bearer key"}}},
    }


def endpoint(endpoints: list[Endpoint], config: Config, app: str) -> Endpoint:
    """GET /openapi.json over `endpoints` (the list it is appended to, itself included). The
    document is built now, so a route without a description fails at start-up."""
    doc: Obj = {}

    async def handler(request: Request) -> Response:
        return json_response(doc)

    ep = Endpoint("/openapi.json", handler, ("GET",), Role.OPEN)
    doc.update(spec([*endpoints, ep], config, app))
    return ep
