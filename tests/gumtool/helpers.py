"""Helpers for the gumtool tests: configs, databases made by the storage layer (gumshoe.db.DB),
row generators, and comparisons by query (DB.query, and the router's merge of partials)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gumshoe.batch import parse_rows
from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.query import parse_query
from gumshoe.partials import finalize, merge
from gumshoe.schema import Schema
from gumshoe.sharding import shard_of
from gumshoe.service import query_rows, query_partial
from gumtool.cli import main

from ..http.harness import SAMPLE_QUERIES, sample_rows

T0 = 1_700_000_000 - 1_700_000_000 % 3600

DIMS = [["name", "string:uint16"], ["country", "string:uint8"], ["age", "uint8"]]
METRICS = [["visits", "uint8"], ["clicks", "uint32"], ["score", "float64"]]


def write_config(path: Path, db: Path | str, dims: list[list[str]] = DIMS,
                 metrics: list[list[str]] = METRICS, interval: str = "1h",
                 segment_size: str = "1MB", **keys: Any) -> Path:
    settings = {"database_dir": str(db), "retention_days": 0, "flush_interval": "1h",
                "durability": "os", **keys}
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines += ["[schema]", f"segment_size = {json.dumps(segment_size)}",
              f"interval_duration = {json.dumps(interval)}",
              'timestamp_column = ["at", "uint32"]',
              f"dimension_columns = {json.dumps(dims)}",
              f"metric_columns = {json.dumps(metrics)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def open_db(config: Path) -> DB:
    return DB(load_config(config))


def build_db(config: Path, batches: list[list[dict[str, Any]]],
             unflushed: list[dict[str, Any]] | None = None) -> Path:
    """A database made by the storage layer: each batch inserted and flushed; `unflushed`
    rows inserted last and left only in the write-ahead log (closed without a flush)."""
    db = open_db(config)
    for rows in batches:
        db.insert(rows)
        db.flush()
    if unflushed:
        db.insert(unflushed)
        db.close(flush=False)
    else:
        db.close()
    return Path(load_config(config).database_dir)


def shard_rows(schema: Schema, rows: list[dict[str, Any]], n: int) -> list[list[dict[str, Any]]]:
    """Split rows as the router does (gumshoe.sharding.shard_of of the roll-up key)."""
    batch = parse_rows(schema, rows)
    starts = schema.shard_start(batch.timestamps)  # with tiers: the coarsest bucket
    shard = shard_of(schema, starts, batch.dims, batch.nils, n)
    return [[r for r, s in zip(rows, shard.tolist()) if s == k] for k in range(n)]


def dump_query(schema: Schema) -> dict[str, Any]:
    """Every stored (rolled-up) row: grouped by the interval and every dimension."""
    return {"groupings": [{"column": schema.timestamp.name, "name": "_t"},
                          *[d.name for d in schema.dimensions]],
            "aggregates": [{"column": m.name} for m in schema.metrics]}


def dump(config: Path) -> list[dict[str, Any]]:
    with open_db(config) as db:
        return query_rows(db, dump_query(db.schema))


def answers(config: Path, queries: list[dict[str, Any]]) -> list[Any]:
    with open_db(config) as db:
        return [query_rows(db, q) for q in queries]


def router_answer(configs: list[Path], q: dict[str, Any]) -> list[dict[str, Any]]:
    """What a router over these shards answers: the shards' partials merged (the router's own
    merge and finalize code), in-process."""
    dbs = [open_db(c) for c in configs]
    try:
        query = parse_query(q, dbs[0].schema)
        partials = [query_partial(db, q) for db in dbs]
        return finalize(query, merge(partials, dbs[0].config.max_groups))
    finally:
        for db in dbs:
            db.close()


def run(*argv: str) -> int:
    return main(list(argv))


QUERIES = SAMPLE_QUERIES  # the router tests' queries: the same answers are expected
make_rows = sample_rows  # the router tests' rows


def approx_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Float sums rounded (summation order differs between layouts)."""
    return [{k: (round(v, 9) if isinstance(v, float) else v) for k, v in r.items()}
            for r in rows]


