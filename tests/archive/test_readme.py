"""The README's Archive section runs as written: against a server started with
`[archive] enabled = true`, after the "Try it" inserts, each `curl` of its first block prints
what the README shows (up to the timestamps, which are the clock's), and its `gumtool reindex`
block builds a database with the new dimension and every row."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.service import query_rows

from ..test_readme import Serve, answers, check_block, commands, run_sh, section, sh_blocks


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Serve]:
    (tmp_path / "config.toml").write_text("[archive]\nenabled = true\n")
    s = Serve(tmp_path, "serve", "--config", "config.toml")  # database ./db
    try:
        yield s
    finally:
        s.stop()


def without_time(text: str) -> list[str]:
    """CSV lines or JSON rows without their first field (the timestamp: the clock's)."""
    out = []
    for line in text.strip().splitlines():
        if line.startswith("{"):
            row = answers(line)[0]
            row.pop("at")
            out.append(repr(row))
        else:
            out.append(line.split(",", 1)[1])
    return out


def test_readme_archive_examples(server: Serve, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    check_block(sh_blocks(section("Try it"))[0], server, tmp_path)
    raw, reindex = sh_blocks(section("Archive"))
    checked = 0
    for cmd, expected in commands(raw):
        out = run_sh(cmd, server.port, tmp_path)
        assert out.returncode == 0, (cmd, out.stderr)
        assert without_time(out.stdout) == without_time("\n".join(expected)), out.stdout
        checked += 1
    assert checked == 2
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for cmd, _ in commands(reindex):
        out = run_sh(cmd, server.port, tmp_path, env)
        assert out.returncode == 0, (cmd, out.stdout, out.stderr)
    assert out.stdout.splitlines()[-1] == "done"
    monkeypatch.chdir(tmp_path)  # the config names ./db-wide
    with DB(load_config(tmp_path / "wide.toml")) as db:
        got = query_rows(db, {"groupings": ["name", "device"],
                              "aggregates": [{"column": "clicks"}]})
    assert got == [{"name": "Boomer", "device": None, "clicks": 0, "rowCount": 1},
                   {"name": "Starbuck", "device": None, "clicks": 3, "rowCount": 2}]
