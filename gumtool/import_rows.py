"""`gumtool import` rows: decoded fields -> typed columns, km-db's rules, and the output of a
chunk: a rolled-up batch for the database, or a JSON insert body for a server.

Imports gumshoe schema, block and batch, and gumtool's import decode/rules/mapping modules.
Everything is per column (numpy, pyarrow compute, C-level `map`): strings are factorised into
codes once per chunk, so the identity rules, the event whitelist and the roll-up work on a
chunk's distinct strings and integer codes, never on a Python string per row.

A chunk's rows are rolled up in the worker (`block.rollup` over the interval start and every
dimension): the main process then applies a batch with roll-up counts, often several times
smaller than the input, through the storage layer's own `DB.insert_batch`.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from gumshoe.batch import TIMESTAMP_MAX, Batch, Factor
from gumshoe.block import Block, rollup
from gumshoe.schema import Column, Schema
from gumshoe.sketch import SketchColumn, hash_strings

from .import_decode import MAX_BAD_PER_CHUNK, Decoded
from .import_mapping import Plan
from .import_rules import Rules

REASONS = ("bad line", "alias record", "property record (no event name)", "ignored user",
           "event not whitelisted")
_NoneType = type(None)


@dataclasses.dataclass
class Strings:
    """A string column as a chunk's distinct strings and a code per row."""

    uniques: list[str]
    codes: np.ndarray  # int64; nil rows hold 0
    nil: np.ndarray | None

    def take(self, rows: np.ndarray) -> Strings:
        return Strings(self.uniques, self.codes[rows],
                       None if self.nil is None else self.nil[rows])

    def values(self) -> list[str | None]:
        """One string (or None for nil) per row (an object-array take then `tolist`: 4x
        faster than `operator.itemgetter` for 400k rows)."""
        table = np.empty(len(self.uniques) + 1, dtype=object)
        table[:-1] = self.uniques
        codes = self.codes if self.nil is None else np.where(self.nil, len(self.uniques),
                                                              self.codes)
        return table[codes].tolist()


def _text(v: Any) -> str:
    return v if isinstance(v, str) else orjson.dumps(v).decode()


def strings_of(values: Any, n: int) -> Strings:
    """Factorise a field: a JSON list (numbers become their JSON text), a pyarrow dictionary
    array (CSV), or None (the field is absent: every row nil)."""
    if values is None:
        return Strings([], np.zeros(n, np.int64), np.ones(n, bool))
    if isinstance(values, pa.Array):
        if not pa.types.is_dictionary(values.type):
            values = values.dictionary_encode()
        nil = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
        codes = values.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        return Strings(values.dictionary.to_pylist(), codes, nil)
    types = set(map(type, values))
    if not types <= {str, _NoneType}:  # numbers in a string field: their JSON text
        kinds = np.fromiter(map(type, values), object, n)
        odd = np.flatnonzero((kinds != str) & (kinds != _NoneType)).tolist()
        values = list(values)
        for i in odd:  # only the non-string values
            values[i] = _text(values[i])
    index = dict.fromkeys(values)
    index.pop(None, None)
    uniques = list(index)
    index = dict(zip(uniques, range(len(uniques))))
    if _NoneType in types:
        index[None] = -1
    codes = np.fromiter(map(index.__getitem__, values), np.int64, n)
    nil = None
    if _NoneType in types:
        nil = codes < 0
        codes[nil] = 0
    return Strings(uniques, codes, nil)


def remap(s: Strings, mapping: dict[str, str]) -> Strings:
    """`s` with every string replaced by mapping.get(string, string) (codes re-factorised)."""
    if not mapping or not s.uniques:
        return s
    mapped = list(map(mapping.get, s.uniques, s.uniques))
    index = dict.fromkeys(mapped)
    uniques = list(index)
    index = dict(zip(uniques, range(len(uniques))))
    new = np.fromiter(map(index.__getitem__, mapped), np.int64, len(mapped))
    return Strings(uniques, new[s.codes], s.nil)


def member(s: Strings, allowed: frozenset[str]) -> np.ndarray:
    """Per row: is its (non-nil) string in `allowed`."""
    inside = np.fromiter(map(allowed.__contains__, s.uniques), bool, len(s.uniques))
    out = inside[s.codes] if len(s.uniques) else np.zeros(len(s.codes), bool)
    return out if s.nil is None else out & ~s.nil


# -- numbers and timestamps -------------------------------------------------------------------
class Problems:
    """Bad rows found while converting columns: a mask and the first messages."""

    def __init__(self, n: int) -> None:
        self.mask = np.zeros(n, bool)
        self.messages: dict[int, str] = {}

    def add(self, bad: np.ndarray, message: Any) -> None:
        new = np.flatnonzero(bad & ~self.mask)
        self.mask |= bad
        for i in new[: MAX_BAD_PER_CHUNK - len(self.messages)].tolist():
            self.messages[i] = message(i)


def numbers_of(values: Any, col: Column, n: int, problems: Problems, field: str
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """A numeric field in the column's dtype (nil rows 0) and its nil mask."""
    dtype = col.dtype
    if values is None:
        return np.zeros(n, dtype), np.ones(n, bool)
    if isinstance(values, pa.Array):
        nil = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
        arr = values.fill_null(0).to_numpy(zero_copy_only=False)
    elif dtype.kind == "f" or (None in values and dtype.itemsize <= 4):
        arr = np.array(values, dtype=np.float64)  # None -> nan
        isnan = np.isnan(arr)
        nil = isnan if isnan.any() else None
        if nil is not None:
            arr[nil] = 0
    elif None in values:  # 64-bit integers with nils: exact through objects
        obj = np.array(values, dtype=object)
        nil = np.equal(obj, None)  # type: ignore[call-overload]
        obj[nil] = 0
        arr = obj.astype(dtype)
    else:
        return np.array(values, dtype=dtype), None  # msgspec checked type and range
    lo, hi = col.value_range
    if dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            out = arr.astype(dtype)
        bad = ~np.isfinite(out)
        if bad.any():
            problems.add(bad, lambda i: f"field {field!r}: {arr[i]!r} is out of range for "
                                        f"{col.type_name}")
            out[bad] = 0
        return out, nil
    if arr.dtype.kind == "f":  # from JSON via float64: whole numbers already checked
        return arr.astype(dtype), nil
    if arr.dtype != np.uint64 and (lo > np.iinfo(np.int64).min or hi < np.iinfo(np.int64).max):
        bad = (arr < lo) | (arr > hi)
        if bad.any():
            problems.add(bad, lambda i: f"field {field!r}: {int(arr[i])} is out of range for "
                                        f"{col.type_name} [{lo}, {hi}]")
            arr = np.where(bad, 0, arr)
    elif arr.dtype == np.uint64 and dtype != np.uint64:
        bad = arr > np.uint64(hi)
        if bad.any():
            problems.add(bad, lambda i: f"field {field!r}: {int(arr[i])} is out of range for "
                                        f"{col.type_name} [{lo}, {hi}]")
            arr = np.where(bad, 0, arr)
    return arr.astype(dtype), nil


def timestamps_of(values: Any, fmt: str, field: str, n: int, problems: Problems) -> np.ndarray:
    """Unix seconds (int64) from the timestamp field in `fmt`; bad rows hold 0."""
    if values is None:
        problems.add(np.ones(n, bool), lambda i: f"no timestamp field {field!r}")
        return np.zeros(n, np.int64)
    if fmt == "iso8601":
        arr = values if isinstance(values, pa.Array) else pa.array(values, pa.string())
        ts, bad_iso = _iso(arr)
        if bad_iso.any():
            problems.add(bad_iso, lambda i: f"field {field!r}: {arr[i].as_py()!r} is not an "
                                            "ISO 8601 time with a UTC offset")
    else:
        if isinstance(values, pa.Array):
            missing = values.is_null().to_numpy(zero_copy_only=False)
            raw = values.fill_null(0).to_numpy(zero_copy_only=False)
            if missing.any():
                problems.add(missing, lambda i: f"field {field!r}: no timestamp")
        else:
            raw = np.array(values)
            if raw.dtype == object:  # integers beyond 64 bits: out of range anyway
                raw = np.array([float(v) for v in values], np.float64)
        if fmt == "unix_ms":
            raw = raw / 1000 if raw.dtype.kind == "f" else raw // 1000
        if raw.dtype.kind == "f":
            finite = np.isfinite(raw)
            raw = np.floor(np.where(finite, np.clip(raw, -1, 2**33), -1))
        ts = raw.astype(np.int64)
    bad = ((ts < 0) | (ts > TIMESTAMP_MAX)) & ~problems.mask
    if bad.any():
        shown = values if not isinstance(values, pa.Array) else None
        problems.add(bad, lambda i: f"field {field!r}: timestamp "
                                    f"{shown[i] if shown is not None else ts[i]!r} is out of "
                                    f"range [0, {TIMESTAMP_MAX}] (Unix seconds"
                                    f"{', from milliseconds' if fmt == 'unix_ms' else ''})")
    return np.where(problems.mask, 0, ts)


def _iso(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """ISO 8601 texts with a UTC offset -> Unix seconds; (seconds, bad mask)."""
    try:
        ns = arr.cast(pa.timestamp("ns", tz="UTC"))
        missing = ns.is_null().to_numpy(zero_copy_only=False)
        sec = pc.fill_null(ns.cast(pa.int64()), 0).to_numpy(zero_copy_only=False) // 10**9
        return sec.astype(np.int64), missing
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    out = np.zeros(len(arr), np.int64)
    bad = np.zeros(len(arr), bool)
    for i, text in enumerate(arr.to_pylist()):  # only chunks with an unusual or bad time
        try:
            t = datetime.datetime.fromisoformat(text)
        except (TypeError, ValueError):
            bad[i] = True
            continue
        if t.tzinfo is None:
            bad[i] = True
            continue
        out[i] = int(t.timestamp() // 1)
    return out, bad


# -- a chunk's rows ---------------------------------------------------------------------------
@dataclasses.dataclass
class Rows:
    """A chunk's kept rows as typed columns (before roll-up)."""

    n: int
    ts: np.ndarray
    strings: dict[str, Strings]
    numbers: dict[str, tuple[np.ndarray, np.ndarray | None]]  # dimension -> values, nil
    metrics: dict[str, np.ndarray]  # store dtype, nil -> 0
    identities: dict[str, Strings] = dataclasses.field(default_factory=dict)  # uniques, as text


def identity_text(s: Strings) -> Strings:
    """A uniques field as read, an empty string made no identity, in both formats: a CSV
    export cannot tell it from a missing value (the HTTP CSV path reads it so too)."""
    if "" not in s.uniques:
        return s
    empty = s.codes == s.uniques.index("")
    return Strings(s.uniques, s.codes, empty if s.nil is None else s.nil | empty)


def identity_hashes(s: Strings) -> tuple[np.ndarray, np.ndarray]:
    """A uniques field's (hash, present) per row (`identity_text`), hashed once per distinct
    identity: a string, or an integer as its decimal text (as the HTTP insert path does);
    other JSON values (a float, true) count by their JSON text, where the HTTP path refuses
    them."""
    values = [u if isinstance(u, str) or (isinstance(u, int) and not isinstance(u, bool))
              else _text(u) for u in s.uniques]
    table = hash_strings(values)[0]
    n = len(s.codes)
    hashes = table[s.codes] if len(table) else np.zeros(n, np.uint64)
    if s.nil is None:
        return hashes, np.ones(n, bool)
    hashes[s.nil] = 0
    return hashes, ~s.nil


def prepare(decoded: Decoded, plan: Plan, rules: Rules
            ) -> tuple[Rows, dict[str, int], list[tuple[int, str]], int]:
    """Typed columns of the rows to import, the skipped rows by reason, and the bad lines
    found while converting ((line index, message), and how many)."""
    n = decoded.n
    v = decoded.values
    problems = Problems(n)
    ts = timestamps_of(v.get(plan.timestamp_field), plan.timestamp_format,
                       plan.timestamp_field, n, problems)
    strings: dict[str, Strings] = {}
    numbers: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    metrics: dict[str, np.ndarray] = {}
    identities: dict[str, Strings] = {}
    for t in plan.targets:
        col = t.column
        if col.kind.is_sketch:  # a uniques identity: text, hashed at the roll-up
            identities[col.name] = identity_text(strings_of(v.get(t.field) if t.field
                                                            else None, n))
            continue
        if col.is_string:
            if t.constant is not None:
                strings[col.name] = Strings([t.constant], np.zeros(n, np.int64), None)
            else:
                strings[col.name] = strings_of(v.get(t.field) if t.field else None, n)
            continue
        if t.constant is not None:
            arr, nil = np.full(n, t.constant, col.dtype), None
        else:
            arr, nil = numbers_of(v.get(t.field) if t.field else None, col, n, problems,
                                  t.field or col.name)
        if col.role == "metric":
            reserved = col.kind.reserved(col.dtype)
            if reserved is not None:  # a min/max's identity is no input: a bad line
                bad = arr == reserved if nil is None else (arr == reserved) & ~nil
                if bad.any():
                    problems.add(bad, lambda i, c=col, f=t.field or col.name:
                                 f"field {f!r}: {int(c.kind.reserved(c.dtype))} is reserved "
                                 f"in a {c.type_name} metric (it stands for no value)")
            # min/max: no value (and a skipped line) holds the kind's identity
            metrics[col.name] = col.kind.fill_missing(arr.astype(col.store_dtype), nil)
        else:
            numbers[col.name] = (arr, nil)
    identity = None
    if plan.identity is not None:
        identity = remap(strings_of(v.get(plan.identity), n), rules.aliases)
        for t in plan.targets:  # a stored identity is stored canonical
            if t.field == plan.identity and t.column.is_string:
                strings[t.column.name] = identity
    event = strings_of(v.get(plan.event), n) if plan.event is not None else None
    skip = problems.mask.copy()
    counts = {REASONS[0]: int(skip.sum()) + decoded.bad_count}
    masks: list[np.ndarray | None] = [None, None, None, None]
    if plan.alias is not None:
        alias = strings_of(v.get(plan.alias), n)
        masks[0] = np.ones(n, bool) if alias.nil is None else ~alias.nil
    if plan.require_event and event is not None:
        masks[1] = np.ones(n, bool) if event.nil is None else event.nil.copy()
    if identity is not None and rules.ignored:
        masks[2] = member(identity, rules.ignored)
    if event is not None and rules.only_events is not None:
        masks[3] = ~member(event, rules.only_events)
    for reason, mask in zip(REASONS[1:], masks):
        if mask is None:
            counts[reason] = 0
            continue
        hit = mask & ~skip
        counts[reason] = int(hit.sum())
        skip |= hit
    if not skip.any():  # the usual chunk: every row kept, no copies
        rows = Rows(n, ts, strings, numbers, metrics, identities)
    else:
        keep = np.flatnonzero(~skip)
        rows = Rows(len(keep), ts[keep], {k: s.take(keep) for k, s in strings.items()},
                    {k: (a[keep], None if m is None else m[keep])
                     for k, (a, m) in numbers.items()},
                    {k: a[keep] for k, a in metrics.items()},
                    {k: s.take(keep) for k, s in identities.items()})
    bad = sorted((int(decoded.line_of(np.array([i]))[0]), msg)
                 for i, msg in problems.messages.items())
    return rows, counts, bad, int(problems.mask.sum())


# -- outputs ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Rolled:
    """A chunk rolled up, in transit from a worker to the main process."""

    n: int
    ts: np.ndarray
    strings: dict[str, tuple[list[str], np.ndarray, np.ndarray | None]]
    numbers: dict[str, tuple[np.ndarray, np.ndarray | None]]
    metrics: dict[str, np.ndarray]
    counts: np.ndarray
    input_rows: int
    sketches: dict[str, SketchColumn] = dataclasses.field(default_factory=dict)  # uniques

    def to_batch(self, schema: Schema) -> Batch:
        dims: dict[str, Any] = {}
        nils: dict[str, np.ndarray | None] = {}
        for d in schema.dimensions:
            if d.is_string:
                uniques, codes, nil = self.strings[d.name]
                dims[d.name] = Factor(uniques, codes)  # encoded per distinct string
                nils[d.name] = nil
            else:
                dims[d.name], nils[d.name] = self.numbers[d.name]
        return Batch(self.n, self.ts, dims, nils, self.metrics, self.counts,
                     sketches=self.sketches)


def roll_up(rows: Rows, schema: Schema) -> Rolled:
    """Roll up a chunk's rows by (interval, dimensions) with the storage layer's kernel."""
    start_col = Column("__start", "int64", "dimension", np.dtype(np.int64))
    dims = [start_col]
    block_dims: dict[str, np.ndarray] = {"__start": schema.interval_start(rows.ts)}
    nils: dict[str, np.ndarray | None] = {"__start": None}
    for d in schema.dimensions:
        if d.is_string:
            s = rows.strings[d.name]
            dims.append(Column(d.name, "int64", "dimension", np.dtype(np.int64)))
            block_dims[d.name], nils[d.name] = s.codes, s.nil
        else:
            dims.append(d)
            block_dims[d.name], nils[d.name] = rows.numbers[d.name]
    keyed = Schema(schema.timestamp, tuple(dims), schema.metrics, schema.segment_size,
                   schema.interval_duration, uniques=schema.uniques)
    sketches = {}  # uniques: a row's sketch holds its one identity (or none), as DB._encode
    for u in schema.uniques:
        hashes, present = identity_hashes(rows.identities[u.name])
        at = np.flatnonzero(present)
        sketches[u.name] = SketchColumn.from_identities(at, hashes[at], rows.n)
    block = Block(rows.n, np.ones(rows.n, np.int64), block_dims, nils, dict(rows.metrics),
                  sketches)
    out = rollup(keyed, [block])
    ts = out.dims["__start"].astype(np.int64, copy=True)
    if rows.n:  # the newest row's time, for the database's last_updated (/statusz)
        ts[int(np.argmax(ts))] = int(rows.ts.max())
    strings = {d.name: (rows.strings[d.name].uniques, out.dims[d.name], out.nils[d.name])
               for d in schema.dimensions if d.is_string}
    numbers = {d.name: (out.dims[d.name], out.nils[d.name]) for d in schema.dimensions
               if not d.is_string}
    return Rolled(out.n, ts, strings, numbers, out.metrics, out.count, rows.n,
                  dict(out.sketches))


def json_body(rows: Rows, schema: Schema) -> bytes:
    """The rows as a JSON insert body (an array of row objects) for `PUT /insert`."""
    names = [schema.timestamp.name]
    cols: list[list[Any]] = [rows.ts.tolist()]
    for d in schema.dimensions:
        names.append(d.name)
        if d.is_string:
            cols.append(rows.strings[d.name].values())
        else:
            arr, nil = rows.numbers[d.name]
            if nil is None:
                cols.append(arr.tolist())
            else:
                obj = arr.astype(object)
                obj[nil] = None
                cols.append(obj.tolist())
    for m in schema.metrics:
        names.append(m.name)
        values = rows.metrics[m.name]
        missing = m.kind.missing(values)
        if missing is None or not missing.any():
            cols.append(values.astype(m.dtype, copy=False).tolist())
        else:  # a min/max without a value: null
            obj = values.astype(object)
            obj[missing] = None
            cols.append(obj.tolist())
    for u in schema.uniques:  # the identities as read (text; empty: none): the server
        names.append(u.name)  # hashes them
        cols.append(rows.identities[u.name].values())
    records = list(map(dict, map(zip, itertools.repeat(names), zip(*cols))))
    return orjson.dumps(records)

