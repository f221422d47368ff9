"""Test helpers: decode Blocks and DB snapshots into the reference model's plain-Python form."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from gumshoe.batch import parse_rows
from gumshoe.block import Block
from gumshoe.config import Config, SchemaConfig, parse_config
from gumshoe.db import DB
from gumshoe.layout import META
from gumshoe.dictionary import Dictionary
from gumshoe.schema import Schema
from gumshoe.sketch import SketchColumn
from gumshoe.snapshot import Snapshot
from tests import reference
from tests.reference import Table

Row = tuple[tuple[Any, ...], dict[str, Any]]  # (dimension values, {"count", metrics})


def block_rows(schema: Schema, block: Block, strings: Mapping[str, Sequence[str]]) -> list[Row]:
    """The rows of a block as Python values: string codes decoded, nil as None."""
    assert len(block.count) == block.n
    cols = []
    for d in schema.dimensions:
        values = block.dims[d.name]
        assert values.dtype == d.dtype and len(values) == block.n
        nil = block.nils[d.name]
        nil_list = [False] * block.n if nil is None else nil.tolist()
        if d.is_string:
            table = strings[d.name]
            decoded = [None if n else table[c] for c, n in zip(values.tolist(), nil_list)]
        else:
            decoded = [None if n else v for v, n in zip(values.tolist(), nil_list)]
        cols.append(decoded)
    out = []
    counts = block.count.tolist()
    metrics = {m.name: block.metrics[m.name].tolist() for m in schema.metrics}
    for m in schema.metrics:  # segments store integer sums in the narrowest type that fits
        dt = block.metrics[m.name].dtype
        assert dt.kind == m.store_dtype.kind and dt.itemsize <= m.store_dtype.itemsize
        missing = m.kind.missing(block.metrics[m.name].astype(m.store_dtype))
        if missing is not None:  # a min/max without a value: None, as in the reference
            metrics[m.name] = [None if x else v for v, x in zip(metrics[m.name],
                                                                 missing.tolist())]
    for u in schema.uniques:  # the set of identity hashes of each (sparse) sketch
        col = block.sketches[u.name]
        assert len(col) == block.n and not len(col.dense_rows)
        off = col.offsets().tolist()
        hashes = col.hashes.tolist()
        metrics[u.name] = [frozenset(hashes[off[i]:off[i + 1]]) for i in range(block.n)]
    for i in range(block.n):
        key = tuple(c[i] for c in cols)
        out.append((key, {"count": counts[i], **{k: v[i] for k, v in metrics.items()}}))
    return out


def add_row(table: Table, key: Any, entry: dict[str, Any], schema: Schema | None = None
            ) -> None:
    """Add a rolled-up row to `table` (metrics combined by their kind when `schema` is given,
    else added)."""
    acc = table.get(key)
    if acc is None:
        table[key] = dict(entry)
        return
    acc["count"] += entry["count"]
    for k, v in entry.items():
        if k == "count":
            continue
        col = None if schema is None else schema.column(k)
        acc[k] = acc[k] + v if col is None else reference.combine(col, acc[k], v)


def snapshot_table(snap: Snapshot) -> Table:
    """Everything a snapshot holds (flushed segments and unflushed rows), rolled up."""
    strings = {d.name: snap.strings(d.name) for d in snap.schema.string_dimensions}
    table: Table = {}
    for iv in snap.intervals:
        for block in iv.blocks:
            for key, entry in block_rows(snap.schema, block, strings):
                add_row(table, (iv.start, key), entry, snap.schema)
    return table


def encode(schema: Schema, raw: list[dict[str, Any]],
           dictionaries: dict[str, Dictionary] | None = None) -> tuple[Block, np.ndarray]:
    """Parse and dictionary-encode raw rows into one Block (count 1 each) and their interval
    starts, extending `dictionaries` (created when None) with the new strings."""
    if dictionaries is None:
        dictionaries = {}
    batch = parse_rows(schema, raw)
    dims = {}
    for d in schema.dimensions:
        if d.is_string:
            dic = dictionaries.setdefault(d.name, Dictionary())
            codes, new = dic.encode(batch.dims[d.name], batch.nils[d.name], d)
            dic.extend(new)
            dims[d.name] = codes
        else:
            dims[d.name] = batch.dims[d.name]
    sketches = {}
    for u in schema.uniques:
        hashes, present = batch.identities[u.name]
        rows = np.flatnonzero(present)
        sketches[u.name] = SketchColumn.from_identities(rows, hashes[rows], batch.n)
    block = Block(batch.n, np.ones(batch.n, np.int64), dims, dict(batch.nils),
                  dict(batch.metrics), sketches)
    return block, schema.interval_start(batch.timestamps)


def strings_of(dictionaries: Mapping[str, Dictionary]) -> dict[str, list[str]]:
    return {name: d.values for name, d in dictionaries.items()}


def make_config(database_dir: str | Any, dims: Any = (("name", "string:uint16"),),
                mets: Any = (("visits", "uint8"),), *, schema: SchemaConfig | None = None,
                segment_size: int = 10**6, interval: int = 3600, **changes: Any) -> Config:
    """A Config for tests: no retention and durability "os" (the log is written, never
    fsync'd) unless `changes` say otherwise."""
    if schema is None:
        schema = SchemaConfig(segment_size, interval, ("at", "uint32"), tuple(dims),
                              tuple(mets), str(segment_size))
    base = parse_config("")
    return base.replace(database_dir=str(database_dir), schema=schema,
                        **{"retention_days": 0, "durability": "os", **changes})


def seg_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.suffix == ".seg")


def dict_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith("dictionary."))


def check_files(db: DB) -> None:
    """On disk: exactly the files db.json references (segments and dictionaries)."""
    assert db.dir is not None
    meta = json.loads((db.dir / META).read_bytes())
    listed = {s["file"] for iv in meta["intervals"] for s in iv["segments"]}
    listed |= {e["file"] for e in meta["dictionaries"].values()}
    assert set(seg_files(db.dir)) | set(dict_files(db.dir)) == listed
    assert not list(db.dir.glob("*.tmp"))


def _key(schema: Schema, block: Block, i: int) -> tuple[Any, ...]:
    out = []
    for d in schema.dimensions:
        nil = block.nils[d.name]
        is_nil = nil is not None and bool(nil[i])
        out.append((not is_nil, 0 if is_nil else block.dims[d.name][i].item()))
    return tuple(out)


def check_structure(snap: Snapshot) -> None:
    """Storage invariants of a snapshot: aligned ascending intervals; segments of at most
    rows_per_segment rows or segment_size bytes of columns; flushed keys unique and in key order across each run's
    segments; counts >= 1; nil cells hold 0; codes inside the snapshot's dictionaries."""
    schema = snap.schema
    starts = [iv.start for iv in snap.intervals]
    assert starts == sorted(set(starts))
    assert all(s % schema.interval_duration == 0 for s in starts)
    for name, d in snap.dictionaries.items():
        assert len(set(d.values[:snap.dict_sizes[name]])) == snap.dict_sizes[name]
    for iv in snap.intervals:
        assert iv.blocks, "an interval without rows"
        runs = iv.interval.run_segments() if iv.interval is not None else [iv.segments]
        assert sum(map(len, runs)) == len(iv.segments) and iv.runs == len(runs) or not runs[0]
        for segments in runs:
            keys = []
            for seg in segments:
                assert seg.rows >= 1
                data = seg.block.count.nbytes + sum(
                    a.nbytes for a in seg.block.metrics.values()) + sum(
                    a.nbytes + (0 if nil is None else nil.nbytes) for a, nil in
                    zip(seg.block.dims.values(), seg.block.nils.values()))
                assert seg.rows <= schema.rows_per_segment or data <= schema.segment_size
                keys += [_key(schema, seg.block, i) for i in range(seg.rows)]
            assert keys == sorted(set(keys)), "a run's keys repeat or are out of order"
        for block in iv.blocks:
            if block.n:
                assert int(block.count.min()) >= 1
            for d in schema.dimensions:
                nil = block.nils[d.name]
                values = block.dims[d.name]
                if nil is not None:
                    assert not values[nil].any(), f"nil cells of {d.name} are not 0"
                if d.is_string and block.n:
                    assert int(values.max()) < max(1, snap.dict_sizes[d.name])


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """How a test loads rows as several runs (docs/storage.md section 6): cut into `cuts`
    flushed pieces (a flush each; the last piece stays unflushed when `tail`), `merges[i]`:
    merge after the i-th flush (None: no, 0.0: every past interval to one run, inf: only
    size-tiered), with the DB's `fanout` and `max_runs` (1: every flush rewrites the interval
    whole, as before runs)."""

    cuts: tuple[int, ...]
    merges: tuple[float | None, ...]
    fanout: int = 2
    max_runs: int = 24
    tail: bool = False


@st.composite
def run_plans(draw: st.DrawFn, n: int) -> RunPlan:
    """A RunPlan for `n` rows."""
    k = draw(st.integers(1, 6))
    cuts = tuple(sorted(draw(st.lists(st.integers(0, n), min_size=k, max_size=k))))
    merges = tuple(draw(st.lists(st.sampled_from([None, None, 0.0, math.inf]),
                                 min_size=k, max_size=k)))
    return RunPlan(cuts, merges, draw(st.sampled_from([2, 3, 8])),
                   draw(st.sampled_from([1, 2, 3, 24])), draw(st.booleans()))


def load_in_runs(db: DB, data: list[dict[str, Any]], plan: RunPlan) -> None:
    """Insert `data` as `plan` says: a flush per piece (a new run for each interval it
    touches), merges in between."""
    db.fanout, db.max_runs = plan.fanout, plan.max_runs
    lo = 0
    for cut, merge in zip(plan.cuts, plan.merges):
        db.insert(data[lo:cut])
        db.flush()
        if merge is not None:
            db.merge(settle=merge)
        lo = cut
    db.insert(data[lo:])
    if not plan.tail:
        db.flush()
