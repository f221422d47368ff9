"""The engine of migrate, merge and balance: read the intervals of source databases, convert
their rows to a destination schema, roll them up and write them into new databases.

Imports gumshoe storage layers (bulk, block, schema, sharding) and gumtool.progress. Work is
one task per destination interval, run on a thread pool (numpy releases the GIL); each task
reads its source intervals lazily, so memory is bounded by `parallelism` intervals. Every step
is vectorised: column casts are checked with array comparisons, string codes are re-encoded
through a code -> code table (one Python step per distinct new string, never per row).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from gumshoe import layout
from gumshoe.block import Block, rollup
from gumshoe.bulk import BulkError, NewDB, StoredDB, StringTable
from gumshoe.config import Config, format_duration
from gumshoe.schema import Column, Schema
from gumshoe.sketch import SketchColumn
from gumshoe.sharding import shard_of

from .progress import Progress


class ConversionError(BulkError):
    """A stored value or column cannot be converted to the destination schema."""


# -- schema plans -----------------------------------------------------------------------------
def describe_changes(src: Schema, dst: Schema) -> list[str]:
    """Check that `src` can be rewritten as `dst` (columns matched by name) and describe the
    changes. Raises ConversionError for a role change or a string <-> number change."""
    notes = []
    for d in (*dst.dimensions, *dst.metrics, *dst.uniques):
        s = src.column(d.name)
        if s is None:
            empty = ("nil" if d.role == "dimension" else "0" if d.kind.is_sum
                     else "no identity" if d.kind.is_sketch else "no value")
            notes.append(f"add {d.role} {d.name} ({d.type_name}): {empty} in every stored row")
            continue
        if s.role != d.role:
            raise ConversionError(f"column {d.name!r} is a {s.role} column in the source "
                                  f"database and a {d.role} column in the new config; a column "
                                  "cannot change between dimension and metric")
        if s.role == "metric" and s.kind != d.kind:
            raise ConversionError(f"column {d.name!r}: a {s.kind.name} metric cannot become a "
                                  f"{d.kind.name} metric ({s.type_name} -> {d.type_name}): "
                                  "its stored values are not the inputs")
        if s.is_string != d.is_string:
            raise ConversionError(f"column {d.name!r}: conversion between string and non-string "
                                  f"columns is not allowed ({s.type_name} -> {d.type_name})")
        if s.type_name != d.type_name:
            notes.append(f"convert {d.name}: {s.type_name} -> {d.type_name}")
    for s in (*src.dimensions, *src.metrics, *src.uniques):
        if dst.column(s.name) is None:
            extra = " (rows that become identical are rolled up together)" \
                if s.role == "dimension" else ""
            notes.append(f"drop {s.role} {s.name}{extra}")
    if src.timestamp.name != dst.timestamp.name:
        notes.append(f"rename timestamp column {src.timestamp.name} -> {dst.timestamp.name}")
    if src.interval_duration != dst.interval_duration:
        notes.append(f"interval duration {src.interval_duration}s -> {dst.interval_duration}s "
                     "(each stored interval moves to the new interval holding its start)")
    if src.tiers != dst.tiers:
        def fmt(s: Schema) -> str:
            return ", ".join(f"{format_duration(d)} kept {format_duration(k)}"
                             for d, k in s.tiers) or "none"
        notes.append(f"tiers [{fmt(src)}] -> [{fmt(dst)}] (a stored interval keeps its "
                     "duration where the new tiers have it, else takes the next coarser one; "
                     "the compactor re-rolls the rest as they age)")
    return notes


def same_columns(src: Schema, dst: Schema, what: str) -> None:
    """Merge and balance need identical columns and interval duration (segment size may
    differ: every segment is rewritten)."""
    dataclasses.replace(src, segment_size=dst.segment_size).check_same(
        dst, hint=f" ({what}; use `gumtool migrate` to change a schema)")


# -- vectorised, checked casts ----------------------------------------------------------------
def _bad(values: np.ndarray, bad: np.ndarray) -> Any:
    return values[int(np.argmax(bad))].item()


def cast_exact(values: np.ndarray, target: np.dtype, col: Column, nil: np.ndarray | None,
               what: str) -> np.ndarray:
    """`values` as `target`, or ConversionError naming the column and a value that does not
    fit. Integers must be in range (and exactly representable as a float); floats converted
    to integers must be integral and in range; float narrowing rounds but must stay finite.
    Nil rows are not checked (they become 0)."""
    src = values.dtype
    if src == target:
        return values
    check = values if nil is None else values[~nil]

    def fail(v: Any) -> ConversionError:
        return ConversionError(f"column {col.name!r}: {what} {v!r} does not fit the new type "
                               f"{col.type_name}" + (f" (stored as {target})"
                                                     if target != col.dtype else "")
                               + "; narrowing is only possible when every stored value fits")

    if len(check):
        if target.kind == "f":
            if src.kind == "f":
                with np.errstate(over="ignore"):
                    bad = ~np.isfinite(check.astype(target))
                if bad.any():
                    raise fail(_bad(check, bad))
            else:
                nmant = np.finfo(target).nmant + 1
                if src.itemsize * 8 - (src.kind == "i") > nmant:
                    conv = check.astype(target).astype(np.float64)
                    lo, hi = (0.0, 2.0**64) if src.kind == "u" else (-2.0**63, 2.0**63)
                    inside = (conv >= lo) & (conv < hi)
                    back = np.zeros_like(check)
                    back[inside] = conv[inside].astype(src)
                    bad = ~inside | (back != check)
                    if bad.any():
                        raise fail(_bad(check, bad))
        else:
            info = np.iinfo(target)
            if src.kind == "f":
                with np.errstate(invalid="ignore"):
                    bad = (~np.isfinite(check) | (check != np.floor(check))
                           | (check < float(info.min)) | (check >= float(info.max) + 1.0))
                if bad.any():
                    raise fail(_bad(check, bad))
            else:
                lo, hi = int(check.min()), int(check.max())
                if lo < info.min:
                    raise fail(lo)
                if hi > info.max:
                    raise fail(hi)
    with np.errstate(invalid="ignore", over="ignore"):
        out = values.astype(target)
    if nil is not None:
        out[nil] = 0
    return out


def convert(block: Block, src: StoredDB, key: Any, dst: Schema,
            tables: dict[str, StringTable]) -> Block:
    """One stored block of `src` in the `dst` schema (string codes from `tables`)."""
    n = block.n
    dims: dict[str, np.ndarray] = {}
    nils: dict[str, np.ndarray | None] = {}
    for d in dst.dimensions:
        s = src.schema.column(d.name)
        if s is None:
            dims[d.name] = np.zeros(n, d.dtype)
            nils[d.name] = np.ones(n, bool) if n else None
            continue
        nil = block.nils.get(s.name)
        nils[d.name] = nil
        if d.is_string:
            dims[d.name] = tables[d.name].remap(key, src.dictionaries[s.name],
                                                block.dims[s.name], nil)
        else:
            dims[d.name] = cast_exact(block.dims[s.name], d.dtype, d, nil, "stored value")
    metrics = {}
    for m in dst.metrics:
        s = src.schema.column(m.name)
        if s is None:
            metrics[m.name] = m.kind.empty(n, m.store_dtype)
            continue
        values = block.metrics[s.name]
        missing = s.kind.missing(values.astype(s.store_dtype, copy=False))
        # a min/max without a value: the identity of the new stored type
        metrics[m.name] = m.kind.fill_missing(
            cast_exact(values, m.store_dtype, m, missing, f"stored {m.kind.name}"), missing)
    # uniques sketches carry over as they are (a new uniques column: no identities yet)
    sketches = {u.name: (block.sketches[u.name] if u.name in block.sketches
                         else SketchColumn.empty(n)) for u in dst.uniques}
    return Block(n, block.count, dims, nils, metrics, sketches)


# -- where stored intervals go ---------------------------------------------------------------
Placement = dict[tuple[int, int], tuple[int, int]]  # (source, start) -> (new start, duration)


def place(sources: list[StoredDB], dst: Schema) -> tuple[tuple[int, ...], Placement]:
    """The watermarks of the new database and where each source interval goes.

    Without tiers every interval moves to the destination interval holding its start. With
    them, an interval keeps its duration where the destination has it (or takes the next
    coarser one; the coarsest when it is coarser than every tier), and the watermarks are the
    latest that any source's re-rolled data (or watermark at a tier of the same duration)
    reaches, so intervals of differently compacted sources (merge, balance) never overlap: a
    finer interval inside a range another source re-rolled joins that range's coarser
    interval, as late rows do."""
    durations = dst.durations
    tiers = dst.tiering
    marks = [0] * (len(durations) - 1)
    for src in sources:
        src_durations = src.schema.durations
        for k, w in enumerate(src.meta.watermarks):
            if src_durations[k + 1] in durations[1:]:
                j = durations.index(src_durations[k + 1]) - 1
                marks[j] = max(marks[j], w)
        for start in src.starts:
            end = start + src.duration(start)
            for j in range(len(marks)):  # data coarser than tier j holds tier j+1's range
                if src.duration(start) > durations[j]:
                    size = durations[j + 1]
                    marks[j] = max(marks[j], -(-end // size) * size)
    for j in reversed(range(len(marks) - 1)):
        marks[j] = max(marks[j], marks[j + 1])
    watermarks = tuple(marks)
    placement: Placement = {}
    for i, src in enumerate(sources):
        for start in src.starts:
            d = src.duration(start)
            coarser = [e for e in durations if e >= d]
            size = coarser[0] if coarser else durations[-1]
            if tiers is not None:  # the watermarks put a coarse interval's range wholly
                size = max(size, tiers.duration_at(start, watermarks))  # in a coarse tier
            placement[(i, start)] = (start - start % size, size)
    return watermarks, placement


# -- the run ----------------------------------------------------------------------------------
def retention_cutoff(config: Config, now: float | None = None) -> int | None:
    """Interval starts below this are outside the config's retention (as DB.retention_cutoff;
    with tiers, past the last tier's keep)."""
    return layout.schema_retention_cutoff(Schema.from_config(config.schema),
                                          config.retention_days,
                                          time.time() if now is None else now)


def last_updated(sources: list[StoredDB]) -> int | None:
    """The newest `last_updated` of the sources: what the new database reports."""
    known = [s.last_updated for s in sources if s.last_updated is not None]
    return max(known) if known else None


@dataclasses.dataclass
class Summary:
    intervals_in: int = 0
    rows_in: int = 0  # stored rows read (segments) plus unflushed input rows
    input_rows_in: int = 0  # sum of roll-up counts read
    dropped_intervals: int = 0  # outside every destination's retention (not read)
    dropped_input_rows: int = 0  # balance: rows whose shard's retention drops them
    seconds: float = 0.0
    outputs: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)  # iv, rows, in


def _strings_of(table: StringTable, codes: np.ndarray, nil: np.ndarray | None) -> np.ndarray:
    arr = table.array()
    if not len(arr):
        return np.full(len(codes), None, object)
    out: np.ndarray = arr[codes if nil is None else np.where(nil, 0, codes)]
    return out


def rewrite(sources: list[StoredDB], outputs: list[NewDB], cutoffs: list[int | None],
            parallelism: int = 4, progress: Callable[[str, int], Progress] | None = None
            ) -> Summary:
    """Rewrite every interval of `sources` into `outputs` (all sharing one schema).

    With one output every row goes to it. With several, each rolled-up row goes to output
    `sharding.shard_of(...)`: the shard a router over the outputs (in this order) would use.
    Rows of an interval below an output's retention cutoff are dropped. Outputs are not
    committed here."""
    schema = outputs[0].schema
    watermarks, placement = place(sources, schema)
    for out in outputs:
        out.watermarks = watermarks
    plan: dict[int, list[tuple[int, int]]] = {}
    weight: dict[int, int] = {}
    duration: dict[int, int] = {}
    for i, src in enumerate(sources):
        for start in src.starts:
            dst_start, size = placement[(i, start)]
            assert duration.setdefault(dst_start, size) == size, "overlapping placement"
            plan.setdefault(dst_start, []).append((i, start))
            weight[dst_start] = weight.get(dst_start, 0) + src.stored_rows(start)
    summary = Summary(intervals_in=sum(len(s.starts) for s in sources),
                      rows_in=sum(weight.values()))
    shared = outputs[0].tables if len(outputs) == 1 else {
        d.name: StringTable(d) for d in schema.string_dimensions}
    stop = threading.Event()
    lock = threading.Lock()

    def task(start: int) -> None:
        if stop.is_set():
            return
        wanted = [k for k, c in enumerate(cutoffs) if c is None or start >= c]
        if not wanted:
            with lock:
                summary.dropped_intervals += 1
            return
        blocks = []
        for i, src_start in plan[start]:
            for b in sources[i].blocks(src_start):
                if stop.is_set():
                    return
                blocks.append(convert(b, sources[i], i, schema, shared))
        block = rollup(schema, blocks)
        del blocks
        with lock:
            summary.input_rows_in += block.logical_rows
        if len(outputs) == 1:
            outputs[0].add_interval(start, block, duration[start])
            return
        hash_dims = {d.name: (_strings_of(shared[d.name], block.dims[d.name],
                                          block.nils[d.name])
                              if d.is_string else block.dims[d.name]) for d in schema.dimensions}
        shard = shard_of(schema, schema.shard_start(np.full(block.n, start, np.int64)),
                         hash_dims, block.nils, len(outputs))
        del hash_dims
        for k in range(len(outputs)):
            part = block.take(shard == k)
            if k not in wanted:
                with lock:
                    summary.dropped_input_rows += part.logical_rows
                continue
            dims = dict(part.dims)
            for d in schema.string_dimensions:
                dims[d.name] = outputs[k].tables[d.name].remap(
                    "shared", shared[d.name].values, part.dims[d.name], part.nils[d.name])
            outputs[k].add_interval(start, dataclasses.replace(part, dims=dims),
                                    duration[start])

    t0 = time.perf_counter()
    order = sorted(plan, key=lambda s: -weight[s])
    bar = progress("rows", summary.rows_in) if progress else None
    with ThreadPoolExecutor(max(1, parallelism), thread_name_prefix="gumtool") as pool:
        futures = {pool.submit(task, s): s for s in order}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    f.result()
                    if bar:
                        bar.advance(weight[futures[f]])
        except BaseException:
            stop.set()
            for f in pending:
                f.cancel()
            raise
    if bar:
        bar.finish()
    summary.seconds = time.perf_counter() - t0
    summary.outputs = [(out.intervals, out.rows, out.input_rows) for out in outputs]
    return summary


def rewrite_to_new(sources: list[StoredDB], dest: Any, schema: Schema, config: Config,
                   parallelism: int, progress: Callable[[str, int], Progress] | None
                   ) -> tuple[Summary, list[str]]:
    """merge and migrate: every source into one new database at `dest` (committed, under the
    config's retention). Returns the summary and the lines to report about dropped data."""
    with NewDB(dest, schema) as out:
        out.last_updated = last_updated(sources)
        s = rewrite(sources, [out], [retention_cutoff(config)], parallelism, progress)
        out.commit()
    if not s.dropped_intervals:
        return s, []
    line = (f"dropped {s.dropped_intervals} intervals outside the new config's retention "
            f"({config.retention_days} days)")
    return s, [line]
