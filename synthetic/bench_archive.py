"""What the raw archive costs on the insert path, and how fast GET /raw's reader reads it back.

    python -m synthetic.bench_archive [--batches N] [--repeats R] [--dir DIR] [--http]

Library level, as `synthetic.bench_durability`: 10k-row batches of the synthetic data set
inserted into an on-disk database with durability fsync and os, from 1 and 4 threads, each with
its own batch id, with [archive] off and on (rotate 64 MB). Paths: ``insert`` (decoded JSON
rows: validation + encoding + log + memtable, what an HTTP insert costs minus HTTP and JSON) and
``insert_batch`` (pre-validated batches: storage only, where the archive's share is largest).
Reports rows/s (best of R runs, round robin), the share of it the archive costs, CPU time per
row (all threads; least of R runs: steadier than rows/s on a loaded machine) and the archive's
bytes per row;
then the reader: all archived rows in time order (`rawscan`) and rendered as NDJSON. With
--http, also PUT /insert against the real server (10k-row JSON bodies, 1 and 2 clients).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gumshoe.archive import list_files
from gumshoe.batch import parse_rows
import orjson

from gumshoe.config import ArchiveConfig, config_toml
from gumshoe.db import DB
from gumshoe.rawformat import TIME_MAX, ndjson
from gumshoe.rawscan import scan_directory

from . import data, http_insert

MODES = ("fsync", "os")
THREADS = (1, 4)
DISTINCT = 16  # distinct pre-generated batches, reused round robin


def run_one(db_dir: Path, durability: str, archive: bool, threads: int, path: str,
            work: list[Any]) -> dict[str, Any]:
    shutil.rmtree(db_dir, ignore_errors=True)
    cfg = data.config(str(db_dir), durability=durability).replace(
        archive=ArchiveConfig(enabled=archive, rotate=64 << 20))
    db = DB(cfg)
    insert = db.insert if path == "insert" else db.insert_batch
    it = iter(enumerate(work))
    lock = threading.Lock()
    rows = [0]
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while True:
                with lock:
                    nxt = next(it, None)
                if nxt is None:
                    return
                i, item = nxt
                r = insert(item, f"bench-{i}")
                with lock:
                    rows[0] += r.inserted
        except BaseException as e:  # reported below
            errors.append(e)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    t0, c0 = time.perf_counter(), time.process_time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    if errors:
        raise errors[0]
    size = db.archive.stats["bytes"] if db.archive is not None else 0
    db.close(flush=False)
    out = {"rows": rows[0], "seconds": seconds, "rows_per_s": rows[0] / seconds,
           "cpu_ns_per_row": cpu / max(rows[0], 1) * 1e9,
           "archive_bytes_per_row": size / max(rows[0], 1)}
    if archive and path == "insert_batch" and threads == 1 and durability == "os":
        out["read"] = read_back(db_dir / "archive", rows[0])
    shutil.rmtree(db_dir, ignore_errors=True)
    return out


def read_back(directory: Path, rows: int) -> dict[str, float]:
    """Rows/s of the reader (time order) and of the reader plus NDJSON rendering."""
    t0 = time.perf_counter()
    n = sum(c.n for c in scan_directory(directory, -1, TIME_MAX).chunks())
    t1 = time.perf_counter()
    size = sum(len(b) for b in ndjson(scan_directory(directory, -1, TIME_MAX).chunks()))
    t2 = time.perf_counter()
    assert n == rows, (n, rows)
    files = len(list_files(directory)[0])
    return {"scan_rows_per_s": n / (t1 - t0), "ndjson_rows_per_s": n / (t2 - t1),
            "ndjson_bytes_per_row": size / n, "files": files}


def http_phase(batches: int, repeats: int, base: Path) -> None:
    """PUT /insert of 10k-row JSON bodies against the real server (durability fsync, insert
    workers on), archive off and on: what the archive costs an HTTP client."""
    spec = data.Spec(rows=(batches + 4) * 10_000, hours=24)
    bodies = [orjson.dumps(data.to_rows(c)) for c in data.generate(spec)]
    warmup, bodies = bodies[:4], bodies[4:]
    best: dict[tuple[int, bool], float] = {}
    for _ in range(repeats):
        for threads in (1, 2):
            for archive in (False, True):
                d = Path(tempfile.mkdtemp(prefix="http-", dir=base))
                cfg = data.config(str(d / "db"), durability="fsync").replace(
                    archive=ArchiveConfig(enabled=archive, rotate=64 << 20))
                (d / "config.toml").write_text(config_toml(cfg))
                port = http_insert.free_port()
                proc = subprocess.Popen([sys.executable, "-m", "gumshoe", "serve", "--config",
                                         str(d / "config.toml"), "--listen",
                                         f"127.0.0.1:{port}", "--log-level", "warning"],
                                        stdin=subprocess.DEVNULL)
                try:
                    http_insert.wait_ready(proc, port, "server")
                    http_insert.run(port, warmup, 1)
                    rows, seconds = http_insert.run(port, bodies, threads)
                finally:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(120)
                    shutil.rmtree(d, ignore_errors=True)
                k = (threads, archive)
                best[k] = max(best.get(k, 0.0), rows / seconds)
                print(f"HTTP threads={threads} archive={'on ' if archive else 'off'} "
                      f"{rows / seconds:>12,.0f} rows/s", file=sys.stderr, flush=True)
    print("\n| HTTP PUT /insert (fsync) | archive off rows/s | archive on rows/s | rows/s lost |")
    print("|---|---|---|---|")
    for threads in (1, 2):
        off, on = best[(threads, False)], best[(threads, True)]
        print(f"| {threads} client thread(s) | {off:,.0f} | {on:,.0f} | "
              f"{(1 - on / off) * 100:.0f}% |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=60, help="10k-row batches per run")
    p.add_argument("--repeats", type=int, default=3, help="runs per configuration (best kept)")
    p.add_argument("--dir", type=Path, default=None,
                   help="where the databases go (default: a temporary directory; use a real "
                   "disk, not tmpfs, or fsync costs nothing)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--http", action="store_true",
                   help="also time PUT /insert against the real server, archive off and on")
    args = p.parse_args(argv)

    spec = data.Spec(DISTINCT * 10_000)
    schema_db = DB(data.config("MEMORY"))
    raw = [data.to_rows(c) for c in data.generate(spec)]
    batches = [parse_rows(schema_db.schema, r) for r in raw]
    work = {"insert": [raw[i % DISTINCT] for i in range(args.batches)],
            "insert_batch": [batches[i % DISTINCT] for i in range(args.batches)]}
    base = Path(tempfile.mkdtemp(prefix="gumshoe-bench-archive-", dir=args.dir))
    configs = [(path, threads, mode, archive) for path in ("insert", "insert_batch")
               for threads in THREADS for mode in MODES for archive in (False, True)]
    best: dict[tuple[str, int, str, bool], dict[str, Any]] = {}
    try:
        for rep in range(args.repeats):
            for path, threads, mode, archive in configs:
                r = run_one(base / "db", mode, archive, threads, path, work[path])
                r.update(path=path, threads=threads, durability=mode, archive=archive)
                k = (path, threads, mode, archive)
                if k not in best or r["rows_per_s"] > best[k]["rows_per_s"]:
                    cpu = min(r["cpu_ns_per_row"], best.get(k, r)["cpu_ns_per_row"])
                    best[k] = {**r, "cpu_ns_per_row": cpu}
                else:
                    best[k]["cpu_ns_per_row"] = min(best[k]["cpu_ns_per_row"],
                                                    r["cpu_ns_per_row"])
                print(f"[{rep + 1}/{args.repeats}] {path:12} threads={threads} {mode:5} "
                      f"archive={'on ' if archive else 'off'} {r['rows_per_s']:>12,.0f} rows/s",
                      file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    results = list(best.values())
    print("| path | threads | durability | archive off rows/s | archive on rows/s | rows/s lost "
          "| CPU ns/row off | CPU ns/row on | archive bytes/row |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in ("insert", "insert_batch"):
        for threads in THREADS:
            for mode in MODES:
                off, on = best[(path, threads, mode, False)], best[(path, threads, mode, True)]
                cost = 1 - on["rows_per_s"] / off["rows_per_s"]
                print(f"| {path} | {threads} | {mode} | {off['rows_per_s']:,.0f} | "
                      f"{on['rows_per_s']:,.0f} | {cost * 100:.0f}% | "
                      f"{off['cpu_ns_per_row']:.0f} | {on['cpu_ns_per_row']:.0f} | "
                      f"{on['archive_bytes_per_row']:.1f} |")
    read = next(r["read"] for r in results if "read" in r)
    print(f"\nreading back {args.batches * 10_000:,} rows ({read['files']} files): "
          f"{read['scan_rows_per_s']:,.0f} rows/s in time order, "
          f"{read['ndjson_rows_per_s']:,.0f} rows/s as NDJSON "
          f"({read['ndjson_bytes_per_row']:.0f} bytes/row)")
    if args.http:
        base = Path(tempfile.mkdtemp(prefix="gumshoe-bench-archive-http-", dir=args.dir))
        try:
            http_phase(args.batches, args.repeats, base)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
