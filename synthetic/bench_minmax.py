"""Cost of min/max metrics (#14) beside the sum of the same values, in-engine, with DuckDB's
sum/min/max over the raw rows in the same run as the anchor.

    python -m synthetic.bench_minmax [--rows 4000000] [--apps 5000] [--repeats 5]

Rows are spread over 24 hourly intervals, `apps` app ids (uint16) and 8 countries; each row's
value goes into a summed column, a `min:uint32` and a `max:uint32` one. The data is flushed, so
queries read segments (one scan thread). Each query runs `repeats` times; medians are shown.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.engine import Prepared
from gumshoe.query import parse_query

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
COUNTRIES = np.array(["US", "CA", "MX", "DE", "FR", "JP", "BR", "IN"], dtype=object)


def build(rows: int, apps: int, seed: int = 14) -> tuple[DB, dict[str, np.ndarray]]:
    cfg = load_config(None)
    schema = dataclasses.replace(cfg.schema, interval_duration=3600, segment_size=64 << 20,
                                 dimension_columns=(("app", "uint16"),
                                                    ("country", "string:uint8")),
                                 metric_columns=(("v", "uint32"), ("vmin", "min:uint32"),
                                                 ("vmax", "max:uint32")))
    db = DB(cfg.replace(schema=schema, database_dir="MEMORY", retention_days=0))
    rng = np.random.default_rng(seed)
    raw = {"at": T0 + rng.integers(0, 24 * 3600, rows), "app": rng.integers(0, apps, rows),
           "country": COUNTRIES[rng.integers(0, len(COUNTRIES), rows)],
           "v": rng.integers(0, 10**6, rows)}
    for lo in range(0, rows, 200_000):
        sl = slice(lo, lo + 200_000)
        db.insert([{"at": a, "app": p, "country": c, "v": x, "vmin": x, "vmax": x}
                   for a, p, c, x in zip(raw["at"][sl].tolist(), raw["app"][sl].tolist(),
                                         raw["country"][sl].tolist(), raw["v"][sl].tolist())])
    db.flush()
    return db, raw


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--apps", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    import duckdb  # the anchor

    db, raw = build(args.rows, args.apps)
    stored = sum(len(s.block.count) for iv in db.snapshot().intervals for s in iv.segments)
    con = duckdb.connect()
    con.execute("SET threads TO 1")
    table = {"app": raw["app"], "country": raw["country"].astype(str), "v": raw["v"]}
    con.register("t", table)
    con.execute("CREATE TABLE r AS SELECT * FROM t")
    print(f"{args.rows} rows -> {stored} stored rows; load {os.getloadavg()[0]:.2f}; one thread "
          "each\n")
    print(f"{'query':28} {'gumshoe ms':>10} {'duckdb ms (raw rows)':>21}")
    mismatches = 0
    for agg, col in (("sum", "v"), ("min", "vmin"), ("max", "vmax")):
        for groups in (["country"], ["app"], ["app", "country"]):
            q = parse_query({"aggregates": [{"type": agg, "column": col}],
                             "groupings": groups}, db.schema)
            ours = median_ms(lambda: Prepared(q, db.snapshot(), threads=1).rows(),
                             args.repeats)
            sql = f"SELECT {', '.join(groups)}, {agg}(v) FROM r GROUP BY {', '.join(groups)}"
            duck = median_ms(lambda: con.execute(sql).fetchall(), args.repeats)
            got = sorted(tuple(r[g] for g in groups) + (r[col],)
                         for r in Prepared(q, db.snapshot(), threads=1).rows())
            same = got == sorted(con.execute(sql).fetchall())
            mismatches += not same
            print(f"{agg + ' by ' + '+'.join(groups):28} {ours:10.1f} {duck:21.1f}"
                  f"{'' if same else '  ANSWERS DIFFER'}")
    db.close()
    print("\nevery answer matched DuckDB's" if not mismatches else f"\n{mismatches} differ")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
