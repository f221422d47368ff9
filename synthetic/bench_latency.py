"""The per-query latency floor (performance issue, target 1): server time of small and
selective queries over HTTP, as data grows, beside DuckDB in-process on the same rolled-up rows.

    python -m synthetic.bench_latency [--rows 100000 1000000 10000000] [--hours 168] [--repeats 30]

For each size: the benchmark data set (synthetic/data.py) is inserted through the library and
flushed, `gumshoe serve` opens it, and each query is sent `--repeats` times on one keep-alive
connection. Reported per query: the median of the server's own time (the `Server-Timing`
header, to the microsecond: parse, plan, scan, merge, finish, JSON), the median round trip seen
by the client, and DuckDB's median on the same rolled-up table (queries.to_sql), with their
ratio. The queries are the suite's (synthetic/queries.py) plus three that should cost next to
nothing: a filter on a name that does not exist (`empty`), one name grouped by hour
(`name_eq`), and a time range of two intervals (`two_hours`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gumshoe.config import config_toml
from gumshoe.db import DB

from . import data, ideal, queries
from .bench_query import Server
from .duck import Duck
from .queries import Agg, Filter, Group, Query

_TIMING = re.compile(r"query;dur=([0-9.]+)")


def extra_queries(spec: data.Spec, name: str) -> list[Query]:
    sums = (Agg("sum", "clicks", "clicks"), Agg("sum", "bytes", "bytes"))
    mid = data.T0 + (spec.hours // 2) * data.HOUR
    return [
        Query("empty", sums, (), (Filter("=", "name", "no-such-name"),)),
        Query("name_eq", sums, (Group("at", "hour", "hour"),), (Filter("=", "name", name),)),
        Query("two_hours", sums, (Group("country", "country"),),
              (Filter(">=", "at", mid), Filter("<", "at", mid + 2 * data.HOUR))),
    ]


def build(spec: data.Spec, db_dir: Path) -> None:
    cfg = data.config(str(db_dir))
    with DB(cfg.replace(durability="none")) as db:
        for cols in data.generate(spec):
            db.insert(data.to_rows(cols))
        db.flush()


def timed_http(server: Server, obj: dict[str, Any], repeats: int) -> tuple[float, float]:
    """(median server ms, median round-trip ms) over `repeats` keep-alive requests."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    body = json.dumps(obj).encode()
    server_ms, trip_ms = [], []
    try:
        for _ in range(repeats + 2):
            t = time.perf_counter()
            conn.request("POST", "/query", body, {"content-type": "application/json"})
            r = conn.getresponse()
            r.read()
            trip = (time.perf_counter() - t) * 1000
            assert r.status == 200, r.status
            m = _TIMING.search(r.getheader("server-timing") or "")
            assert m, "no Server-Timing header"
            server_ms.append(float(m.group(1)))
            trip_ms.append(trip)
    finally:
        conn.close()
    return statistics.median(server_ms[2:]), statistics.median(trip_ms[2:])


def timed_duck(duck: Duck, q: Query, repeats: int) -> float:
    sql = queries.to_sql(q)
    times = []
    for _ in range(repeats + 2):
        t = time.perf_counter()
        duck.con.execute(sql).fetchall()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times[2:])


def run_size(rows: int, hours: int, repeats: int, work: Path) -> dict[str, Any]:
    spec = data.Spec(rows, hours=hours)
    db_dir = work / f"db-{rows}"
    shutil.rmtree(db_dir, ignore_errors=True)
    t = time.perf_counter()
    build(spec, db_dir)
    built = time.perf_counter() - t
    with DB(data.config(str(db_dir))) as db:
        tbl = ideal.table_from_snapshot(db.snapshot())
        name = db.snapshot().strings("name")[0]
    threads = os.cpu_count() or 1
    duck = Duck(tbl, threads)
    cfg_path = work / f"config-{rows}.toml"
    cfg_path.write_text(config_toml(data.config(str(db_dir)).replace(
        query_parallelism=threads)))
    server = Server(cfg_path, work / f"server-{rows}.log")
    out: dict[str, Any] = {"rows": rows, "stored_rows": tbl.n, "intervals": len(tbl.starts),
                           "build_seconds": round(built, 1), "queries": {}}
    try:
        for q in queries.queries(spec) + extra_queries(spec, name):
            srv, trip = timed_http(server, queries.to_json(q), repeats)
            dk = timed_duck(duck, q, repeats)
            out["queries"][q.name] = {"server_ms": round(srv, 3), "http_ms": round(trip, 3),
                                      "duckdb_ms": round(dk, 3),
                                      "server_vs_duckdb": round(dk / srv, 2) if srv else None}
    finally:
        server.stop()
        shutil.rmtree(db_dir, ignore_errors=True)
    return out


def report(results: list[dict[str, Any]]) -> str:
    names = list(results[0]["queries"])
    head = " | ".join(f"{r['rows']:,} ({r['stored_rows']:,})" for r in results)
    lines = [f"Server ms (Server-Timing) / DuckDB ms per input rows (rolled-up rows): {head}", "",
             "| query | " + " | ".join(f"{r['rows']:,}" for r in results) + " |",
             "|---|" + "---:|" * len(results)]
    for n in names:
        cells = [f"{r['queries'][n]['server_ms']:.3f} / {r['queries'][n]['duckdb_ms']:.3f} "
                 f"({r['queries'][n]['server_vs_duckdb']}x)" for r in results]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    p.add_argument("--hours", type=int, default=168)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "latency.json")
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            print(f"size {rows:,} ...", file=sys.stderr, flush=True)
            results.append(run_size(rows, args.hours, args.repeats, Path(tmp)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(report(results))
    print(f"\n(load average {os.getloadavg()[0]:.2f}; raw figures in {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
