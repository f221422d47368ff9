"""Differential test of pruning: random schemas, rows and queries through a database on disk
(segments with min/max headers, many small segments per interval, ordered by the leading
dimension) against the reference model, with the filters biased to what pruning handles
(equality and `in` on the leading dimension and the next, unknown strings, nil, ranges,
and/or), over few or many intervals (pieces of many are scanned as one coalesced block)."""

from __future__ import annotations

import itertools
import tempfile
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gumshoe import engine
from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.engine import Prepared
from gumshoe.query import parse_query
from gumshoe.schema import Schema
from gumshoe.service import query_rows

from .. import reference
from ..kernels import PATHS, use_kernels
from ..storage.contents import RunPlan, load_in_runs, run_plans
from ..strategies import TIMESTAMP_BASES, filters, queries, rows, schema_configs
from .test_query_vs_reference import assert_rows_equal


@st.composite
def lead_filters(draw: st.DrawFn, schema: Schema, data: list[dict[str, Any]],
                 base: int) -> dict[str, Any]:
    """A filter on the leading dimension: values taken from the rows (so they match), or
    not (so they prune), nil, ranges; sometimes and'ed or or'ed with any other filter."""
    lead = schema.dimensions[0]
    seen = [r.get(lead.name) for r in data] or [None]
    pool = [*seen, None, "zz-not-there" if lead.is_string else 3]
    op = draw(st.sampled_from(["=", "in", "in", "<", ">="] if not lead.is_string
                              else ["=", "in", "in"]))
    if op == "in":
        f: dict[str, Any] = {"type": "in", "column": lead.name,
                             "value": draw(st.lists(st.sampled_from(pool), max_size=5))}
    else:
        value = draw(st.sampled_from([v for v in pool if v is not None] or [0]))
        if op in ("<", ">=") and not isinstance(value, (int, float)):
            op = "="
        f = {"type": op, "column": lead.name, "value": value}
    if len(schema.dimensions) > 1 and draw(st.booleans()):  # and the second sort column
        second = schema.dimensions[1]
        values = [r.get(second.name) for r in data] or [None]
        g = {"column": second.name, "value": draw(st.sampled_from(values))}
        if draw(st.booleans()):
            g = {"type": "in", "column": second.name,
                 "value": draw(st.lists(st.sampled_from(values), max_size=3))}
        f = {"type": "and", "filters": [f, g]}
    combine = draw(st.sampled_from([None, None, "and", "or"]))
    if combine is None:
        return f
    return {"type": combine, "filters": [f, draw(filters(schema, base, depth=1))]}


@st.composite
def cases(draw: st.DrawFn) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]], str,
                                    RunPlan]:
    sc = draw(schema_configs(max_dimensions=3).filter(lambda sc: sc.dimension_columns))
    schema = Schema.from_config(sc)
    base = draw(st.sampled_from(TIMESTAMP_BASES))
    data = draw(rows(schema, base=base, min_size=1, max_size=80,
                     max_intervals=draw(st.sampled_from([2, 12]))))
    qs = []
    for _ in range(draw(st.integers(1, 3))):
        q = draw(queries(schema, base=base))
        q = {k: v for k, v in q.items() if k.lower() not in ("filters", "filter")}
        q["filters"] = [draw(lead_filters(schema, data, base))]
        qs.append(q)
    where = draw(st.sampled_from(["flushed", "split", "runs"]))
    return sc, data, qs, where, draw(run_plans(len(data)))


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
          max_examples=60)
@given(cases())
def test_pruned_scans_match_reference(case: tuple[Any, list[dict[str, Any]],
                                                  list[dict[str, Any]], str, RunPlan]) -> None:
    sc, data, qs, where, plan = case
    with tempfile.TemporaryDirectory(prefix="gumshoe-prune-") as d:
        cfg = load_config().replace(database_dir=d, retention_days=0, durability="none",
                                    schema=sc)
        db = DB(cfg)
        try:
            if where == "runs":  # each run's segments are sorted, pruned on their own
                load_in_runs(db, data, plan)
            else:
                half = len(data) // 2 if where == "split" else len(data)
                db.insert(data[:half])
                db.flush()
                db.insert(data[half:])  # unflushed blocks are scanned whole
            schema = db.schema
            table = reference.rollup(schema, data)
            for q in qs:
                want = reference.evaluate(schema, table, q)
                for (_, kernels), pieces in itertools.product(PATHS, (1, 8)):
                    # pieces of several intervals scanned as one block, or each alone
                    with use_kernels(kernels), \
                            mock.patch.object(engine, "COALESCE_MIN_PIECES", pieces):
                        assert_rows_equal(query_rows(db, q), want)
                p = Prepared(parse_query(q, schema), db.snapshot())
                assert p.scanner.pruned["rows"] <= sum(
                    s.rows for v in db.snapshot().intervals for s in v.segments)
        finally:
            db.close()
