"""gumtool over databases with a `uniques` metric: merge and balance move the sketches with
their rows (the shards merged equal one server), stats reads such a database."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from typing import Any

import pytest

from gumshoe.config import load_config
from gumshoe.schema import Schema

from ..http.harness import ServerProcess
from .helpers import (
    METRICS,
    answers,
    build_db,
    make_rows,
    router_answer,
    run,
    shard_rows,
    write_config,
)

UMETRICS = [*METRICS, ["who", "uniques"]]
UAGG = {"type": "uniques", "column": "who", "name": "who"}
QUERIES: list[dict[str, Any]] = [
    {"aggregates": [UAGG, {"column": "visits"}]},
    {"aggregates": [UAGG], "groupings": ["country"]},
    {"aggregates": [UAGG], "groupings": [{"column": "at", "timeTransform": "hour"}, "name"]},
]


def rows_with_identities(n: int, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for r in make_rows(n, seed):
        pick = rnd.random()
        if pick < 0.8:
            r = {**r, "who": rnd.choice([rnd.randrange(200), f"u{rnd.randrange(200)}"])}
        elif pick < 0.9:
            r = {**r, "who": None}
        out.append(r)
    return out


def config(path: Path, db: Path, **kw: Any) -> Path:
    return write_config(path, db, metrics=UMETRICS, **kw)


def make_shards(tmp_path: Path, n: int) -> tuple[Path, list[Path], list[str]]:
    lone = config(tmp_path / "lone.toml", tmp_path / "lone")
    schema = Schema.from_config(load_config(lone).schema)
    batches = [rows_with_identities(500, seed) for seed in range(3)]
    build_db(lone, batches[:2], unflushed=batches[2])
    cfgs, dirs = [], []
    for k in range(n):
        cfg = config(tmp_path / f"s{k}.toml", tmp_path / f"shard{k}", segment_size="2KB")
        parts = [shard_rows(schema, rows, n)[k] for rows in batches]
        build_db(cfg, parts[:2], unflushed=parts[2])
        cfgs.append(cfg)
        dirs.append(str(tmp_path / f"shard{k}"))
    return lone, cfgs, dirs


def test_merge_and_balance_keep_the_sketches(tmp_path: Path) -> None:
    lone, cfgs, dirs = make_shards(tmp_path, 3)
    expected = answers(lone, QUERIES)
    assert expected[0][0]["who"] > 100  # identities seen on several shards count once
    assert [router_answer(cfgs, q) for q in QUERIES] == expected
    merged = config(tmp_path / "merged.toml", tmp_path / "merged")
    assert run("merge", "--new-db-config", str(merged), "--db-paths", ",".join(dirs),
               "-q") == 0
    assert answers(merged, QUERIES) == expected
    two = [config(tmp_path / f"two{k}.toml", tmp_path / f"two{k}") for k in range(2)]
    assert run("balance", "--source-db-dirs", ",".join(dirs), "--dest-db-configs",
               ",".join(map(str, two)), "-q") == 0
    assert [router_answer(two, q) for q in QUERIES] == expected


def test_stats_reads_a_uniques_database(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path / "db.toml", tmp_path / "db")
    build_db(cfg, [rows_with_identities(300, 1)])
    assert run("stats", "--dir", str(tmp_path / "db"), "--json", "-q") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input_rows"] == 300 and out["rows"] > 0


def test_migrate_keeps_adds_and_refuses_uniques(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    old = config(tmp_path / "old.toml", tmp_path / "old")
    build_db(old, [rows_with_identities(400, 2)])
    expected = answers(old, QUERIES)
    new = write_config(tmp_path / "new.toml", tmp_path / "new",
                       metrics=[*UMETRICS, ["who2", "uniques"]], segment_size="2KB")
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config",
               str(new)) == 0
    assert "add metric who2 (uniques): no identity in every stored row" in \
        capsys.readouterr().err
    assert answers(new, QUERIES) == expected
    assert answers(new, [{"aggregates": [{"column": "who2"}]}])[0][0]["who2"] == 0
    bad = write_config(tmp_path / "bad.toml", tmp_path / "bad",
                       metrics=[*METRICS, ["who", "uint32"]])
    assert run("migrate", "--old-db-path", str(tmp_path / "old"), "--new-db-config",
               str(bad)) != 0
    assert "a uniques metric cannot become a sum metric" in capsys.readouterr().err


def _csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    w = csv.DictWriter(out, ["at", "name", "country", "age", "visits", "clicks", "who"],
                       extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue().encode()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_import_loads_identities_as_inserts_do(tmp_path: Path, fmt: str) -> None:
    """gumtool import rolls identities up into sketches in its workers: the imported database
    answers uniques (and everything else) as one built by inserting the same rows; 5 and "5"
    are one identity, a row without one counts none."""
    rows = rows_with_identities(3000, 4)
    rows += [{**rows[0], "who": 5}, {**rows[0], "who": "5"}, {**rows[1], "who": None}]
    if fmt == "csv":  # one line per row, and no empty dimension (CSV has no null)
        rows = [{**r, "name": (r.get("name") or "-").replace("\n", " "),
                 "country": r.get("country") or "-", "age": r.get("age", 0)} for r in rows]
    path = tmp_path / f"in.{fmt}"
    path.write_bytes(_csv(rows) if fmt == "csv" else
                     b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    lone = config(tmp_path / "lone.toml", tmp_path / "lone")
    build_db(lone, [rows if fmt == "jsonl" else  # (the CSV has no score column)
                    [{k: v for k, v in r.items() if k != "score"} for r in rows]])
    imported = config(tmp_path / "imp.toml", tmp_path / "imp")
    assert run("import", "--config", str(imported), str(path), "--chunk-size", "16KB",
               "--parallelism", "2", "-q") == 0
    assert answers(imported, QUERIES) == answers(lone, QUERIES)


def test_import_refuses_a_constant_identity(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.toml").write_text('[constants]\nwho = "everyone"\n')
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(rows_with_identities(1, 1)[0]) + "\n")
    cfg = config(tmp_path / "c.toml", tmp_path / "db")
    assert run("import", "--config", str(cfg), "--mapping", str(tmp_path / "m.toml"),
               str(path)) == 1
    assert "'who' is a uniques column; fill it from a field" in capsys.readouterr().err


def test_import_identities_into_a_server(tmp_path: Path) -> None:
    """--url sends the identities as read (JSON insert bodies); the server hashes them."""
    rows = rows_with_identities(2000, 6) + [{**make_rows(1, 1)[0], "who": w}
                                            for w in (7, "7", "", None)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    lone = config(tmp_path / "lone.toml", tmp_path / "lone")
    # (an empty identity is none for gumtool import; the JSON insert path would count it)
    build_db(lone, [[{**r, "who": None} if r.get("who") == "" else r for r in rows]])
    served = config(tmp_path / "srv.toml", tmp_path / "srv")
    proc = ServerProcess(served, tmp_path / "server.log").start()
    try:
        assert run("import", "--config", str(served), str(path), "--url", proc.url,
                   "--checkpoint", str(tmp_path / "ck.json"), "--chunk-size", "16KB",
                   "-q") == 0
        for q, want in zip(QUERIES, answers(lone, QUERIES)):
            r = proc.query(q)
            assert r.status_code == 200 and r.json()["results"] == want, q
    finally:
        assert proc.stop() == 0, proc.log_text()
        proc.client.close()
