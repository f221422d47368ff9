"""`GET /raw` at the HTTP edge: its parameters, its NDJSON and CSV renderings, and the router's
time-ordered merge of its shards' streams.

Imports errors and rawrecord (RawChunk), plus orjson; never the storage engine (the router uses
it). Parameters, as megafunnel's `GET /query?gt=<start>&lte=<end>`: `gt` (rows after it;
default: from 1970 on, 0 included) and `lte` (rows at or before it; default: now), each ISO 8601
(an offset, or UTC) or Unix seconds; `format` `ndjson` (default) or `csv`. Anything else is a
400 naming the parameter.

Rendering: one JSON object per row, keys in column order (timestamp first, then the columns of
the row's batch), null for nil; a row that stands for several input rows (a pre-rolled-up batch)
also has `count_key(...)` (`_count`). CSV has a header (the `X-Raw-Columns` of the response),
CRLF line ends, null as an empty field and the empty string as `""` (as query results' CSV).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import itertools
import json
import math
import operator
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import orjson

from .errors import ClientError
from .rawrecord import RawChunk, RawColumn

PARAMETERS = ("gt", "lte", "format")
FORMATS = {"ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
COLUMNS_HEADER = "X-Raw-Columns"  # the response's columns, a JSON array (ASCII)
COUNT_HEADER = "X-Raw-Count"  # the column of roll-up counts, when rows have one
PIECE_ROWS = 10_000  # rows rendered at a time
TIME_MAX = 2**32  # beyond every uint32 timestamp
_NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_DUMP = functools.partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)
_SPECIAL = frozenset(',"\r\n')


class NoArchive(ClientError):
    """GET /raw on a server whose [archive] is off."""

    status = 404


@dataclasses.dataclass(frozen=True, slots=True)
class RawRequest:
    lo_excl: int  # rows with lo_excl < timestamp <= hi_incl
    hi_incl: int
    format: str

    @property
    def media_type(self) -> str:
        return FORMATS[self.format]

    def query_string(self) -> str:
        """The same request with its bounds resolved (what the router sends its shards)."""
        return f"gt={self.lo_excl}&lte={self.hi_incl}&format=ndjson"


def parse_time(text: str, name: str) -> float:
    """Unix seconds from ISO 8601 (an offset, or UTC) or a number of Unix seconds."""
    s = text.strip()
    if _NUMBER_RE.fullmatch(s):
        value = float(s)
    else:
        try:
            t = dt.datetime.fromisoformat(s)
        except ValueError:
            raise ClientError(f"{name}: expected an ISO 8601 time (2024-05-01T12:00:00Z) or "
                              f"Unix seconds, got {text!r}") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        value = t.timestamp()
    if not math.isfinite(value):
        raise ClientError(f"{name}: expected a finite time, got {text!r}")
    return value


def _bound(value: float) -> int:
    """floor(value), clamped to [-1, TIME_MAX]: ts > floor(gt) is ts > gt for whole seconds."""
    return int(min(max(math.floor(value), -1), TIME_MAX))


def parse_request(items: Iterable[tuple[str, str]], now: float) -> RawRequest:
    """The parameters of a GET /raw (its query string's items). Raises ClientError (400)
    naming the parameter at fault."""
    given: dict[str, str] = {}
    for k, v in items:
        if k not in PARAMETERS:
            raise ClientError(f"unknown parameter {k!r} (GET /raw takes "
                              f"{', '.join(PARAMETERS)})")
        if k in given:
            raise ClientError(f"{k}: given more than once")
        given[k] = v
    fmt = given.get("format", "ndjson").lower()
    if fmt not in FORMATS:
        raise ClientError(f"format: unknown raw format {given['format']!r} (ndjson or csv)")
    lo = _bound(parse_time(given["gt"], "gt")) if "gt" in given else -1
    hi = _bound(parse_time(given["lte"], "lte") if "lte" in given else now)
    if lo > hi:
        raise ClientError(f"gt: {given['gt']!r} is after lte "
                          f"{given.get('lte', 'now')!r}: the range is empty")
    return RawRequest(lo, hi, fmt)


def count_key(names: Iterable[str]) -> str:
    """The key of a row's roll-up count: `_count`, or with more underscores if a column has
    that name."""
    taken = set(names)
    key = "_count"
    while key in taken:
        key = "_" + key
    return key


def header_columns(ts_name: str, names: Sequence[str], counted: bool) -> list[str]:
    cols = [ts_name, *[n for n in names if n != ts_name]]
    return cols + ([count_key(cols)] if counted else [])


def columns_header(columns: Sequence[str]) -> str:
    return json.dumps(list(columns))  # ASCII: non-ASCII names are escaped


def parse_columns_header(value: str | None) -> list[str]:
    try:
        cols = json.loads(value or "")
    except ValueError:
        cols = None
    if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
        raise ValueError(f"bad {COLUMNS_HEADER} header: {value!r}")
    return cols


def response_headers(columns: Sequence[str], count: str | None) -> dict[str, str]:
    out = {COLUMNS_HEADER: columns_header(columns)}
    if count is not None:
        out[COUNT_HEADER] = count
    return out


def union_columns(headers: Sequence[tuple[str | None, str | None]], ts_name: str
                  ) -> tuple[list[str], str | None]:
    """The columns of a merged response and its count column, from every shard's
    (`X-Raw-Columns`, `X-Raw-Count`): first seen first, the count column last."""
    seen: dict[str, None] = {}
    count = None
    for cols_header, count_header in headers:
        cols = parse_columns_header(cols_header)
        if count_header:
            count = count_header
        seen.update(dict.fromkeys(c for c in cols if c != count_header))
    cols = list(seen) or [ts_name]
    return (cols + [count] if count else cols), count


# -- rendering ------------------------------------------------------------------------------------
def _values(col: RawColumn, a: int, b: int) -> list[Any]:
    v = col.values[a:b]
    if v.dtype != object and col.nil is not None:
        nil = col.nil[a:b]
        if nil.any():
            o = v.astype(object)
            o[nil] = None
            return o.tolist()
    return v.tolist()


def _lists(chunk: RawChunk, a: int, b: int) -> tuple[list[str], list[list[Any]]]:
    names = [chunk.ts_name, *chunk.columns]
    return names, [chunk.ts[a:b].tolist(), *[_values(c, a, b) for c in chunk.columns.values()]]


def _lines(names: list[str], lists: list[list[Any]]) -> list[bytes]:
    """One JSON object per row (C-level iteration: no Python statement per row)."""
    rows = map(dict, map(zip, itertools.repeat(names), zip(*lists, strict=True)))
    return list(map(_DUMP, rows))


def ndjson(chunks: Iterable[RawChunk], count: str = "_count") -> Iterator[bytes]:
    """Raw rows as NDJSON, PIECE_ROWS at a time."""
    for chunk in chunks:
        for a in range(0, chunk.n, PIECE_ROWS):
            b = min(a + PIECE_ROWS, chunk.n)
            names, lists = _lists(chunk, a, b)
            counts = None if chunk.count is None else chunk.count[a:b]
            if counts is None or not (counts != 1).any():
                yield b"".join(_lines(names, lists))
                continue
            many = counts != 1
            out = np.empty(b - a, object)
            one = ~many
            out[one] = _lines(names, [_objects(v, b - a)[one].tolist() for v in lists])
            out[many] = _lines([*names, count],
                               [_objects(v, b - a)[many].tolist() for v in lists]
                               + [counts[many].tolist()])
            yield b"".join(out.tolist())


def _quote(s: str) -> str:
    if s == "" or not _SPECIAL.isdisjoint(s):
        return '"' + s.replace('"', '""') + '"'
    return s


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return _quote(v)
    return orjson.dumps(v).decode()


def _csv_column(values: list[Any]) -> list[str]:
    if set(map(type, values)) <= {int, float, type(None)}:  # numbers as JSON writes them
        text = orjson.dumps(values).decode()[1:-1]
        return ["" if t == "null" else t for t in text.split(",")] if values else []
    return list(map(_cell, values))


def csv_text(lists: list[list[Any]]) -> bytes:
    """CSV records (CRLF) of per-column value lists."""
    cols = [_csv_column(v) for v in lists]
    if not cols or not cols[0]:
        return b""
    return ("\r\n".join(map(",".join, zip(*cols, strict=True))) + "\r\n").encode()


def csv_head(columns: Sequence[str]) -> bytes:
    return (",".join(map(_quote, columns)) + "\r\n").encode()


def csv(chunks: Iterable[RawChunk], columns: Sequence[str], count: str | None = None
        ) -> Iterator[bytes]:
    """Raw rows as CSV under `columns` (the header; a column a row lacks is empty; `count`: the
    name of the roll-up count column, 1 for rows without one)."""
    yield csv_head(columns)
    for chunk in chunks:
        for a in range(0, chunk.n, PIECE_ROWS):
            b = min(a + PIECE_ROWS, chunk.n)
            names, lists = _lists(chunk, a, b)
            by_name = dict(zip(names, lists, strict=True))
            if count is not None:
                by_name[count] = ([1] * (b - a) if chunk.count is None
                                  else chunk.count[a:b].tolist())
            yield csv_text([by_name.get(c) or [None] * (b - a) for c in columns])


# -- the router's merge ------------------------------------------------------------------------
class _Stream:
    """One shard's NDJSON stream: whole lines, parsed a batch at a time."""

    def __init__(self, chunks: AsyncIterator[bytes], ts_key: str, index: int) -> None:
        self.chunks = chunks
        self.ts_key = ts_key
        self.index = index
        self.rest = b""
        self.done = False
        self.lines: list[bytes] = []
        self.rows: list[dict[str, Any]] = []
        self.ts = np.zeros(0, np.int64)

    async def fill(self, want: int) -> None:
        """Read until at least `want` lines are buffered or the stream ends."""
        new: list[bytes] = []
        while len(self.lines) + len(new) < want and not self.done:
            try:
                data = await anext(self.chunks)
            except StopAsyncIteration:
                self.done = True
                data = b"\n" if self.rest else b""
            parts = (self.rest + data).split(b"\n")
            self.rest = parts.pop()
            new.extend(p + b"\n" for p in parts if p.strip())
        if new:
            rows = orjson.loads(b"[" + b",".join(new) + b"]")
            if not all(isinstance(r, dict) and isinstance(r.get(self.ts_key), int)
                       for r in rows[:1] + rows[-1:]):
                raise ValueError(f"shard stream {self.index}: rows without an integer "
                                 f"{self.ts_key!r}")
            ts = np.fromiter(map(operator.itemgetter(self.ts_key), rows), np.int64, len(rows))
            self.lines += new
            self.rows += rows
            self.ts = np.concatenate([self.ts, ts])

    def take(self, upto: int) -> tuple[list[bytes], list[dict[str, Any]], np.ndarray]:
        out = self.lines[:upto], self.rows[:upto], self.ts[:upto]
        self.lines, self.rows, self.ts = self.lines[upto:], self.rows[upto:], self.ts[upto:]
        return out


async def merged(streams: Sequence[AsyncIterator[bytes]], columns: Sequence[str],
                 count: str | None, fmt: str) -> AsyncIterator[bytes]:
    """The router's response body: shards' NDJSON streams merged in time order, as NDJSON
    (their lines as they are) or CSV under `columns` (`union_columns`; rows without the count
    column `count` count 1)."""
    if fmt == "csv":
        yield csv_head(columns)
    async for lines, rows in merge(streams, columns[0] if columns else ""):
        if fmt != "csv":
            yield b"".join(lines)
            continue
        yield csv_text([list(map(operator.methodcaller("get", c, 1 if c == count else None),
                                 rows)) for c in columns])


async def merge(streams: Sequence[AsyncIterator[bytes]], ts_key: str, batch: int = 2000
                ) -> AsyncIterator[tuple[list[bytes], list[dict[str, Any]]]]:
    """Merge NDJSON streams, each in timestamp order, into one in timestamp order (ties by
    stream order): yields (lines, parsed rows) a batch at a time. Each round reads up to
    `batch` lines from every stream and emits the rows no stream can still undercut."""
    ss = [_Stream(s, ts_key, i) for i, s in enumerate(streams)]
    while True:
        for s in ss:
            if not s.done and len(s.lines) < batch:
                await s.fill(batch)
        live = [s for s in ss if s.lines or not s.done]
        if not live:
            return
        frontier = min((int(s.ts[-1]) for s in ss if not s.done and len(s.ts)),
                       default=None)
        parts = [s.take(len(s.ts) if frontier is None else
                        int(np.searchsorted(s.ts, frontier, side="right"))) for s in ss]
        ts = np.concatenate([p[2] for p in parts])
        if not len(ts):
            continue
        src = np.concatenate([np.full(len(p[2]), i) for i, p in enumerate(parts)])
        order = np.lexsort((src, ts))
        yield (_objects(itertools.chain.from_iterable(p[0] for p in parts), len(ts))[order]
               .tolist(),
               _objects(itertools.chain.from_iterable(p[1] for p in parts), len(ts))[order]
               .tolist())


def _objects(values: Iterable[Any], n: int) -> np.ndarray:
    out = np.empty(n, object)
    out[:] = list(values)
    return out
