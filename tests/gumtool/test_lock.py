"""Every command refuses a database that a running DB holds (its directory flock), with a
clear message, and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import build_db, make_rows, open_db, run, write_config


@pytest.mark.parametrize("argv", [
    ["stats", "--dir", "{db}"],
    ["readdims", "--dir", "{db}", "--column", "name"],
    ["clean", "--dir", "{db}"],
    ["migrate", "--old-db-path", "{db}", "--new-db-config", "{new}"],
    ["merge", "--db-paths", "{db}", "--new-db-config", "{new}"],
    ["balance", "--source-db-dirs", "{db}", "--dest-db-configs", "{new}"],
])
def test_commands_refuse_a_database_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           argv: list[str]) -> None:
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    build_db(cfg, [make_rows(50, 1)])
    new = write_config(tmp_path / "new.toml", tmp_path / "new")
    with open_db(cfg):  # holds the lock, as a running server does
        (tmp_path / "db" / "interval.1.generation0009.segment0000.seg").write_text("x")
        before = sorted(p.name for p in (tmp_path / "db").iterdir())
        args = [a.format(db=tmp_path / "db", new=new) for a in argv]
        assert run(*args) == 1
        err = capsys.readouterr().err
        assert (f"error: database '{tmp_path / 'db'}' is in use: its directory is locked, most "
                "likely by a running gumshoe server; stop the server first") in err
        assert sorted(p.name for p in (tmp_path / "db").iterdir()) == before
        assert not (tmp_path / "new").exists()
