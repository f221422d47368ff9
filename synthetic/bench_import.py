"""`gumtool import` throughput beside DuckDB, on the benchmark data set as export files.

    python -m synthetic.bench_import [--rows 5000000] [--hours 48] [--parallelism N]
                                     [--workdir DIR] [--json PATH] [--keep]

Set-up (not timed, cached in --workdir): the data set of synthetic/data.py (`at`, `name`,
`country` (~5% null), `device`; metrics `visits`, `clicks`, `bytes`) written once as gzipped
JSON lines (`rows.jsonl.gz`, one object per line, as `PUT /insert` takes them) and as plain
CSV (`rows.csv`, an empty field for null).

Timed, each in the same run:

* gumshoe: `python -m gumtool import --config C FILE` into a new database directory (a
  subprocess: its wall clock, and the CPU seconds of it and its workers): parse, roll up,
  flush, and fsync what the flush wrote (the config's default durability "fsync"; the import
  itself writes no write-ahead log);
* DuckDB (threads = cores): `CREATE TABLE t AS SELECT at - at % 3600 AS at, name, country,
  device, count(*), sum(visits), sum(clicks), sum(bytes) FROM read_json(...) / read_csv(...)
  GROUP BY ALL` -- the same roll-up into a table, in memory (no file written).

Checked: both hold the same number of rolled-up rows and the same totals (a mismatch exits 1).
Reported: wall-clock seconds and rows/s, and CPU seconds (gumshoe: the import process and its
workers; DuckDB: every thread of this process during the statement).
The machine's load average is printed: on a shared machine the wall clock includes waiting
for the CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from . import data

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
COLUMNS = {"at": "UBIGINT", "name": "VARCHAR", "country": "VARCHAR", "device": "UTINYINT",
           "visits": "UTINYINT", "clicks": "USMALLINT", "bytes": "UINTEGER"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def generate(spec: data.Spec, work: Path) -> tuple[Path, Path]:
    """rows.jsonl.gz and rows.csv for `spec` (reused when present)."""
    tag = f"{spec.rows}-{spec.hours}-{spec.seed}"
    jpath, cpath = work / f"rows-{tag}.jsonl.gz", work / f"rows-{tag}.csv"
    if jpath.exists() and cpath.exists():
        return jpath, cpath
    import orjson
    from isal import igzip

    log(f"generating {spec.rows:,} rows into {work} ...")
    t = time.perf_counter()
    names = np.array(data.NAMES, dtype=object)
    countries = np.array([*data.COUNTRIES, None], dtype=object)
    with igzip.open(jpath.with_suffix(".tmp"), "wb", compresslevel=1) as jf, \
            open(cpath.with_suffix(".tmp"), "wb") as cf:
        first = True
        for c in data.generate(spec):
            jf.write(b"\n".join(map(orjson.dumps, data.to_rows(c))) + b"\n")
            table = pa.table({"at": c.at, "name": pa.array(names[c.name], pa.string()),
                              "country": pa.array(countries[c.country], pa.string()),
                              "device": c.device, **c.metrics})
            buf = io.BytesIO()
            pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=first,
                                                           quoting_style="none"))
            cf.write(buf.getvalue())
            first = False
    jpath.with_suffix(".tmp").rename(jpath)
    cpath.with_suffix(".tmp").rename(cpath)
    log(f"  done in {time.perf_counter() - t:.1f}s: {jpath.stat().st_size / 1e6:.0f} MB gzipped "
        f"JSON lines, {cpath.stat().st_size / 1e6:.0f} MB CSV")
    return jpath, cpath


def write_config(path: Path, db: Path) -> Path:
    path.write_text(
        f'database_dir = {json.dumps(str(db))}\nretention_days = 0\n[schema]\n'
        'interval_duration = "1h"\ntimestamp_column = ["at", "uint32"]\n'
        f"dimension_columns = {json.dumps([list(d) for d in data.DIMENSIONS])}\n"
        f"metric_columns = {json.dumps([list(m) for m in data.METRICS])}\n")
    return path


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process (DuckDB's)
    return r.ru_utime + r.ru_stime


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_gumshoe(path: Path, work: Path, parallelism: int) -> dict[str, Any]:
    db = work / "db"
    shutil.rmtree(db, ignore_errors=True)
    cfg = write_config(work / "import.toml", db)
    cpu0 = _children_cpu()
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gumtool", "import", "--config", str(cfg),
                           str(path), "--parallelism", str(parallelism), "-q", "--json"],
                          capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.perf_counter() - t
    cpu = _children_cpu() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"gumtool import failed:\n{done.stderr}")
    summary = json.loads(done.stdout)
    stats = subprocess.run([sys.executable, "-m", "gumtool", "stats", "--dir", str(db),
                            "--json", "-q"], capture_output=True, text=True, check=True,
                           cwd=ROOT)
    st = json.loads(stats.stdout)
    return {"seconds": wall, "cpu_seconds": cpu, "imported": summary["imported"],
            "stored_rows": st["rows"], "input_rows": st["input_rows"],
            "sums": {m["name"]: m["sum"] for m in st["metrics"]}}


def run_duckdb(path: Path, kind: str, threads: int) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(config={"threads": threads})
    cols = "{" + ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items()) + "}"
    source = (f"read_json('{path}', format='newline_delimited', columns={cols})"
              if kind == "json" else f"read_csv('{path}', header=true, columns={cols})")
    cpu0 = _self_cpu()
    t = time.perf_counter()
    con.execute(f"""CREATE TABLE t AS SELECT "at" - "at" % 3600 AS "at", name, country, device,
                    count(*) AS count, sum(visits) AS visits, sum(clicks) AS clicks,
                    sum(bytes) AS bytes FROM {source} GROUP BY ALL""")
    seconds = time.perf_counter() - t
    cpu = _self_cpu() - cpu0
    n, total, *sums = con.execute("SELECT count(*), sum(count), sum(visits), sum(clicks), "
                                  "sum(bytes) FROM t").fetchone()
    con.close()
    return {"seconds": seconds, "cpu_seconds": cpu, "stored_rows": int(n),
            "input_rows": int(total),
            "sums": dict(zip(data.METRIC_NAMES, map(int, sums)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--hours", type=int, default=48)
    ap.add_argument("--parallelism", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", type=Path, default=HERE / "out" / "import")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the database directory")
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    spec = data.Spec(rows=a.rows, hours=a.hours, batch_size=100_000)
    jpath, cpath = generate(spec, a.workdir)
    threads = os.cpu_count() or 1
    results: dict[str, Any] = {"rows": a.rows, "hours": a.hours, "cores": threads,
                               "parallelism": a.parallelism,
                               "loadavg_start": os.getloadavg()[0]}
    failures = []
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        for kind, path in (("json", jpath), ("csv", cpath)):
            log(f"{kind}: gumtool import ...")
            g = run_gumshoe(path, Path(tmp), a.parallelism)
            log(f"{kind}: DuckDB ...")
            d = run_duckdb(path, kind, threads)
            for k in ("stored_rows", "input_rows", "sums"):
                if g[k] != d[k]:
                    failures.append(f"{kind}: {k}: gumshoe {g[k]} != DuckDB {d[k]}")
            results[kind] = {"gumshoe": g, "duckdb": d}
            if a.keep:
                shutil.copytree(Path(tmp) / "db", a.workdir / f"db-{kind}", dirs_exist_ok=True)
    results["loadavg_end"] = os.getloadavg()[0]
    print(f"gumtool import vs DuckDB, {a.rows:,} rows over {a.hours} h, {threads} cores, "
          f"--parallelism {a.parallelism}; load average {results['loadavg_start']:.1f} -> "
          f"{results['loadavg_end']:.1f} (a shared machine: the wall clock includes waiting)")
    print(f"{'input':<22} {'gumshoe s':>10} {'rows/s':>12} {'CPU s':>7} {'DuckDB s':>9} "
          f"{'rows/s':>12} {'CPU s':>7} {'stored rows':>12}")
    for kind, label in (("json", "JSON lines, gzip"), ("csv", "CSV")):
        g, d = results[kind]["gumshoe"], results[kind]["duckdb"]
        print(f"{label:<22} {g['seconds']:>10.2f} {a.rows / g['seconds']:>12,.0f} "
              f"{g['cpu_seconds']:>7.1f} {d['seconds']:>9.2f} {a.rows / d['seconds']:>12,.0f} "
              f"{d['cpu_seconds']:>7.1f} {g['stored_rows']:>12,}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))
    if failures:
        print("\n".join(["MISMATCH:", *failures]))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
