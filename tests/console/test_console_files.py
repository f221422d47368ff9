"""GET /console and its files on server and router, in-process: the page and every file it
references are served (from the package's data, with their media types), the page is open
when API keys are on while the API it calls is not, and nothing but the listed files is
served."""

from __future__ import annotations

import re
import tomllib
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette

from gumshoe.config import Config, load_config
from gumshoe.console import ASSETS, UPLOT
from gumshoe.db import DB
from gumshoe.router import create_router_app
from gumshoe.server import create_app

with warnings.catch_warnings():  # starlette warns when it finds httpx rather than httpx2
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
KEY = "console-files-read-key-0123"


def app(kind: str, cfg: Config) -> Starlette:
    if kind == "server":
        return create_app(DB(cfg.replace(database_dir="MEMORY")), cfg, periodic_flush=False)
    return create_router_app(cfg, ["127.0.0.1:1"])


@pytest.fixture(params=["server", "router"])
def client(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    cfg = load_config().replace(database_dir="MEMORY")
    with TestClient(app(request.param, cfg)) as c:
        yield c


def test_the_page_and_every_file_it_references(client: TestClient) -> None:
    page = client.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    refs = re.findall(r'(?:src|href)="(console/[^"]+)"', page.text)
    assert len(refs) == 4  # uPlot's script and styles, the console's own
    for ref in refs:
        r = client.get("/" + ref)
        assert r.status_code == 200, ref
        assert r.headers["content-type"] == ASSETS[ref.split("/", 1)[1]]
        assert r.content
    assert "http" not in re.sub(r'href="https?://[^"]*"', "", page.text)  # no CDN
    licence = client.get(f"/console/{UPLOT}.LICENSE")
    assert licence.status_code == 200 and "MIT License" in licence.text


def test_only_the_listed_files(client: TestClient) -> None:
    for name in ("nope.js", "console.html", "package.json", "..%2Fconsole.py"):
        r = client.get("/console/" + name)
        assert r.status_code == 404, name
        assert "error" in r.json()


def test_open_page_closed_api(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[auth]\nread_keys = ["{KEY}"]\n')
    cfg = load_config(path).replace(database_dir="MEMORY")
    for kind in ("server", "router"):
        with TestClient(app(kind, cfg)) as c:
            assert c.get("/console").status_code == 200
            assert c.get("/console/console.js").status_code == 200
            assert c.get("/schema").status_code == 401
            assert c.get("/schema", headers={"authorization": f"Bearer {KEY}"}
                         ).status_code == 200


def test_the_files_are_package_data_and_pinned() -> None:
    static = ROOT / "gumshoe" / "static"
    for name in (*ASSETS, "console.html"):
        assert (static / name).is_file(), name
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["gumshoe"]
    for name in (*ASSETS, "console.html", "package.json", "package-lock.json"):
        assert any(Path("static", name).match(g) for g in globs), name
    package = (static / "package.json").read_text()
    version = UPLOT.split("-", 1)[1]
    assert f'"uplot": "{version}"' in package  # pinned exactly, as the file names say
    assert f'"version": "{version}"' in (static / "package-lock.json").read_text()
