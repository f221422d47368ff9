"""`gumtool clean` after a simulated crash: stray segment, temporary, dictionary and flushed
log files are removed (not with --dry-run), needed log files kept, corruption reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gumshoe.service import query_rows

from .helpers import build_db, dump, make_rows, open_db, run, write_config

STRAYS = ["interval.1700000000.generation0009.segment0000.seg", "db.json.tmp",
          "dictionary.name.generation0099.json", "dictionary.name.generation0099.json.tmp"]


@pytest.fixture
def db(tmp_path: Path) -> tuple[Path, Path]:
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db", segment_size="4KB")
    build_db(cfg, [make_rows(300, 1), make_rows(300, 2)], unflushed=make_rows(50, 3))
    return cfg, tmp_path / "db"


def test_clean_after_a_crash(db: tuple[Path, Path], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg, d = db
    shutil.copytree(d, tmp_path / "copy")
    expected = dump(write_config(tmp_path / "copy.toml", tmp_path / "copy", segment_size="4KB"))
    meta = json.loads((d / "db.json").read_bytes())
    n_segments = sum(len(iv["segments"]) for iv in meta["intervals"])
    wal = sorted(p.name for p in d.glob("wal.*.log"))
    for name in STRAYS:
        (d / name).write_bytes(b"junk")
    (d / "notes.txt").write_text("mine")
    assert run("clean", "--dir", str(d), "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"would remove {len(STRAYS)} file(s) not referenced by the metadata:\n")
    assert "left alone 1 other file(s): notes.txt" in out
    assert all((d / n).exists() for n in STRAYS)
    assert "unflushed input row(s)" in out and " 0 unflushed" not in out
    assert run("clean", "--dir", str(d)) == 0
    out = capsys.readouterr().out
    for name in STRAYS:
        assert f"\n  {name}\n" in out
        assert not (d / name).exists()
    assert (f"verified {n_segments} of {n_segments} segment(s) in 6 interval(s): headers and "
            "checksums ok") in out
    assert out.endswith("done\n")
    assert sorted(p.name for p in d.glob("wal.*.log")) == wal  # still needed: kept
    assert (d / "notes.txt").exists()
    assert dump(cfg) == expected  # every row, the logged ones replayed
    assert run("clean", "--dir", str(d)) == 0
    assert capsys.readouterr().out.startswith("no unreferenced files found\n")


def test_flushed_log_files_are_removed(db: tuple[Path, Path],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg, d = db
    with open_db(cfg):
        pass  # replays and flushes the log
    meta = json.loads((d / "db.json").read_bytes())
    logs = sorted(d.glob("wal.*.log"))
    assert len(logs) == 1
    stale = d / f"wal.{meta['wal_seq']:016d}.log"  # records up to wal_seq: all flushed
    stale.write_bytes(b"\0" * 10)
    assert run("clean", "--dir", str(d)) == 0
    assert f"  {stale.name}\n" in capsys.readouterr().out
    assert not stale.exists() and logs[0].exists()


def test_corrupt_segment_is_reported(db: tuple[Path, Path],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    _, d = db
    seg = sorted(d.glob("*.seg"))[3]
    data = bytearray(seg.read_bytes())
    data[-70] ^= 0xFF  # inside the last column's data
    seg.write_bytes(bytes(data))
    assert run("clean", "--dir", str(d)) == 1
    out = capsys.readouterr().out
    assert "segment(s) in 6 interval(s): headers and checksums 1 BAD" in out
    assert f"PROBLEM: {seg}: checksum mismatch in column" in out
    assert out.endswith("the database has problems that clean cannot repair (see above)\n")
    seg.write_bytes(b"GUMSEG\0\1garbage")
    assert run("clean", "--dir", str(d)) == 1
    assert f"PROBLEM: {seg}: segment header" in capsys.readouterr().out


def test_missing_segment_and_dictionary_are_reported(db: tuple[Path, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _, d = db
    min(d.glob("*.seg")).unlink()
    next(d.glob("dictionary.country.*")).unlink()
    assert run("clean", "--dir", str(d)) == 1
    out = capsys.readouterr().out
    assert "segment file is missing" in out and "dictionary file is missing" in out


def test_segments_without_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    build_db(cfg, [make_rows(100, 1)])
    d = tmp_path / "db"
    for p in d.glob("wal.*"):
        p.unlink()
    (d / "db.json").unlink()
    with pytest.raises(Exception, match="segment files but no db.json"):
        open_db(cfg)
    assert run("clean", "--dir", str(d)) == 0
    out = capsys.readouterr().out
    assert "no db.json: the directory held files of a database that was never" in out
    assert not list(d.iterdir())
    with open_db(cfg) as x:
        assert query_rows(x, {}) == [{"rowCount": 0}]


def test_swapped_dictionary_strings_are_reported(db: tuple[Path, Path],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Two strings swapped in a dictionary file (same count): clean, stats and readdims find it
    by the checksum the metadata records; the server would not start either."""
    cfg, d = db
    path = next(d.glob("dictionary.name.*"))
    values = json.loads(path.read_bytes())
    values[0], values[1] = values[1], values[0]
    path.write_text(json.dumps(values))
    assert run("clean", "--dir", str(d)) == 1
    out = capsys.readouterr().out
    assert f"PROBLEM: dictionaries or write-ahead log: {path}: dictionary checksum mismatch" in out
    for argv in (["stats", "--dir", str(d)], ["readdims", "--dir", str(d), "--column", "name"]):
        assert run(*argv) == 1
        assert f"{path.name}: dictionary checksum mismatch" in capsys.readouterr().err
    with pytest.raises(Exception, match="dictionary checksum mismatch"):
        open_db(cfg)


def test_damaged_metadata_is_reported(db: tuple[Path, Path],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _, d = db
    meta = d / "db.json"
    meta.write_bytes(meta.read_bytes().replace(b'"rows": ', b'"rows": 1', 1))
    assert run("clean", "--dir", str(d)) == 1
    assert "db.json: metadata checksum mismatch" in capsys.readouterr().err
