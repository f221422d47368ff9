"""Where the time goes: cProfile of gumshoe's insert and query paths on the benchmark data.

    python -m synthetic.profile [--rows N] [--db DIR] [--query NAME ...] [--top K]

Builds (or reuses, with --db) an on-disk database of the synthetic data set, then prints the
top functions by own time for 30 library inserts of 10k-row batches (into a MEMORY DB and into
the on-disk DB with its configured durability) and for each query run single-threaded
(`engine.Prepared(...).rows()` without an executor, so the profile sees every scan call).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import time
from pathlib import Path

import numpy as np

from gumshoe.db import DB

from . import data, queries


def top(pr: cProfile.Profile, k: int) -> str:
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(k)
    lines = [ln for ln in s.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    return "\n".join(lines[start:])


def profile_insert(spec: data.Spec, database_dir: str, k: int) -> None:
    if database_dir != "MEMORY":
        shutil.rmtree(database_dir, ignore_errors=True)
        Path(database_dir).parent.mkdir(parents=True, exist_ok=True)
    db = DB(data.config(database_dir))
    batches = [data.to_rows(c) for c in data.generate(spec, 0, 60)]
    for b in batches[:30]:  # warm up: dictionaries filled, memtable non-empty
        db.insert(b)
    pr = cProfile.Profile()
    t = time.perf_counter()
    pr.enable()
    for b in batches[30:]:
        db.insert(b)
    pr.disable()
    el = time.perf_counter() - t
    rows = sum(len(b) for b in batches[30:])
    how = "no write-ahead log" if database_dir == "MEMORY" else db.config.durability
    print(f"\n== insert into {database_dir} ({how}): {rows / el:,.0f} rows/s under the "
          "profiler")
    print(top(pr, k))
    db.close(flush=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synthetic.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--db", type=Path, help="an existing benchmark database to query")
    ap.add_argument("--query", nargs="*", help="query names (default: all)")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--no-insert", action="store_true")
    args = ap.parse_args(argv)
    from gumshoe.engine import Prepared
    from gumshoe.query import parse_query

    spec = data.Spec(args.rows)
    work = Path(__file__).resolve().parent / "out" / "profile"
    work.mkdir(parents=True, exist_ok=True)
    if not args.no_insert:
        profile_insert(spec, "MEMORY", args.top)
        profile_insert(spec, str(work / "insert-db"), args.top)
    db_dir = args.db
    if db_dir is None:
        db_dir = work / "db"
        shutil.rmtree(db_dir, ignore_errors=True)
        db = DB(data.config(str(db_dir)))
        for c in data.generate(spec):
            db.insert(data.to_rows(c))
        db.close()
    db = DB(data.config(str(db_dir)))
    snap = db.snapshot()
    rows = sum(s.rows for iv in snap.intervals for s in iv.segments)
    print(f"\n{rows:,} rolled-up rows in {len(snap.intervals)} intervals, "
          f"{sum(len(iv.segments) for iv in snap.intervals)} segments")
    for q in queries.queries(spec):
        if args.query and q.name not in args.query:
            continue
        pq = parse_query(queries.to_json(q), db.schema)
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            Prepared(pq, snap, 1, db.config.max_groups).rows()
            ts.append(time.perf_counter() - t)
        pr = cProfile.Profile()
        pr.enable()
        Prepared(pq, snap, 1, db.config.max_groups).rows()
        pr.disable()
        print(f"\n== query {q.name}: {1e3 * float(np.median(ts)):.1f} ms single-threaded")
        print(top(pr, args.top))
    db.close(flush=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
