"""Write amplification of flushes (issue #18 target 4, docs/storage.md section 6): bytes written
per byte of new rolled-up data, with runs (a flush appends a run per touched interval, merges
combine them in the background) against the anchor in the same run: the behaviour before runs,
every flush rewriting each touched interval whole (`DB.max_runs = 1`).

    python -m synthetic.bench_writeamp                       # both scenarios
    python -m synthetic.bench_writeamp --flushes 100 --late-flushes 40 --days 7   # quick

Scenarios (the synthetic data set's schema, synthetic/data.py; durability "os"):

- **stream**: `--flushes` flushes of `--batch` rows each into the current hour (the clock is in
  that hour); after each flush the background's merge (`DB.merge`: size-tiered; the current
  interval is never forced to one run). Then the hour ends: the clock moves on and the
  interval's runs merge into one (`merge(settle=0)`, what the flush loop does once the
  interval has been quiet for `merge_settle` seconds).
- **late**: `--days` days of hourly intervals already stored (`--base-rows` rows an hour,
  merged to one run each, not counted), then `--late-flushes` flushes of `--late-batch` rows
  with times spread uniformly over those days, the background's merge after every
  `--merge-every`-th (the intervals are past, but each was just flushed into: size-tiered
  only); then every interval is merged to one run.

Bytes written = the sizes of the new segment files, dictionary files and db.json, per flush
and per merge; the **write-ahead log is excluded** (every design writes each row to it once).
The denominator, **new rolled-up data**, is the bytes of the segment files that each flush's
new rows take rolled up on their own: measured by a third pass that flushes each batch into
an empty database of its own (the least a flush can write in this file format). The amplification is also given without db.json and against the column bytes of
those runs (without segment headers: a run of a few rows is mostly header). The anchor of
the late scenario is cut to its first `--anchor-flushes` flushes (each rewrites every
interval: gigabytes otherwise) and compared with those flushes' share of the new data. Query
latency: a few queries on the many-run state and on the merged state (best of `--repeats`).

Timings depend on the machine's load: it is shared, so report the load average beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from gumshoe import db as dbmod
from gumshoe import interval as intervalmod
from gumshoe.db import DB
from gumshoe.layout import meta_bytes
from gumshoe.segment import Segment
from gumshoe.service import query_rows

from . import data

QUERIES = {
    "total": {"aggregates": [{"column": "visits"}, {"column": "bytes"}]},
    "by_country": {"aggregates": [{"column": "clicks"}], "groupings": ["country"]},
    "one_name_by_device": {"aggregates": [{"column": "visits"}], "groupings": ["device"],
                           "filters": [{"column": "name", "value": "/page/0007"}]},
    "metric_filter": {"aggregates": [{"column": "visits"}], "groupings": ["name"],
                      "filters": [{"type": ">", "column": "visits", "value": 40}]},
}


@dataclasses.dataclass
class Meter:
    """Bytes written, by phase ("flush", "merge") and kind ("segments", "dictionaries",
    "meta"), plus the column bytes of the segments (without headers)."""

    phase: str = "flush"
    bytes: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)
    column_bytes: dict[str, int] = dataclasses.field(default_factory=dict)
    on: bool = True

    def add(self, kind: str, n: int) -> None:
        if self.on:
            key = (self.phase, kind)
            self.bytes[key] = self.bytes.get(key, 0) + n

    def total(self, phase: str | None = None, meta: bool = True) -> int:
        return sum(v for (p, k), v in self.bytes.items()
                   if (phase is None or p == phase) and (meta or k != "meta"))

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        write_segment, write_meta, write_atomic = (intervalmod.write_segment,
                                                   dbmod.write_meta, dbmod.write_atomic)

        def seg(path: Path, schema: Any, block: Any, fsync: bool = True) -> None:
            write_segment(path, schema, block, fsync=fsync)
            self.add("segments", path.stat().st_size)
            if self.on:
                b = Segment.open(path, schema).block
                cols = [b.count, *b.dims.values(), *b.metrics.values(),
                        *(n for n in b.nils.values() if n is not None)]
                self.column_bytes[self.phase] = (self.column_bytes.get(self.phase, 0)
                                                 + sum(a.nbytes for a in cols))

        def meta(directory: Path, m: Any, fsync: bool = True) -> None:
            self.add("meta", len(meta_bytes(m.to_json())))
            write_meta(directory, m, fsync=fsync)

        def atomic(path: Path, payload: bytes, fsync: bool = True) -> None:
            self.add("dictionaries", len(payload))
            write_atomic(path, payload, fsync=fsync)

        with mock.patch.object(intervalmod, "write_segment", seg), \
                mock.patch.object(dbmod, "write_meta", meta), \
                mock.patch.object(dbmod, "write_atomic", atomic):
            yield


def batches(n: int, size: int, hours: int, seed: int, spread: bool) -> Iterator[list[Any]]:
    """`n` batches of `size` rows of the synthetic data set: within hour 0 (T0), or (`spread`)
    with times uniform over `hours` hours from T0."""
    spec = data.Spec(rows=n * size, hours=1, seed=seed, batch_size=size)
    rng = np.random.default_rng(seed)
    for c in data.generate(spec):
        if spread:
            c.at = data.T0 + rng.integers(0, hours * data.HOUR, c.n)
        yield data.to_rows(c)


def open_db(path: Path, clock: list[float]) -> DB:
    return DB(data.config(str(path), durability="os"), clock=lambda: clock[0])


def latency(db: DB, repeats: int) -> dict[str, float]:
    out = {}
    for name, q in QUERIES.items():
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            query_rows(db, q)
            best = min(best, time.perf_counter() - t0)
        out[name] = round(best * 1000, 2)
    return out


def answers(db: DB) -> list[Any]:
    return [query_rows(db, q) for q in QUERIES.values()]


def run(path: Path, work: list[list[Any]], clock: list[float], end: float, mode: str,
        repeats: int, merge_every: int) -> dict[str, Any]:
    """Flush each batch (then the background's merge), then end the period and merge all;
    the bytes written, and (runs) query latencies before and after the final merge. Modes:
    "runs"; "anchor" (max_runs 1: each flush rewrites its intervals whole, as before runs);
    "alone" (the denominator: `alone`)."""
    meter = Meter()
    out: dict[str, Any] = {}
    if mode == "alone":
        return alone(path, work, clock, meter)
    with meter.patched():
        db = open_db(path, clock)
        if mode == "anchor":
            db.max_runs = 1
        t0 = time.perf_counter()
        out["flushed"] = []  # bytes of flush segments after each flush
        for rows in work:
            meter.phase = "flush"
            db.insert(rows)
            db.flush()
            out["flushed"].append(meter.bytes.get(("flush", "segments"), 0))
            meter.phase = "merge"
            if len(out["flushed"]) % merge_every == 0:
                # as the flush loop does (every 30 s, flushes every 10 s): size-tiered;
                # just-flushed intervals keep their runs
                db.merge()
        out["seconds"] = round(time.perf_counter() - t0, 2)
        snap = db.snapshot()
        out["runs_before_final_merge"] = sum(v.runs for v in snap.intervals)
        out["max_runs_per_interval"] = max((v.runs for v in snap.intervals), default=0)
        out["flush_merged_runs"] = db.stats["flush_merged_runs"]
        if mode == "runs":
            out["latency_ms_runs"] = latency(db, repeats)
            before = answers(db)
        clock[0] = end  # the period is over: every interval is merged to one run
        meter.phase = "final"
        db.merge(settle=0)
        assert all(v.runs == 1 for v in db.snapshot().intervals)
        if mode == "runs":
            out["latency_ms_merged"] = latency(db, repeats)
            assert answers(db) == before, "the merge changed an answer"
        out["answers"] = answers(db)
        db.close()
    out["bytes"] = {f"{p}/{k}": v for (p, k), v in sorted(meter.bytes.items())}
    out["column_bytes"] = meter.column_bytes
    out["meter"] = meter
    return out


def alone(path: Path, work: list[list[Any]], clock: list[float], meter: Meter
          ) -> dict[str, Any]:
    """The denominator: each batch flushed into an empty database of its own, so the segment
    files written are exactly that flush's new rows rolled up (never merged with anything)."""
    out: dict[str, Any] = {"flushed": []}
    with meter.patched():
        for rows in work:
            shutil.rmtree(path, ignore_errors=True)
            db = open_db(path, clock)
            db.insert(rows)
            db.flush()
            db.close()
            out["flushed"].append(meter.bytes.get(("flush", "segments"), 0))
    shutil.rmtree(path, ignore_errors=True)
    out["meter"] = meter
    out["column_bytes"] = meter.column_bytes
    return out


def amplification(res: dict[str, Any], new: int, new_columns: int) -> dict[str, Any]:
    m: Meter = res["meter"]
    stream = m.total("flush") + m.total("merge")
    final = stream + m.total("final")
    return {
        "stream": round(stream / new, 2),
        "with_final_merge": round(final / new, 2),
        "stream_without_db_json": round((m.total("flush", meta=False)
                                         + m.total("merge", meta=False)) / new, 2),
        "stream_per_column_byte": round(stream / new_columns, 2),
    }


def scenario(name: str, base: Path | None, work: list[list[Any]], start: float, end: float,
             tmp: Path, repeats: int, anchor_flushes: int | None, merge_every: int
             ) -> dict[str, Any]:
    """Runs, then the anchor over the first `anchor_flushes` batches (None: all; it rewrites
    every touched interval per flush, so it is cut short where that would write gigabytes)."""
    results = {}
    for mode in ("alone", "runs", "anchor"):
        d = tmp / f"{name}-{mode}"
        shutil.rmtree(d, ignore_errors=True)
        if base is not None and mode != "alone":
            shutil.copytree(base, d)
        results[mode] = run(d, work if mode != "anchor" else work[:anchor_flushes], [start],
                            end, mode, repeats, merge_every)
        shutil.rmtree(d, ignore_errors=True)
    alone_ = results.pop("alone")
    runs, anchor = results["runs"], results["anchor"]
    if anchor_flushes is None or anchor_flushes >= len(work):
        assert runs["answers"] == anchor["answers"], "runs and the anchor answer differently"
    new = alone_["meter"].bytes[("flush", "segments")]  # each flush's new run, alone
    new_cols = alone_["column_bytes"]["flush"]
    out: dict[str, Any] = {"flushes": len(work), "rows_per_flush": len(work[0]),
                           "new_rolled_up_bytes": new, "new_column_bytes": new_cols}
    for mode, res in results.items():
        n = len(res["flushed"])
        scale = alone_["flushed"][n - 1] / new  # the anchor's flushes' share of the new bytes
        out[mode] = {"flushes": n,
                     "amplification": amplification(res, round(new * scale),
                                                    round(new_cols * scale)),
                     "bytes_written": res["bytes"], "seconds": res["seconds"],
                     "runs_before_final_merge": res["runs_before_final_merge"],
                     "max_runs_per_interval": res["max_runs_per_interval"],
                     "flush_merged_runs": res["flush_merged_runs"]}
        for k in ("latency_ms_runs", "latency_ms_merged"):
            if k in res:
                out[mode][k] = res[k]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--flushes", type=int, default=500, help="stream: flushes (default 500)")
    p.add_argument("--batch", type=int, default=2000, help="stream: rows per flush (2000)")
    p.add_argument("--days", type=int, default=30, help="late: days of intervals (30)")
    p.add_argument("--base-rows", type=int, default=3000,
                   help="late: rows per hour already stored (3000)")
    p.add_argument("--late-flushes", type=int, default=200, help="late: flushes (200)")
    p.add_argument("--late-batch", type=int, default=10_000,
                   help="late: rows per flush, spread over the days (10000)")
    p.add_argument("--anchor-flushes", type=int, default=20,
                   help="late: the anchor's flushes, the first N (20; it rewrites every "
                        "interval per flush)")
    p.add_argument("--merge-every", type=int, default=3,
                   help="the background merge after every N-th flush (3: flushes every 10 s, "
                        "merges at most every 30 s, as the server's flush loop)")
    p.add_argument("--repeats", type=int, default=5, help="query timing: best of N (5)")
    p.add_argument("--dir", help="scratch directory (default: a temporary one)")
    p.add_argument("--out", help="also write the results as JSON to this file")
    args = p.parse_args(argv)
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="gumshoe-writeamp-"))
    tmp.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"args": vars(args), "load_average": os.getloadavg(),
                           "write_ahead_log": "excluded"}
    try:
        t = time.perf_counter()
        stream = list(batches(args.flushes, args.batch, 1, 1, spread=False))
        doc["stream"] = scenario("stream", None, stream, data.T0 + 1800,
                                 data.T0 + 2 * data.HOUR, tmp, args.repeats, None,
                                 args.merge_every)
        del stream
        if args.out:  # the first scenario's figures, should the second fail
            Path(args.out).write_text(json.dumps(doc, indent=1, default=str) + "\n")
        hours = args.days * 24
        base = tmp / "late-base"
        shutil.rmtree(base, ignore_errors=True)
        clock = [data.T0 + hours * data.HOUR + 1800.0]
        db = open_db(base, clock)
        spec = data.Spec(rows=args.base_rows * hours, hours=hours, seed=2, batch_size=50_000)
        for c in data.generate(spec):
            db.insert(data.to_rows(c))
            db.flush()
        db.merge(settle=0)
        db.close()
        late = list(batches(args.late_flushes, args.late_batch, hours, 3, spread=True))
        doc["late"] = scenario("late", base, late, clock[0], clock[0] + 3600, tmp,
                               args.repeats, args.anchor_flushes, args.merge_every)
        doc["seconds"] = round(time.perf_counter() - t, 1)
    finally:
        if not args.dir:
            shutil.rmtree(tmp, ignore_errors=True)
    doc["load_average_after"] = os.getloadavg()
    text = json.dumps(doc, indent=1, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
