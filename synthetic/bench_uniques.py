"""The distinct-count sketches of the `uniques` metric kind (gumshoe/sketch.py, issue #14):
accuracy, size and union speed, with DuckDB's `approx_count_distinct` as the anchor.

    python -m synthetic.bench_uniques            # the full run (10M distinct, 10M rows)
    python -m synthetic.bench_uniques --quick    # a small one (seconds)

1. Accuracy: n distinct identities (10 .. 10M) into one sketch, several trials each (fresh
   identities per trial): relative error RMS and max, gumshoe (hash + sketch + estimate) and
   DuckDB (`approx_count_distinct` over the same integers) side by side, with their times.
   Targets: exact below SPARSE_MAX = 2,048; RSE <= 2% at 1M.
2. Bytes per rolled-up row on a realistic data set: 4 weeks of hourly intervals, a 1,000-value
   and a 50-value string dimension (Zipf), visitor ids Zipf-like, so most rolled-up rows see
   a few identities. Target <= 64 B/row on average.
3. Union speed: the rows' sketches united per group (the query kernel, `sketch.union`, and
   then the estimates) against a sum over the same rows (`np.bincount(groups, weights)`) for
   1, 1,000 and 100,000 random groups (and the same with rows in group order, as a sorted
   segment gives for its leading dimension). Target: within 5x of the sum. Beside it, DuckDB's
   `approx_count_distinct` grouped over the raw (group, identity) pairs behind those rows.

Timings depend on the machine's load (it is shared): the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gumshoe import native, sketch
from gumshoe.sketch import SPARSE_MAX, SketchColumn


def best(f: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def duck() -> Any:
    import duckdb
    con = duckdb.connect()
    con.execute("SET threads = 1")  # the sketch kernel runs on one core too
    return con


def accuracy(sizes: list[int], trials: int) -> list[dict[str, Any]]:
    import pyarrow as pa
    con = duck()
    out = []
    for n in sizes:
        errs, derrs, t_g, t_d = [], [], [], []
        for trial in range(trials):
            ids = np.arange(n, dtype=np.int64) + (trial + 1) * 10**11 + n * 7
            t = time.perf_counter()
            col = SketchColumn.from_identities(np.zeros(n, np.int64), sketch.hash_ints(ids), 1)
            est = float(col.estimate()[0][0])
            t_g.append(time.perf_counter() - t)
            errs.append(est / n - 1)
            con.register("ids", pa.table({"v": ids}))
            t = time.perf_counter()
            d = con.execute("SELECT approx_count_distinct(v) FROM ids").fetchall()[0][0]
            t_d.append(time.perf_counter() - t)
            con.unregister("ids")
            derrs.append(d / n - 1)
        rms = lambda e: float(np.sqrt(np.mean(np.square(e))))  # noqa: E731
        out.append({"n": n, "trials": trials, "rms": rms(errs), "max": float(np.max(np.abs(errs))),
                    "exact": n <= SPARSE_MAX, "seconds": float(np.median(t_g)),
                    "duckdb_rms": rms(derrs), "duckdb_max": float(np.max(np.abs(derrs))),
                    "duckdb_seconds": float(np.median(t_d))})
        r = out[-1]
        print(f"  n={n:>10,}  gumshoe rms {r['rms']:.4%} max {r['max']:.4%} "
              f"({r['seconds'] * 1e3:.1f} ms)   duckdb rms {r['duckdb_rms']:.4%} "
              f"({r['duckdb_seconds'] * 1e3:.1f} ms)", flush=True)
    return out


def zipf_ids(rng: np.random.Generator, n: int, pool: int, a: float) -> np.ndarray:
    """n draws from `pool` identities, Zipf-like (rank r drawn ~ 1/r^a), ranks shuffled."""
    ranks = rng.zipf(a, n) - 1
    ranks = np.minimum(ranks, pool - 1)
    return rng.permutation(pool)[ranks]


def rolled_up(events: int, seed: int = 1) -> dict[str, Any]:
    """4 weeks hourly x page (1,000 values) x country (50), visitor ids Zipf-like: the events
    rolled up by (hour, page, country), one sketch of visitors per rolled-up row."""
    rng = np.random.default_rng(seed)
    hours = rng.integers(0, 28 * 24, events)
    page = zipf_ids(rng, events, 1000, 1.2)
    country = zipf_ids(rng, events, 50, 1.5)
    visitor = zipf_ids(rng, events, max(events // 10, 10), 1.1)
    key = (hours * 1000 + page) * 50 + country
    t = time.perf_counter()
    keys, group = np.unique(key, return_inverse=True)
    hashes = sketch.hash_ints(visitor)
    col = SketchColumn.from_identities(group.ravel(), hashes, len(keys))
    build = time.perf_counter() - t
    est, exact = col.estimate()
    total = sketch.union(col, None, np.zeros(len(col), np.int64), 1)
    tot_est = float(total.estimate()[0][0])
    true_total = len(np.unique(visitor))
    by_country = sketch.union(col, None, (keys % 50).astype(np.int64), 50).estimate()[0]
    true_c = np.array([len(np.unique(visitor[country == c])) for c in range(50)])
    nz = true_c > 0
    res = {"events": events, "rows": len(col), "bytes": col.nbytes,
           "bytes_per_row": col.nbytes / len(col),
           "hash_bytes_per_row": col.hashes.nbytes / len(col),
           "len_bytes_per_row": col.lens.itemsize, "dense_rows": len(col.dense_rows),
           "mean_identities_per_row": float(est.mean()), "max_identities_per_row": float(est.max()),
           "build_seconds": build, "all_rows_estimate": tot_est, "all_rows_true": true_total,
           "by_country_max_rel_error": float(np.max(np.abs(by_country[nz] / true_c[nz] - 1)))}
    return res


def speed(n_rows: int, group_counts: list[int], repeats: int) -> list[dict[str, Any]]:
    """n_rows rolled-up rows, each with a few identities (geometric, mean ~1.7), Zipf-like
    visitors from a pool of n_rows / 2: the same sketches a roll-up stores."""
    import pyarrow as pa
    rng = np.random.default_rng(2)
    lens = np.minimum(rng.geometric(0.6, n_rows), 40)
    row_of_pair = np.repeat(np.arange(n_rows, dtype=np.int64), lens)
    visitor = zipf_ids(rng, len(row_of_pair), max(n_rows // 2, 10), 1.1)
    t = time.perf_counter()
    col = SketchColumn.from_identities(row_of_pair, sketch.hash_ints(visitor), n_rows)
    build = time.perf_counter() - t
    print(f"  {n_rows:,} rows, {len(col.hashes):,} hashes ({col.nbytes / n_rows:.1f} B/row), "
          f"built from {len(visitor):,} (row, identity) pairs in {build:.2f} s", flush=True)
    weights = rng.random(n_rows)
    con = duck()
    out = []
    for k in group_counts:
        for order in ("random", "sorted"):
            g = rng.integers(0, k, n_rows)
            if order == "sorted":
                g.sort()
            t_sum = best(lambda: np.bincount(g, weights, minlength=k), repeats)
            t_union = best(lambda: sketch.union(col, None, g, k), repeats)
            t_est = best(lambda: sketch.union(col, None, g, k).estimate(), repeats)
            res = {"groups": k, "order": order, "rows": n_rows, "sum_s": t_sum,
                   "union_s": t_union, "union_estimate_s": t_est,
                   "ratio": t_union / t_sum, "ratio_estimate": t_est / t_sum}
            if order == "random":
                con.register("pairs", pa.table({"g": g[row_of_pair], "v": visitor}))
                res["duckdb_s"] = best(lambda: con.execute(
                    "SELECT g, approx_count_distinct(v) FROM pairs GROUP BY g").fetchall(),
                    repeats)
                con.unregister("pairs")
            out.append(res)
            print(f"  groups={k:>7,} {order:6}  sum {t_sum * 1e3:7.1f} ms  union "
                  f"{t_union * 1e3:7.1f} ms ({res['ratio']:.1f}x)  + estimate "
                  f"{t_est * 1e3:7.1f} ms ({res['ratio_estimate']:.1f}x)"
                  + (f"  duckdb {res['duckdb_s'] * 1e3:.0f} ms" if "duckdb_s" in res else ""),
                  flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--trials", type=int, default=None, help="accuracy trials per size")
    p.add_argument("--rows", type=int, default=None, help="rolled-up rows for the speed test")
    p.add_argument("--events", type=int, default=None, help="events of the size data set")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (best kept)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    quick = args.quick
    sizes = [10, 100, 1000, 2048, 10_000, 100_000] + ([] if quick else [1_000_000, 10_000_000])
    trials = args.trials or (2 if quick else 5)
    rows = args.rows or (200_000 if quick else 10_000_000)
    events = args.events or (100_000 if quick else 5_000_000)
    groups = [1, 1000] if quick else [1, 1000, 100_000]
    print(f"native kernel: {native.sketch is not None}; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("accuracy (one sketch of n distinct identities):", flush=True)
    acc = accuracy(sizes, trials)
    print("size (4 weeks hourly x 1,000 pages x 50 countries, Zipf-like visitors):", flush=True)
    size = rolled_up(events)
    print("union per group vs a sum over the same rows:", flush=True)
    spd = speed(rows, groups, args.repeats)
    load = os.getloadavg()[0]

    print(f"\n| distinct | trials | gumshoe RMS rel. error | max | time | DuckDB RMS | max | "
          f"time |\n|---|---|---|---|---|---|---|---|")
    for r in acc:
        print(f"| {r['n']:,} | {r['trials']} | {r['rms']:.3%}{' (exact)' if r['exact'] else ''} "
              f"| {r['max']:.3%} | {r['seconds'] * 1e3:.1f} ms | {r['duckdb_rms']:.3%} | "
              f"{r['duckdb_max']:.3%} | {r['duckdb_seconds'] * 1e3:.1f} ms |")
    print(f"\nsize: {size['events']:,} events -> {size['rows']:,} rolled-up rows, "
          f"{size['bytes_per_row']:.1f} B/row ({size['hash_bytes_per_row']:.1f} B of hashes + "
          f"{size['len_bytes_per_row']} B length; {size['dense_rows']} dense rows), mean "
          f"{size['mean_identities_per_row']:.2f} identities/row (max "
          f"{size['max_identities_per_row']:,.0f}); built in {size['build_seconds']:.2f} s; "
          f"all rows united: {size['all_rows_estimate']:,.0f} vs {size['all_rows_true']:,} true; "
          f"by country: max rel. error {size['by_country_max_rel_error']:.3%}")
    print(f"\n| groups | row order | sum (bincount) | union | ratio | union + estimate | ratio "
          f"| DuckDB approx_count_distinct over the pairs |\n|---|---|---|---|---|---|---|---|")
    for r in spd:
        d = f"{r['duckdb_s'] * 1e3:.0f} ms" if "duckdb_s" in r else ""
        print(f"| {r['groups']:,} | {r['order']} | {r['sum_s'] * 1e3:.1f} ms | "
              f"{r['union_s'] * 1e3:.1f} ms | {r['ratio']:.1f}x | "
              f"{r['union_estimate_s'] * 1e3:.1f} ms | {r['ratio_estimate']:.1f}x | {d} |")
    print(f"\nload average {load:.2f} at the end")
    failures = [f"n={r['n']}: not exact" for r in acc if r["exact"] and r["max"] != 0]
    failures += [f"n={r['n']}: RMS {r['rms']:.2%} > 2%" for r in acc
                 if r["n"] >= 100_000 and r["rms"] > 0.02]
    if failures:
        print("FAILED:", "; ".join(failures))
    if args.json:
        args.json.write_text(json.dumps({"accuracy": acc, "size": size, "speed": spd,
                                         "load": load, "failures": failures}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
