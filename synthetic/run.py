"""One command for the whole benchmark suite.

    python -m synthetic.run [--quick] [--rows N [N ...]] [--out DIR] [--no-http] [--results PATH]

For each size (a growth curve; each size in its own process, so peak RSS is its own): generate
the data set, ingest it through the library (timed beside the ideal kernels), check the stored
table against the ideal roll-up, reopen it, run every query shape in-engine, in DuckDB and in
the ideal kernels (answers checked against DuckDB), then over HTTP through `gumshoe serve`.
Writes report.md and results.json into --out (default synthetic/out/); a full run also writes
the report to --results (default synthetic/RESULTS.md). Exits 1 if any answer was wrong.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QUICK_SIZES = [1_000_000]
FULL_SIZES = [1_000_000, 3_000_000, 10_000_000, 30_000_000, 100_000_000]
SIZE_TIMEOUT_S = 5400  # one size, ingest and queries


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_size(rows: int, work: Path, *, hours: int = 168, seed: int = 8, repeats: int = 5,
             http: bool = True, flush_every: int = 5_000_000, segment_size: int | None = None,
             durability: str | None = None, threads: int | None = None,
             python_reference: bool = False, budget_s: float = 60.0,
             duckdb_strings: str = "enum",
             progress: Any = log) -> dict[str, Any]:
    """Everything for one data-set size, in this process. `python_reference` also evaluates
    every query in pure Python over the raw rows (small sizes only)."""
    from gumshoe.db import DB

    from . import bench_ingest, bench_query, data, ideal, queries
    from .duck import Duck

    threads = threads or os.cpu_count() or 1
    spec = data.Spec(rows, hours=hours, seed=seed)
    db_dir, ref_dir = work / "db", work / "ref"
    out: dict[str, Any] = {"rows": rows, "hours": hours, "seed": seed, "threads": threads,
                           "duckdb_strings": duckdb_strings, "failures": []}
    out["loadavg_start"] = os.getloadavg()[0]
    raw: list[dict[str, Any]] | None = [] if python_reference else None
    progress(f"size {rows:,}: ingest")
    out["ingest"] = bench_ingest.run(spec, db_dir, ref_dir, flush_every=flush_every,
                                     segment_size=segment_size, durability=durability,
                                     query_parallelism=threads, raw_rows=raw,
                                     progress=progress)
    ing = out["ingest"]
    ing["memory"] = bench_ingest.insert_memory(spec)
    if ing["queryable_rows"] != rows:
        out["failures"].append(f"right after the last insert a query counted "
                               f"{ing['queryable_rows']} rows, expected {rows}")
    cfg = data.config(str(db_dir), segment_size, durability).replace(query_parallelism=threads)
    t = time.perf_counter()
    db = DB(cfg)
    out["reopen_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    tbl = ideal.table_from_snapshot(db.snapshot())
    out["ideal_table_seconds"] = time.perf_counter() - t
    problem = bench_query.check_stored(tbl, ref_dir)
    if problem:
        out["failures"].append(f"stored table != ideal roll-up of the input: {problem}")
    shutil.rmtree(ref_dir, ignore_errors=True)
    out["stored_rows"] = tbl.n
    out["ideal_flush_us_per_row"] = 1e6 * ideal.flush(tbl, work / "flush") / max(
        min(1_000_000, tbl.n), 1)
    t = time.perf_counter()
    duck = Duck(tbl, threads, duckdb_strings)
    out["duckdb_load_seconds"] = time.perf_counter() - t
    qs = queries.queries(spec)
    expected: dict[str, Any] = {}
    if raw is not None:
        progress(f"size {rows:,}: pure-Python reference")
        rolled = _python_rollup(raw)
        for q in qs:
            problem = queries.diff(q, duck.run(q), queries.reference(q, rolled))
            if problem:
                out["failures"].append(f"{q.name}: duckdb != python reference: {problem}")
        del raw, rolled
    pool = ThreadPoolExecutor(threads)
    progress(f"size {rows:,}: {tbl.n:,} rolled-up rows; queries")
    results, failures = bench_query.run(qs, bench_query.engines(db, tbl, duck, pool), tbl.n,
                                        repeats, budget_s, progress, expected)
    out["failures"] += failures
    db.close()
    if http:
        progress(f"size {rows:,}: queries over HTTP")
        cfg_path = work / "config.toml"
        cfg_path.write_text(_server_toml(db_dir, segment_size, durability, threads))
        try:
            t = time.perf_counter()
            server = bench_query.Server(cfg_path, work / "server.log", cwd=ROOT)
            out["server_start_seconds"] = time.perf_counter() - t
        except Exception as e:
            out["failures"].append(f"http: {e}")
            server = None
        if server is not None:
            try:
                hres, hfail = bench_query.run(qs, {"http": bench_query.http_engine(server)},
                                              tbl.n, repeats, budget_s, progress, expected)
                out["failures"] += hfail
                by_name = {r["query"]: r for r in hres}
                for r in results:
                    h = by_name[r["query"]]["engines"].get("http")
                    if h:
                        r["engines"]["http"] = h
                        r["duckdb_over_http"] = r["engines"]["duckdb"]["median_ms"] / h[
                            "median_ms"]
                out["server_peak_rss_mb"] = server.rss_mb()
            finally:
                server.stop()
    duck.close()
    pool.shutdown()
    out["queries"] = results
    out["peak_rss_mb"] = bench_ingest.peak_rss_mb()
    out["loadavg_end"] = os.getloadavg()[0]
    out["ok"] = not out["failures"]
    return out


def _server_toml(db_dir: Path, segment_size: int | None, durability: str | None,
                 threads: int) -> str:
    from gumshoe.config import config_toml

    from . import data

    cfg = data.config(str(db_dir), segment_size, durability)
    return config_toml(cfg.replace(query_parallelism=threads))


def _python_rollup(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from .data import HOUR

    acc: dict[tuple[Any, ...], list[int]] = {}
    for r in raw:
        k = (r["at"] - r["at"] % HOUR, r["name"], r["country"], r["device"])
        a = acc.setdefault(k, [0, 0, 0, 0])
        a[0] += r["visits"]
        a[1] += r["clicks"]
        a[2] += r["bytes"]
        a[3] += 1
    return [{"at": k[0], "name": k[1], "country": k[2], "device": k[3], "visits": a[0],
             "clicks": a[1], "bytes": a[2], "count": a[3]} for k, a in acc.items()]


# -- the command --------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import duckdb
    import numpy

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"nproc": os.cpu_count(), "ram_gb": round(mem_gb, 1), "cpu": cpu,
            "python": platform.python_version(), "numpy": numpy.__version__,
            "duckdb": duckdb.__version__, "loadavg_start": os.getloadavg()}


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except OSError:
            return ""

    commit = git("rev-parse", "HEAD") or os.environ.get("GUMSHOE_BENCH_COMMIT", "unknown")
    dirty = bool(git("status", "--porcelain", "--", "gumshoe"))
    return {"commit": commit, "gumshoe_dirty": dirty}


def http_insert(batches: int) -> dict[str, Any]:
    """Run synthetic/http_insert.py (PUT /insert of 10k-row JSON batches to `gumshoe serve`,
    1 and 2 client threads) and keep its output and its rows/s figures."""
    log(f"HTTP insert: {batches} batches (synthetic/http_insert.py)")
    try:
        p = subprocess.run([sys.executable, "-m", "synthetic.http_insert", "--batches",
                            str(batches)], cwd=ROOT, capture_output=True, text=True,
                           timeout=900)
    except subprocess.TimeoutExpired:
        return {"ok": False, "output": "timed out after 900 s"}
    rates = {}
    for line in p.stdout.splitlines():
        head, sep, rest = line.strip().partition(" client thread(s): ")
        if sep and head.isdigit():
            rates[int(head)] = float(rest.split("rows/s")[0].replace(",", ""))
    return {"ok": p.returncode == 0, "output": (p.stdout + p.stderr[-2000:]).strip(),
            "rows_per_s": rates}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synthetic.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one size of ~1M input rows")
    ap.add_argument("--rows", type=int, nargs="+", help="input-row sizes (the growth curve)")
    ap.add_argument("--hours", type=int, default=168, help="hours of data (default a week)")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--repeats", type=int, help="timed runs per query and engine")
    ap.add_argument("--flush-every", type=int, default=5_000_000,
                    help="input rows between flushes during ingest")
    ap.add_argument("--segment-size", type=int, help="bytes (default: the default config's)")
    ap.add_argument("--durability", choices=("fsync", "os", "none"),
                    help="default: the default config's")
    ap.add_argument("--threads", type=int, help="query threads for every engine (default nproc)")
    ap.add_argument("--duckdb-strings", choices=("enum", "varchar"), default="enum",
                    help="how DuckDB stores the string dimensions (default: ENUM)")
    ap.add_argument("--no-http", action="store_true", help="skip the HTTP measurements")
    ap.add_argument("--no-http-insert", action="store_true",
                    help="skip synthetic/http_insert.py (PUT /insert rows/s, 1 and 2 clients)")
    ap.add_argument("--python-reference", action="store_true",
                    help="also check DuckDB against a pure-Python evaluation (small sizes)")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--results", type=Path,
                    help="also write the markdown report here (a full run: synthetic/RESULTS.md)")
    ap.add_argument("--keep-db", action="store_true",
                    help="keep each size's database in --out/db-N (for synthetic.profile)")
    ap.add_argument("--one-size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    quick = args.quick
    repeats = args.repeats or (5 if quick else 9)
    kwargs = dict(hours=args.hours, seed=args.seed, repeats=repeats, http=not args.no_http,
                  flush_every=args.flush_every, segment_size=args.segment_size,
                  durability=args.durability, threads=args.threads,
                  python_reference=args.python_reference, duckdb_strings=args.duckdb_strings)
    if args.one_size:  # the child process of one size
        work = args.out / f"work-{args.one_size}"
        try:
            res = run_size(args.one_size, work, **kwargs)  # type: ignore[arg-type]
        finally:
            if args.keep_db and (work / "db").exists():
                kept = args.out / f"db-{args.one_size}"
                shutil.rmtree(kept, ignore_errors=True)
                (work / "db").rename(kept)
            shutil.rmtree(work, ignore_errors=True)
        args.json.write_text(json.dumps(res, indent=1, default=str))
        return 0 if res["ok"] else 1

    from . import report

    sizes = args.rows or (QUICK_SIZES if quick else FULL_SIZES)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python -m synthetic.run " + " ".join(sys.argv[1:] if argv is None
                                                             else argv),
            "machine": machine(), "git": git_state(), "quick": quick, "sizes": sizes,
            "options": {k: v for k, v in kwargs.items()}}
    runs: list[dict[str, Any]] = []
    status = 0
    t0 = time.perf_counter()
    for n in sizes:
        path = args.out / f"size-{n}.json"
        path.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "synthetic.run", "--one-size", str(n), "--json", str(path),
               "--out", str(args.out), "--hours", str(args.hours), "--seed", str(args.seed),
               "--repeats", str(repeats), "--flush-every", str(args.flush_every),
               "--duckdb-strings", args.duckdb_strings]
        for flag, value in (("--segment-size", args.segment_size),
                            ("--durability", args.durability), ("--threads", args.threads)):
            if value is not None:
                cmd += [flag, str(value)]
        cmd += ["--no-http"] * args.no_http + ["--python-reference"] * args.python_reference
        cmd += ["--keep-db"] * args.keep_db
        t = time.perf_counter()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, check=False, timeout=SIZE_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            rc = -1
            log(f"size {n:,}: gave up after {SIZE_TIMEOUT_S} s")
        log(f"size {n:,}: done in {time.perf_counter() - t:.0f}s (exit {rc})")
        if path.exists():
            res = json.loads(path.read_text())
            res["seconds"] = time.perf_counter() - t
            runs.append(res)
            for f in res["failures"]:
                log(f"FAILURE at {n:,} rows: {f}")
        else:
            runs.append({"rows": n, "ok": False, "failures": [f"the run crashed (exit {rc})"]})
        if rc:
            status = 1
    if not (args.no_http or args.no_http_insert) and (HERE / "http_insert.py").exists():
        meta["http_insert"] = http_insert(20 if quick else 60)
    meta["machine"]["loadavg_end"] = os.getloadavg()
    meta["seconds"] = time.perf_counter() - t0
    doc = {"meta": meta, "runs": runs}
    (args.out / "results.json").write_text(json.dumps(doc, indent=1, default=str))
    text = report.markdown(doc)
    (args.out / "report.md").write_text(text)
    results = args.results or (None if quick or args.rows else HERE / "RESULTS.md")
    if results is not None:
        results.write_text(report.keep_tail(text, results))
    print(text)
    log(f"wrote {args.out / 'report.md'} and {args.out / 'results.json'}"
        + (f" and {results}" if results else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
