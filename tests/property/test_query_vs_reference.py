"""Differential test: random schemas, rows and queries through the real engine (memtable,
flushed segments, and both) against the naive reference model computed from the raw rows."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gumshoe import sketch
from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.schema import Schema
from gumshoe.service import query_rows

from .. import reference
from ..kernels import PATHS, use_kernels
from ..storage.contents import RunPlan, load_in_runs, run_plans
from ..strategies import TIMESTAMP_BASES, queries, rows, schema_configs


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        # float32 values are printed at float32 precision (0.1, not 0.10000000149011612).
        return (math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
                or reference.float32(a) == reference.float32(b))
    return a == b and type(a) is type(b) or (a == b and isinstance(a, (int, float))
                                             and isinstance(b, (int, float)))


def assert_rows_equal(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want), (got, want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), (g, w)
        for k in w:
            assert _same(g[k], w[k]), (k, g, w)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]], str,
                                    RunPlan]:
    sc = draw(schema_configs(uniques=True))
    schema = Schema.from_config(sc)
    base = draw(st.sampled_from(TIMESTAMP_BASES))
    data = draw(rows(schema, base=base, max_size=40))
    qs = draw(st.lists(queries(schema, base=base), min_size=1, max_size=4))
    where = draw(st.sampled_from(["memtable", "flushed", "split", "runs"]))
    plan = draw(run_plans(len(data)))
    return sc, data, qs, where, plan


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases())
def test_engine_matches_reference(case: tuple[Any, list[dict[str, Any]],
                                              list[dict[str, Any]], str, RunPlan]) -> None:
    sc, data, qs, where, plan = case
    cfg = load_config().replace(database_dir="MEMORY", retention_days=0)
    db = DB(cfg.replace(schema=sc))
    schema = db.schema
    if where == "runs":  # intervals of several runs, merged or not (docs/storage.md 6)
        load_in_runs(db, data, plan)
    elif where == "split":
        db.insert(data[: len(data) // 2])
        db.flush()
        db.insert(data[len(data) // 2:])
    else:
        db.insert(data)
        if where == "flushed":
            db.flush()
    table = reference.rollup(schema, data)
    with pytest.MonkeyPatch.context() as mp:  # uniques: the union on the scan's threads
        mp.setattr(sketch, "PARALLEL_MIN", 0)  # however few rows (sketch._native_union)
        for q in qs:
            want = reference.evaluate(schema, table, q)
            for _, kernels in PATHS:  # the fused C kernel and the numpy kernels
                with use_kernels(kernels):
                    assert_rows_equal(query_rows(db, q), want)


def test_reference_agrees_on_a_hand_checked_case() -> None:
    cfg = load_config().replace(database_dir="MEMORY", retention_days=0)
    db = DB(cfg.replace(schema=dataclasses.replace(
        cfg.schema, dimension_columns=(("c", "string:uint8"),),
        metric_columns=(("m", "uint8"),))))
    data = [{"at": 0, "c": "x", "m": 200}, {"at": 10, "c": "x", "m": 100}, {"at": 0, "m": 1}]
    db.insert(data)
    q = {"aggregates": [{"column": "m"}], "groupings": ["c"]}
    want = [{"m": 1, "c": None, "rowCount": 1}, {"m": 300, "c": "x", "rowCount": 2}]
    assert reference.evaluate(db.schema, reference.rollup(db.schema, data), q) == want
    assert_rows_equal(query_rows(db, q), want)
