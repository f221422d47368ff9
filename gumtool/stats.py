"""`gumtool stats`: intervals, segments, rows, input rows, bytes, compression ratio and
per-column min/max of a database, human-readable or `--json`.

Imports gumshoe bulk and block. Every interval is scanned (in parallel) and the per-interval
results are combined -- all of them (the original reported one worker's partial only). String
columns report values, not dictionary codes. Unflushed rows (in the write-ahead log) count as
a flush would store them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from gumshoe.block import rollup
from gumshoe.bulk import StoredDB
from gumshoe.config import format_duration
from gumshoe.errors import CorruptDataError

from .common import add_parallelism, add_quiet, progress_factory

HELP = "compute some stats about a GumshoeDB database"
DESCRIPTION = """\
Scan every interval of the database at --dir and print: intervals, segments, rows (stored,
rolled up), input rows (the sum of roll-up counts: rows as inserted), bytes of segment files,
the compression ratio (input rows per stored row), and for each column its min and max
(nil values skipped; string dimensions as strings, with their number of distinct values in
use), the number of nil rows of each dimension and the sum of each metric. Metric values are
the stored, rolled-up sums. With tiers: intervals, rows and bytes per tier, the watermarks and
the compactor's lag (seconds of data past its tier's keep not yet re-rolled). The database must
not be in use by a running server."""
EXAMPLE = "gumtool stats --dir db --json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, metavar="DIR", help="the database directory")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_parallelism(p)
    add_quiet(p)


def exact_sum(a: np.ndarray) -> int | float:
    """The sum of an int64/uint64 column as an exact Python int (float64 for floats)."""
    if a.dtype.kind == "f":
        return float(a.sum(dtype=np.float64))
    if not len(a):
        return 0
    wide = np.uint64 if a.dtype.kind == "u" else np.int64
    a = a.astype(wide, copy=False)
    lo = (a & wide(0xFFFFFFFF)).sum(dtype=wide)
    hi = (a >> wide(32)).sum(dtype=wide)
    return (int(hi) << 32) + int(lo)


def _scalar(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def interval_stats(db: StoredDB, start: int) -> dict[str, Any]:
    schema = db.schema
    blocks = db.blocks(start)
    if start in db.pending:  # as a flush would store them
        blocks = [rollup(schema, blocks)]
    out: dict[str, Any] = {"rows": sum(b.n for b in blocks),
                           "input_rows": sum(b.logical_rows for b in blocks), "cols": {}}
    for d in schema.dimensions:
        lo = hi = None
        nil_rows = 0
        used = np.zeros(len(db.dictionaries[d.name]) if d.is_string else 0, bool)
        for b in blocks:
            nil = b.nils[d.name]
            v = b.dims[d.name] if nil is None else b.dims[d.name][~nil]
            nil_rows += 0 if nil is None else int(nil.sum())
            if not len(v):
                continue
            if d.is_string:
                if int(v.max()) >= len(used):
                    raise CorruptDataError(f"{db.dir}: interval {start}: column {d.name!r} holds "
                                           f"code {int(v.max())}, beyond its dictionary of "
                                           f"{len(used)} strings")
                used[np.flatnonzero(np.bincount(v, minlength=len(used)))] = True
            else:
                bmin, bmax = _scalar(v.min()), _scalar(v.max())
                lo = bmin if lo is None else min(lo, bmin)
                hi = bmax if hi is None else max(hi, bmax)
        out["cols"][d.name] = {"min": lo, "max": hi, "nil_rows": nil_rows, "used": used}
    for m in schema.metrics:
        vals = [b.metrics[m.name] for b in blocks if b.n]
        if not m.kind.is_sum:  # a min/max row without a value holds the identity: skip it
            vals = [v[v.astype(m.store_dtype) != m.kind.identity(m.store_dtype)] for v in vals]
            vals = [v for v in vals if len(v)]
        out["cols"][m.name] = {
            "min": min((_scalar(v.min()) for v in vals), default=None),
            "max": max((_scalar(v.max()) for v in vals), default=None),
            "sum": (sum((exact_sum(v) for v in vals), 0 if m.store_dtype.kind != "f" else 0.0)
                    if m.kind.is_sum else None)}  # a sum of minima would mean nothing
    return out


def _combine(a: Any, b: Any, f: Any) -> Any:
    return b if a is None else a if b is None else f(a, b)


def collect(db: StoredDB, parallelism: int, progress: Any = None) -> dict[str, Any]:
    """The stats of a database as a JSON-ready dict."""
    schema = db.schema
    starts = db.starts
    bar = progress("intervals", len(starts)) if progress else None
    parts = []
    with ThreadPoolExecutor(max(1, parallelism), thread_name_prefix="gumtool-stats") as pool:
        for part in pool.map(lambda s: interval_stats(db, s), starts):
            parts.append(part)
            if bar:
                bar.advance()
    if bar:
        bar.finish()
    seg_files = [f for s in starts for f in db.segment_files(s)]
    file_bytes = {f: os.path.getsize(db.dir / f) for f in seg_files}
    seg_bytes = sum(file_bytes.values())
    dict_bytes = sum(os.path.getsize(db.dir / e.file) for e in db.meta.dictionaries.values())
    rows = sum(p["rows"] for p in parts)
    input_rows = sum(p["input_rows"] for p in parts)

    def iso(t: int) -> str:
        return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    dims = []
    for d in schema.dimensions:
        cols = [p["cols"][d.name] for p in parts]
        entry: dict[str, Any] = {"name": d.name, "type": d.type_name,
                                 "nil_rows": sum(c["nil_rows"] for c in cols)}
        if d.is_string:
            used = np.zeros(len(db.dictionaries[d.name]), bool)
            for c in cols:
                used |= c["used"]
            strings = [db.dictionaries[d.name][i] for i in np.flatnonzero(used).tolist()]
            entry.update(min=min(strings, default=None), max=max(strings, default=None),
                         distinct=len(strings), dictionary_size=len(db.dictionaries[d.name]))
        else:
            entry["min"] = None
            entry["max"] = None
            for c in cols:
                entry["min"] = _combine(entry["min"], c["min"], min)
                entry["max"] = _combine(entry["max"], c["max"], max)
        dims.append(entry)
    metrics = []
    for m in schema.metrics:
        cols = [p["cols"][m.name] for p in parts]
        entry = {"name": m.name, "type": m.type_name, "min": None, "max": None,
                 "sum": (sum((c["sum"] for c in cols), 0 if m.store_dtype.kind != "f" else 0.0)
                         if m.kind.is_sum else None)}
        for c in cols:
            entry["min"] = _combine(entry["min"], c["min"], min)
            entry["max"] = _combine(entry["max"], c["max"], max)
        metrics.append(entry)
    return {
        "database": str(db.dir),
        "intervals": len(starts),
        "first_interval": iso(starts[0]) if starts else None,
        "last_interval": iso(starts[-1]) if starts else None,
        "interval_duration": schema.interval_duration,
        "segments": len(seg_files),
        "rows": rows,
        "input_rows": input_rows,
        "unflushed_input_rows": db.pending_rows,
        "bytes": seg_bytes,
        "dictionary_bytes": dict_bytes,
        "compression_ratio": round(input_rows / rows, 2) if rows else None,
        "last_updated": db.last_updated,
        "dimensions": dims,
        "metrics": metrics,
        **_tiers(db, starts, parts, file_bytes),
    }


def _tiers(db: StoredDB, starts: list[int], parts: list[dict[str, Any]],
           file_bytes: dict[str, int]) -> dict[str, Any]:
    """With tiers: per tier (interval duration) its intervals, stored rows and bytes; the
    watermarks; the compactor's lag now."""
    tiers = db.schema.tiering
    if tiers is None:
        return {}
    counts = {d: [0, 0, 0] for d, _ in db.schema.tiers}  # intervals, rows, bytes
    for start, part in zip(starts, parts):
        c = counts[db.duration(start)]
        c[0] += 1
        c[1] += part["rows"]
        c[2] += sum(file_bytes[f] for f in db.segment_files(start))
    per = [{"duration": format_duration(d), "keep": format_duration(k), "intervals": counts[d][0],
            "rows": counts[d][1], "bytes": counts[d][2]} for d, k in db.schema.tiers]
    return {"tiers": per, "watermarks": list(db.meta.watermarks),
            "compaction_lag_seconds": tiers.lag(time.time(), db.meta.watermarks)}


def _fmt(v: Any) -> str:
    if v is None:
        return "<nil>"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return out


def render(s: dict[str, Any]) -> str:
    ratio = "NaN" if s["compression_ratio"] is None else f"{s['compression_ratio']:.2f}"
    span = (f" ({s['first_interval']} .. {s['last_interval']})" if s["intervals"] else "")
    lines = [
        f"Database:          {s['database']}",
        f"Intervals:         {s['intervals']}{span}",
        f"Segments:          {s['segments']}",
        f"Rows:              {s['rows']}",
        f"Input rows:        {s['input_rows']}",
        f"Unflushed rows:    {s['unflushed_input_rows']} (input rows in the write-ahead log)",
        f"Bytes:             {s['bytes']} (segments) + {s['dictionary_bytes']} (dictionaries)",
        f"Compression ratio: {ratio} (input rows per stored row)",
        f"Last updated:      {_fmt(s['last_updated'])} (largest row timestamp inserted)",
        "",
        "Dimension columns:",
        *_table(["name", "type", "min", "max", "nil rows", "distinct"],
                [[d["name"], d["type"], _fmt(d["min"]), _fmt(d["max"]), str(d["nil_rows"]),
                  str(d.get("distinct", ""))] for d in s["dimensions"]]),
        "",
        "Metric columns:",
        *_table(["name", "type", "min", "max", "sum"],
                [[m["name"], m["type"], _fmt(m["min"]), _fmt(m["max"]), _fmt(m["sum"])]
                 for m in s["metrics"]]),
    ]
    if "tiers" in s:
        lines += ["", f"Tiers (compaction lag {s['compaction_lag_seconds']} s):",
                  *_table(["duration", "keep", "intervals", "rows", "bytes"],
                          [[t["duration"], t["keep"], str(t["intervals"]), str(t["rows"]),
                            str(t["bytes"])] for t in s["tiers"]])]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    with StoredDB(args.dir) as db:
        s = collect(db, args.parallelism, progress_factory(args.quiet))
    sys.stdout.write(json.dumps(s, indent=2) + "\n" if args.json else render(s))
    sys.stdout.flush()
    return 0
