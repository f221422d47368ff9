"""API keys and the Host check against real processes: every route of the server and the router
needs the role the README names (401 without a valid key, 403 with a key of another role), the
router reaches its shards with its shard key, keys never reach the log, and a Host outside
allowed_hosts is refused (DNS rebinding)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest

from gumshoe import wire
from gumshoe.batch import parse_rows
from gumshoe.config import parse_config
from gumshoe.schema import Schema

from ..router.conftest import RouterProcess
from .harness import SCHEMA, T0, ServerProcess, write_config

READ, WRITE, ADMIN = "read-key-0123456789", "write-key-0123456789", "admin-key-0123456789"
ROUTER_ADMIN = "router-admin-key-0123456789"
AUTH = f"""
[auth]
read_keys = ["{READ}"]
write_keys = ["{WRITE}"]
admin_keys = ["{ADMIN}"]
shard_key = "{ADMIN}"
"""
ROW = [{"at": T0, "name": "Starbuck", "visits": 1}]
BINARY = wire.encode_batch(parse_rows(Schema.from_config(parse_config(SCHEMA).schema), ROW))

# (method, path, body or None, the role it needs: open/read/write/admin)
SERVER_ROUTES = [
    ("GET", "/", None, "open"),
    ("POST", "/query", {}, "read"),
    ("GET", "/dimension_tables", None, "read"),
    ("GET", "/dimension_tables/name", None, "read"),
    ("GET", "/statusz", None, "read"),
    ("GET", "/schema", None, "read"),
    ("PUT", "/insert", ROW, "write"),
    ("PUT", "/insert#binary", BINARY, "admin"),
    ("POST", "/partial", {}, "admin"),
    ("GET", "/debug/rows", None, "admin"),
    ("GET", "/metricz", None, "admin"),
    ("GET", "/metrics", None, "admin"),
]
ROUTER_ROUTES = [r for r in SERVER_ROUTES if r[1] not in ("/partial", "/debug/rows",
                                                           "/insert#binary")]
ALLOWED = {"open": {None, "not-a-key-0123456789", READ, WRITE, ADMIN, ROUTER_ADMIN},
           "read": {READ, ADMIN}, "write": {WRITE, ADMIN},
           "admin": {ADMIN}}


def call(url: str, method: str, path: str, body: object, key: str | None,
         host: str | None = None) -> httpx.Response:
    headers = {}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    if host is not None:
        headers["host"] = host
    content = None
    if path.endswith("#binary"):
        path, content = path[:-len("#binary")], body
        headers["content-type"] = wire.CONTENT_TYPE
    elif body is not None:
        content = httpx.Request("POST", "http://x", json=body).content
    return httpx.request(method, url + path, content=content, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess,
                                                                       RouterProcess]]:
    tmp = tmp_path_factory.mktemp("auth")
    shard = ServerProcess(write_config(tmp, tmp / "db", tables=AUTH), tmp / "server.log",
                          key=ADMIN).start()
    rdir = tmp / "router"
    rdir.mkdir()
    router_auth = AUTH.replace(f'admin_keys = ["{ADMIN}"]', f'admin_keys = ["{ROUTER_ADMIN}"]')
    router = RouterProcess(write_config(rdir, "MEMORY", tables=router_auth),
                           rdir / "router.log", [f"127.0.0.1:{shard.port}"])
    router.client.headers["authorization"] = f"Bearer {ROUTER_ADMIN}"
    router.start()
    try:
        yield shard, router
    finally:
        assert router.stop() == 0
        assert shard.stop() == 0


@pytest.mark.parametrize(("method", "path", "body", "role"), SERVER_ROUTES,
                         ids=[f"{m} {p}" for m, p, _, _ in SERVER_ROUTES])
def test_server_routes_need_their_role(keyed: tuple[ServerProcess, RouterProcess],
                                       method: str, path: str, body: object,
                                       role: str) -> None:
    server = keyed[0]
    for key in (None, "not-a-key-0123456789", READ, WRITE, ADMIN):
        r = call(server.url, method, path, body, key)
        if key in ALLOWED[role]:
            assert r.status_code == 200, (key, r.text)
        elif key is None or key == "not-a-key-0123456789":
            assert r.status_code == 401, (key, r.text)
            assert r.json()["error"] and "[auth]" in r.json()["error"]
            assert r.headers["www-authenticate"].startswith("Bearer")
        else:
            assert r.status_code == 403, (key, r.text)
            assert role in r.json()["error"]


@pytest.mark.parametrize(("method", "path", "body", "role"), ROUTER_ROUTES,
                         ids=[f"{m} {p}" for m, p, _, _ in ROUTER_ROUTES])
def test_router_routes_need_their_role_and_reach_the_shards_with_the_shard_key(
        keyed: tuple[ServerProcess, RouterProcess], method: str, path: str, body: object,
        role: str) -> None:
    router = keyed[1]
    allowed = ALLOWED[role] if role == "open" else \
        {k.replace(ADMIN, ROUTER_ADMIN) if k else k for k in ALLOWED[role]}
    for key in (None, READ, WRITE, ROUTER_ADMIN, ADMIN):  # ADMIN is the shards' key only
        r = call(router.url, method, path, body, key)
        if key in allowed:
            assert r.status_code == 200, (key, r.text)
        else:
            assert r.status_code in (401, 403), (key, r.text)


def test_keys_never_reach_the_log(keyed: tuple[ServerProcess, RouterProcess]) -> None:
    server, router = keyed
    call(server.url, "POST", "/query", {}, READ)
    call(server.url, "GET", "/", None, "wrong-key-but-secret-0123")
    for text in (server.log_text(), router.log_text()):
        for secret in (READ, WRITE, ADMIN, ROUTER_ADMIN, "wrong-key-but-secret-0123"):
            assert secret not in text


def test_a_bad_authorization_header_is_401(keyed: tuple[ServerProcess, RouterProcess]
                                           ) -> None:
    r = httpx.post(keyed[0].url + "/query", json={}, headers={"authorization": "Basic abc"})
    assert r.status_code == 401 and "Bearer" in r.json()["error"]


def test_host_check_on_loopback(keyed: tuple[ServerProcess, RouterProcess]) -> None:
    for target in keyed:
        assert call(target.url, "GET", "/", None, None, host="evil.example").status_code == 403
        r = call(target.url, "GET", "/", None, None, host="evil.example:80")
        assert r.status_code == 403 and "allowed_hosts" in r.json()["error"]
        for good in ("localhost", f"localhost:{target.port}", f"127.0.0.1:{target.port}"):
            assert call(target.url, "GET", "/", None, None, host=good).status_code == 200


def test_configured_allowed_hosts(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "MEMORY", allowed_hosts=["stats.example.com"])
    server = ServerProcess(cfg, tmp_path / "server.log")
    server.client.headers["host"] = "stats.example.com"  # (for the harness's ready check)
    server.start()
    try:
        assert call(server.url, "GET", "/", None, None, host="stats.example.com:443"
                    ).status_code == 200
        assert call(server.url, "GET", "/", None, None, host="localhost").status_code == 403
    finally:
        assert server.stop() == 0


def test_no_keys_on_a_public_address_warns(caplog: pytest.LogCaptureFixture) -> None:
    # (checked without binding every interface: tests keep to loopback)
    from gumshoe.cli import warn_if_open
    from gumshoe.config import load_config

    config = load_config()
    with caplog.at_level("INFO"):
        warn_if_open(config, "127.0.0.1")
    assert not caplog.records
    with caplog.at_level("INFO"):
        warn_if_open(config, "0.0.0.0")
    assert "without API keys" in caplog.text
    caplog.clear()
    keyed = parse_config(AUTH)
    with caplog.at_level("INFO"):
        warn_if_open(keyed, "0.0.0.0")
    assert "without API keys" not in caplog.text and "API keys are on" in caplog.text


def test_binary_insert_validation_with_an_admin_key(keyed: tuple[ServerProcess,
                                                                 RouterProcess]) -> None:
    """The router's binary path is validated as strictly as JSON even with the right key."""
    obj = msgpack.unpackb(BINARY, raw=False)
    obj["nils"]["age"] = b"\x02"
    r = call(keyed[0].url, "PUT", "/insert#binary", msgpack.packb(obj), ADMIN)
    assert r.status_code == 400 and "nil mask of 'age'" in r.json()["error"]
