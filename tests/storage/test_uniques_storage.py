"""The `uniques` metric kind in storage (issue #14, docs/storage.md §3): validation and hashing
of identities, the batch wire, roll-up, the write-ahead log, segments, restart, tiers compaction
— each compared with the reference's sets of identity hashes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gumshoe import native, rowdecoder, wire
from gumshoe.batch import parse_rows
from gumshoe.block import rollup
from gumshoe.collect.values import text_batch
from gumshoe.config import parse_config
from gumshoe.db import DB
from gumshoe.errors import ConfigError, InsertError
from gumshoe.rowdecoder import decoder_for
from gumshoe.schema import Schema, describe
from gumshoe.sketch import SPARSE_MAX
from tests import reference
from tests.storage.contents import (
    block_rows,
    check_structure,
    encode,
    make_config,
    snapshot_table,
)
from tests.storage.test_tiers import D, H, M, NOW, durations

METS = (("visits", "uint8"), ("who", "uniques"), ("low", "min:int16"))
T0 = 1_700_000_000 - 1_700_000_000 % 86400


def schema_of(mets: Any = METS) -> Schema:
    return Schema.from_config(make_config("MEMORY", mets=mets).schema)


def raw_rows(n: int, seed: int = 0, span: int = 5 * 3600, ids: int = 40) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        r: dict[str, Any] = {"at": T0 + int(rng.integers(0, span)),
                             "name": ["a", "b", "c"][int(rng.integers(0, 3))],
                             "visits": int(rng.integers(0, 5)), "low": int(rng.integers(-9, 9))}
        pick = int(rng.integers(0, 6))
        who = int(rng.integers(0, ids))
        if pick == 0:
            pass  # missing: no identity
        elif pick == 1:
            r["who"] = None
        elif pick == 2:
            r["who"] = str(who)  # the same identity as the integer
        else:
            r["who"] = who if pick == 3 else f"u{who}"
        rows.append(r)
    return rows


def test_the_uniques_type_in_the_schema() -> None:
    schema = schema_of()
    assert [m.name for m in schema.metrics] == ["visits", "low"]
    assert [u.name for u in schema.uniques] == ["who"]
    assert schema.column("who") is not None and schema.column("who").kind.name == "uniques"
    assert Schema.from_json(schema.to_json()) == schema
    with pytest.raises(ConfigError, match="uniques"):
        schema_of((("who", "uniques:uint8"),))
    only = schema_of((("who", "uniques"),))  # a schema may count distincts only
    assert only.metrics == () and len(only.uniques) == 1
    cfg = make_config("MEMORY", mets=METS)
    metrics = describe(cfg)["metrics"]
    assert metrics[1] == {"name": "who", "type": "uniques", "kind": "uniques",
                          "aggregates": ["uniques"]}
    assert "uniques" in describe(cfg)["aggregateTypes"]


def test_identities_are_hashed_once_at_validation() -> None:
    schema = schema_of()
    rows = [{"at": T0, "who": "x"}, {"at": T0, "who": 5}, {"at": T0, "who": "5"},
            {"at": T0, "who": None}, {"at": T0}, {"at": T0, "who": "日本"}]
    batch = parse_rows(schema, rows)
    hashes, present = batch.identities["who"]
    assert present.tolist() == [True, True, True, False, False, True]
    assert hashes[1] == hashes[2] and hashes[0] != hashes[1]
    assert [int(h) if p else None for h, p in zip(hashes, present)] == \
        [reference.identity_hash(r.get("who")) for r in rows]
    # the router's batch wire carries them, and so does a batch taken apart
    back = wire.decode_batch(schema, wire.encode_batch(batch))
    assert np.array_equal(back.identities["who"][0], hashes)
    assert np.array_equal(back.identities["who"][1], present)
    part = batch.take(np.array([5, 1]))
    assert part.identities["who"][0].tolist() == [hashes[5], hashes[1]]
    # CSV / NDJSON text: an identity is its text, empty is none
    text = text_batch(schema, {"at": [str(T0)] * 3, "who": ["5", "", "x"]}, 3, T0,
                      lambda row, col: f"line {row}")  # type: ignore[arg-type,return-value]
    t_hashes, t_present = text.identities["who"]
    assert t_present.tolist() == [True, False, True]
    assert t_hashes[0] == hashes[1] and t_hashes[2] == hashes[0]


@pytest.mark.parametrize("scan", [True, False], ids=["c-scanner", "msgspec"])
@pytest.mark.parametrize("body", [
    [{"at": T0, "who": "x"}, {"at": T0, "who": 5}, {"at": T0, "who": "5"}, {"at": T0}],
    [{"at": T0, "who": None}, {"at": T0, "who": "日本", "visits": 2}, {"at": T0, "who": -7}],
    [{"at": T0, "who": 2**64 + 1}],  # beyond 64 bits: msgspec declines, the scanner's text
    [{"at": T0, "who": 1.5}], [{"at": T0, "who": True}], [{"at": T0, "who": [1]}],
])
def test_the_fast_paths_hash_as_the_validator(scan: bool, body: list[dict[str, Any]]) -> None:
    """rowdecoder's C scanner and msgspec path take uniques identities or decline: never
    another answer than batch.parse_rows (which names a bad row)."""
    schema = schema_of()
    raw = json.dumps(body, ensure_ascii=False).encode()
    old, rowdecoder.use_scan = rowdecoder.use_scan, scan
    try:
        got = decoder_for(schema).decode(raw)
        scanned = decoder_for(schema).scan(raw)
    finally:
        rowdecoder.use_scan = old
    try:
        want = parse_rows(schema, body)
    except InsertError:
        assert got is None and scanned is None
        return
    if scan and native.jsonl is not None:
        assert scanned is not None  # plain bodies: the scanner takes identities
    if got is None:
        assert not scan and any(isinstance(r.get("who"), int) and abs(r["who"]) >= 2**63
                                for r in body)
        return
    for a, b in zip(got.identities["who"], want.identities["who"]):
        assert np.array_equal(a, b)
    assert np.array_equal(got.metrics["visits"], want.metrics["visits"])


def test_the_scanner_reads_an_integer_identity_as_its_text() -> None:
    """5 and "5" are one identity; -0 (which is 0) is declined to msgspec, which agrees."""
    schema = schema_of()
    body = b'[{"at": %d, "who": 0}, {"at": %d, "who": "0"}, {"at": %d, "who": -0}]' % (
        T0, T0, T0)
    got = decoder_for(schema).decode(body)
    assert got is not None and len(set(got.identities["who"][0].tolist())) == 1
    if native.jsonl is not None:
        assert decoder_for(schema).scan(body) is None  # (the -0)
        one = decoder_for(schema).scan(body.replace(b"-0", b"7"))
        assert one is not None
        assert one.identities["who"][0][0] == one.identities["who"][0][1]


def test_a_duplicate_identity_key_is_declined_to_the_validator() -> None:
    schema = schema_of()
    body = b'[{"at": %d, "who": "a", "who": "b"}]' % T0
    assert decoder_for(schema).decode(body) is None


@pytest.mark.parametrize("value, got", [(1.5, "a number"), (True, "a boolean"),
                                        ([1], "an array"), ({"a": 1}, "an object")])
def test_a_bad_identity_names_the_row(value: Any, got: str) -> None:
    schema = schema_of()
    rows = [{"at": T0, "who": "x"}, {"at": T0, "who": value}]
    with pytest.raises(InsertError, match=rf"rows\[1\]\.who: expected a string or an integer "
                                          rf"identity \(uniques\), got {got}"):
        parse_rows(schema, rows)


def test_a_bad_wire_batch_is_refused() -> None:
    schema = schema_of()
    batch = parse_rows(schema, [{"at": T0, "who": "x"}])
    batch.identities.clear()
    with pytest.raises(InsertError, match="ids must name exactly"):
        wire.decode_batch(schema, wire.encode_batch(batch))


def test_rollup_unites_the_sketches() -> None:
    schema = schema_of()
    raw = raw_rows(500)
    block, starts = encode(schema, raw)
    rolled = rollup(schema, [block])
    assert len(rolled.sketches["who"]) == rolled.n and len(starts) == len(raw)
    dictionaries: dict[str, Any] = {}
    block, _ = encode(schema, raw, dictionaries)
    strings = {k: d.values for k, d in dictionaries.items()}
    whole = reference.rollup(schema, [{**r, "at": T0} for r in raw])
    got = {(T0, key): entry for key, entry in block_rows(schema, rollup(schema, [block]), strings)}
    assert got == whole


@pytest.mark.parametrize("where", ["memory", "disk"])
def test_insert_flush_restart_and_replay(where: str, tmp_path: Path) -> None:
    cfg = make_config("MEMORY" if where == "memory" else tmp_path / "db", mets=METS,
                      segment_size=400)
    raw = raw_rows(900)
    db = DB(cfg)
    inserted = raw[:400]

    def check() -> None:
        snap = db.snapshot()
        check_structure(snap)
        assert snapshot_table(snap) == reference.rollup(db.schema, inserted)

    db.insert(raw[:400])
    check()
    db.flush()
    check()
    db.insert(raw[400:])
    inserted = raw
    check()
    if where == "memory":
        db.close()
        return
    db.close(flush=False)  # the last rows only in the write-ahead log
    db = DB(cfg)
    check()
    db.flush()
    db.close()
    db = DB(cfg)
    check()
    db.close()


def test_a_dense_sketch_survives_flush_and_restart(tmp_path: Path) -> None:
    """More distinct identities than SPARSE_MAX in one rolled-up row: HLL registers, stored
    and read back as they were."""
    cfg = make_config(tmp_path / "db", mets=METS)
    n = SPARSE_MAX + 500
    raw = [{"at": T0, "name": "a", "who": f"id{i}"} for i in range(n)]
    db = DB(cfg)
    db.insert(raw)
    db.flush()
    (block,) = db.snapshot().intervals[0].blocks
    col = block.sketches["who"]
    assert len(col.dense_rows) == 1
    est, exact = col.estimate()
    assert not exact[0] and abs(est[0] - n) < 0.05 * n
    db.close()
    db = DB(cfg)
    (again,) = db.snapshot().intervals[0].blocks
    assert again.sketches["who"] == col
    db.close()


def tier_config(directory: Path) -> str:
    return f"""database_dir = "{directory}"
durability = "none"
[schema]
segment_size = "4KB"
timestamp_column = ["at", "uint32"]
dimension_columns = [["name", "string:uint8"]]
metric_columns = [["visits", "uint8"], ["who", "uniques"], ["low", "min:int16"]]
tiers = [["1m", "1h"], ["1h", "1d"], ["1d", "30d"]]
"""


def test_tiers_compaction_re_rolls_the_sketches(tmp_path: Path) -> None:
    now = [NOW]
    cfg = parse_config(tier_config(tmp_path / "db"))
    rng = np.random.default_rng(3)
    raw = [{**r, "at": int(NOW - rng.integers(0, 5 * D))} for r in raw_rows(2000, seed=3)]
    db = DB(cfg, clock=lambda: now[0])
    db.insert(raw)
    db.flush()
    assert durations(db) == {M: len(db.intervals)}

    def check() -> None:
        starts = db.interval_starts(np.array([r["at"] for r in raw], np.int64))
        want = reference.rollup(db.schema, [{**r, "at": int(s)} for r, s in zip(raw, starts)])
        snap = db.snapshot()
        check_structure(snap)
        assert snapshot_table(snap) == want

    check()
    assert db.compact(max_rows=400) > 1
    assert set(durations(db)) == {M, H, D}
    check()
    db.close()
    db = DB(cfg, clock=lambda: now[0])
    check()
    db.close()
