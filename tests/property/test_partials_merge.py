"""Shards merged equal one database, in-process: random rows are split by roll-up key over
several DBs (as the router splits them), each shard's partial goes through the msgpack wire
form, and the partials are merged in every association order before `finalize`. Zero-fill's
data extent is a union over shards, so it must be associative and commutative, with "no
interval" as its identity; so must the whole merge."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gumshoe import wire
from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.query import parse_query
from gumshoe.partials import Partial, finalize, merge, union_extent
from gumshoe.schema import Schema
from gumshoe.service import query_rows, query_partial

from .. import reference
from ..strategies import TIMESTAMP_BASES, queries, rows, schema_configs
from .test_query_vs_reference import assert_rows_equal

extents = st.none() | st.tuples(st.integers(0, 100), st.integers(0, 100)).map(
    lambda t: (min(t), max(t)))


@given(a=extents, b=extents, c=extents)
def test_extent_union_is_associative_commutative_with_an_identity(
        a: tuple[int, int] | None, b: tuple[int, int] | None,
        c: tuple[int, int] | None) -> None:
    ab_c = union_extent([union_extent([a, b]), c])
    assert ab_c == union_extent([a, union_extent([b, c])]) == union_extent([a, b, c])
    assert union_extent([a, b]) == union_extent([b, a])
    assert union_extent([a, None]) == a
    if a and b and c:
        assert ab_c == (min(a[0], b[0], c[0]), max(a[1], b[1], c[1]))


def _db(sc: Any) -> DB:
    cfg = load_config().replace(database_dir="MEMORY", retention_days=0)
    return DB(cfg.replace(schema=sc))


@st.composite
def cases(draw: st.DrawFn) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]], int]:
    sc = draw(schema_configs(max_dimensions=3, uniques=True))
    schema = Schema.from_config(sc)
    base = draw(st.sampled_from(TIMESTAMP_BASES))
    data = draw(rows(schema, base=base, max_size=40))
    qs = draw(st.lists(queries(schema, base=base), min_size=1, max_size=3))
    return sc, data, qs, draw(st.integers(2, 4))


def _orders(parts: list[Partial], seed: int) -> list[Partial]:
    """Merges of the same partials in three association orders (and a shuffle)."""
    left = parts[0]
    for p in parts[1:]:
        left = merge([left, p])
    right = parts[-1]
    for p in reversed(parts[:-1]):
        right = merge([p, right])
    shuffled = parts[:]
    random.Random(seed).shuffle(shuffled)
    return [left, right, merge(shuffled)]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases(), st.integers(0, 2**32))
def test_shards_merged_in_any_order_equal_one_database(case: Any, seed: int) -> None:
    sc, data, qs, n_shards = case
    one = _db(sc)
    one.insert(data)
    shards = [_db(sc) for _ in range(n_shards)]
    schema = one.schema
    parts: list[list[dict[str, Any]]] = [[] for _ in shards]
    for r in data:  # every roll-up key on one shard, as the router places rows
        parts[hash(reference.row_key(schema, r)) % n_shards].append(r)
    for db, part in zip(shards, parts):
        db.insert(part)
    for q in qs:
        query = parse_query(q, schema)
        want = query_rows(one, q)
        raw = [query_partial(db, q) for db in shards]
        partials = [wire.decode_partial(wire.encode_partial(p)) for p in raw]
        assert [p.extent for p in partials] == [p.extent for p in raw]  # over the wire
        merged = _orders(partials, seed)
        assert len({m.extent for m in merged}) == 1
        assert merged[0].extent == union_extent(p.extent for p in partials)
        for m in merged:
            assert_rows_equal(finalize(query, merge([m], one.config.max_groups)), want)
