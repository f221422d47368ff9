"""Tiered retention arithmetic: which interval holds a timestamp, when a tier's intervals are
old enough to be re-rolled into the next tier's, and the retention cutoff.

No internal imports (numpy only). A schema with tiers has durations D_0 < D_1 < ... (each
dividing the next) and keeps K_0 < K_1 < ... in seconds: data stays at D_i while younger than
K_i, and is dropped past the last keep. The database's metadata keeps one **watermark** per
tier boundary, w_1 >= w_2 >= ... >= w_{n-1}, w_i a multiple of D_i: every time before w_i is
stored at tier i or coarser, every time from w_i on at a finer tier. So a timestamp t belongs to
tier #{i : t < w_i} and to the interval starting at t - t % D_tier; tier-i intervals lie in
[w_{i+1}, w_i), never overlap, and an interval's start alone says its tier.

The compactor moves w_{i+1} up to `targets(...)[i]`: the start of the first D_{i+1} bucket that
has not wholly aged past K_i (clipped to w_i, so the order holds), re-rolling every tier-i
interval before it into its bucket. Rows arriving later for a compacted range go straight to
its coarser interval.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, slots=True)
class Tiers:
    """The tiers of a schema: durations and keeps (seconds), finest first."""

    durations: tuple[int, ...]
    keeps: tuple[int, ...]

    @classmethod
    def of(cls, pairs: tuple[tuple[int, int], ...]) -> Tiers:
        return cls(tuple(d for d, _ in pairs), tuple(k for _, k in pairs))

    @property
    def boundaries(self) -> int:
        """Watermarks a database with these tiers keeps: one per pair of adjacent tiers."""
        return len(self.durations) - 1

    def initial_watermarks(self) -> tuple[int, ...]:
        """Nothing compacted yet: every time is at the finest tier."""
        return (0,) * self.boundaries

    def tier_of(self, ts: np.ndarray, watermarks: tuple[int, ...]) -> np.ndarray:
        """The tier (0 = finest) of each timestamp: how many watermarks lie after it."""
        t = np.asarray(ts, np.int64)
        if not watermarks or (len(t) and int(t.min()) >= watermarks[0]):
            return np.zeros(len(t), np.int64)
        ascending = np.array(watermarks[::-1], np.int64)
        return len(ascending) - np.searchsorted(ascending, t, side="right")

    def interval_starts(self, ts: np.ndarray, watermarks: tuple[int, ...]) -> np.ndarray:
        """The start of the interval holding each timestamp (int64), under `watermarks`."""
        t = np.asarray(ts).astype(np.int64)
        if not watermarks or (len(t) and int(t.min()) >= watermarks[0]):
            return t - t % self.durations[0]  # every row in the finest tier: the usual case
        d = np.asarray(self.durations, np.int64)[self.tier_of(t, watermarks)]
        return t - t % d

    def duration_at(self, start: int, watermarks: tuple[int, ...]) -> int:
        """The duration of the interval starting at `start` (an interval start of the tiers)."""
        tier = sum(1 for w in watermarks if start < w)
        return self.durations[tier]

    def targets(self, now: float, watermarks: tuple[int, ...]) -> tuple[int, ...]:
        """Where the compactor moves each watermark now: w_{i+1} to the first D_{i+1} bucket
        that has not wholly aged past K_i, no further than w_i, and never back."""
        out: list[int] = []
        upper: int | None = None
        for i, w in enumerate(watermarks):
            size = self.durations[i + 1]
            aged = int(now) - self.keeps[i]
            t = aged - aged % size  # buckets ending at or before now - K_i are aged
            if upper is not None:
                t = min(t, upper - upper % size)
            t = max(t, w)
            out.append(t)
            upper = t
        return tuple(out)

    def lag(self, now: float, watermarks: tuple[int, ...]) -> int:
        """Seconds of aged data not yet re-rolled: the largest gap between a watermark and
        where the compactor would move it now (0: up to date)."""
        return max((t - w for t, w in zip(self.targets(now, watermarks), watermarks)),
                   default=0)

    def retention_cutoff(self, now: float) -> int:
        """Interval starts before this are past the last keep (dropped; rows for them are
        rejected). A multiple of the coarsest duration, so comparing it with the start of an
        interval of any tier, or with a timestamp, says the same: an interval or row is kept
        when its coarsest-tier bucket ended less than the last keep ago."""
        d = self.durations[-1]
        c = int(now) - self.keeps[-1] - d
        return -(-c // d) * d

    def shard_start(self, ts: np.ndarray) -> np.ndarray:
        """The coarsest bucket of each timestamp: what the router's shard function hashes,
        so a key's rows stay on one shard through every re-roll."""
        t = np.asarray(ts).astype(np.int64)
        return t - t % self.durations[-1]
