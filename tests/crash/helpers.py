"""Shared by the durability tests: a schema whose every batch is recognisable, and the checks
"every acknowledged batch counted exactly once, no batch half applied".

Batch number b has `batch_size(b)` rows, all with the string dimension ``batch = "b<b>"``,
spread over several hourly intervals and `part` values, metric ``v`` = 1..size. A batch applied
once sums to (size, size*(size+1)/2); a half-applied or doubled batch shows up as anything else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from gumshoe.config import Config, parse_config

if TYPE_CHECKING:
    from pathlib import Path

T0 = 1_700_000_000 - 1_700_000_000 % 3600

CONFIG = """
database_dir = "{dir}"
durability = "{durability}"
flush_interval = "{flush_interval}"
retention_days = 0
batch_id_window = "{window}"

[schema]
segment_size = "{segment_size}"
interval_duration = "1h"
timestamp_column = ["at", "uint32"]
dimension_columns = [["batch", "string:uint32"], ["part", "uint8"]]
metric_columns = [["v", "uint32"]]
"""


def config_text(directory: str | Path, durability: str = "fsync", flush_interval: str = "10s",
                window: str = "24h", segment_size: str = "4KB") -> str:
    return CONFIG.format(dir=str(directory), durability=durability,
                         flush_interval=flush_interval, window=window,
                         segment_size=segment_size)


def make_config(directory: str | Path, durability: str = "fsync", **kw: Any) -> Config:
    return parse_config(config_text(directory, durability, **kw))


def batch_size(b: int) -> int:
    return 2000 if b % 10 == 9 else 3 + b % 11


def batch_rows(b: int) -> list[dict[str, Any]]:
    n = batch_size(b)
    return [{"at": T0 + (b * 7 + j * 1800) % (6 * 3600), "batch": f"b{b}", "part": j % 4,
             "v": j + 1} for j in range(n)]


TIERED_CONFIG = """
database_dir = "{dir}"
durability = "{durability}"
flush_interval = "1h"
batch_id_window = "24h"

[schema]
segment_size = "{segment_size}"
timestamp_column = ["at", "uint32"]
dimension_columns = [["batch", "string:uint32"], ["part", "uint8"]]
metric_columns = [["v", "uint32"]]
tiers = [["5m", "1h"], ["1h", "1d"], ["1d", "30d"]]
"""


def late_rows(b: int, now: int) -> list[dict[str, Any]]:
    """Batch b for the tiered database: the rows of `batch_rows(b)`, spread over the five
    days before `now` (every tier's range, compacted or not)."""
    return [{**r, "at": now - (b * 7919 + j * 3571) % (5 * 86400)}
            for j, r in enumerate(batch_rows(b))]


def expected(b: int) -> tuple[int, int]:
    n = batch_size(b)
    return n, n * (n + 1) // 2


def totals(db: Any) -> dict[str, tuple[int, int]]:
    """Per `batch` value: (summed count, summed v), over flushed and unflushed rows."""
    snap = db.snapshot()
    strings = snap.strings("batch")
    codes, counts, vs = [], [], []
    for iv in snap.intervals:
        for blk in iv.blocks:
            codes.append(np.asarray(blk.dims["batch"], np.int64))
            counts.append(np.asarray(blk.count, np.int64))
            vs.append(np.asarray(blk.metrics["v"], np.int64))
    if not codes:
        return {}
    code = np.concatenate(codes)
    count = np.bincount(code, np.concatenate(counts).astype(np.float64), len(strings))
    v = np.bincount(code, np.concatenate(vs).astype(np.float64), len(strings))
    return {strings[i]: (int(count[i]), int(v[i])) for i in np.flatnonzero(count)}


def problems(tot: dict[str, tuple[int, int]], acked: set[int], attempted: set[int]
             ) -> list[str]:
    """Every acknowledged batch exactly once; every other attempted batch all or nothing;
    nothing that was never attempted."""
    out = []
    for b in sorted(acked):
        got = tot.get(f"b{b}", (0, 0))
        if got != expected(b):
            out.append(f"acknowledged batch {b}: got (count, v) {got}, expected {expected(b)}")
    for b in sorted(attempted - acked):
        got = tot.get(f"b{b}", (0, 0))
        if got not in ((0, 0), expected(b)):
            out.append(f"unacknowledged batch {b} is half applied: {got}, expected 0 or "
                       f"{expected(b)}")
    known = {f"b{b}" for b in attempted | acked}
    out.extend(f"unexpected batch value {k!r}" for k in tot if k not in known)
    return out
