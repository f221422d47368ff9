"""GET /openapi.json: a valid OpenAPI 3.1 document (openapi-spec-validator, the maintained
validator) on server, router and funnel, describing exactly the routes each app serves (every
path and method, nothing extra), with the API-key security where [auth] asks for a key."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.routing import Route

from gumshoe.config import Config, load_config
from gumshoe.db import DB
from gumshoe.funnel import create_funnel_app
from gumshoe.router import create_router_app
from gumshoe.server import create_app

with warnings.catch_warnings():  # starlette warns when it finds httpx rather than httpx2
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TOML = """
database_dir = "{db}"
retention_days = 0
[schema]
dimension_columns = [["app", "string:uint8"], ["name", "string:uint8"]]
metric_columns = [["value", "uint32"]]
[[collect.routes]]
path = "/add_event/{{app}}/{{name}}/{{value}}"
"""
AUTH = """
[auth]
read_keys = ["read-key-0123456789abcdef"]
admin_keys = ["admin-key-0123456789abcdef"]
collect_keys = ["collect-key-0123456789abcdef"]
"""


def config(tmp_path: Path, auth: bool) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(TOML.format(db=tmp_path / "db") + (AUTH if auth else ""))
    return load_config(path)


def served(app: Starlette) -> set[tuple[str, str]]:
    """(path, method) of every route the app answers (HEAD aside: it follows GET)."""
    out = set()
    for route in app.routes:
        assert isinstance(route, Route)
        out |= {(route.path, m.lower()) for m in route.methods or () if m != "HEAD"}
    return out


def described(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p, m) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}


def document(app: Starlette) -> dict[str, Any]:
    with TestClient(app) as c:
        r = c.get("/openapi.json")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        return dict(r.json())


@pytest.fixture(params=["server", "router", "funnel"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=[False, True], ids=["open", "auth"])
def app(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Iterator[Starlette]:
    cfg = config(tmp_path, request.param)
    if kind == "server":
        db = DB(cfg.replace(database_dir="MEMORY"))
        yield create_app(db, cfg, periodic_flush=False)
    elif kind == "router":
        yield create_router_app(cfg, ["127.0.0.1:1", "127.0.0.1:2"])
    else:
        yield create_funnel_app(cfg, ["http://127.0.0.1:1"])


def test_valid_and_exactly_the_routes_served(app: Starlette, kind: str) -> None:
    doc = document(app) if kind != "funnel" else _funnel_document(app)
    validate(doc)  # raises with the failing part of the document
    assert doc["openapi"] == "3.1.0"
    assert described(doc) == served(app)
    assert ("/openapi.json", "get") in served(app)
    assert ("/add_event/{app}/{name}/{value}", "get") in served(app)  # a [[collect.routes]] path
    if kind != "funnel":
        assert {("/console", "get"), ("/console/{file}", "get")} <= served(app)
    assert "operationId" in doc["paths"]["/openapi.json"]["get"]


def _funnel_document(app: Starlette) -> dict[str, Any]:
    """The funnel's document without running its lifespan (that would forward to upstreams)."""
    for route in app.routes:
        if isinstance(route, Route) and route.path == "/openapi.json":
            with TestClient(Starlette(routes=[route])) as c:
                return dict(c.get("/openapi.json").json())
    raise AssertionError("the funnel serves no /openapi.json")


def test_security_follows_auth(tmp_path: Path) -> None:
    for auth in (False, True):
        cfg = config(tmp_path, auth)
        db = DB(cfg.replace(database_dir="MEMORY"))
        doc = document(create_app(db, cfg, periodic_flush=False))
        query = doc["paths"]["/query"]["post"]
        beacon = doc["paths"]["/pixel.gif"]["get"]
        assert query["security"] == ([{"apiKey": []}] if auth else [])
        assert beacon["security"] == ([{"apiKey": []}, {"collectKey": []}] if auth else [])
        for open_route in ("/", "/console", "/openapi.json"):
            assert doc["paths"][open_route]["get"]["security"] == []
        assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


def test_errors_have_the_one_shape(tmp_path: Path) -> None:
    cfg = config(tmp_path, False)
    doc = document(create_app(DB(cfg.replace(database_dir="MEMORY")), cfg,
                              periodic_flush=False))
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method not in ("options", "parameters"):
                assert op["responses"]["400"] == {"$ref": "#/components/responses/Error"}, path


def test_an_undescribed_route_is_refused() -> None:
    from gumshoe.edge import Endpoint, Role
    from gumshoe.openapi import spec

    async def handler(request: Any) -> Any:
        raise AssertionError

    with pytest.raises(KeyError, match="no description of GET /nowhere"):
        spec([Endpoint("/nowhere", handler, ("GET",), Role.READ)], load_config(), "server")
