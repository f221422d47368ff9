"""`gumtool readdims`: a string dimension's values, one per line, in dictionary order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import build_db, open_db, run, write_config

T = 1_700_000_000


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    build_db(cfg, [[{"at": T, "name": "b", "country": "US"}, {"at": T, "name": "a"}]],
               unflushed=[{"at": T, "name": "c ü", "country": "CA"}])
    return cfg


def test_readdims(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("readdims", "--dir", str(tmp_path / "db"), "--column", "name") == 0
    assert capsys.readouterr().out == "b\na\nc ü\n"  # code order, logged strings included
    assert run("readdims", "--dir", str(tmp_path / "db"), "--column", "country", "--json") == 0
    assert json.loads(capsys.readouterr().out) == ["US", "CA"]
    with open_db(cfg) as db:
        assert list(db.snapshot().strings("name")) == ["b", "a", "c ü"]


def test_dictionary_file(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = next((tmp_path / "db").glob("dictionary.name.*.json"))
    assert run("readdims", str(f)) == 0
    assert capsys.readouterr().out == "b\na\n"


@pytest.mark.parametrize("column,message", [
    ("age", ("column 'age' is not a string dimension (a uint8 dimension); string dimensions: "
             "name, country")),
    ("nope", "column 'nope' is not a string dimension (no such column)"),
])
def test_not_a_string_dimension(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                column: str, message: str) -> None:
    assert run("readdims", "--dir", str(tmp_path / "db"), "--column", column) == 1
    assert message in capsys.readouterr().err
