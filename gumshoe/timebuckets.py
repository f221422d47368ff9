"""Calendar time buckets in an IANA time zone, vectorised: Unix seconds -> bucket starts.

No internal imports (numpy and the stdlib's zoneinfo only). A bucket is the set of instants
whose local clock reading truncates to the same value (minute, hour, day, ISO week starting on
Monday, month, quarter, year); its start is the earliest instant in it, as Unix seconds:
local midnight of the first day for day and longer units, or, when the clock skips that
midnight (a DST gap), the first instant after the gap; when it occurs twice (an overlap),
the first of the two. A repeated local hour therefore falls into one two-hour `hour` bucket,
and a skipped one has none.

How: the zone's UTC offsets are found once per (zone, year) by probing `zoneinfo` every
PROBE_STEP seconds and bisecting each change to the second (cached; tzdata has no two
transitions closer than about a week, checked for 1970-2106 over every zone), then for
an array of instants

    wall  = t + offset(t)                     (searchsorted over the transitions)
    L     = wall truncated to the unit        (integer and datetime64 arithmetic)
    start = min{s : s + offset(s) >= L}       (a few vectorised passes over nearby segments)

In UTC, minute/hour/day are plain truncations `t - t % width`, as they always were.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import functools
import zoneinfo

import numpy as np

UTC = "UTC"
UNITS = ("minute", "hour", "day", "week", "month", "quarter", "year")
FIXED_WIDTH = {"minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
# Shortest bucket of each unit, for bounding how many buckets a time range holds.
MIN_WIDTH = {**FIXED_WIDTH, "month": 28 * 86400, "quarter": 89 * 86400, "year": 365 * 86400}
PROBE_STEP = 6 * 3600
MARGIN = 2 * 86400  # more than any UTC offset (+-26 h) plus one probe step
_I64_MIN, _I64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max


@functools.cache
def zone(name: str) -> zoneinfo.ZoneInfo | None:
    """The ZoneInfo of an IANA name, or None when there is no such zone (or the name is not a
    zone key at all: empty, absolute, '..')."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


def is_zone(name: str) -> bool:
    return name == UTC or zone(name) is not None


def _offset(z: zoneinfo.ZoneInfo, t: int) -> int:
    off = _dt.datetime.fromtimestamp(t, z).utcoffset()
    assert off is not None
    return int(off.total_seconds())


@functools.lru_cache(maxsize=8192)
def _year_transitions(name: str, year: int) -> tuple[tuple[int, int], ...]:
    """(instant, offset from that instant on) for every offset change in (Jan 1, next Jan 1]
    of `year` (UTC)."""
    z = zone(name)
    assert z is not None, name
    a = calendar.timegm((year, 1, 1, 0, 0, 0))
    b = calendar.timegm((year + 1, 1, 1, 0, 0, 0))
    probes = [*range(a, b, PROBE_STEP), b]
    offsets = [_offset(z, p) for p in probes]
    out = []
    for i in range(len(probes) - 1):
        if offsets[i] == offsets[i + 1]:
            continue
        lo, hi = probes[i], probes[i + 1]  # offset(lo) is the old one, offset(hi) the new
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _offset(z, mid) == offsets[i]:
                lo = mid
            else:
                hi = mid
        out.append((hi, offsets[i + 1]))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _table(name: str, first_year: int, last_year: int) -> tuple[np.ndarray, np.ndarray]:
    """(transitions, offsets) for the years given: offsets[k] holds on segment k, the instants
    in [transitions[k-1], transitions[k]) (unbounded at both ends)."""
    z = zone(name)
    assert z is not None, name
    start = calendar.timegm((first_year, 1, 1, 0, 0, 0))
    pairs = [p for y in range(first_year, last_year + 1) for p in _year_transitions(name, y)]
    trans = np.array([t for t, _ in pairs], np.int64)
    offs = np.array([_offset(z, start), *(o for _, o in pairs)], np.int64)
    return trans, offs


def _year_of(t: int) -> int:
    return int(np.datetime64(int(t), "s").astype("datetime64[Y]").astype(np.int64)) + 1970


def transitions(name: str, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """The zone's offset table covering the instants [lo - 1 year, hi + 1 year] (module doc)."""
    if name == UTC:
        return np.zeros(0, np.int64), np.zeros(1, np.int64)
    return _table(name, _year_of(lo) - 1, _year_of(hi) + 1)


def _truncate_wall(wall: np.ndarray, unit: str) -> np.ndarray:
    """Local clock readings (seconds since 1970-01-01 00:00 local) truncated to `unit`."""
    if unit in ("minute", "hour", "day"):
        return wall - wall % FIXED_WIDTH[unit]  # floor: wall may be negative near 1970
    if unit == "week":
        days = wall // 86400
        return (days - (days + 3) % 7) * 86400  # 1970-01-01 was a Thursday (Monday = 0)
    if unit == "year":
        return wall.astype("datetime64[s]").astype("datetime64[Y]").astype(
            "datetime64[s]").astype(np.int64)
    months = wall.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
    if unit == "quarter":
        months = months - months % 3
    return months.astype("datetime64[M]").astype("datetime64[s]").astype(np.int64)


def _first_instant(walls: np.ndarray, trans: np.ndarray, offs: np.ndarray) -> np.ndarray:
    """min{s : s + offset(s) >= L} for each local reading L: the first segment, from the one
    holding L - MARGIN on, that reaches L gives it (later segments only give later instants)."""
    bounds = np.concatenate(([_I64_MIN], trans, [_I64_MAX]))  # segment k: [bounds[k], bounds[k+1])
    seg = np.searchsorted(trans, walls - MARGIN, side="right")
    out = np.empty_like(walls)
    todo = np.arange(len(walls))
    while len(todo):  # one or two passes; the last segment is unbounded, so this ends
        k = seg[todo]
        cand = np.maximum(bounds[k], walls[todo] - offs[k])
        ok = cand < bounds[k + 1]
        out[todo[ok]] = cand[ok]
        todo = todo[~ok]
        seg[todo] += 1
    return out


def bucket_starts(times: np.ndarray, unit: str, zone_name: str = UTC) -> np.ndarray:
    """The start (Unix seconds, int64) of the `unit` bucket in `zone_name` of each instant.

    Vectorised over `times` (any integer array): numpy work per element, Python work per
    (zone, year) the first time it is seen."""
    t = np.asarray(times).astype(np.int64)
    if unit not in UNITS:
        raise ValueError(f"unknown time unit {unit!r}")
    if zone_name == UTC and unit in ("minute", "hour", "day"):
        return t - t % FIXED_WIDTH[unit]
    if len(t) == 0:
        return t
    trans, offs = transitions(zone_name, int(t.min()), int(t.max()))
    if len(trans) == 0:  # one offset over the whole range: no gaps, no overlaps
        return _truncate_wall(t + offs[0], unit) - offs[0]
    wall = t + offs[np.searchsorted(trans, t, side="right")]
    return _first_instant(_truncate_wall(wall, unit), trans, offs)


def step_walls(first: int, last: int, unit: str) -> np.ndarray:
    """Every truncated local reading from `first` to `last` (both truncated), in order."""
    if unit in FIXED_WIDTH:
        return np.arange(first, last + 1, FIXED_WIDTH[unit], dtype=np.int64)
    span = {"month": "M", "quarter": "M", "year": "Y"}[unit]
    a, b = (np.array([first, last], np.int64).astype("datetime64[s]")
            .astype(f"datetime64[{span}]").astype(np.int64))
    steps = np.arange(a, b + 1, 3 if unit == "quarter" else 1, dtype=np.int64)
    return steps.astype(f"datetime64[{span}]").astype("datetime64[s]").astype(np.int64)


def max_buckets(lo: int, hi: int, unit: str) -> int:
    """An upper bound on the number of `unit` buckets that instants in [lo, hi] fall into."""
    return max(0, (hi - lo) // MIN_WIDTH[unit] + 3) if hi >= lo else 0


def bucket_range(lo: int, hi: int, unit: str, zone_name: str = UTC) -> np.ndarray:
    """Sorted starts of every bucket from the one holding `lo` to the one holding `hi`
    (inclusive); empty when hi < lo. Costs per bucket (vectorised)."""
    if hi < lo:
        return np.zeros(0, np.int64)
    first, last = bucket_starts(np.array([lo, hi], np.int64), unit, zone_name).tolist()
    if zone_name == UTC:
        walls = step_walls(first, last, unit)
        return walls[(walls >= first) & (walls <= last)]
    trans, offs = transitions(zone_name, lo - 400 * 86400, hi)
    edges = np.array([lo, hi], np.int64)
    wall = _truncate_wall(edges + offs[np.searchsorted(trans, edges, side="right")], unit)
    walls = step_walls(int(wall.min()), int(wall.max()), unit)
    starts = np.unique(_first_instant(walls, trans, offs))
    return starts[(starts >= first) & (starts <= last)]
