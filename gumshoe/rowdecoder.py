"""JSON insert bodies straight to columns: a msgspec decoder generated from the schema.

Imports schema and batch. msgspec parses and type-checks the whole body in one C pass (types,
integer ranges, unknown columns, a present timestamp) into per-schema structs; the columns are
then gathered with attrgetter and converted with numpy, never a Python statement per row.
It is only the fast path: on any problem it returns None and the caller runs the row-by-row
validator (`batch.parse_rows`), which names the row and column at fault. So error messages and
the accepted language are exactly parse_rows'; this only makes valid bodies cheap (~2.5x).

Faster still, when the C extension `gumshoe._jsonl` is built: its `scan_array` reads the plain,
common body (flat objects, strings without escapes, each key once, no unknown key) straight
into typed columns, strings as a Factor (each distinct string decoded once), without the GIL,
so the server's insert threads decode bodies in parallel. It declines anything else, and the
range checks below decline what parse_rows would refuse, so msgspec and then parse_rows see
every unusual or bad body.

A `uniques` column is read by the C scanner as text (kind 'h': a string, or an integer token
as its decimal text; a fraction, exponent or -0 declined) and each distinct text hashed once
(sketch.hash_strings: 5 and "5" are one text and one identity); by msgspec as a string or an
integer (bool and float refused), hashed there.

Duplicate keys in a row (`{"visits": 1, "visits": 2}`) would silently keep the last value in
msgspec and orjson alike, so they are counted out: the distinct keys decoded (in a body
without `null`, a None field is an absent key, so the nil masks give the count for free; a body
with `null` decodes absent fields as UNSET, counted per column) against the keys in the text,
`key_count` (the colons, at numpy speed; exactly, through the quotes, when string values hold
colons). More keys in the text than decoded means a duplicate: the slow path names it.
Cost per 10k-row body (~0.8 MB; a shared 2-core machine, so roughly): none measurable without
null; +0.3-0.8 ms (5-12%) with nulls when rows have every key; +2.5 ms (~30%) with nulls and
keys left out (the UNSET count and replacement); +1.5 ms when string values hold colons.
"""

from __future__ import annotations

import functools
import itertools
import operator
from typing import Annotated, Any, Optional, Union

import msgspec
import numpy as np

from . import native
from .batch import TIMESTAMP_MAX, Batch, Factor
from .errors import InsertError
from .kinds import fill
from .schema import Column, Schema
from .sketch import hash_strings


def _field_type(col: Column) -> Any:
    if col.kind.is_sketch:  # a uniques identity: a string or an integer (not bool or float)
        return Optional[Union[str, int]]  # noqa: UP007,UP045
    if col.is_string:
        return Optional[str]  # noqa: UP045 (msgspec needs runtime type objects)
    if col.dtype.kind == "f":
        return Optional[float]  # noqa: UP045
    lo, hi = col.value_range
    # msgspec bounds must fit int64: uint64's upper bound is checked by numpy's conversion.
    meta = msgspec.Meta(ge=0) if col.dtype == np.uint64 else msgspec.Meta(ge=int(lo), le=int(hi))
    return Optional[Annotated[int, meta]]  # noqa: UP045


class RowDecoder:
    """Decodes JSON arrays of row objects for one schema (see the module docstring)."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.columns = (*schema.dimensions, *schema.metrics, *schema.uniques)
        # two decoders: absent fields as None (bodies without null), or as UNSET
        self._decoders = [self._decoder_with(absent) for absent in (None, msgspec.UNSET)]
        self._getters = [operator.attrgetter(f"c{i}") for i in range(len(self.columns) + 1)]
        # the C scanner's fields and kinds: the timestamp as a double (integers or decimals)
        self._scan_fields = tuple(c.name.encode() for c in (schema.timestamp, *self.columns))
        self._scan_kinds = "f" + "".join(
            "h" if c.kind.is_sketch else "s" if c.is_string else "f" if c.is_float
            else "u" if c.dtype == np.uint64 else "i" for c in self.columns)

    def _decoder_with(self, absent: Any) -> msgspec.json.Decoder[Any]:
        fields: list[Any] = [("c0", Union[int, float])]  # noqa: UP007  the timestamp: required
        rename = {"c0": self.schema.timestamp.name}
        for i, col in enumerate(self.columns, 1):
            fields.append((f"c{i}", _field_type(col), absent))
            rename[f"c{i}"] = col.name
        row = msgspec.defstruct("Row", fields, rename=rename, forbid_unknown_fields=True,
                                gc=False)  # plain data: no cycles to track
        return msgspec.json.Decoder(list[row])  # type: ignore[valid-type]

    def decode(self, body: bytes) -> Batch | None:
        """The validated batch, or None when the body needs the row-by-row validator; a
        reserved min/max value (the kind's "no value") raises the validator's InsertError."""
        batch = self.scan(body)
        return batch if batch is not None else self._decode(body)

    def scan(self, body: bytes) -> Batch | None:
        """The body through gumshoe._jsonl.scan_array (without the GIL), or None: declined,
        out of range, or the extension not built."""
        return self._scanned(body, None)

    def scan_lines(self, body: bytes, now: int) -> Batch | None:
        """The same for NDJSON (collect/formats.py: one object per line, no blank line), where
        a row without its time gets `now`; None also for a null time, which is an error."""
        return self._scanned(body, now)

    def _scanned(self, body: bytes, now: int | None) -> Batch | None:
        if not use_scan or native.jsonl is None or len(self._scan_fields) > 64:
            return None
        cap = body.count(b"{") if now is None else native.jsonl.lines(body)
        outs = tuple(np.empty(cap, _SCAN_DTYPE[k]) for k in self._scan_kinds)
        nils = tuple(np.empty(cap, np.bool_) for _ in self._scan_kinds)
        scan = native.jsonl.scan_array if now is None else native.jsonl.scan
        got = scan(body, self._scan_fields, self._scan_kinds.encode(), outs, nils, False)
        if got is None:
            return None
        n, uniques = got
        ts = np.floor(outs[0][:n])
        no_time = nils[0][:n]
        if no_time.any():  # rows without their time: NDJSON's get `now`, unless one is null
            if now is None or b"null" in body:
                return None
            ts[no_time] = now
        if n and (ts.min() < 0 or ts.max() > TIMESTAMP_MAX):
            return None
        dims: dict[str, Any] = {}
        dim_nils: dict[str, np.ndarray | None] = {}
        metrics: dict[str, np.ndarray] = {}
        ids: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for col, out, nil, u in zip(self.columns, outs[1:], nils[1:], uniques[1:]):
            values, nil = out[:n], nil[:n]
            has_nil = nil.any()
            if col.kind.is_sketch:  # identities: each distinct text hashed once
                table = hash_strings(u)[0] if u else np.zeros(1, np.uint64)
                hashes = table[values]
                hashes[nil] = 0
                ids[col.name] = (hashes, ~nil)
                continue
            if col.is_string:
                dims[col.name], dim_nils[col.name] = Factor(u, values), (nil if has_nil else None)
                continue
            if col.is_float:
                with np.errstate(over="ignore"):
                    arr = values.astype(col.dtype)  # float32: rounded as the validator does
                if not np.isfinite(arr).all():  # beyond float32: the validator names the row
                    return None
            else:
                lo, hi = col.value_range
                if n and col.dtype != values.dtype and (values.min() < lo or values.max() > hi):
                    return None
                arr = values.astype(col.dtype)
            if col.role == "dimension":
                dims[col.name], dim_nils[col.name] = arr, (nil if has_nil else None)
                continue
            try:  # min/max: no value is the kind's identity (a reserved value: declined)
                metrics[col.name] = fill(col.kind, col.dtype, col.name,
                                         arr.astype(col.store_dtype, copy=False),
                                         nil if has_nil else None)
            except InsertError:
                return None
        return Batch(n, ts.astype(np.int64), dims, dim_nils, metrics, identities=ids)

    def _decode(self, body: bytes) -> Batch | None:
        """The msgspec path (see the module docstring)."""
        nulls = b"null" in body  # then None is not always an absent key: decode those as UNSET
        try:
            rows = self._decoders[nulls].decode(body)
        except (msgspec.DecodeError, ValueError):  # ValueError: bad UTF-8
            return None
        n = len(rows)
        ts = np.array(list(map(self._getters[0], rows)))
        if ts.dtype == object:  # an integer beyond 64 bits
            return None
        if n and ts.dtype.kind == "f":
            if not np.isfinite(ts).all():
                return None
            ts = np.floor(ts)
        if n and (ts.min() < 0 or ts.max() > TIMESTAMP_MAX):
            return None
        ts = ts.astype(np.int64) if n else np.zeros(0, np.int64)
        dims: dict[str, Any] = {}
        nils: dict[str, np.ndarray | None] = {}
        metrics: dict[str, np.ndarray] = {}
        ids: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        present = n  # distinct keys decoded: the timestamp of every row, and the fields below
        for col, get in zip(self.columns, self._getters[1:]):
            values = list(map(get, rows))
            absent = values.count(msgspec.UNSET) if nulls else 0
            if absent:
                values = list(map(_UNSET_AS_NONE, values, values))
            if col.kind.is_sketch:  # uniques: hashed once here, as batch.parse_rows does
                hashes, has = hash_strings(values)
                ids[col.name] = (hashes, has)
                nil = None if has.all() else ~has
            elif col.is_string:
                nil = _nil_mask(values) if None in values else None
                dims[col.name], nils[col.name] = values, nil
            else:
                # in the declared type first: a float32 metric is rounded (and 1e39 declined)
                # as the validator does, then widened to the type sums are kept in
                arr, nil = _numbers(values, col.dtype)
                if arr is None:
                    return None
                if col.role == "dimension":
                    dims[col.name], nils[col.name] = arr, nil
                else:  # min/max: no value is the kind's identity
                    metrics[col.name] = fill(col.kind, col.dtype, col.name,
                                             arr.astype(col.store_dtype, copy=False), nil)
            # without null in the body, every None is an absent key
            present += n - (absent if nulls else 0 if nil is None else int(nil.sum()))
        if key_count(body, present) != present:  # a duplicate key (or uncountable)
            return None
        return Batch(n, ts, dims, nils, metrics, identities=ids)


use_scan = True  # tests turn the C scanner off to check the msgspec path alone
_SCAN_DTYPE = {"s": np.int32, "h": np.int32, "i": np.int64, "u": np.uint64, "f": np.float64}
_UNSET_AS_NONE = {msgspec.UNSET: None}.get  # (v, v) -> None for UNSET, else v: C speed
_COLON, _QUOTE, _BACKSLASH = ord(":"), ord('"'), ord("\\")
_IS_SPACE = np.zeros(256, bool)
_IS_SPACE[[ord(c) for c in " \t\r\n"]] = True


def key_count(body: bytes, at_least: int) -> int | None:
    """The number of object keys in the valid JSON text `body` that holds at least
    `at_least` keys, or None when a string holds an escaped quote and colons, which would
    need a real parse. Costs ~0.05 ms per MB when no string value holds a colon (then the
    colons are the keys), a few more per MB otherwise."""
    data = np.frombuffer(body, np.uint8)
    colons = int(np.count_nonzero(data == _COLON))
    if colons == at_least:  # at least `at_least` keys, each with its colon: they are exact
        return colons
    slashes = np.flatnonzero(data == _BACKSLASH)
    slashes = slashes[slashes + 1 < len(data)]
    if np.any(data[slashes + 1] == _QUOTE):  # an escaped quote: telling quotes apart would
        return None                            # need a parse
    quotes = np.flatnonzero(data == _QUOTE)  # every quote opens or closes a string
    after = quotes[1::2] + 1  # the byte after each closing quote
    after = after[after < len(data)]
    nxt = data[after]
    keys = int(np.count_nonzero(nxt == _COLON))  # a key is a string before a colon
    spaced = after[_IS_SPACE[nxt]]
    if len(spaced):  # "key" : value, with whitespace before the colon
        solid = np.flatnonzero(~_IS_SPACE[data])
        at = np.searchsorted(solid, spaced)
        keys += int(np.count_nonzero(data[solid[at[at < len(solid)]]] == _COLON))
    return keys


def _nil_mask(values: list[Any]) -> np.ndarray:
    return np.fromiter(map(operator.is_, values, itertools.repeat(None)), bool, len(values))


def _numbers(values: list[Any], dtype: np.dtype) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Already type- and range-checked numbers (None: nil/0) -> (array, nil mask or None)."""
    nil = _nil_mask(values) if None in values else None
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            arr = np.array(values, dtype=np.float64).astype(dtype)  # None -> nan
        if nil is not None:
            arr[nil] = 0
        if not np.isfinite(arr).all():  # beyond float32: the validator names the row
            return None, None
        return arr, nil
    try:
        if nil is None:
            return np.array(values, dtype=dtype), None
        obj = np.array(values, dtype=object)
        obj[nil] = 0
        return obj.astype(dtype), nil
    except OverflowError:  # beyond uint64: the validator names the row
        return None, None


@functools.lru_cache(maxsize=8)
def decoder_for(schema: Schema) -> RowDecoder:
    return RowDecoder(schema)
