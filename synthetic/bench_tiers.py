"""The webstat capacity plan (issue 15) as a benchmark: 1,000 apps x 200 event names, every
pair active in every bucket, the steady state of three tiers -- 288 five-minute intervals,
720 hourly, 1,095 daily: 57.6M + 144M + 219M = 420.6M stored rows -- built directly through
the storage layer (bulk.NewDB: rolled-up intervals written as segments, not over HTTP).

It builds the steady state of the day before plus one day that is due (a day of 5-minute
intervals aged past its keep, a day of hourly intervals aged past theirs, a daily interval past
the last keep), then measures:

- the compaction of that day (DB.compact: 288 x 5m -> 24 x 1h, 24 x 1h -> 1 x 1d, one drop):
  time and source rows/s; after it, exactly the steady state;
- bytes on disk per stored row and in all (segments, dictionaries, db.json);
- "one app, one event name, daily totals over 3 years" and "one app, top 10 names in the
  last hour": gumshoe in-process and DuckDB in-process on the same rows (read back from the
  segments, in the same order: time, then app, then name), answers compared, and then the
  real server (`gumshoe serve` over the directory, keep-alive HTTP): its own duration_ms, the
  client round trip, and its RSS (VmRSS / VmHWM; mapped segment pages count when touched).

The tiers are [["5m", "1d"], ["1h", "31d"], ["1d", "1125d"]]: with keeps counted as ages from
now (as tiers.py does: the last keep is the retention), these hold exactly 288 / 720 / 1,095
intervals at a day boundary; the seed's [1d, 30d, 3y] hold 288 / 696 / 1,065 (409.8M rows).
The server is opened with keeps lengthened by the time since the built "now", so its
compactor (start-up, every minute) finds nothing due while it is measured.

    python -m synthetic.bench_tiers --apps 50           # a small scale first
    python -m synthetic.bench_tiers                     # the full plan (~5 GB on disk)

Timings depend on the machine's load: it is shared, so report the load average beside them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from gumshoe.block import Block
from gumshoe.bulk import NewDB
from gumshoe.config import parse_config
from gumshoe.db import DB
from gumshoe.engine import Prepared
from gumshoe.query import parse_query
from gumshoe.schema import Schema
from gumshoe.service import _shared_pool

from .bench_query import Server

M5, H, D = 300, 3600, 86400
DAYS_5M, HOURS, DAYS = 1, 720, 1095  # the plan's tiers: intervals at steady state
TIERS = [["5m", "1d"], ["1h", "31d"], ["1d", "1125d"]]
SCHEMA = """
[schema]
segment_size = "{segment_size}"
timestamp_column = ["at", "uint32"]
dimension_columns = [["appid", "uint32"], ["name", "string:uint16"]]
metric_columns = [["value", "uint32"]]
tiers = {tiers}
"""


def config_text(directory: Path, tiers: list[list[str]], segment_size: str,
                threads: int) -> str:
    return (f'database_dir = "{directory}"\ndurability = "os"\nflush_interval = "1h"\n'
            f"query_parallelism = {threads}\n"
            + SCHEMA.format(segment_size=segment_size, tiers=json.dumps(tiers)))


# -- the data -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Plan:
    apps: int
    names: int
    now: int  # a day boundary: the steady state's "now" after the measured compaction

    @property
    def keys(self) -> int:
        return self.apps * self.names

    def intervals(self) -> list[tuple[int, int]]:
        """(start, duration) of every interval built: yesterday's steady state plus the day
        that is due today (5m and 1h) and the daily interval past the last keep."""
        now = self.now
        five = [(s, M5) for s in range(now - 2 * D, now, M5)]  # 2 days: one of them due
        hourly = [(s, H) for s in range(now - (HOURS // 24 + 2) * D, now - 2 * D, H)]
        daily = [(s, D) for s in range(now - (DAYS + HOURS // 24 + 2) * D,
                                       now - (HOURS // 24 + 2) * D, D)]
        return daily + hourly + five

    def watermarks(self) -> tuple[int, int]:
        return self.now - 2 * D, self.now - (HOURS // 24 + 2) * D


def interval_block(plan: Plan, start: int, duration: int) -> Block:
    """Every (app, name) pair once, ordered by app then name (the roll-up order): counts of
    about 5 events per 5 minutes (more in coarser buckets), each event's value 1..10."""
    rng = np.random.default_rng(start)
    n = plan.keys
    events = duration // M5
    count = rng.poisson(4 * events, n).astype(np.int64) + events  # >= 1 event per 5 minutes
    value = (count * rng.uniform(1, 10, n)).astype(np.int64)
    appid = np.repeat(np.arange(plan.apps, dtype=np.uint32), plan.names)
    name = np.tile(np.arange(plan.names, dtype=np.uint16), plan.apps)
    return Block(n, count, {"appid": appid, "name": name}, {"appid": None, "name": None},
                 {"value": value})


def build(plan: Plan, dest: Path, schema: Schema, threads: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    names = [f"event_{i:03d}" for i in range(plan.names)]
    with NewDB(dest, schema, fsync=False) as out:
        out.tables["name"].remap("gen", names, np.arange(plan.names), None)
        out.watermarks = plan.watermarks()
        out.last_updated = plan.now - 1
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda iv: out.add_interval(iv[0], interval_block(plan, *iv), iv[1]),
                          plan.intervals()))
        out.commit()
    subprocess.run(["sync"], check=False)
    return {"seconds": time.perf_counter() - t0, "rows": out.rows,
            "intervals": len(plan.intervals())}


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def tier_counts(db: DB) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for iv in db.intervals.values():
        e = out.setdefault({M5: "5m", H: "1h", D: "1d"}[iv.duration],
                           {"intervals": 0, "rows": 0, "bytes": 0})
        e["intervals"] += 1
        e["rows"] += iv.rows
        e["bytes"] += iv.nbytes
    return dict(sorted(out.items(), key=lambda kv: {"5m": 0, "1h": 1, "1d": 2}[kv[0]]))


# -- the queries --------------------------------------------------------------------------------
def queries(plan: Plan, app: int, name: str) -> dict[str, dict[str, Any]]:
    return {
        "app_name_daily_3y": {
            "aggregates": [{"column": "value", "name": "total"}],
            "filters": [{"column": "appid", "value": app}, {"column": "name", "value": name}],
            "groupings": [{"column": "at", "timeTransform": "day", "name": "day"}]},
        "app_top10_last_hour": {
            "aggregates": [{"column": "value", "name": "total"}],
            "filters": [{"column": "appid", "value": app},
                        {"column": "at", "type": ">=", "value": plan.now - H}],
            "groupings": ["name"],
            "orderBy": [{"column": "total", "descending": True}], "limit": 10},
    }


def duck_sql(plan: Plan, app: int, code: int) -> dict[str, str]:
    return {
        "app_name_daily_3y": (
            f"SELECT \"at\" - \"at\" % 86400 AS day, sum(value) AS total, sum(count) AS n FROM t "
            f"WHERE appid = {app} AND name = {code} GROUP BY day ORDER BY day"),
        "app_top10_last_hour": (
            f"SELECT name, sum(value) AS total, sum(count) AS n FROM t WHERE appid = {app} "
            f"AND \"at\" >= {plan.now - H} GROUP BY name ORDER BY total DESC, name LIMIT 10"),
    }


def load_duck(db: DB, threads: int, path: Path) -> tuple[Any, dict[str, Any]]:
    """DuckDB (a database file, compressed) holding the rows gumshoe stores, in its order."""
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect(str(path), config={"threads": threads, "memory_limit": "4GB",
                                            "preserve_insertion_order": True})
    con.execute("CREATE TABLE t (\"at\" UINTEGER, appid UINTEGER, name USMALLINT, "
                "count BIGINT, value BIGINT)")
    snap = db.snapshot()
    batch: list[tuple[int, Block]] = []

    def flush() -> None:
        if not batch:
            return
        src = {"at": np.concatenate([np.full(b.n, s, np.uint32) for s, b in batch]),
               "appid": np.concatenate([b.dims["appid"] for _, b in batch]),
               "name": np.concatenate([b.dims["name"] for _, b in batch]),
               "count": np.concatenate([b.count.astype(np.int64) for _, b in batch]),
               "value": np.concatenate([b.metrics["value"].astype(np.int64) for _, b in batch])}
        con.register("src", src)
        con.execute("INSERT INTO t SELECT * FROM src")
        con.unregister("src")
        batch.clear()

    rows = 0
    for view in snap.intervals:
        for seg in view.segments:
            batch.append((view.start, seg.block))
            rows += seg.rows
        if sum(b.n for _, b in batch) >= 2_000_000:
            flush()
    flush()
    con.execute("CHECKPOINT")
    return con, {"seconds": time.perf_counter() - t0, "rows": rows,
                 "bytes": path.stat().st_size}


def timed(fn: Any, runs: int) -> tuple[Any, list[float]]:
    out, times = None, []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return out, times


def summary(times: list[float]) -> dict[str, float]:
    s = sorted(times)
    return {"median_ms": statistics.median(s), "min_ms": s[0],
            "p90_ms": s[max(0, int(0.9 * len(s)) - 1)], "first_ms": times[0]}


# -- the run ------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    now = int(time.time()) // D * D
    plan = Plan(args.apps, args.names, now)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-tiers-"))
    work.mkdir(parents=True, exist_ok=True)
    dest = work / "db"
    cfg_text = config_text(dest, TIERS, args.segment_size, args.threads)
    cfg = parse_config(cfg_text)
    schema = Schema.from_config(cfg.schema)
    res: dict[str, Any] = {"apps": plan.apps, "names": plan.names, "threads": args.threads,
                           "segment_size": args.segment_size, "tiers": TIERS,
                           "load_start": os.getloadavg()}
    rows_at = {"5m": DAYS_5M * 288 * plan.keys, "1h": HOURS * plan.keys,
               "1d": DAYS * plan.keys}
    res["plan_rows"] = rows_at
    print(f"building {len(plan.intervals())} intervals of {plan.keys:,} rows in {work} ...",
          flush=True)
    res["build"] = build(plan, dest, schema, args.threads)
    print(f"  {res['build']['rows']:,} rows in {res['build']['seconds']:.1f} s", flush=True)
    try:
        t0 = time.perf_counter()
        db = DB(cfg, clock=lambda: now)
        res["open_seconds"] = time.perf_counter() - t0  # checksums every segment
        before = tier_counts(db)
        due = (288 + 24) * plan.keys  # a day of 5-minute and a day of hourly intervals
        t0 = time.perf_counter()
        steps = db.compact()
        seconds = time.perf_counter() - t0
        after = tier_counts(db)
        res["compaction"] = {"seconds": seconds, "steps": steps, "source_rows": due,
                             "rows_per_s": due / seconds, "before": before, "after": after}
        print(f"  one day's compaction: {seconds:.1f} s, {due / seconds / 1e6:.2f}M source "
              f"rows/s; tiers now {after}", flush=True)
        assert {k: v["rows"] for k, v in after.items()} == rows_at, (after, rows_at)
        stored = sum(v["rows"] for v in after.values())
        db.close()
        total = disk_bytes(dest)
        res["disk"] = {"bytes": total, "stored_rows": stored, "bytes_per_row": total / stored,
                       "segment_bytes": sum(v["bytes"] for v in after.values())}
        print(f"  disk: {total / 1e9:.2f} GB, {total / stored:.2f} B/row", flush=True)

        db = DB(cfg, clock=lambda: now)
        app, name = plan.apps // 3, f"event_{plan.names // 2:03d}"
        qs = queries(plan, app, name)
        pool = _shared_pool(args.threads)
        gum: dict[str, Any] = {}
        for key, q in qs.items():
            prepared: list[Prepared] = []

            def once(q: dict[str, Any] = q, out: list[Prepared] = prepared) -> Any:
                p = Prepared(parse_query(q, db.schema), db.snapshot(), args.threads,
                             db.config.max_groups)
                out.append(p)
                return p.rows(pool)
            rows, times = timed(once, args.runs)
            gum[key] = {**summary(times), "rows": len(rows),
                        "granularity": prepared[-1].extra().get("granularity"),
                        "pruned": prepared[-1].scanner.pruned, "result": rows}
        res["gumshoe"] = {k: {kk: vv for kk, vv in v.items() if kk != "result"}
                          for k, v in gum.items()}
        print(f"  gumshoe in-process: { {k: round(v['median_ms'], 2) for k, v in gum.items()} }"
              " ms", flush=True)

        duck, loaded = load_duck(db, args.threads, work / "duck.db")
        res["duckdb_load"] = loaded
        code = db.dictionaries["name"].lookup(name)
        sqls = duck_sql(plan, app, code if code is not None else -1)
        res["duckdb"] = {}
        for key, sql in sqls.items():
            out, times = timed(lambda sql=sql: duck.execute(sql).fetchall(), args.runs)
            res["duckdb"][key] = {**summary(times), "rows": len(out)}
            check_same(key, gum[key]["result"], out, db)
        duck.close()
        print(f"  duckdb: { {k: round(v['median_ms'], 2) for k, v in res['duckdb'].items()} } "
              f"ms ({loaded['bytes'] / 1e9:.2f} GB file)", flush=True)
        db.close()

        # the server, with keeps lengthened so that nothing is due while it is measured
        late = -(-(int(time.time()) + 3 * H - now) // H)  # hours since the built "now"
        server_tiers = [[d, f"{k}{late}h"] for d, k in TIERS]
        server_cfg = work / "server.toml"
        server_cfg.write_text(config_text(dest, server_tiers, args.segment_size, args.threads))
        t0 = time.monotonic()
        server = Server(server_cfg, work / "server.log", timeout=1800)
        try:
            res["server_start_seconds"] = time.monotonic() - t0
            res["server"] = {}
            for key, q in qs.items():
                answers: list[dict[str, Any]] = []

                def ask(q: dict[str, Any] = q, out: list[dict[str, Any]] = answers) -> Any:
                    out.append(server.answer(q))
                    return out[-1]
                last, times = timed(ask, args.runs)
                res["server"][key] = {**summary(times), "rows": len(last["results"]),
                                      "server_ms": statistics.median(a["duration_ms"]
                                                                     for a in answers),
                                      "granularity": last.get("granularity")}
                assert last["results"] == gum[key]["result"], key
            res["server"]["memory_mb"] = server.memory()
            res["server"]["compaction_lag_seconds"] = server.metric(
                "gumshoe_compaction_lag_seconds")
        finally:
            server.stop()
        print(f"  server: { {k: v for k, v in res['server'].items()} }", flush=True)
    finally:
        res["load_end"] = os.getloadavg()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return res


def check_same(key: str, gum: list[dict[str, Any]], duck: list[tuple[Any, ...]],
               db: DB) -> None:
    """gumshoe's answer equals DuckDB's (totals; names decoded)."""
    if key == "app_name_daily_3y":
        g = [(r["day"], r["total"], r["rowCount"]) for r in gum]
        d = [(int(day), int(total), int(n)) for day, total, n in duck]
    else:
        strings = db.dictionaries["name"].values
        g = [(r["name"], r["total"], r["rowCount"]) for r in gum]
        d = [(strings[code], int(total), int(n)) for code, total, n in duck]
    if g != d:
        raise AssertionError(f"{key}: gumshoe and DuckDB differ: {g[:3]} vs {d[:3]}")


def report(res: dict[str, Any]) -> str:
    c, disk = res["compaction"], res["disk"]
    lines = [
        f"# Tiered retention: the webstat capacity plan ({res['apps']:,} apps x "
        f"{res['names']} names)", "",
        f"- machine: {os.cpu_count()} CPUs, shared with other engineers; load average "
        f"{res['load_start'][0]:.2f} at the start, {res['load_end'][0]:.2f} at the end; "
        f"Python {platform.python_version()}, threads {res['threads']}, segment_size "
        f"{res['segment_size']}",
        f"- built {res['build']['intervals']:,} intervals, {res['build']['rows']:,} rows in "
        f"{res['build']['seconds']:.0f} s (bulk.NewDB); opened (checksums) in "
        f"{res['open_seconds']:.1f} s",
        f"- one day's compaction: {c['seconds']:.1f} s for {c['source_rows']:,} source rows "
        f"({c['rows_per_s'] / 1e6:.2f}M rows/s), {c['steps']} commits",
        "", "| tier | intervals | stored rows | bytes | B/row |", "|---|---:|---:|---:|---:|"]
    for tier, v in c["after"].items():
        lines.append(f"| {tier} | {v['intervals']:,} | {v['rows']:,} | {v['bytes']:,} | "
                     f"{v['bytes'] / v['rows']:.2f} |")
    lines += [f"| all (on disk) | | {disk['stored_rows']:,} | {disk['bytes']:,} | "
              f"{disk['bytes_per_row']:.2f} |", "",
              "| query | gumshoe in-process ms (median / p90) | DuckDB ms | server ms "
              "(own / round trip) |", "|---|---:|---:|---:|"]
    for key in res["gumshoe"]:
        g, d, s = res["gumshoe"][key], res["duckdb"][key], res["server"][key]
        lines.append(f"| {key} | {g['median_ms']:.2f} / {g['p90_ms']:.2f} | "
                     f"{d['median_ms']:.2f} | {s['server_ms']} / {s['median_ms']:.2f} |")
    mem = res["server"]["memory_mb"]
    lines += ["", f"- server memory while answering: VmRSS {mem.get('VmRSS', 0):.0f} MB "
              f"(anonymous {mem.get('RssAnon', 0):.0f} MB, file {mem.get('RssFile', 0):.0f} "
              f"MB), peak {mem.get('VmHWM', 0):.0f} MB; DuckDB file "
              f"{res['duckdb_load']['bytes'] / 1e9:.2f} GB"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--apps", type=int, default=1000)
    p.add_argument("--names", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=15, help="timed runs per query and engine")
    p.add_argument("--segment-size", default="4MB")
    p.add_argument("--workdir", help="where to build (default: a temp dir); removed at the end")
    p.add_argument("--keep", action="store_true", help="keep the databases")
    p.add_argument("--json", help="write the results as JSON to this path")
    args = p.parse_args(argv)
    res = run(args)
    text = report(res)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
