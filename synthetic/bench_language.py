"""Cost of the #14 query-language additions beside the plain queries they extend, in-engine:
calendar buckets in time zones (per interval), string matching (per dictionary entry), and
post-aggregations, having and zero-fill (on the final groups).

    python -m synthetic.bench_language [--rows 1000000] [--hours 2160] [--pages 100000]

Rows are spread over `hours` hourly intervals with `pages` distinct page strings (a large
dictionary) and 50 countries; the data is flushed, so queries read segments. Each query runs
`--repeats` times; the median is shown, and for string matching also the first run (which
tests every dictionary string once; later runs reuse the table).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gumshoe import timebuckets
from gumshoe.config import load_config
from gumshoe.db import DB
from gumshoe.service import query_rows

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def build(rows: int, hours: int, pages: int, seed: int = 14) -> DB:
    cfg = load_config(None)
    schema = dataclasses.replace(cfg.schema, interval_duration=3600,
                                 dimension_columns=(("page", "string:uint32"),
                                                    ("country", "string:uint8")),
                                 metric_columns=(("visits", "uint16"), ("clicks", "uint32")))
    db = DB(cfg.replace(schema=schema, database_dir="MEMORY", retention_days=0))
    rng = np.random.default_rng(seed)
    names = np.array([f"/{('blog', 'docs', 'shop', 'help')[i % 4]}/{i:06d}" for i in
                      range(pages)], dtype=object)
    countries = np.array([f"C{i:02d}" for i in range(50)], dtype=object)
    for lo in range(0, rows, 100_000):
        n = min(100_000, rows - lo)
        at = T0 + rng.integers(0, hours * 3600, n)
        page = names[rng.zipf(1.2, n) % pages]
        country = countries[rng.integers(0, 50, n)]
        visits, clicks = rng.integers(1, 4, n), rng.poisson(2.0, n)
        db.insert([{"at": a, "page": p, "country": c, "visits": v, "clicks": k}
                   for a, p, c, v, k in zip(at.tolist(), page.tolist(), country.tolist(),
                                            visits.tolist(), clicks.tolist())])
    db.flush()
    return db


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """(first run, median of the rest, result) in milliseconds."""
    times, out = [], None
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times[0], statistics.median(times[1:]), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--hours", type=int, default=2160)
    ap.add_argument("--pages", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    db = build(args.rows, args.hours, args.pages)
    stored = query_rows(db, {})[0]["rowCount"]
    print(f"{args.rows} rows over {args.hours} hourly intervals, {args.pages} pages "
          f"(built in {time.perf_counter() - t0:.1f} s; rowCount {stored})\n")
    clicks = [{"column": "clicks"}]

    def g(unit: str | None, zone: str = "UTC", fill: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"column": "at", "name": "t"}
        if unit:
            out["timeTransform"] = unit
        if zone != "UTC":
            out["timeZone"] = zone
        if fill:
            out["fill"] = True
        return out

    cases: list[tuple[str, dict[str, Any]]] = [
        ("group by interval", {"aggregates": clicks, "groupings": [g(None)]}),
        ("day, UTC", {"aggregates": clicks, "groupings": [g("day")]}),
        ("day, Europe/Berlin", {"aggregates": clicks, "groupings": [g("day", "Europe/Berlin")]}),
        ("week, America/New_York", {"aggregates": clicks,
                                    "groupings": [g("week", "America/New_York")]}),
        ("month, Asia/Kathmandu", {"aggregates": clicks,
                                   "groupings": [g("month", "Asia/Kathmandu")]}),
        ("day x country", {"aggregates": clicks, "groupings": [g("day"), "country"]}),
        ("day x country, fill", {"aggregates": clicks,
                                 "groupings": [g("day", fill=True), "country"]}),
        ("hour x country, fill", {"aggregates": clicks,
                                  "groupings": [g("hour", "Europe/Berlin", True), "country"]}),
        ("page = (one string)", {"aggregates": clicks,
                                 "filters": [{"column": "page", "value": "/blog/000004"}]}),
        ("page prefix", {"aggregates": clicks,
                         "filters": [{"type": "prefix", "column": "page", "value": "/blog/"}]}),
        ("page contains, case-insensitive", {
            "aggregates": clicks, "filters": [{"type": "contains", "column": "page",
                                               "value": "DOCS/00", "caseInsensitive": True}]}),
        ("page regex", {"aggregates": clicks,
                        "filters": [{"type": "regex", "column": "page",
                                     "value": "^/(shop|help)/0+[1-9]7$"}]}),
        ("by page", {"aggregates": clicks + [{"column": "visits"}], "groupings": ["page"]}),
        ("by page + post-agg + having + top 20", {
            "aggregates": clicks + [{"column": "visits"}], "groupings": ["page"],
            "postAggregations": [{"name": "ctr", "expression": "clicks / visits"},
                                 {"name": "pct", "expression": "100 * ctr - 1"}],
            "having": {"type": "and", "filters": [{"type": ">", "column": "ctr", "value": 0.5},
                                                  {"type": ">=", "column": "rowCount",
                                                   "value": 2}]},
            "orderBy": [{"column": "pct", "descending": True}], "limit": 20, "offset": 20}),
    ]
    print(f"{'query':42} {'first ms':>9} {'median ms':>10} {'rows':>8}")
    for name, q in cases:
        first, median, rows = timed(lambda q=q: query_rows(db, q), args.repeats)
        print(f"{name:42} {first:9.1f} {median:10.1f} {len(rows):8}")

    starts = np.arange(T0, T0 + 100_000 * 3600, 3600, dtype=np.int64)
    print("\nbucket starts alone (vectorised, cached zone tables):")
    for unit, zone in (("day", "UTC"), ("day", "Europe/Berlin"), ("month", "America/New_York"),
                       ("week", "Australia/Lord_Howe")):
        timebuckets.bucket_starts(starts[:10], unit, zone)  # the zone's table, once
        first, median, _ = timed(lambda u=unit, z=zone: timebuckets.bucket_starts(starts, u, z),
                                 args.repeats)
        print(f"  {len(starts)} interval starts, {unit:5} {zone:20} {median:7.2f} ms "
              f"({median * 1e6 / len(starts):.0f} ns per interval)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
