"""`gumtool import`: every input kind, the mapping, bad lines, --strict, parallel == serial,
resuming and the summary, each compared with the same rows inserted through the storage
layer (`DB.insert`, the server's own validation and roll-up)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from gumshoe.config import load_config
from gumshoe.db import DB
from gumtool import import_decode
from gumtool.import_checkpoint import NAME
from gumtool.import_sources import EDGE, Cursor, Source, Stream, file_boundaries

from .helpers import dump, make_rows, run, write_config

T0 = 1_700_000_000 - 1_700_000_000 % 3600


def reference(tmp_path: Path, rows: list[dict[str, Any]], name: str = "ref") -> Path:
    """A database holding `rows` inserted by the storage layer itself."""
    cfg = write_config(tmp_path / f"{name}.toml", tmp_path / name)
    with DB(load_config(cfg)) as db:
        for i in range(0, len(rows), 5000):
            db.insert(rows[i:i + 5000])
    return cfg


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def csv_text(rows: list[dict[str, Any]], fields: list[str]) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(fields)
    for r in rows:
        w.writerow(["" if r.get(f) is None else r[f] for f in fields])
    return out.getvalue().encode()


CSV_FIELDS = ["at", "name", "country", "age", "visits", "clicks", "score"]


def csv_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Sample rows a CSV file can carry (no line breaks; an empty field is null)."""
    return [r for r in make_rows(n, seed) if r.get("name") not in ("", "line\nbreak")]


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gz":
        return gzip.compress(data)
    if kind == "zst":
        return zstandard.ZstdCompressor().compress(data)
    return data


def summary(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("kind", ["plain", "gz", "zst"])
def test_every_format_and_compression(tmp_path: Path, fmt: str, kind: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    rows = csv_rows(3000, 1) if fmt == "csv" else make_rows(3000, 1)
    data = csv_text(rows, CSV_FIELDS) if fmt == "csv" else jsonl(rows)
    ext = {"plain": "", "gz": ".gz", "zst": ".zst"}[kind]
    path = tmp_path / f"in.{fmt}{ext}"
    path.write_bytes(compress(data, kind))
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    assert run("import", "--config", str(cfg), str(path), "--chunk-size", "20KB",
               "--parallelism", "2", "--json") == 0
    s = summary(capsys)
    assert s["imported"] == len(rows) and s["records"] == len(rows)
    assert s["chunks"] > 3  # several chunks, in parallel
    assert dump(cfg) == dump(reference(tmp_path, rows))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_stdin(tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture[str]) -> None:
    rows = csv_rows(1000, 2)
    data = gzip.compress(csv_text(rows, CSV_FIELDS) if fmt == "csv" else jsonl(rows))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    assert run("import", "--config", str(cfg), "-", "--format", fmt, "--chunk-size", "8KB",
               "--json") == 0
    assert summary(capsys)["imported"] == len(rows)
    assert dump(cfg) == dump(reference(tmp_path, rows))


def test_globs_and_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(900, 3)
    d = tmp_path / "exports" / "2026"
    d.mkdir(parents=True)
    (d / "a.jsonl").write_bytes(jsonl(rows[:300]))
    (d / "b.ndjson.gz").write_bytes(gzip.compress(jsonl(rows[300:600])))
    (d / "notes.txt").write_text("not an input")
    (tmp_path / "c.json").write_bytes(jsonl(rows[600:]))
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    assert run("import", "--config", str(cfg), str(tmp_path / "exports"),
               str(tmp_path / "*.json"), "--json") == 0
    s = summary(capsys)
    assert s["files"] == 3 and s["imported"] == 900
    assert dump(cfg) == dump(reference(tmp_path, rows))
    assert run("import", "--config", str(cfg), str(tmp_path / "nothing*.jsonl")) == 1
    assert "no file matches" in capsys.readouterr().err


def test_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Renamed fields, millisecond and ISO 8601 timestamps, constants, drop, unknown=error."""
    rows = make_rows(500, 4)
    src = []
    for i, r in enumerate(rows):
        rec = {"when": r["at"] * 1000 + i % 1000, "who": r.get("name"), "clicks": r["clicks"],
               "v": r["visits"], "debug": {"x": [1, 2]}}
        if "country" in r:
            rec["country"] = r["country"]
        src.append(rec)
    (tmp_path / "m.toml").write_text(
        'unknown = "error"\ndrop = ["debug"]\n[timestamp]\nfield = "when"\nformat = "unix_ms"\n'
        '[columns]\nwho = "name"\nv = "visits"\n[constants]\nage = 30\n')
    (tmp_path / "in.jsonl").write_bytes(jsonl(src))
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    assert run("import", "--config", str(cfg), "--mapping", str(tmp_path / "m.toml"),
               str(tmp_path / "in.jsonl"), "--json") == 0
    assert summary(capsys)["imported"] == 500
    want = [{"at": r["at"], "name": r.get("name"), "country": r.get("country"), "age": 30,
             "visits": r["visits"], "clicks": r["clicks"]} for r in rows]
    assert dump(cfg) == dump(reference(tmp_path, want))


def test_iso8601_timestamps_with_offsets(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    lines = [{"t": "2023-11-14T22:13:20+00:00", "visits": 1},
             {"t": "2023-11-14T23:13:20.75+01:00", "visits": 2},  # the same second
             {"t": "2023-11-14 17:13:20-05:00", "visits": 3},
             {"t": "2023-11-14T22:13:20Z", "visits": 4},
             {"t": "2023-11-14T22:13:20", "visits": 5},  # no offset: bad
             {"t": "yesterday", "visits": 6}]
    (tmp_path / "in.jsonl").write_bytes(jsonl(lines))
    (tmp_path / "in.csv").write_bytes(csv_text(lines, ["t", "visits"]))
    (tmp_path / "m.toml").write_text('[timestamp]\nfield = "t"\nformat = "iso8601"\n')
    for name in ("in.jsonl", "in.csv"):
        cfg = write_config(tmp_path / "c.toml", tmp_path / f"db-{name}")
        assert run("import", "--config", str(cfg), "--mapping", str(tmp_path / "m.toml"),
                   str(tmp_path / name), "--json") == 0
        out, err = capsys.readouterr()
        assert json.loads(out)["imported"] == 4
        assert f"{name}:{6 if name == 'in.csv' else 5}: field 't'" in err
        assert "UTC offset" in err
        assert dump(cfg) == dump(reference(tmp_path, [{"at": 1_700_000_000, "visits": v}
                                                      for v in (1, 2, 3, 4)], name="r" + name))


def test_bad_lines_are_named_and_skipped(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(400, 5)
    lines = jsonl(rows).splitlines()
    bad = {3: b'{"at": 1, "visits": 300}', 10: b"{not json", 57: b'{"visits": 1}',
           58: b'[1, 2]', 120: b'{"at": 1700000000, "name": 5, "country": true}',
           121: b"", 200: b'{"at": 1700000000, "bogus": 1}'}
    for i, text in bad.items():
        lines.insert(i, text)
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    for arrow in (True, False):  # the pyarrow fast path and the msgspec path say the same
        import_decode.JsonDecoder.use_arrow = arrow
        try:
            assert run("import", "--config", str(cfg), str(tmp_path / "in.jsonl"), "--chunk-size", "4KB", "--json",
                       "--checkpoint", str(tmp_path / f"ck{arrow}")) == 0
        finally:
            import_decode.JsonDecoder.use_arrow = True
        out, err = capsys.readouterr()
        s = json.loads(out)
        assert s["skipped"]["bad line"] == 5  # 121 is blank; 200's unknown key is ignored
        messages = err.splitlines()
        assert any(m.startswith(f"{tmp_path / 'in.jsonl'}:4: field 'visits'") for m in messages)
        for line in (11, 58, 59, 121):  # bad JSON, no timestamp, not an object, a boolean
            assert any(m.startswith(f"{tmp_path / 'in.jsonl'}:{line}: ") for m in messages), err
        if arrow:
            first = dump(cfg)
            (tmp_path / "db").rename(tmp_path / "db-arrow")
    assert dump(cfg) == first
    good = [*rows, {"at": 1700000000}]
    assert s["imported"] == len(good)
    assert first == dump(reference(tmp_path, good))


def test_strict_stops_at_the_first_bad_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(300, 6)
    lines = jsonl(rows).splitlines()
    lines.insert(250, b"{oops")
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    assert run("import", "--config", str(cfg), str(tmp_path / "in.jsonl"), "--strict",
               "--chunk-size", "2KB") == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'in.jsonl'}:251: " in err and "stopped (--strict)" in err
    first = sum(r["rowCount"] for r in dump(cfg))
    assert 0 < first < 250
    # fix the line and resume: every line exactly once
    lines[250] = b'{"at": 1700000000, "visits": 1}'
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    assert run("import", "--config", str(cfg), str(tmp_path / "in.jsonl"), "--strict",
               "--chunk-size", "2KB", "--json") == 0
    assert summary(capsys)["imported"] == 301 - first
    assert dump(cfg) == dump(reference(tmp_path, rows[:250] + [
        {"at": 1700000000, "visits": 1}] + rows[250:]))


def test_parallel_equals_serial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(6000, 7)
    for k in range(3):
        (tmp_path / f"p{k}.jsonl.gz").write_bytes(gzip.compress(jsonl(rows[k::3])))
    dumps = []
    for par in ("1", "3"):
        cfg = write_config(tmp_path / f"c{par}.toml", tmp_path / f"db{par}")
        assert run("import", "--config", str(cfg), str(tmp_path / "p*.jsonl.gz"),
                   "--parallelism", par, "--chunk-size", "16KB", "--flush-rows", "1000",
                   "-q") == 0
        dumps.append(dump(cfg))
    assert dumps[0] == dumps[1] == dump(reference(tmp_path, rows))


def test_rerun_imports_nothing_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(2000, 8)
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(rows[:1500]))
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    args = ["import", "--config", str(cfg), str(path), "--chunk-size", "8KB", "--json"]
    assert run(*args) == 0
    assert summary(capsys)["imported"] == 1500
    assert run(*args) == 0  # unchanged: skipped
    s = summary(capsys)
    assert s["imported"] == 0 and s["files_already_imported"] == 1
    with open(path, "ab") as f:  # appended to: only the new lines
        f.write(jsonl(rows[1500:]))
    assert run(*args) == 0
    assert summary(capsys)["imported"] == 500
    assert dump(cfg) == dump(reference(tmp_path, rows))


def test_batch_ids_cover_a_checkpoint_that_lags(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A crash between a flush and the checkpoint write leaves the checkpoint behind the
    database: the chunks re-read after it carry the same batch ids and are not applied again."""
    rows = make_rows(2000, 9)
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(rows))
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    args = ["import", "--config", str(cfg), str(path), "--chunk-size", "8KB", "--json"]
    assert run(*args) == 0
    capsys.readouterr()
    ck = tmp_path / "db" / NAME
    state = json.loads(ck.read_text())
    entry = state["files"][str(path.resolve())]
    bounds = list(file_boundaries(path, 0, path.stat().st_size, entry["chunk"]))
    _, end = bounds[len(bounds) // 3]  # back to the end of a chunk a third of the way in
    data = path.read_bytes()
    import zlib

    edge = data[max(0, end - EDGE):end]
    entry.update(offset=end, line=data[:end].count(b"\n"), complete=False,
                 edge=f"{zlib.crc32(edge):08x}:{len(edge)}")
    ck.write_text(json.dumps(state))
    assert run(*args) == 0
    s = summary(capsys)
    assert s["imported"] == 0 and s["skipped"]["already imported"] > 0
    assert dump(cfg) == dump(reference(tmp_path, rows))


def test_a_changed_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = make_rows(1000, 10)
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(rows))
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    assert run("import", "--config", str(cfg), str(path), "-q") == 0
    path.write_bytes(jsonl(make_rows(1000, 11)))
    assert run("import", "--config", str(cfg), str(path), "-q") == 1
    assert "first bytes differ" in capsys.readouterr().err


def test_summary_and_retention(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = [{"at": 1_000_000_000, "visits": 1}] * 3
    (tmp_path / "in.jsonl").write_bytes(jsonl(old + make_rows(10, 12)) + b"junk\n")
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db", retention_days=3650)
    assert run("import", "--config", str(cfg), str(tmp_path / "in.jsonl")) == 0
    out = capsys.readouterr().out
    assert out.startswith("imported 10 rows from 1 files (14 records, 1 chunks)")
    assert "skipped: 1 bad line, 3 outside retention" in out
    assert "retention_days = 3650" in out


def test_a_running_server_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    (tmp_path / "in.jsonl").write_bytes(jsonl(make_rows(10, 13)))
    with DB(load_config(cfg)):
        assert run("import", "--config", str(cfg), str(tmp_path / "in.jsonl")) == 1
    assert "in use" in capsys.readouterr().err


@pytest.mark.parametrize(("mapping", "message"), [
    ('[columns]\nx = "nope"\n', "not a column"),
    ('[columns]\nx = "at"\n', "the timestamp column"),
    ('[columns]\nx = "name"\ny = "name"\n', "filled from two fields"),
    ('[constants]\nage = 300\n', "out of range for uint8"),
    ('[constants]\nname = 3\n', "string column"),
    ('[timestamp]\nformat = "unix_us"\n', "timestamp.format"),
    ('unknown = "maybe"\n', "unknown: expected"),
    ('colums = {}\n', "unknown key 'colums'"),
])
def test_bad_mappings(tmp_path: Path, mapping: str, message: str,
                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.toml").write_text(mapping)
    (tmp_path / "in.jsonl").write_bytes(b"")
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    assert run("import", "--config", str(cfg), "--mapping", str(tmp_path / "m.toml"),
               str(tmp_path / "in.jsonl")) == 1
    assert message in capsys.readouterr().err


def test_csv_bad_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = ("at,name,visits,clicks\n"
            "1700000000,a,1,2\n"
            "1700000000,b,1\n"  # too few fields
            "1700000000,c,x,2\n"  # not a number
            "\n"  # blank: skipped silently
            "1700000000,d,300,2\n"  # out of range for uint8
            "1700000001,e,2,3\n")
    (tmp_path / "in.csv").write_text(text)
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    assert run("import", "--config", str(cfg), str(tmp_path / "in.csv"), "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["skipped"]["bad line"] == 3
    name = tmp_path / "in.csv"
    assert f"{name}:3: expected 4 fields" in err
    assert f"{name}:4: field 'visits': 'x' is not an integer" in err
    assert f"{name}:6: field 'visits': 300 is out of range for uint8" in err
    assert dump(cfg) == dump(reference(tmp_path, [
        {"at": 1700000000, "name": "a", "visits": 1, "clicks": 2},
        {"at": 1700000001, "name": "e", "visits": 2, "clicks": 3}]))


def test_unknown_fields_under_unknown_error(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.toml").write_text('unknown = "error"\n')
    (tmp_path / "in.jsonl").write_bytes(b'{"at": 1700000000, "visits": 1}\n'
                                        b'{"at": 1700000000, "visits": 1, "vists": 2}\n')
    (tmp_path / "in.csv").write_text("at,visits,vists\n1700000000,1,2\n")
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    args = ["import", "--config", str(cfg), "--mapping", str(tmp_path / "m.toml"), "--json"]
    assert run(*args, str(tmp_path / "in.jsonl")) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["skipped"]["bad line"] == 1
    assert f"{tmp_path / 'in.jsonl'}:2: " in err and "unknown field `vists`" in err
    assert run(*args, str(tmp_path / "in.csv")) == 1
    assert "in.csv:1: unknown field 'vists'" in capsys.readouterr().err


def test_a_corrupt_compressed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = gzip.compress(jsonl(make_rows(2000, 14)))
    (tmp_path / "in.jsonl.gz").write_bytes(good[: len(good) // 2])
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    assert run("import", "--config", str(cfg), str(tmp_path / "in.jsonl.gz")) == 1
    assert "in.jsonl.gz: cannot decompress" in capsys.readouterr().err


def test_progress_on_a_terminal_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in.jsonl").write_bytes(jsonl(make_rows(500, 15)))
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    assert run("import", "--config", str(cfg), str(tmp_path / "in.jsonl")) == 0
    assert capsys.readouterr().err == ""  # stderr is not a terminal: no progress display

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    (tmp_path / "more.jsonl").write_bytes(jsonl(make_rows(500, 16)))
    assert run("import", "--config", str(cfg), str(tmp_path / "more.jsonl")) == 0
    assert "rows/s" in term.getvalue() and "import" in term.getvalue()


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"x")), max_size=60),
       st.integers(1, 300), st.booleans(), st.data())
@settings(max_examples=60, deadline=None)
def test_chunk_boundaries_are_the_same_for_files_and_streams_from_any_boundary(
        tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], size: int,
        trailing: bool, data: st.DataObject) -> None:
    """The chunking rule behind the batch ids: a plain file cut by the main process and the
    same bytes streamed (gzip) give the same chunks, also when started at any chunk boundary
    (a resumed import), and every chunk but the last ends with a newline."""
    content = b"\n".join(lines) + (b"\n" if trailing and lines else b"")
    path = tmp_path_factory.mktemp("chunks") / "in.jsonl.gz"
    path.with_suffix("").write_bytes(content)
    path.write_bytes(gzip.compress(content))
    plain = list(file_boundaries(path.with_suffix(""), 0, len(content), size))
    assert b"".join(content[s:e] for s, e in plain) == content
    assert all(content[e - 1:e] == b"\n" for _, e in plain[:-1])
    src = Source("in", path, "jsonl", "gzip", path.stat().st_size)
    cursor = Cursor(Stream(src))
    assert [(s, s + len(d)) for s, d in cursor.chunks(size)] == plain
    cursor.stream.close()
    if plain:
        start = data.draw(st.sampled_from([s for s, _ in plain]))
        again = Cursor(Stream(src))
        again.skip_to(start)
        assert [(s, s + len(d)) for s, d in again.chunks(size)] == [
            b for b in plain if b[0] >= start]
        again.stream.close()
        assert list(file_boundaries(path.with_suffix(""), start, len(content), size)) == [
            b for b in plain if b[0] >= start]


@pytest.mark.parametrize("parallelism", ["1", "2"])
def test_csv_fractional_times_and_blank_lines(tmp_path: Path, parallelism: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Whole Unix times are read as integers first: a chunk with a fraction (or a file of
    them) is read again as floats, and blank lines are skipped whether or not a column has
    nulls."""
    lines = ["at,name,visits"]
    want = []
    for i in range(400):
        frac = i % 7 == 0 and i >= 200  # the second half of the file has fractions
        at = T0 + i
        lines.append(f"{at}.75,n{i % 3},{i % 5}" if frac else f"{at},n{i % 3},{i % 5}")
        want.append({"at": at, "name": f"n{i % 3}", "visits": i % 5})
        if i % 50 == 0:
            lines.append("" if i % 100 else "\r")  # blank lines (one of them \r\n)
    (tmp_path / "in.csv").write_bytes(("\n".join(lines) + "\n").encode())
    cfg = write_config(tmp_path / "c.toml", tmp_path / "db")
    assert run("import", "--config", str(cfg), str(tmp_path / "in.csv"), "--chunk-size",
               "2KB", "--parallelism", parallelism, "--json") == 0
    assert summary(capsys)["imported"] == 400
    assert dump(cfg) == dump(reference(tmp_path, want))
