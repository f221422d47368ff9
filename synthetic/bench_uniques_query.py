"""`uniques` queries end to end (issue #14): a distinct count against a sum over the same
rolled-up rows, through the engine, with DuckDB's `approx_count_distinct` over the raw events
as the anchor, and the estimates checked against DuckDB's exact `count(DISTINCT)`.

    python -m synthetic.bench_uniques_query [--events 42000000] [--repeats 9] [--threads 2]

The default 42M events roll up into 9.98M rows: the 10M rolled-up rows of #14's target.

Data: `--events` events over four weeks (hourly intervals), a 1,000-value Zipf page name, a
50-value Zipf country, a 10-value device, one summed metric and a `uniques` visitor id (Zipf:
most rolled-up rows see one or a few visitors, a few see thousands). They are inserted through
`DB.insert_batch` (visitor ids hashed as validation does, `sketch.hash_ints`) and flushed.
Reported: rolled-up rows, the sketch column's bytes per rolled-up row (hashes, lengths and
registers as stored), and per grouping the median time of a sum and of a uniques query over
the same rows (taking turns, `--repeats` times each: a burst of load slows both alike;
`service.query_rows`, `--threads` scan threads), their ratio (target <= 5x),
DuckDB's approx_count_distinct over the raw events, and the largest relative error of the
estimates against the exact distinct counts.

Timings depend on the machine's load: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gumshoe.batch import Batch, Factor
from gumshoe.config import parse_config
from gumshoe.db import DB
from gumshoe.service import query_rows
from gumshoe.sketch import hash_ints

HOUR = 3600
T0 = 1_700_000_000 // HOUR * HOUR
NAMES = [f"/page/{i}" for i in range(1000)]
COUNTRIES = [f"C{i:02d}" for i in range(50)]
GROUPINGS: list[tuple[str, list[Any]]] = [
    ("total", []),
    ("by_country", ["country"]),
    ("by_device", ["device"]),
    ("by_name", ["name"]),
    ("country_x_device", ["country", "device"]),
    ("by_day", [{"column": "at", "timeTransform": "day"}]),
    ("by_day, one country", [{"column": "at", "timeTransform": "day"}]),
]
# a filter per grouping (gumshoe, DuckDB's WHERE) where there is one
FILTERS: dict[str, tuple[list[dict[str, Any]], str]] = {
    "by_day, one country": ([{"column": "country", "value": "C01"}], "country = 1")}
DUCK_GROUPS = {"total": "", "by_country": "country", "by_device": "device", "by_name": "name",
               "country_x_device": "country, device", "by_day": '("at" - "at" % 86400)',
               "by_day, one country": '("at" - "at" % 86400)'}


def config(directory: Path, threads: int) -> Any:
    return parse_config(f"""
database_dir = "{directory}"
durability = "none"
retention_days = 0
query_parallelism = {threads}
[schema]
timestamp_column = ["at", "uint32"]
dimension_columns = [["name", "string:uint16"], ["country", "string:uint8"], ["device", "uint8"]]
metric_columns = [["visits", "uint32"], ["visitors", "uniques"]]
interval_duration = "1h"
""")


def generate(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"at": T0 + rng.integers(0, 672 * HOUR, n),
            "name": np.minimum(rng.zipf(1.3, n), 1000) - 1,
            "country": np.minimum(rng.zipf(1.5, n), 50) - 1,
            "device": rng.integers(0, 10, n).astype(np.uint8),
            "visitor": np.minimum(rng.zipf(1.2, n), 50_000_000).astype(np.int64)}


def batch(c: dict[str, np.ndarray]) -> Batch:
    n = len(c["at"])
    return Batch(n, c["at"].astype(np.int64),
                 {"name": Factor(NAMES, c["name"]), "country": Factor(COUNTRIES, c["country"]),
                  "device": c["device"]},
                 {"name": None, "country": None, "device": None},
                 {"visits": np.ones(n, np.int64)},
                 identities={"visitors": (hash_ints(c["visitor"]), np.ones(n, np.bool_))})


def duck_key(name: str, values: tuple[Any, ...]) -> list[Any]:
    """A DuckDB group's key as gumshoe answers it (codes -> strings)."""
    if name in ("by_country", "country_x_device"):
        return [COUNTRIES[values[0]], *values[1:]]
    if name == "by_name":
        return [NAMES[values[0]]]
    return list(values)


def gum_key(name: str, row: dict[str, Any]) -> list[Any]:
    return [row[k] for k in ("at", "name", "country", "device") if k in row]


def timed(db: DB, queries: list[dict[str, Any]], repeats: int
          ) -> list[tuple[float, list[dict[str, Any]]]]:
    """Each query's median time (ms) and its rows; the queries take turns, so a burst of load
    on this shared machine slows each of them alike and their ratio holds."""
    times: list[list[float]] = [[] for _ in queries]
    rows: list[list[dict[str, Any]]] = [[] for _ in queries]
    for _ in range(repeats):
        for i, q in enumerate(queries):
            t = time.perf_counter()
            rows[i] = query_rows(db, q)
            times[i].append(time.perf_counter() - t)
    return [(statistics.median(t) * 1e3, r) for t, r in zip(times, rows)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=42_000_000)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-duckdb", action="store_true")
    args = p.parse_args(argv)
    rng = np.random.default_rng(7)
    work = Path(tempfile.mkdtemp(prefix="gumshoe-uniques-"))
    raw: list[dict[str, np.ndarray]] = []
    try:
        db = DB(config(work / "db", args.threads))
        t = time.perf_counter()
        for off in range(0, args.events, 1_000_000):
            c = generate(min(1_000_000, args.events - off), rng)
            raw.append(c)
            db.insert_batch(batch(c))
        db.flush()
        ingest = time.perf_counter() - t
        snap = db.snapshot()
        blocks = [s.block for iv in snap.intervals for s in iv.segments]
        rolled = sum(b.n for b in blocks)
        sketch_bytes = sum(b.sketches["visitors"].nbytes for b in blocks)
        print(f"{args.events:,} events -> {rolled:,} rolled-up rows in {ingest:.1f} s; sketch "
              f"column {sketch_bytes / max(rolled, 1):.1f} B per rolled-up row; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        duck = None
        if not args.no_duckdb:
            import duckdb
            import pyarrow as pa
            cols = {k: np.concatenate([c[k] for c in raw]) for k in raw[0]}
            tbl = pa.table({"at": cols["at"], "name": cols["name"], "country": cols["country"],
                            "device": cols["device"], "visitor": cols["visitor"]})
            duck = duckdb.connect()
            duck.execute(f"SET threads = {args.threads}")
            duck.register("events", tbl)
        print("| grouping | groups | sum ms | uniques ms | ratio | DuckDB approx_count_distinct "
              "ms | max rel. error vs exact |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, groupings in GROUPINGS:
            filters, where = FILTERS.get(name, ([], ""))
            (s_ms, _), (u_ms, rows) = timed(db, [
                {"groupings": groupings, "filters": filters,
                 "aggregates": [{"column": "visits"}]},
                {"groupings": groupings, "filters": filters,
                 "aggregates": [{"type": "uniques", "column": "visitors", "name": "u"}]}],
                args.repeats)
            where = f" WHERE {where}" if where else ""
            d_ms, err = float("nan"), float("nan")
            if duck is not None:
                g = DUCK_GROUPS[name]
                sel = f"SELECT {g + ', ' if g else ''}approx_count_distinct(visitor) FROM events" \
                      + where + (f" GROUP BY {g}" if g else "")
                times = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    duck.execute(sel).fetchall()
                    times.append(time.perf_counter() - t)
                d_ms = statistics.median(times) * 1e3
                exact = duck.execute(f"SELECT {g + ', ' if g else ''}count(DISTINCT visitor) "
                                     f"FROM events{where}"
                                     + (f" GROUP BY {g}" if g else "")).fetchall()
                want = {tuple(duck_key(name, x[:-1])): x[-1] for x in exact}
                got = {tuple(gum_key(name, r)): r["u"] for r in rows}
                assert got.keys() == want.keys(), name
                err = max(abs(got[k] - v) / v for k, v in want.items())
            print(f"| {name} | {len(rows):,} | {s_ms:.1f} | {u_ms:.1f} | {u_ms / s_ms:.1f}x | "
                  f"{d_ms:.1f} | {100 * err:.2f}% |")
        db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"(load average at the end {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
