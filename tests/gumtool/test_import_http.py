"""`gumtool import --url`: into a real server (with an API key) and a real router, through
`PUT /insert`; a re-run is recognised by the checkpoint, and without the checkpoint by the
server's batch ids, so nothing is counted twice."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.schema import Schema
from gumshoe.service import query_rows

from ..http.harness import ServerProcess
from ..http.harness import write_config as server_config
from ..router.conftest import Cluster
from .helpers import approx_rows, dump_query, make_rows, run, write_config


def reference(tmp_path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cfg = write_config(tmp_path / "ref.toml", tmp_path / "ref")
    with DB(load_config(cfg)) as db:
        db.insert(rows)
        return approx_rows(query_rows(db, dump_query(db.schema)))


def served(proc: ServerProcess, schema: Schema, key: str | None = None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = proc.query(dump_query(schema), headers=headers)
    assert r.status_code == 200, r.text
    return approx_rows(r.json()["results"])


def test_import_into_a_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    srv = tmp_path / "srv"
    srv.mkdir()
    cfg_path = server_config(srv, srv / "db")
    with open(cfg_path, "a") as f:
        f.write('[auth]\nwrite_keys = ["write-key-0123456789"]\nread_keys = ["read-key-01234567890"]\n')
    proc = ServerProcess(cfg_path, srv / "server.log").start()
    try:
        rows = make_rows(3000, 21)
        path = tmp_path / "in.jsonl.gz"
        path.write_bytes(gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in rows)))
        cfg = write_config(tmp_path / "c.toml", tmp_path / "unused")
        schema = Schema.from_config(load_config(cfg).schema)
        ck = str(tmp_path / "ck.json")
        base = ["import", "--config", str(cfg), str(path), "--url", proc.url,
                "--checkpoint", ck, "--chunk-size", "16KB", "--parallelism", "2", "--json"]
        assert run(*base) == 1  # no key: the server's 401 stops the import
        assert "refused the batch (401)" in capsys.readouterr().err
        assert run(*base, "--key", "write-key-0123456789") == 0
        s = json.loads(capsys.readouterr().out)
        assert s["imported"] == 3000 and s["chunks"] > 4
        want = reference(tmp_path, rows)
        assert served(proc, schema, "read-key-01234567890") == want
        assert run(*base, "--key", "write-key-0123456789") == 0  # the checkpoint: nothing to do
        assert json.loads(capsys.readouterr().out)["files_already_imported"] == 1
        Path(ck).unlink()  # without it: every batch id is known to the server
        assert run(*base, "--key", "write-key-0123456789") == 0
        s = json.loads(capsys.readouterr().out)
        assert s["imported"] == 0 and s["skipped"]["already imported"] == 3000, json.dumps(s)
        assert served(proc, schema, "read-key-01234567890") == want
        assert not (tmp_path / "unused").exists()  # --url never touches a database directory
    finally:
        assert proc.stop() == 0
        proc.client.close()


def test_import_through_a_router(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = Cluster(tmp_path, n_shards=2).start()
    try:
        rows = make_rows(2000, 22)
        path = tmp_path / "in.jsonl"
        path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
        cfg = write_config(tmp_path / "c.toml", tmp_path / "unused")
        schema = Schema.from_config(load_config(cfg).schema)
        args = ["import", "--config", str(cfg), str(path), "--url", c.router.url,
                "--checkpoint", str(tmp_path / "ck.json"), "--chunk-size", "32KB", "--json"]
        assert run(*args) == 0
        assert json.loads(capsys.readouterr().out)["imported"] == 2000
        (tmp_path / "ck.json").unlink()
        assert run(*args) == 0  # the router passes each batch id on to every shard
        assert json.loads(capsys.readouterr().out)["skipped"]["already imported"] == 2000
        assert served(c.router, schema) == reference(tmp_path, rows)
    finally:
        assert c.stop() == [0] * 4
