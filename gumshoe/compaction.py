"""The compactor's plan and work: which flushed intervals have aged past their tier, and their
re-roll into the next tier's intervals (tiers.py has the arithmetic).

Imports schema, tiers, block, interval and layout; db.py commits what this builds. A **step**
is one commit's worth: for one tier boundary, the tier-i intervals before the boundary's new
watermark grouped by their next-tier bucket, each group rolled up (identical dimension keys
combine, counts and sums add exactly) into one interval of the next duration; or the
intervals past the last tier's keep, dropped. The DB writes a step's new intervals, then
replaces db.json once (old intervals out, new ones in, the watermark moved), then deletes
the old files: a crash leaves the old intervals or the new one, never both and never neither.
Steps are bounded (`max_rows` source rows), so a long catch-up (a database that was down for
weeks, an import of old data) commits as it goes and lets flushes in between.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path

from .block import rollup
from .interval import Interval, build_interval
from .schema import Schema
from .tiers import Tiers

MAX_STEP_ROWS = 16_000_000  # source rows re-rolled per commit, at most (one bucket may exceed)
MAX_STEP_BUCKETS = 256  # new intervals per commit, at most


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """One new interval: `start` and `duration`, rolled up from the intervals at `sources`."""

    start: int
    duration: int
    sources: tuple[int, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One commit: the jobs of one tier boundary and that boundary's new watermark, or
    (boundary None) the intervals to drop past the last keep."""

    boundary: int | None
    watermark: int
    jobs: tuple[Job, ...] = ()
    drops: tuple[int, ...] = ()

    @property
    def sources(self) -> tuple[int, ...]:
        return tuple(s for j in self.jobs for s in j.sources) + self.drops


def plan(tiers: Tiers, intervals: Mapping[int, tuple[int, int]], watermarks: tuple[int, ...],
         now: float, cutoff: int | None, max_rows: int = MAX_STEP_ROWS) -> Step | None:
    """The next step, or None when nothing is due. `intervals`: start -> (duration, rows) of
    the flushed intervals; `cutoff`: interval starts before it are past the last keep."""
    targets = tiers.targets(now, watermarks)
    for i, (w, target) in enumerate(zip(watermarks, targets)):
        if target <= w:
            continue
        fine, size = tiers.durations[i], tiers.durations[i + 1]
        # Tier-i intervals lie in [w_{i+1}, w_i): every one before the target is due. A
        # next-tier interval cannot already hold part of a due bucket (intervals never overlap).
        due = sorted(s for s, (d, _) in intervals.items() if d == fine and s < target)
        jobs: list[Job] = []
        rows = 0
        watermark = target
        buckets: dict[int, list[int]] = {}
        for s in due:
            buckets.setdefault(s - s % size, []).append(s)
        for b in sorted(buckets):
            if jobs and (rows >= max_rows or len(jobs) >= MAX_STEP_BUCKETS):
                watermark = b  # the rest in the next step; every time before b is done
                break
            jobs.append(Job(b, size, tuple(buckets[b])))
            rows += sum(intervals[s][1] for s in buckets[b])
        return Step(i, watermark, tuple(jobs))
    if cutoff is not None:
        drops = tuple(sorted(s for s in intervals if s < cutoff))
        if drops:
            return Step(None, 0, (), drops)
    return None


def build(schema: Schema, step: Step, intervals: Mapping[int, Interval],
          directory: Path | None, fsync: bool, written: list[Path],
          stats: dict[str, float] | None = None) -> tuple[dict[int, Interval], list[Path]]:
    """Write the step's new intervals (each file listed in `written` before it is written):
    the intervals replacing the step's sources, and the files the commit makes dead."""
    new: dict[int, Interval] = {}
    dead: list[Path] = []
    for job in step.jobs:
        t0 = time.perf_counter()
        sources = [intervals[s] for s in job.sources]
        block = rollup(schema, [b for iv in sources for b in iv.blocks])
        # the new interval may start where a source does: a newer generation than that one
        gen = max((iv.generation + 1 for iv in sources if iv.start == job.start), default=0)
        new[job.start] = build_interval(schema, job.start, gen, block, directory, fsync,
                                        written, duration=job.duration)
        if stats is not None:
            stats["compacted_rows"] = stats.get("compacted_rows", 0) + sum(
                iv.rows for iv in sources)
            stats["compaction_seconds"] = (stats.get("compaction_seconds", 0.0)
                                           + time.perf_counter() - t0)
    if directory is not None:
        for s in step.sources:
            dead.extend(directory / f for f in intervals[s].filenames())
    return new, dead
