"""A uniques scan on several threads (engine.Scanner.gather and unite, sketch._native_union):
the tasks gather, their accumulators are combined by kind, and one union runs on the scan's
threads; the answers are those of one thread, and the reference's exact distinct counts where
a group holds at most SPARSE_MAX identities."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from gumshoe import engine, native, sketch
from gumshoe.db import DB
from gumshoe.engine import Prepared
from gumshoe.query import parse_query
from gumshoe.sketch import SPARSE_MAX
from tests import reference
from tests.property.test_query_vs_reference import assert_rows_equal

from .helpers import hour, make_db

METRICS = (("visits", "uint32"), ("low", "min:int16"), ("top", "max:uint16"), ("who", "uniques"))
UNIQUES = {"type": "uniques", "column": "who", "name": "people"}
BY_HOUR = {"column": "at", "timeTransform": "hour", "name": "h"}
QUERIES: list[dict[str, Any]] = [
    {"aggregates": [UNIQUES]},  # a total: one group
    {"aggregates": [UNIQUES], "groupings": ["name"]},
    {"aggregates": [UNIQUES], "groupings": [BY_HOUR, "name"]},
    {"aggregates": [UNIQUES, {"column": "visits"}, {"type": "min", "column": "low"},
                    {"type": "max", "column": "top"}], "groupings": ["name"]},
    {"aggregates": [UNIQUES, {"type": "max", "column": "top"}], "groupings": [BY_HOUR],
     "filters": [{"type": "!=", "column": "name", "value": "big"}]},
]


def raw_rows() -> list[dict[str, Any]]:
    """30 hours of five names, each of its own pool of 40-400 identities, and "big": more
    distinct identities than SPARSE_MAX (registers)."""
    rng = np.random.default_rng(5)
    rows: list[dict[str, Any]] = []
    for i, name in enumerate("abcde"):
        pool = 40 * (i + 1) ** 2
        for _ in range(300):
            who = int(rng.integers(0, pool))
            rows.append({"at": hour(int(rng.integers(0, 30))), "name": name,
                         "visits": int(rng.integers(0, 9)), "low": int(rng.integers(-99, 99)),
                         "top": int(rng.integers(0, 999)),
                         "who": f"{name}{who}" if who % 3 else who})
    rows += [{"at": hour(j % 30), "name": "big", "visits": 1, "low": 0, "top": 1,
              "who": f"big{j}"} for j in range(SPARSE_MAX + 900)]
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


@pytest.fixture(scope="module")
def loaded() -> Iterator[tuple[DB, list[dict[str, Any]]]]:
    """Flushed segments (many: small segments) and unflushed rows."""
    db = make_db(dims=(("name", "string:uint8"),), metrics=METRICS)
    data = raw_rows()
    db.insert(data[: len(data) * 2 // 3])
    db.flush()
    db.insert(data[len(data) * 2 // 3:])
    yield db, data
    db.close()


@pytest.mark.parametrize("query", QUERIES)
def test_several_threads_answer_as_one(loaded: tuple[DB, list[dict[str, Any]]],
                                       query: dict[str, Any], monkeypatch: pytest.MonkeyPatch
                                       ) -> None:
    db, data = loaded
    monkeypatch.setattr(engine, "MIN_TASK_ROWS", 1)  # a task per thread, however few rows
    monkeypatch.setattr(sketch, "PARALLEL_MIN", 0)  # and the union on every thread
    answers = []
    with ThreadPoolExecutor(3) as pool:
        for threads in (1, 2, 3):
            prepared = Prepared(parse_query(query, db.schema), db.snapshot(), threads)
            assert len(prepared.tasks) == threads
            answers.append(prepared.rows(pool))
    assert answers[1] == answers[0] and answers[2] == answers[0]
    want = reference.evaluate(db.schema, reference.rollup(db.schema, data), query)
    exact = [i for i, r in enumerate(want) if r.get("name") != "big" and "name" in r
             or "filters" in query]
    assert_rows_equal([answers[0][i] for i in exact], [want[i] for i in exact])
    for got, w in zip(answers[0], want):  # a group of registers: an estimate
        if native.sketch is not None and got.get("name") == "big":
            assert abs(got["people"] - w["people"]) < 0.03 * w["people"]


def test_a_sum_that_could_wrap_beside_uniques() -> None:
    """A uint64 sum whose rows could pass 2**64 is summed in two halves (Scanner.split_sums);
    with uniques beside it the scan's tasks gather (Scanner.gather), which must split it too
    (it read the halves' columns from blocks that did not have them: a KeyError)."""
    db = make_db(dims=(("name", "string:uint8"),),
                 metrics=(("big", "uint64"), ("who", "uniques")))
    data = [{"at": hour(0), "name": "a", "big": 2**63, "who": "x"},
            {"at": hour(1), "name": "a", "big": 2**62, "who": "y"},
            {"at": hour(1), "name": "b", "big": 5, "who": "x"}]
    db.insert(data)
    for query in ({"aggregates": [{"column": "big"}, UNIQUES]},
                  {"aggregates": [{"column": "big"}, UNIQUES], "groupings": ["name"]}):
        want = reference.evaluate(db.schema, reference.rollup(db.schema, data), query)
        with ThreadPoolExecutor(2) as pool:
            got = Prepared(parse_query(query, db.schema), db.snapshot(), 2).rows(pool)
        assert_rows_equal(got, want)
    db.close()
