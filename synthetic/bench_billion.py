"""A billion rows on one machine (performance issue, target 3), and the growth curve up to it.

    python -m synthetic.bench_billion [--rows 1000000 10000000 100000000 1000000000]
                                      [--hours 672] [--work DIR] [--repeats 5] [--no-duckdb]

For each size: the benchmark data set (synthetic/data.py: four weeks, a 1,000-value Zipf
string, a 50-value string with nils, a 10-value integer, three metrics) is generated in
1M-row batches, each rolled up in numpy on its (hour, dimensions) key and applied through the
library's fastest path (`DB.insert_batch` of a pre-rolled batch with counts, durability "none",
a flush every 20M input rows: what `gumtool import` does). Reported: ingest time and rows/s,
rolled-up rows, bytes on disk per rolled-up row, then `gumshoe serve` over the directory with
the suite's queries over HTTP (server time from Server-Timing, median of `--repeats`) and the
server's RSS (current and peak) while answering them, then DuckDB in-process on the same
rolled-up table for the same queries. The database is deleted after each size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from gumshoe.batch import Batch
from gumshoe.config import config_toml
from gumshoe.db import DB

from . import data, ideal, queries
from .bench_latency import extra_queries, timed_duck, timed_http
from .bench_query import Server
from .duck import Duck

BATCH = 1_000_000
FLUSH_EVERY = 20_000_000


def rolled_batch(c: data.Columns) -> Batch:
    """One generated batch rolled up on (hour, name, country, device), with counts."""
    key = (((c.hour * data.N_NAMES + c.name.astype(np.int64)) * (data.N_COUNTRIES + 1)
            + c.country.astype(np.int64)) * data.N_DEVICES + c.device.astype(np.int64))
    uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    k = len(uniq)
    counts = np.bincount(inverse, minlength=k).astype(np.int64)
    metrics = {m: np.bincount(inverse, weights=v, minlength=k).astype(np.int64)
               for m, v in c.metrics.items()}
    country = c.country[first]
    nil = country == data.NIL_COUNTRY
    names = data._NAME_OBJ[c.name[first]].tolist()
    countries = data._COUNTRY_OBJ[country].tolist()
    ts = data.T0 + c.hour[first] * data.HOUR
    return Batch(k, ts, {"name": names, "country": countries, "device": c.device[first]},
                 {"name": None, "country": nil if nil.any() else None, "device": None},
                 metrics, counts)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def ingest(spec: data.Spec, db_dir: Path) -> dict[str, Any]:
    cfg = data.config(str(db_dir), durability="none")
    t0 = time.perf_counter()
    since_flush = 0
    with DB(cfg) as db:
        for c in data.generate(spec):
            db.insert_batch(rolled_batch(c))
            since_flush += c.n
            if since_flush >= FLUSH_EVERY:
                db.flush()
                since_flush = 0
        db.flush()
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 1), "rows_per_s": round(spec.rows / seconds)}


def rss(pid: int) -> tuple[float, float]:
    """(current, peak) resident MiB of a process."""
    cur = peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cur, peak


def run_size(rows: int, hours: int, repeats: int, work: Path, duckdb: bool) -> dict[str, Any]:
    spec = data.Spec(rows, hours=hours, batch_size=BATCH)
    db_dir = work / f"db-{rows}"
    shutil.rmtree(db_dir, ignore_errors=True)
    out: dict[str, Any] = {"rows": rows, "hours": hours}
    print(f"size {rows:,}: ingest", file=sys.stderr, flush=True)
    out["ingest"] = ingest(spec, db_dir)
    threads = os.cpu_count() or 1
    cfg_path = work / f"config-{rows}.toml"
    cfg_path.write_text(config_toml(data.config(str(db_dir)).replace(
        query_parallelism=threads, query_memory=16 * 10**9, query_memory_pool=32 * 10**9)))
    with DB(data.config(str(db_dir))) as db:
        snap = db.snapshot()
        stored = sum(s.rows for iv in snap.intervals for s in iv.segments)
        name = snap.strings("name")[0]
    out["stored_rows"] = stored
    out["disk_bytes"] = dir_bytes(db_dir)
    out["bytes_per_stored_row"] = round(out["disk_bytes"] / max(stored, 1), 2)
    qs = queries.queries(spec) + extra_queries(spec, name)
    print(f"size {rows:,}: queries over HTTP ({stored:,} rolled-up rows)", file=sys.stderr,
          flush=True)
    server = Server(cfg_path, work / f"server-{rows}.log", timeout=3600)
    out["queries"] = {}
    try:
        out["server_rss_mb_after_open"] = rss(server.proc.pid)[0]
        for q in qs:
            srv, _ = timed_http(server, queries.to_json(q), repeats)
            out["queries"][q.name] = {"server_ms": round(srv, 2)}
        out["server_rss_mb"], out["server_peak_rss_mb"] = rss(server.proc.pid)
    finally:
        server.stop()
    if duckdb:
        print(f"size {rows:,}: DuckDB", file=sys.stderr, flush=True)
        t = time.perf_counter()
        with DB(data.config(str(db_dir))) as db:
            tbl = ideal.table_from_snapshot(db.snapshot())
        duck = Duck(tbl, threads)
        del tbl
        out["duckdb_load_seconds"] = round(time.perf_counter() - t, 1)
        for q in qs:
            dk = timed_duck(duck, q, repeats)
            entry = out["queries"][q.name]
            entry["duckdb_ms"] = round(dk, 2)
            entry["vs_duckdb"] = round(dk / entry["server_ms"], 2) if entry["server_ms"] else None
        duck.con.close()
    shutil.rmtree(db_dir, ignore_errors=True)
    return out


def report(results: list[dict[str, Any]]) -> str:
    lines = ["| input rows | rolled-up rows | ingest rows/s | ingest | bytes/row | on disk | "
             "server RSS (peak) MiB |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['rows']:,} | {r['stored_rows']:,} | {r['ingest']['rows_per_s']:,} | "
                     f"{r['ingest']['seconds']} s | {r['bytes_per_stored_row']} | "
                     f"{r['disk_bytes'] / 2**20:,.0f} MiB | {r['server_rss_mb']:,.0f} "
                     f"({r['server_peak_rss_mb']:,.0f}) |")
    lines += ["", "Server ms (HTTP, Server-Timing) / DuckDB ms, median:", "",
              "| query | " + " | ".join(f"{r['rows']:,}" for r in results) + " |",
              "|---|" + "---:|" * len(results)]
    for name in results[0]["queries"]:
        cells = []
        for r in results:
            e = r["queries"][name]
            cells.append(f"{e['server_ms']:.2f} / {e.get('duckdb_ms', float('nan')):.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    geo = []
    for r in results:
        ratios = [e["vs_duckdb"] for e in r["queries"].values() if e.get("vs_duckdb")]
        geo.append(f"{statistics.geometric_mean(ratios):.2f}x" if ratios else "-")
    lines.append("| geometric mean vs DuckDB | " + " | ".join(geo) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+",
                   default=[1_000_000, 10_000_000, 100_000_000, 1_000_000_000])
    p.add_argument("--hours", type=int, default=672)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--work", type=Path, default=Path(__file__).parent / "out" / "billion")
    p.add_argument("--no-duckdb", action="store_true")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in args.rows:
        results.append(run_size(rows, args.hours, args.repeats, args.work, not args.no_duckdb))
        (args.work / "results.json").write_text(json.dumps(results, indent=1))
        print(report(results), flush=True)
    print(f"\n(load average {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
