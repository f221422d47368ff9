"""Property tests over random schemas and rows (nils, extremes, -0.0, many intervals, small
segments, unflushed rows): merge of shards equals one database, balance places every row on
its shard and loses nothing, migrate to wider types keeps every value."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gumshoe.bulk import StoredDB
from gumshoe.config import SchemaConfig, config_toml, load_config, parse_config
from gumshoe.db import DB
from gumshoe.schema import Schema
from gumshoe.sharding import shard_of
from gumshoe.service import query_rows

from ..strategies import rows, schema_configs
from .helpers import dump_query, run, shard_rows

WIDER = {"uint8": "uint16", "uint16": "uint32", "uint32": "uint64", "int8": "int16",
         "int16": "int32", "int32": "int64", "float32": "float64",
         "string:uint8": "string:uint16", "string:uint16": "string:uint32"}
SETTINGS = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def config_text(sc: SchemaConfig, db: Path) -> str:
    return config_toml(load_config().replace(database_dir=str(db), retention_days=0,
                                             durability="os", schema=sc))


def make(tmp: Path, name: str, sc: SchemaConfig, batches: list[list[dict[str, Any]]]) -> Path:
    """A config file, and its database built from `batches` (the last one left unflushed)."""
    cfg = tmp / f"{name}.toml"
    cfg.write_text(config_text(sc, tmp / name))
    if batches is not None:
        db = DB(parse_config(cfg.read_text()))
        for i, b in enumerate(batches):
            db.insert(b)
            if i < len(batches) - 1:
                db.flush()
        db.close(flush=False)
    return cfg


def contents(cfg: Path) -> list[dict[str, Any]]:
    with DB(parse_config(cfg.read_text())) as db:
        return query_rows(db, dump_query(db.schema))


def check_placement(schema: Schema, directory: Path, k: int, m: int) -> None:
    """Every stored row of shard k is where the router sends its key (sharding.shard_of)."""
    with StoredDB(directory) as db:
        for start in db.starts:
            for b in db.blocks(start):
                dims = {d.name: (db.strings(d.name)[np.where(b.nils[d.name], 0, b.dims[d.name])
                                                    if b.nils[d.name] is not None
                                                    else b.dims[d.name]]
                                 if d.is_string and len(db.strings(d.name)) else b.dims[d.name])
                        for d in schema.dimensions}
                shard = shard_of(schema, np.full(b.n, start), dims, b.nils, m)
                assert np.all(shard == k)


@st.composite
def cases(draw: st.DrawFn) -> tuple[SchemaConfig, list[list[dict[str, Any]]]]:
    sc = draw(schema_configs(max_dimensions=3))
    schema = Schema.from_config(sc)
    base = draw(st.sampled_from([0, 1_699_920_000]))
    batches = [draw(rows(schema, min_size=1, max_size=25, base=base)) for _ in range(2)]
    return sc, batches


@SETTINGS
@given(case=cases(), n=st.integers(1, 3), m=st.integers(1, 3))
def test_merge_and_balance_keep_every_row(case: Any, n: int, m: int) -> None:
    sc, batches = case
    schema = Schema.from_config(sc)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        lone = make(tmp, "lone", sc, batches)
        parts = [shard_rows(schema, b, n) for b in batches]
        for k in range(n):
            make(tmp, f"s{k}", sc, [p[k] for p in parts])
        srcs = ",".join(str(tmp / f"s{k}") for k in range(n))
        merged = make(tmp, "merged", sc, None)
        assert run("merge", "--new-db-config", str(merged), "--db-paths", srcs, "-q") == 0
        expected = contents(lone)
        assert contents(merged) == expected
        dests = [make(tmp, f"d{k}", sc, None) for k in range(m)]
        assert run("balance", "--source-db-dirs", srcs, "--dest-db-configs",
                   ",".join(map(str, dests)), "-q") == 0
        got = []
        for k, cfg in enumerate(dests):
            check_placement(schema, tmp / f"d{k}", k, m)
            got += contents(cfg)
        key = repr
        assert sorted(got, key=key) == sorted(expected, key=key)


@SETTINGS
@given(case=cases())
def test_migrate_to_wider_types_keeps_every_value(case: Any) -> None:
    sc, batches = case
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        old = make(tmp, "old", sc, batches)
        wide = SchemaConfig(
            sc.segment_size * 2, sc.interval_duration, sc.timestamp_column,
            tuple((n, WIDER.get(t, t)) for n, t in sc.dimension_columns) + (("zz_d", "int8"),),
            tuple((n, WIDER.get(t, t)) for n, t in sc.metric_columns) + (("zz_m", "uint8"),))
        new = make(tmp, "new", wide, None)
        assert run("migrate", "--old-db-path", str(tmp / "old"), "--new-db-config", str(new),
                   "-q") == 0
        expected = contents(old)
        got = contents(new)
        f32 = [n for n, t in (*sc.dimension_columns, *sc.metric_columns) if t == "float32"]
        for r in got:
            assert r.pop("zz_d") is None and r.pop("zz_m") == 0
        for r in (*got, *expected):  # float32 values print short; widened ones exactly
            for n in f32:
                r[n] = None if r[n] is None else float(np.float32(r[n]))
        assert got == expected
