"""Differential test of tiered retention: random schemas, rows spread over days and random
queries, through a tiered database before and after the compactor re-rolled it (in small
steps, with rows left unflushed), against the reference model over the same rows placed at
the start of the interval that holds them. Queries that do not look at time (nor test metrics,
which see the stored roll-ups) answer the same before and after compaction."""

from __future__ import annotations

import dataclasses
from typing import Any
from unittest import mock

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gumshoe import engine
from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.query import parse_query
from gumshoe.schema import Schema
from gumshoe.service import query_rows

from .. import reference
from ..strategies import queries, rows, schema_configs
from .test_query_vs_reference import assert_rows_equal

H, D = 3600, 86400
NOW = 1_700_000_000 - 1_700_000_000 % D + 5 * H + 1234
START = NOW - NOW % D - 4 * D  # rows from four days before today's midnight until now
TIERS = (((60, H), (H, D), (D, 30 * D)), ((300, 2 * H), (H, 2 * D), (D, 60 * D)))


def _looks_at_time(q: Any, ts: str) -> bool:
    """Does the query name the timestamp column anywhere (a grouping or a filter)?"""
    if isinstance(q, dict):
        return any(v == ts or _looks_at_time(v, ts) for v in q.values())
    if isinstance(q, list):
        return any(v == ts or _looks_at_time(v, ts) for v in q)
    return False


def _without_fill(q: dict[str, Any]) -> None:
    for key, groupings in q.items():
        if key.lower() == "groupings" and isinstance(groupings, list):
            q[key] = [{k: v for k, v in g.items() if k.lower() != "fill"}
                      if isinstance(g, dict) else g for g in groupings]


@st.composite
def cases(draw: st.DrawFn) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]], str]:
    sc = draw(schema_configs(uniques=True))
    tiers = draw(st.sampled_from(TIERS))
    sc = dataclasses.replace(sc, interval_duration=tiers[0][0], tiers=tiers)
    schema = Schema.from_config(sc)
    data = draw(rows(schema, base=START, max_size=40))
    for r in data:  # spread over every tier's range
        r[schema.timestamp.name] = START + draw(st.integers(0, NOW - START))
    # queries with filter values on hour boundaries around the rows (probe: 1h intervals)
    probe = Schema.from_config(dataclasses.replace(sc, interval_duration=H, tiers=()))
    qs = draw(st.lists(queries(probe, base=START + 3 * D - 2 * H), min_size=1, max_size=4))
    for q in qs:  # zero-fill of minutes over days is the reference's slow path: not here
        _without_fill(q)
    where = draw(st.sampled_from(["flushed", "split"]))
    return sc, data, qs, where


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
          max_examples=40)
@given(cases())
def test_tiered_engine_matches_reference(case: tuple[Any, list[dict[str, Any]],
                                                     list[dict[str, Any]], str]) -> None:
    sc, data, qs, where = case
    now = [NOW]
    cfg = load_config().replace(database_dir="MEMORY", retention_days=0, schema=sc)
    db = DB(cfg, clock=lambda: now[0])
    schema = db.schema
    ts = schema.timestamp.name
    half = len(data) // 2 if where == "split" else len(data)
    db.insert(data[:half])
    db.flush()
    # a metric filter tests stored roll-ups, which re-rolling makes coarser ("granularity")
    before = {i: query_rows(db, q) for i, q in enumerate(qs) if not _looks_at_time(q, ts)
              and not parse_query(q, schema).has_metric_filter(schema)}
    db.compact(max_rows=7)
    db.insert(data[half:])  # late rows, some into re-rolled ranges
    if where == "split":
        db.compact(max_rows=7)
        before = {}
    starts = db.interval_starts(np.array([int(r[ts]) for r in data], np.int64))
    placed = [{**r, ts: int(s)} for r, s in zip(data, starts)]
    table = reference.rollup(schema, placed)
    for i, q in enumerate(qs):
        want = reference.evaluate(schema, table, q)
        for pieces in (1, 8):  # pruned pieces of several intervals scanned together, or not
            with mock.patch.object(engine, "COALESCE_MIN_PIECES", pieces):
                got = query_rows(db, q)
            assert_rows_equal(got, want)
            if i in before:
                assert_rows_equal(got, before[i])
