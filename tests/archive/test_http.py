"""GET /raw against real processes: a server, and a router over two shards beside a lone
server that receives the same rows. A range answers exactly the rows inserted in it, in time
order, as NDJSON or CSV; bad parameters are 400s naming them; keys; the archive survives a
restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ..http.harness import ServerProcess, write_config
from ..router.conftest import RouterProcess
from .helpers import T0, key, rows_in, sample_rows, sorted_rows

ARCHIVE = '[archive]\nenabled = true\nrotate = "32KB"\n'
READ, WRITE = "read-key-0123456789", "write-key-0123456789"


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.shards = []
        for name in ("s0", "s1", "lone"):
            d = tmp / name
            d.mkdir()
            self.shards.append(ServerProcess(write_config(d, d / "db", ARCHIVE),
                                             d / "server.log"))
        self.lone = self.shards.pop()
        self.router = RouterProcess(write_config(tmp, "MEMORY"), tmp / "router.log",
                                    [f"127.0.0.1:{s.port}" for s in self.shards],
                                    extra=("--timeout", "5"))
        self.rows: list[dict[str, Any]] = []

    def all(self) -> list[ServerProcess]:
        return [*self.shards, self.lone, self.router]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    s = Setup(tmp_path_factory.mktemp("raw"))
    for p in s.all():
        p.start()
    try:
        for i in range(6):
            rows = sample_rows(400, seed=100 + i, hours=8)
            assert s.router.insert(rows).status_code == 200
            assert s.lone.insert(rows).status_code == 200
            s.rows += rows
        yield s
    finally:
        statuses = [p.stop() for p in s.all()]
        for p in s.all():
            p.client.close()
        assert statuses == [0] * 4, s.router.log_text()


def lines(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def in_time_order(rows: list[dict[str, Any]]) -> bool:
    return all(a["at"] <= b["at"] for a, b in zip(rows, rows[1:]))


@pytest.mark.parametrize(("gt", "lte"), [(None, None), (T0 + 3600, T0 + 7200),
                                         (T0 + 1800, T0 + 1800), (T0 - 10, T0 + 10),
                                         (T0 + 5 * 3600 + 7, T0 + 100 * 3600)])
def test_a_range_is_the_rows_inserted_in_it(setup: Setup, gt: int | None,
                                            lte: int | None) -> None:
    params = {k: v for k, v in (("gt", gt), ("lte", lte)) if v is not None}
    lo = -1 if gt is None else gt
    hi = 2**32 if lte is None else lte
    expected = rows_in(sorted_rows(setup.rows), lo, hi)
    assert lines(setup.lone.client.get("/raw", params=params)) == expected  # in order
    via_router = lines(setup.router.client.get("/raw", params=params))
    assert in_time_order(via_router)
    assert sorted(map(key, via_router)) == sorted(map(key, expected))


def test_iso_times_and_csv(setup: Setup) -> None:
    params = {"gt": "2023-11-14T23:00:00Z", "lte": "2023-11-15T01:00:00+01:00",
              "format": "csv"}
    expected = rows_in(sorted_rows(setup.rows), T0 + 3600, T0 + 7200)
    for p in (setup.lone, setup.router):
        r = p.client.get("/raw", params=params)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert json.loads(r.headers["x-raw-columns"]) == ["at", "name", "country", "age",
                                                          "visits", "clicks", "score"]
        text = r.text.split("\r\n")
        assert text[0] == "at,name,country,age,visits,clicks,score" and text[-1] == ""
        assert len(text) == len(expected) + 2
        got = [int(line.split(",")[0]) for line in text[1:-1]]
        assert got == [row["at"] for row in expected]


def test_bad_parameters(setup: Setup) -> None:
    for p in (setup.lone, setup.router):
        for params, message in (({"gt": "soon"}, "gt: expected an ISO 8601 time"),
                                ({"lte": "2023-02-30"}, "lte: expected"),
                                ({"format": "xml"}, "format: unknown raw format"),
                                ({"from": "1"}, "unknown parameter 'from'"),
                                ({"gt": T0 + 1, "lte": T0}, "gt: ")):
            r = p.client.get("/raw", params=params)
            assert r.status_code == 400, r.text
            assert r.json()["error"].startswith(message)
        assert p.client.post("/raw").status_code == 405


def test_the_archive_survives_a_restart(setup: Setup) -> None:
    before = lines(setup.lone.client.get("/raw"))
    assert setup.lone.stop() == 0
    setup.lone.start()
    assert lines(setup.lone.client.get("/raw")) == before == sorted_rows(setup.rows)


def test_no_archive_is_a_404(tmp_path: Path) -> None:
    s = ServerProcess(write_config(tmp_path, tmp_path / "db"), tmp_path / "log").start()
    r = RouterProcess(write_config(tmp_path, "MEMORY"), tmp_path / "router.log",
                      [f"127.0.0.1:{s.port}"]).start()
    try:
        a = s.client.get("/raw")
        assert a.status_code == 404 and "[archive] enabled" in a.json()["error"]
        b = r.client.get("/raw")
        assert b.status_code == 404 and f"shard 127.0.0.1:{s.port}" in b.json()["error"]
    finally:
        assert r.stop() == 0 and s.stop() == 0


def test_raw_needs_a_read_key(tmp_path: Path) -> None:
    auth = f'[auth]\nread_keys = ["{READ}"]\nwrite_keys = ["{WRITE}"]\n'
    s = ServerProcess(write_config(tmp_path, tmp_path / "db", ARCHIVE + auth),
                      tmp_path / "log").start()
    try:
        rows = sample_rows(50, 1)
        assert s.client.put("/insert", json=rows,
                            headers={"authorization": f"Bearer {WRITE}"}).status_code == 200
        assert s.client.get("/raw").status_code == 401
        assert s.client.get("/raw", headers={"authorization": f"Bearer {WRITE}"}
                            ).status_code == 403
        ok = s.client.get("/raw", headers={"authorization": f"Bearer {READ}"})
        assert lines(ok) == sorted_rows(rows)
    finally:
        assert s.stop() == 0


def test_rows_with_roll_up_counts(tmp_path: Path) -> None:
    """A pre-rolled-up binary batch (as `gumtool import --url` sends): its rows keep their
    counts, as `_count`, through a server and a router, NDJSON and CSV."""
    from gumshoe import wire
    from gumshoe.batch import parse_rows
    from gumshoe.config import parse_config
    from gumshoe.schema import Schema

    from ..http.harness import SCHEMA

    schema = Schema.from_config(parse_config(SCHEMA).schema)
    batch = parse_rows(schema, [{"at": T0 + 5, "name": "a", "visits": 6},
                                {"at": T0 + 1, "name": "b", "visits": 1}])
    batch.counts = np.array([3, 1], np.int64)
    shards = []
    for name in ("s0", "s1"):
        (tmp_path / name).mkdir()
        shards.append(ServerProcess(write_config(tmp_path / name, tmp_path / name / "db",
                                                 ARCHIVE), tmp_path / name / "log").start())
    router = RouterProcess(write_config(tmp_path, "MEMORY"), tmp_path / "router.log",
                           [f"127.0.0.1:{s.port}" for s in shards]).start()
    try:
        r = router.client.put("/insert", content=wire.encode_batch(batch),
                              headers={"content-type": wire.CONTENT_TYPE})
        assert r.status_code == 200, r.text
        base = {"country": None, "age": None, "clicks": 0, "score": 0.0}
        expected = [{"at": T0 + 1, "name": "b", **base, "visits": 1},
                    {"at": T0 + 5, "name": "a", **base, "visits": 6, "_count": 3}]
        for p in (router, *shards):
            got = lines(p.client.get("/raw"))
            if p is router:
                assert got == expected
            else:
                assert all(row in expected for row in got)
        csv = router.client.get("/raw", params={"format": "csv"})
        assert csv.headers["x-raw-count"] == "_count"
        assert csv.text.split("\r\n") == ["at,name,country,age,visits,clicks,score,_count",
                                          f"{T0 + 1},b,,,1,0,0.0,1",
                                          f"{T0 + 5},a,,,6,0,0.0,3", ""]
    finally:
        assert router.stop() == 0 and all(s.stop() == 0 for s in shards)
