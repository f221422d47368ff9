"""memtable.py and interval.py: routing rows to intervals, compaction, segment building."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gumshoe.block import rollup
from gumshoe.config import SchemaConfig
from gumshoe.dictionary import Dictionary
from gumshoe.interval import build_interval, open_interval, rows_per_segment
from gumshoe.layout import segment_filename
from gumshoe.memtable import Memtable
from gumshoe.schema import Schema
from tests import reference
from tests.storage.contents import add_row, block_rows, encode, strings_of

SCHEMA = Schema.from_config(SchemaConfig(100, 60, ("at", "uint32"),
                                         (("s", "string:uint8"), ("n", "int8")),
                                         (("m", "uint32"),)))  # 20-byte rows: 5 per segment


def raw_rows(k: int, spread: int = 5) -> list[dict[str, Any]]:
    return [{"at": (i * 37) % (spread * 60), "s": "abc"[i % 3] if i % 4 else None,
             "n": i % 5 - 2, "m": i} for i in range(k)]


def memtable_table(mt: Memtable, strings: dict[str, list[str]]) -> reference.Table:
    table: reference.Table = {}
    for start, blocks in mt.view().items():
        for b in blocks:
            for key, entry in block_rows(SCHEMA, b, strings):
                add_row(table, (start, key), entry)
    return table


def test_rows_go_to_their_intervals() -> None:
    dictionaries: dict[str, Dictionary] = {}
    raw = raw_rows(40)
    block, starts = encode(SCHEMA, raw, dictionaries)
    mt = Memtable(SCHEMA)
    mt.add(starts, block)
    assert sorted(mt.intervals) == [0, 60, 120, 180, 240] and len(mt) == 5
    assert mt.rows == 40
    assert memtable_table(mt, strings_of(dictionaries)) == reference.rollup(SCHEMA, raw)


def test_one_interval_batch_is_kept_whole() -> None:
    block, starts = encode(SCHEMA, raw_rows(10, spread=1))
    mt = Memtable(SCHEMA)
    mt.add(starts, block)
    assert mt.view()[0] == (block,)  # no copy for the common case


def test_empty_add() -> None:
    block, starts = encode(SCHEMA, [])
    mt = Memtable(SCHEMA)
    mt.add(starts, block)
    assert mt.view() == {} and mt.rows == 0


def test_compaction_rolls_chunks_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gumshoe.memtable._MIN_COMPACT_ROWS", 8)
    dictionaries: dict[str, Dictionary] = {}
    mt = Memtable(SCHEMA)
    raw: list[dict[str, Any]] = []
    views = []
    for i in range(12):
        batch = raw_rows(5, spread=1)
        raw += batch
        mt.add(*reversed(encode(SCHEMA, batch, dictionaries)))
        views.append(mt.view())
        assert memtable_table(mt, strings_of(dictionaries)) == reference.rollup(SCHEMA, raw)
    mi = mt.intervals[0]
    assert mi.rolled is not None and len(mi.view()) <= 3
    assert mi.compact() is mi.rolled and mi.chunks == [] and len(mi.view()) == 1
    assert mi.compact() is mi.rolled  # nothing new: no work
    # views taken earlier are unchanged by later compactions
    strings = strings_of(dictionaries)
    first: reference.Table = {}
    for b in views[0][0]:
        for key, entry in block_rows(SCHEMA, b, strings):
            add_row(first, (0, key), entry)
    assert first == reference.rollup(SCHEMA, raw[:5])


def test_segment_filename() -> None:
    assert segment_filename(3600, 2, 11) == "interval.3600.generation0002.segment0011.seg"
    assert segment_filename(0, 12345, 0) == "interval.0.generation12345.segment0000.seg"


@pytest.mark.parametrize("directory", [None, "disk"])
def test_build_interval_cuts_segments(tmp_path: Path, directory: str | None) -> None:
    dictionaries: dict[str, Dictionary] = {}
    raw = [{"at": 0, "s": s, "n": n, "m": 1} for s in ("a", "b", None) for n in (1, 2, None)]
    block = rollup(SCHEMA, [encode(SCHEMA, raw, dictionaries)[0]])
    d = tmp_path if directory else None
    iv = build_interval(SCHEMA, 0, 3, block, d, fsync=False)
    # in memory at full width (5 rows per segment); on disk as narrow as the values allow
    per = rows_per_segment(SCHEMA, block, d is not None)
    assert (per == 5) if d is None else (per > 5)
    sizes = [min(per, 9 - lo) for lo in range(0, 9, per)]
    assert [s.rows for s in iv.segments] == sizes and iv.rows == 9
    assert iv.filenames() == [segment_filename(0, 3, i) for i in range(len(sizes))]
    # the duration is written only when it is not the schema's (a re-rolled tier's)
    assert iv.duration == SCHEMA.interval_duration
    assert iv.meta().to_json(SCHEMA.interval_duration) == {"start": 0, "generation": 3,
                                                           "segments": [
        {"file": f, "rows": r} for f, r in zip(iv.filenames(), sizes)]}
    assert iv.meta().to_json()["duration"] == SCHEMA.interval_duration
    strings = strings_of(dictionaries)
    rows_back = [r for b in iv.blocks for r in block_rows(SCHEMA, b, strings)]
    assert rows_back == block_rows(SCHEMA, block, strings)
    if d is not None:
        assert sorted(p.name for p in d.iterdir()) == iv.filenames()
        again = open_interval(SCHEMA, d, iv.meta(), verify=True)
        assert again.start == 0 and again.generation == 3
        assert [r for b in again.blocks for r in block_rows(SCHEMA, b, strings)] == rows_back
        assert again.nbytes == sum(p.stat().st_size for p in d.iterdir())
    else:
        assert iv.nbytes == SCHEMA.row_bytes * 9


def test_nil_masks_per_segment() -> None:
    """A segment whose rows are all non-nil stores no mask, even if the block had one."""
    raw = [{"at": 0, "n": 0}] + [{"at": 0, "s": s, "n": 1} for s in "abcde"]
    block = rollup(SCHEMA, [encode(SCHEMA, raw)[0]])
    iv = build_interval(SCHEMA, 0, 0, block, None)
    assert [s.rows for s in iv.segments] == [5, 1]
    assert np.asarray(iv.segments[0].block.nils["s"]).tolist() == [True] + [False] * 4
    assert iv.segments[1].block.nils["s"] is None
    assert iv.segments[0].block.nils["n"] is None
