"""gumtool merge and migrate throughput (stored rows/s and input rows/s) on >= 10M rows.

    python -m synthetic.bench_gumtool [--rows 10000000] [--intervals 20] [--parallelism 1,2]
                                      [--workdir DIR] [--json PATH] [--keep]

Set-up (not timed): `--rows` rolled-up rows (each with a roll-up count of 1..5, so about three
times as many input rows) in `--intervals` one-hour intervals are generated directly as Blocks
-- every dimension key unique within its interval -- and written as two shard databases (rows
assigned at random, so no key is on both) with gumshoe.bulk.NewDB, the storage layer's bulk
writer. Schema: name string:uint16 (1000 values), country string:uint8 (50 + nil), device
uint8, zone int32 (100 values + nil); metrics visits uint8, clicks uint16, bytes uint32, score
float64.

Timed, through `gumtool.cli.main` (open, checksum every segment, convert, roll up, write with
fsync, commit), for each parallelism:

* merge: the two shards -> one database (all rows);
* migrate (widen + add): every type widened, a dimension and a metric added -- rows kept;
* migrate (drop dim): `zone` dropped -- identical rows roll up (fewer rows written).

Wall-clock and CPU seconds (user + system of every thread) are both reported: on a shared
machine the wall clock includes waiting for the CPU and the disk. `ideal` is the roll-up kernel alone on the same rows already in memory (per interval:
concatenate, one packed int64 key, argsort, reduceat of count and metrics), single-threaded:
the compute floor of a merge without I/O, checksums or re-encoding.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gumshoe.block import Block
from gumshoe.bulk import NewDB
from gumshoe.config import load_config
from gumshoe.schema import Schema
from gumtool.cli import main as gumtool

T0 = 1_767_225_600
NAMES = [f"/page/{i:04d}" for i in range(1000)]
COUNTRIES = [f"C{i:02d}" for i in range(50)]
DIMS = [["name", "string:uint16"], ["country", "string:uint8"], ["device", "uint8"],
        ["zone", "int32"]]
METRICS = [["visits", "uint8"], ["clicks", "uint16"], ["bytes", "uint32"], ["score", "float64"]]
CARD = (1000, 51, 10, 101)  # per dimension; the last code of country and zone means nil


def write_config(path: Path, db: Path, dims: list[list[str]] = DIMS,
                 metrics: list[list[str]] = METRICS) -> Path:
    path.write_text("\n".join([
        f"database_dir = {json.dumps(str(db))}", "retention_days = 0", "[schema]",
        'segment_size = "4MB"', 'interval_duration = "1h"', 'timestamp_column = ["at", "uint32"]',
        f"dimension_columns = {json.dumps(dims)}", f"metric_columns = {json.dumps(metrics)}"])
        + "\n")
    return path


def interval_block(rng: np.random.Generator, n: int) -> tuple[Block, dict[str, np.ndarray]]:
    """`n` unique keys with counts and metric sums (string dims as generator codes)."""
    space = int(np.prod(CARD))
    keys = np.unique(rng.integers(0, space, int(n * 1.1)))
    keys = keys[np.sort(rng.choice(len(keys), n, replace=False))] if len(keys) > n else keys
    codes = []
    for c in reversed(CARD):
        codes.append(keys % c)
        keys = keys // c
    zone, device, country, name = codes
    count = rng.integers(1, 6, len(zone)).astype(np.int64)
    nils = {"name": None, "country": country == 50, "device": None, "zone": zone == 100}
    dims = {"name": name, "country": np.where(country == 50, 0, country),
            "device": device.astype(np.uint8),
            "zone": np.where(zone == 100, 0, zone - 50).astype(np.int32)}
    metrics = {"visits": count * rng.integers(0, 3, len(count)),
               "clicks": count * rng.integers(0, 200, len(count)),
               "bytes": count * rng.integers(0, 1 << 20, len(count)),
               "score": rng.random(len(count)) * count}
    return Block(len(count), count, dims, nils, metrics), {"name": name, "country": country}


def make_shards(work: Path, rows: int, intervals: int, seed: int = 7
                ) -> tuple[list[Path], list[list[Block]], int]:
    rng = np.random.default_rng(seed)
    cfgs = [write_config(work / f"shard{k}.toml", work / f"shard{k}") for k in range(2)]
    schema = Schema.from_config(load_config(cfgs[0]).schema)
    outs = [NewDB(work / f"shard{k}", schema, fsync=False) for k in range(2)]
    per = rows // intervals
    blocks: list[list[Block]] = []
    input_rows = 0
    for i in range(intervals):
        block, _ = interval_block(rng, per)
        input_rows += block.logical_rows
        side = rng.integers(0, 2, block.n).astype(bool)
        parts = []
        for k, out in enumerate(outs):
            part = block.take(side if k else ~side)
            dims = dict(part.dims)
            dims["name"] = out.tables["name"].remap("gen", NAMES, part.dims["name"], None)
            dims["country"] = out.tables["country"].remap("gen", COUNTRIES,
                                                          part.dims["country"],
                                                          part.nils["country"])
            part = Block(part.n, part.count, dims, part.nils, part.metrics)
            out.add_interval(T0 + 3600 * i, part)
            parts.append(part)
        blocks.append(parts)
    for out in outs:
        out.commit()
    os.sync()  # no dirty pages of the set-up left to write back during the timed steps
    return [work / "shard0", work / "shard1"], blocks, input_rows


def ideal_rollup(blocks: list[list[Block]]) -> float:
    """Seconds for the bare roll-up of every interval (both shards' rows) in memory."""
    t0 = time.perf_counter()
    for parts in blocks:
        cols = {k: np.concatenate([p.dims[k] for p in parts]) for k in parts[0].dims}
        nil = {k: np.concatenate([p.nils[k] if p.nils[k] is not None else
                                  np.zeros(p.n, bool) for p in parts]) for k in parts[0].nils}
        key = np.zeros(len(cols["name"]), np.int64)
        for (k, v), c in zip(cols.items(), CARD):
            code = v.astype(np.int64) + (50 if k == "zone" else 0)
            key = key * c + np.where(nil[k], c - 1, code)
        order = np.argsort(key)
        sk = key[order]
        starts = np.concatenate(([0], np.flatnonzero(sk[1:] != sk[:-1]) + 1))
        np.add.reduceat(np.concatenate([p.count for p in parts])[order], starts)
        for m in parts[0].metrics:
            np.add.reduceat(np.concatenate([p.metrics[m] for p in parts])[order], starts)
    return time.perf_counter() - t0


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system, all threads) seconds of one gumtool command."""
    t0, c0 = time.perf_counter(), cpu()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = gumtool(argv)
    if rc != 0:
        raise SystemExit(f"gumtool {' '.join(argv)} failed with {rc}")
    return time.perf_counter() - t0, cpu() - c0


def stored_rows(db: Path) -> int:
    meta = json.loads((db / "db.json").read_bytes())
    return sum(s["rows"] for iv in meta["intervals"] for s in iv["segments"])


def du(db: Path) -> int:
    return sum(p.stat().st_size for p in db.iterdir())


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench-gumtool-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        shards, blocks, input_rows = make_shards(work, args.rows, args.intervals)
        rows = sum(stored_rows(s) for s in shards)
        setup = time.perf_counter() - t0
        print(f"set-up: {rows:,} rows ({input_rows:,} input rows) in {args.intervals} intervals,"
              f" 2 shards of {du(shards[0]) / 1e6:.0f} + {du(shards[1]) / 1e6:.0f} MB, "
              f"{setup:.1f}s", file=sys.stderr)
        c0 = cpu()
        ideal = ideal_rollup(blocks)
        ideal_cpu = cpu() - c0
        del blocks
        widen = write_config(work / "widen.toml", work / "widen",
                             dims=[["name", "string:uint32"], ["country", "string:uint16"],
                                   ["device", "uint16"], ["zone", "int64"],
                                   ["browser", "string:uint8"]],
                             metrics=[*METRICS, ["errors", "uint32"]])
        drop = write_config(work / "drop.toml", work / "drop", dims=DIMS[:3])
        merged_cfg = write_config(work / "merged.toml", work / "merged")
        results: list[dict[str, Any]] = [{"step": "ideal roll-up (in memory)", "parallelism": 1,
                                          "seconds": ideal, "cpu_seconds": ideal_cpu,
                                          "rows_in": rows, "rows_out": rows}]
        for p in args.parallelism:
            for d in ("merged", "widen", "drop"):
                shutil.rmtree(work / d, ignore_errors=True)
            steps = [
                ("merge", ["merge", "--new-db-config", str(merged_cfg), "--db-paths",
                           ",".join(map(str, shards))], work / "merged"),
                ("migrate (widen + add)", ["migrate", "--old-db-path", str(work / "merged"),
                                           "--new-db-config", str(widen)], work / "widen"),
                ("migrate (drop dim)", ["migrate", "--old-db-path", str(work / "merged"),
                                        "--new-db-config", str(drop)], work / "drop"),
            ]
            for name, argv, out in steps:
                seconds, cpu_seconds = timed([*argv, "--parallelism", str(p), "-q"])
                results.append({"step": name, "parallelism": p, "seconds": seconds,
                                "cpu_seconds": cpu_seconds, "rows_in": rows,
                                "rows_out": stored_rows(out)})
                print(f"{name} (parallelism {p}): {seconds:.2f}s", file=sys.stderr)
        for r in results:
            r["rows_per_s"] = r["rows_in"] / r["seconds"]
            r["input_rows_per_s"] = input_rows / r["seconds"]
        return {"rows": rows, "input_rows": input_rows, "intervals": args.intervals,
                "cpus": os.cpu_count(), "load_average": os.getloadavg(), "results": results}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(r: dict[str, Any]) -> str:
    lines = [(f"gumtool throughput: {r['rows']:,} stored rows ({r['input_rows']:,} input "
              f"rows), {r['intervals']} intervals, {r['cpus']} CPUs"),
             (f"load average at the end: {r['load_average'][0]:.1f} (wall-clock figures suffer "
              "on a shared machine; rows per CPU-second do not)"),
             "", ("| step | parallelism | seconds | CPU seconds | rows out | stored rows/s | "
                  "input rows/s | stored rows per CPU-second |"),
             "|---|---|---|---|---|---|---|---|"]
    for x in r["results"]:
        lines.append(f"| {x['step']} | {x['parallelism']} | {x['seconds']:.2f} | "
                     f"{x['cpu_seconds']:.2f} | {x['rows_out']:,} | "
                     f"{x['rows_per_s'] / 1e6:.2f}M | {x['input_rows_per_s'] / 1e6:.2f}M | "
                     f"{x['rows_in'] / max(x['cpu_seconds'], 1e-9) / 1e6:.2f}M |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=10_000_000, help="stored (rolled-up) rows")
    p.add_argument("--intervals", type=int, default=20)
    p.add_argument("--parallelism", type=lambda s: [int(x) for x in s.split(",")],
                   default=[1, 2])
    p.add_argument("--workdir", help="where to build the databases (default: a temp dir)")
    p.add_argument("--json", help="also write the results as JSON to this path")
    p.add_argument("--keep", action="store_true", help="keep the databases")
    args = p.parse_args(argv)
    r = run(args)
    sys.stdout.write(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
