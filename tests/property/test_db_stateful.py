"""A state machine over the DB: random valid and invalid batches, flushes (each a new run of
the intervals it touches), merges of runs, clock moves, closes and reopens (clean, and without the final flush), compared after every step with the
reference roll-up of the accepted raw rows.

Model: the raw rows accepted so far. An insert drops the rows whose interval is out of
retention (and must report them as rejected); a flush (also the one in close()) drops the
intervals that are out of retention at that moment; an invalid batch changes nothing.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gumshoe.config import Config, SchemaConfig
from gumshoe.db import DB
from gumshoe.errors import InsertError
from gumshoe.schema import Schema
from tests import reference
from tests.storage.contents import check_files, check_structure, make_config, snapshot_table
from tests.strategies import TIMESTAMP_BASES, invalid_batches, rows, schema_configs

DAY = 86400
MAX_INTERVALS = 12


class DBMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="gumshoe-stateful-")
        self.db: DB | None = None
        self.accepted: list[dict[str, Any]] = []
        self.strings_seen: dict[str, set[str]] = {}

    # -- set-up ----------------------------------------------------------------------------
    @initialize(sc=schema_configs(uniques=True), disk=st.booleans(),
                retention=st.sampled_from([0, 0, 1]), base=st.sampled_from(TIMESTAMP_BASES[:2]),
                fanout=st.sampled_from([2, 3, 8]), max_runs=st.sampled_from([1, 3, 24]))
    def open_db(self, sc: SchemaConfig, disk: bool, retention: int, base: int, fanout: int,
                max_runs: int) -> None:
        self.runs_config = (fanout, max_runs)
        self.schema = Schema.from_config(sc)
        d = sc.interval_duration
        self.base = base
        # With retention, "now" puts the cut-off in the middle of the rows' intervals.
        self.now = base + retention * DAY + (MAX_INTERVALS // 2 + 1) * d
        self.config: Config = make_config(f"{self.tmp}/db" if disk else "MEMORY", schema=sc,
                                          retention_days=retention)
        self.open()
        self.strings_seen = {c.name: set() for c in self.schema.string_dimensions}

    def open(self) -> None:
        self.db = DB(self.config, clock=lambda: self.now)
        self.db.fanout, self.db.max_runs = self.runs_config

    def cutoff(self) -> int | None:
        if not self.config.retention_days:
            return None
        return self.now - self.config.retention_days * DAY - self.schema.interval_duration

    def in_retention(self, row: dict[str, Any]) -> bool:
        cutoff = self.cutoff()
        return cutoff is None or reference.row_key(self.schema, row)[0] >= cutoff

    def drop_expired(self) -> None:
        self.accepted = [r for r in self.accepted if self.in_retention(r)]

    # -- rules -----------------------------------------------------------------------------
    @rule(data=st.data())
    def insert(self, data: st.DataObject) -> None:
        assert self.db is not None
        batch = data.draw(rows(self.schema, max_size=25, base=self.base,
                               max_intervals=MAX_INTERVALS), label="batch")
        kept = [r for r in batch if self.in_retention(r)]
        result = self.db.insert(batch)
        assert (result.inserted, result.rejected) == (len(kept), len(batch) - len(kept))
        self.accepted += kept
        for r in kept:
            for name, seen in self.strings_seen.items():
                if r.get(name) is not None:
                    seen.add(r[name])

    @rule(data=st.data())
    def insert_invalid(self, data: st.DataObject) -> None:
        assert self.db is not None
        bad = data.draw(invalid_batches(self.schema), label="invalid batch")
        try:
            self.db.insert(bad.rows)
        except InsertError as e:
            assert f"rows[{bad.index}]" in str(e)
            if bad.column is not None:
                assert bad.column in str(e)
        else:
            raise AssertionError(f"accepted an invalid batch ({bad.kind})")

    @precondition(lambda self: any(c.type_name == "string:uint8"
                                   for c in self.schema.string_dimensions))
    @rule()
    def overflow_a_dictionary(self) -> None:
        assert self.db is not None
        col = next(c for c in self.schema.string_dimensions if c.type_name == "string:uint8")
        batch = [{self.schema.timestamp.name: self.now, col.name: f"new-{i}"} for i in range(257)]
        try:
            self.db.insert(batch)
        except InsertError as e:
            assert f"].{col.name}: adding the new value" in str(e)
        else:
            raise AssertionError("257 new strings fit a string:uint8 dictionary")

    @rule()
    def flush(self) -> None:
        assert self.db is not None
        self.db.flush()
        self.drop_expired()
        if self.db.dir is not None:
            check_files(self.db)

    @rule(settle=st.sampled_from([0.0, math.inf]), steps=st.sampled_from([None, 1]))
    def merge(self, settle: float, steps: int | None) -> None:
        """Merge runs: size-tiered only (inf), or every past interval to one run (0)."""
        assert self.db is not None
        runs = sum(v.runs for v in self.db.snapshot().intervals)
        done = self.db.merge(max_steps=steps, settle=settle)
        after = sum(v.runs for v in self.db.snapshot().intervals)
        assert after <= runs and (after < runs) == (done > 0)
        if self.db.dir is not None:
            check_files(self.db)

    @rule(hours=st.sampled_from([1, 5, 30]))
    def advance_clock(self, hours: int) -> None:
        self.now += hours * 3600

    @precondition(lambda self: self.db is not None and self.db.dir is not None)
    @rule()
    def reopen(self) -> None:
        assert self.db is not None
        self.db.close()
        self.drop_expired()
        self.open()
        check_files(self.db)

    @precondition(lambda self: self.db is not None and self.db.dir is not None)
    @rule()
    def reopen_without_flush(self) -> None:
        """A process that stops without its final flush: the write-ahead log has the rows."""
        assert self.db is not None
        self.db.close(flush=False)
        self.open()

    # -- checks ----------------------------------------------------------------------------
    @invariant()
    def matches_reference(self) -> None:
        if self.db is None:
            return
        snap = self.db.snapshot()
        check_structure(snap)
        assert snapshot_table(snap) == reference.rollup(self.schema, self.accepted)
        for name, seen in self.strings_seen.items():  # no string of a rejected row
            assert set(snap.strings(name).tolist()) <= seen

    def teardown(self) -> None:
        if self.db is not None:
            self.db.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


DBMachine.TestCase.settings = settings(
    settings(), stateful_step_count=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_db_state_machine = DBMachine.TestCase
