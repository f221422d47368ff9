"""Ingest benchmark: library-level `DB.insert` of pre-parsed 10k-row batches (lists of row
dicts) beside the ideal kernels on the same data; periodic flushes; time from the last insert
to queryable; stored rows, bytes on disk, peak RSS.

The ideal roll-up of every interval is saved (one .npz per hour) as the reference table that
the stored table is later checked against.
"""

from __future__ import annotations

import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from gumshoe.db import DB
from gumshoe.service import query_rows

from . import data, ideal


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class _HourBuffer:
    """Collects generator columns until an hour is complete, then rolls it up (timed) and
    saves the result."""

    def __init__(self, ref_dir: Path) -> None:
        self.ref_dir = ref_dir
        self.parts: list[data.Columns] = []
        self.seconds = 0.0
        self.rows = 0
        self.rolled = 0

    def add(self, c: data.Columns, final: bool = False) -> None:
        self.parts.append(c)
        last = int(c.hour[-1])
        if final:
            last += 1
        if int(self.parts[0].hour[0]) >= last:
            return
        cat = data.Columns(*(np.concatenate([getattr(p, f) for p in self.parts])
                             for f in ("at", "hour", "name", "country", "device")),
                           {m: np.concatenate([p.metrics[m] for p in self.parts])
                            for m in data.METRIC_NAMES})
        bounds = np.searchsorted(cat.hour, np.arange(int(cat.hour[0]), last + 1))
        for h, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]), int(cat.hour[0])):
            if hi == lo:
                continue
            part = data.Columns(cat.at[lo:hi], cat.hour[lo:hi], cat.name[lo:hi],
                                cat.country[lo:hi], cat.device[lo:hi],
                                {m: v[lo:hi] for m, v in cat.metrics.items()})
            t = time.perf_counter()
            r = ideal.rollup(part)
            self.seconds += time.perf_counter() - t
            self.rows += part.n
            self.rolled += r.n
            np.savez(self.ref_dir / f"hour{h:06d}.npz", name=r.name, country=r.country,
                     device=r.device, count=r.count, **r.metrics)
        rest = slice(int(bounds[-1]), None)
        self.parts = [data.Columns(cat.at[rest], cat.hour[rest], cat.name[rest],
                                   cat.country[rest], cat.device[rest],
                                   {m: v[rest] for m, v in cat.metrics.items()})]
        if not len(self.parts[0].at):
            self.parts = []


def run(spec: data.Spec, db_dir: Path, ref_dir: Path, *, flush_every: int = 5_000_000,
        ideal_every: int = 8, segment_size: int | None = None, durability: str | None = None,
        query_parallelism: int = 2, raw_rows: list[dict[str, Any]] | None = None,
        progress: Any = None) -> dict[str, Any]:
    """Ingest `spec` into a new on-disk DB at `db_dir` (closed at the end). `raw_rows`, when
    given, receives every row dict (small runs: the pure-Python reference)."""
    if db_dir.exists():
        shutil.rmtree(db_dir)
    if ref_dir.exists():
        shutil.rmtree(ref_dir)
    ref_dir.mkdir(parents=True)
    cfg = data.config(str(db_dir), segment_size, durability).replace(
        query_parallelism=query_parallelism)
    name_code = {s: i for i, s in enumerate(data.NAMES)}
    country_code: dict[Any, int] = {s: i for i, s in enumerate(data.COUNTRIES)}
    country_code[None] = data.NIL_COUNTRY
    hours = _HourBuffer(ref_dir)
    gen_s = insert_s = parse_s = 0.0
    parse_rows = since_flush = 0
    flushes: list[dict[str, float]] = []
    t_open = time.perf_counter()
    db = DB(cfg)
    open_s = time.perf_counter() - t_open

    def flush() -> None:
        touched = set(db.memtable.intervals)
        t = time.perf_counter()
        db.flush()
        s = time.perf_counter() - t
        rolled = sum(db.intervals[k].rows for k in touched if k in db.intervals)
        flushes.append({"seconds": s, "rolled_rows": rolled, "intervals": len(touched)})

    t_all = time.perf_counter()
    for i, c in enumerate(data.generate(spec)):
        t = time.perf_counter()
        rows = data.to_rows(c)
        t1 = time.perf_counter()
        db.insert(rows)
        t2 = time.perf_counter()
        gen_s += t1 - t
        insert_s += t2 - t1
        if i % ideal_every == 0:
            ideal.parse(rows, name_code, country_code)
            parse_s += time.perf_counter() - t2
            parse_rows += c.n
        if raw_rows is not None:
            raw_rows.extend(rows)
        hours.add(c, final=i == spec.n_batches - 1)
        since_flush += c.n
        last = i == spec.n_batches - 1
        if last:
            t = time.perf_counter()
            total = query_rows(db, {"aggregates": [{"type": "sum", "column": "visits"}]})
            visible_s = time.perf_counter() - t
            visible_rows = total[0]["rowCount"]
        if since_flush >= flush_every and not last:
            flush()
            since_flush = 0
        if progress and i % 500 == 0:
            progress(f"  ingest {spec.rows:,}: batch {i + 1}/{spec.n_batches}")
    flush()
    t = time.perf_counter()
    db.close()
    close_s = time.perf_counter() - t
    wall_s = time.perf_counter() - t_all
    stored = sum(iv.rows for iv in db.intervals.values())
    flush_s = sum(f["seconds"] for f in flushes)
    flush_rows = sum(f["rolled_rows"] for f in flushes)
    ideal_parse = parse_rows / parse_s if parse_s else None
    ideal_rollup = hours.rows / hours.seconds if hours.seconds else None
    ideal_ingest = (1 / (1 / ideal_parse + 1 / ideal_rollup)
                    if ideal_parse and ideal_rollup else None)
    biggest = max(flushes, key=lambda f: f["rolled_rows"])
    return {
        "rows": spec.rows, "hours": spec.hours, "batch_size": spec.batch_size,
        "segment_size": cfg.schema.segment_size, "durability": cfg.durability,
        "flush_every_rows": flush_every,
        "insert_seconds": insert_s, "insert_rows_per_s": spec.rows / insert_s,
        "sustained_rows_per_s": spec.rows / (insert_s + flush_s),
        "generate_rows_per_s": spec.rows / gen_s,
        "ideal_parse_rows_per_s": ideal_parse, "ideal_rollup_rows_per_s": ideal_rollup,
        "ideal_ingest_rows_per_s": ideal_ingest,
        "insert_vs_ideal": (spec.rows / insert_s) / ideal_ingest if ideal_ingest else None,
        "flushes": len(flushes), "flush_seconds": flush_s, "flushed_rolled_rows": flush_rows,
        "flush_us_per_rolled_row": 1e6 * flush_s / max(flush_rows, 1),
        "largest_flush": biggest,
        "close_seconds": close_s, "open_seconds": open_s, "wall_seconds": wall_s,
        "last_insert_to_queryable_ms": 1e3 * visible_s, "queryable_rows": visible_rows,
        "stored_rows": stored, "ideal_rolled_rows": hours.rolled,
        "rollup_ratio": spec.rows / max(stored, 1),
        "bytes_on_disk": dir_bytes(db_dir), "peak_rss_mb": peak_rss_mb(),
    }


def insert_memory(spec: data.Spec, limit: int = 2_000_000) -> dict[str, Any]:
    """Insert rows/s into a MEMORY database (no write-ahead log, no files): the library's
    parse + encode + roll-up path alone, on the first `limit` rows of the data set."""
    db = DB(data.config("MEMORY"))
    n_batches = min(spec.n_batches, -(-limit // spec.batch_size))
    rows = seconds = 0.0
    for c in data.generate(spec, 0, n_batches):
        batch = data.to_rows(c)
        t = time.perf_counter()
        db.insert(batch)
        seconds += time.perf_counter() - t
        rows += c.n
    db.close()
    return {"rows": int(rows), "rows_per_s": rows / seconds}
