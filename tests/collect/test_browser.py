"""The tracker script in a real browser: headless Chromium (Debian `chromium`, driven by
Playwright; skipped when either is missing) opens a page that loads /script.js from a gumshoe
server on another loopback port, navigates with pushState and fires a custom event; the rows
arrive with the expected columns. Nothing leaves the loopback interface."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import ServerProcess, free_port, wait_until

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    shutil.which("chromium") is None and not Path(CHROMIUM).exists(),
    reason="chromium is not installed (Debian package chromium; .ci/run installs it)")

CONFIG = """
database_dir = "{db}"
retention_days = 0
durability = "os"
[schema]
timestamp_column = ["at", "uint32"]
dimension_columns = [["event", "string:uint16"], ["path", "string:uint16"],
                     ["referrer", "string:uint16"], ["device", "string:uint8"],
                     ["browser", "string:uint8"], ["plan", "string:uint8"]]
metric_columns = [["value", "uint32"]]
[collect.script]
event = "event"
path = "path"
referrer = "referrer"
device = "device"
track_localhost = true
track_automated = true
[collect.enrich]
browser = "browser"
"""

PAGE = """<!doctype html><html><head><title>shop</title>
<script>window.gumshoe=window.gumshoe||function(){{(gumshoe.q=gumshoe.q||[]).push(arguments)}}</script>
<script async src="{server}/script.js"></script></head>
<body><script>gumshoe("early", {{value: 7}});</script></body></html>
"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """A static page server on its own loopback port (another origin than gumshoe)."""
    root = tmp_path / "site"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def rows(server: ServerProcess) -> list[dict[str, Any]]:
    r = server.query({"groupings": ["event", "path", "referrer", "device", "browser", "plan"],
                      "aggregates": [{"column": "value"}]})
    assert r.status_code == 200, r.text
    return list(r.json()["results"])


def test_tracker_in_chromium(tmp_path: Path, site: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    cfg = tmp_path / "config.toml"
    cfg.write_text(CONFIG.format(db=tmp_path / "db"))
    server = ServerProcess(cfg, tmp_path / "server.log").start()
    (tmp_path / "site" / "index.html").write_text(PAGE.format(server=server.url))
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"])
            try:
                page = browser.new_page()
                page.goto(f"{site}/index.html", referer="https://news.example/story?id=1")
                page.wait_for_function("typeof window.gumshoe === 'function' && !window.gumshoe.q")
                page.evaluate("history.pushState({}, '', '/checkout')")
                page.evaluate("gumshoe('signup', {plan: 'pro', value: 3})")
                page.evaluate("history.pushState({}, '', '/checkout')")  # same path: no view
                expected = [  # in grouping order
                    {"event": "early", "path": "/index.html", "plan": None, "value": 7},
                    {"event": "pageview", "path": "/checkout", "plan": None, "value": 0},
                    {"event": "pageview", "path": "/index.html", "plan": None, "value": 0},
                    {"event": "signup", "path": "/checkout", "plan": "pro", "value": 3},
                ]
                got = wait_until(lambda: (r if len(r := rows(server)) >= 4 else None), 20,
                                 "events from the browser")
                assert [{k: r[k] for k in ("event", "path", "plan", "value")}
                        for r in got] == expected
                for r in got:
                    assert r["referrer"] == "news.example"
                    assert r["device"] == "desktop"
                    assert r["browser"] in ("HeadlessChrome", "Chrome", "Chromium")
                    assert r["rowCount"] == 1
                # opted out: nothing more is sent
                page.evaluate("localStorage.setItem('gumshoe_opt_out', '1')")
                page.evaluate("gumshoe('ignored')")
                page.goto(f"{site}/index.html")
                page.wait_for_function("typeof window.gumshoe === 'function' && !window.gumshoe.q")
                page.evaluate("gumshoe('ignored')")
                page.wait_for_timeout(500)
                assert len(rows(server)) == 4
            finally:
                browser.close()
    finally:
        assert server.stop() == 0
