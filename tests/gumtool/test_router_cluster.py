"""gumtool against a real router cluster: the shard servers' databases are refused while the
servers run; once stopped, their merge equals the lone server that received the same rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..router.conftest import Cluster
from .helpers import QUERIES, answers, make_rows, run, write_config


def test_merge_of_a_real_router_cluster(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    c = Cluster(tmp_path).start()
    try:
        for i in range(3):
            rows = make_rows(400, seed=100 + i)
            assert c.router.insert(rows).status_code == 200
            assert c.lone.insert(rows).status_code == 200
        shard_dbs = [str(tmp_path / f"shard{k}" / "db") for k in range(3)]
        merged = write_config(tmp_path / "merged.toml", tmp_path / "merged")
        assert run("merge", "--new-db-config", str(merged), "--db-paths",
                   ",".join(shard_dbs)) == 1
        assert ("is in use: its directory is locked, most likely by a running gumshoe server; "
                "stop the server first") in capsys.readouterr().err
        assert not (tmp_path / "merged").exists()
    finally:
        assert c.stop() == [0] * 5
    assert run("merge", "--new-db-config", str(merged), "--db-paths", ",".join(shard_dbs),
               "-q") == 0
    lone = tmp_path / "lone" / "config.toml"
    assert answers(merged, QUERIES) == answers(lone, QUERIES)
