"""JSON in and out of the HTTP layer: orjson, guarded against hostile input.

Imports errors, config, schema and batch (insert bodies become validated Batches, also in
worker processes). `loads` turns any malformed body into a ClientError (a 400), including
nesting deep enough to overflow orjson's native stack (orjson 3.8 segfaults past ~100k levels);
`dumps` never lets a numpy scalar, NaN or infinity reach the wire raw (numpy scalars become
numbers, NaN/inf become null). A key given twice in one object (which orjson, like msgspec,
would silently resolve to its last value) is a 400 naming the object: queries are always
checked; insert bodies through rowdecoder's key count (its docstring has the cost).
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from .batch import Batch, parse_rows
from .config import SchemaConfig
from .errors import ClientError
from .rowdecoder import decoder_for, key_count
from .schema import Schema

MAX_DEPTH = 256
# Bodies with at most this many '[' and '{' bytes cannot nest deeper than orjson handles, so
# the exact (vectorised) depth scan is skipped: a 10k-row insert has 10,001.
_FAST_PATH_OPENERS = 20_000
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_SORT_KEYS
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPEN_ARRAY, _OPEN_OBJECT, _CLOSE_ARRAY, _CLOSE_OBJECT = b"[{]}"


class JSONBodyError(ClientError):
    """The request body is not acceptable JSON."""


def nesting_depth(body: bytes) -> int:
    """The deepest array/object nesting in `body`, ignoring brackets inside strings.

    Vectorised: a quote preceded by an odd run of backslashes is escaped; a bracket is inside a
    string when an odd number of real quotes precede it. ~6 ms per MB."""
    b = np.frombuffer(body, np.uint8)
    quote = b == _QUOTE
    if body.count(b"\\"):
        idx = np.arange(len(b), dtype=np.int64)
        last_other = np.maximum.accumulate(np.where(b != _BACKSLASH, idx, -1))
        run = np.zeros(len(b), np.int64)  # backslashes immediately before each position
        run[1:] = idx[:-1] - last_other[:-1]
        quote &= (run & 1) == 0
    brackets = np.flatnonzero((b == _OPEN_ARRAY) | (b == _OPEN_OBJECT) | (b == _CLOSE_ARRAY)
                              | (b == _CLOSE_OBJECT))
    quotes_before = np.searchsorted(np.flatnonzero(quote), brackets)
    kinds = b[brackets[(quotes_before & 1) == 0]]
    step = np.where((kinds == _OPEN_ARRAY) | (kinds == _OPEN_OBJECT), 1, -1)
    return int(np.cumsum(step).max(initial=0))


def loads(body: bytes, what: str = "request body", strict: bool = True) -> Any:
    """Decode a JSON body or raise JSONBodyError (a 400) saying what is wrong with it.

    strict: refuse nesting deeper than MAX_DEPTH. Otherwise only nesting that could hurt the
    decoder is refused (for inserts, whose rows are validated as flat objects anyway)."""
    if not body.strip():
        raise JSONBodyError(f"{what}: empty body, expected JSON")
    openers = body.count(b"[") + body.count(b"{")
    if openers > (MAX_DEPTH if strict else _FAST_PATH_OPENERS):
        depth = nesting_depth(body)
        if depth > MAX_DEPTH:
            raise JSONBodyError(f"{what}: JSON nested too deeply ({depth} levels, at most "
                                f"{MAX_DEPTH})")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise JSONBodyError(f"{what}: invalid JSON: {e}") from None
    except RecursionError:
        raise JSONBodyError(f"{what}: JSON nested too deeply") from None
    if strict:  # small bodies (queries): count every key
        refuse_duplicate_keys(body, _distinct_keys(obj), what)
    return obj


def _distinct_keys(obj: Any) -> int:
    if isinstance(obj, dict):
        return len(obj) + sum(map(_distinct_keys, obj.values()))
    if isinstance(obj, list):
        return sum(map(_distinct_keys, obj))
    return 0


class _Pairs(list[tuple[str, Any]]):
    """An object as its key-value pairs, duplicates kept (json's object_pairs_hook)."""


def refuse_duplicate_keys(body: bytes, distinct: int, what: str, top: str = "") -> None:
    """Raise JSONBodyError naming the object and key when the JSON text `body`, decoded with
    `distinct` keys, holds more keys than that (a key given twice in one object). `top` names
    the top level in the message (e.g. "rows": `rows[3]: duplicate key 'visits'`)."""
    if key_count(body, distinct) == distinct:
        return
    try:  # rare: find which, with a parse that keeps every pair
        found = _duplicate(json.loads(body, object_pairs_hook=_Pairs), top)
    except (ValueError, RecursionError):
        return
    if found is not None:
        path, key = found
        raise JSONBodyError(f"{path or what}: duplicate key {key!r} (each key at most once "
                            "per object)")


def _duplicate(node: Any, path: str) -> tuple[str, str] | None:
    """(path of the object, key) of the first key given twice, depth first."""
    if isinstance(node, _Pairs):
        seen: set[str] = set()
        for key, _ in node:
            if key in seen:
                return path, key
            seen.add(key)
        items: Iterator[tuple[str, Any]] = ((f"{path}.{k}" if path else k, v) for k, v in node)
    elif isinstance(node, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(node))
    else:
        return None
    for sub_path, value in items:
        found = _duplicate(value, sub_path)
        if found is not None:
            return found
    return None


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def _clean(obj: Any) -> Any:
    """Make `obj` encodable by the stdlib: numpy values to Python, NaN/inf to None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj


def dumps(obj: Any, newline: bool = True) -> bytes:
    """Encode `obj` with sorted keys (as the original) and a trailing newline.

    orjson writes NaN/inf as null and numpy scalars as numbers; integers beyond 64 bits (which
    orjson refuses) fall back to the stdlib encoder."""
    opts = _DUMPS_OPTIONS | (orjson.OPT_APPEND_NEWLINE if newline else 0)
    try:
        return orjson.dumps(obj, default=_default, option=opts)
    except (TypeError, orjson.JSONEncodeError):
        text = json.dumps(_clean(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return text.encode() + (b"\n" if newline else b"")


def dumps_result(payload: dict[str, Any], rows: list[Any], chunk_rows: int = 2000) -> bytes:
    """dumps({**payload, "results": rows}), encoded `chunk_rows` rows at a time. The same
    bytes; but orjson holds the GIL for the whole of one call, and a result of a million
    rows took ~0.5 s in one call, stalling every insert meanwhile: between chunks other
    threads run."""
    if len(rows) <= chunk_rows:
        return dumps({**payload, "results": rows})
    head = dumps({**payload, "results": []})
    marker = b'"results":[]'
    cut = head.index(marker) + len(marker) - 1
    parts = [head[:cut]]
    for lo in range(0, len(rows), chunk_rows):
        piece = dumps(rows[lo:lo + chunk_rows], newline=False)
        parts.append((b"," if lo else b"") + piece[1:-1])
    parts.append(head[cut:])
    return b"".join(parts)


def ndjson_chunks(rows: list[Any], duration_ms: int, chunk_rows: int = 1000) -> Iterator[bytes]:
    """The original's stream format: a header line `{"duration_ms":N,"num_rows":M}`, then one
    JSON row per line, yielded `chunk_rows` rows at a time."""
    yield dumps({"duration_ms": duration_ms, "num_rows": len(rows)})
    for lo in range(0, len(rows), chunk_rows):
        yield b"".join(map(dumps, rows[lo:lo + chunk_rows]))


# -- insert bodies --------------------------------------------------------------------------------
def parse_insert_body(body: bytes, schema: Schema) -> Batch:
    """A JSON insert body -> a validated Batch (raises JSONBodyError or InsertError).

    Valid bodies take the msgspec fast path (rowdecoder); anything it does not accept goes
    through orjson and parse_rows, which decide and name every error."""
    batch = decoder_for(schema).decode(body)
    if batch is not None:
        return batch
    rows = loads(body, "insert body", strict=False)
    if type(rows) is list and all(type(r) is dict for r in rows):
        refuse_duplicate_keys(body, sum(map(len, rows)), "insert body", "rows")
    return parse_rows(schema, rows)


def scan_insert_body(body: bytes, schema: Schema) -> Batch | None:
    """A plain JSON insert body -> a validated Batch by the C scanner, without the GIL; None
    when it declines (then `parse_insert_body` decides). The server calls this in its insert
    threads before it would hand a large body to a decoding process: it is cheaper than the
    hand-off."""
    return decoder_for(schema).scan(body)


def scan_ndjson_body(body: bytes, schema: Schema, now: int) -> Batch | None:
    """`scan_insert_body` for NDJSON (a row without its time gets `now`): None when the
    scanner declines (then collect/formats.py's parse_ndjson decides)."""
    return decoder_for(schema).scan_lines(body, now)


_worker_schema: Schema | None = None


def init_insert_worker(schema_config: SchemaConfig, server_pid: int) -> None:
    """Initialiser of an insert-decoding worker process (see server.InsertDecoder)."""
    global _worker_schema
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    _worker_schema = Schema.from_config(schema_config)
    threading.Thread(target=_exit_with, args=(server_pid,), name="gumshoe-watchdog",
                     daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel (a zombie still counts as alive here)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _exit_with(pid: int) -> None:
    """Exit when the server process is gone (even by SIGKILL): a worker otherwise waits on its
    task queue forever, since it holds that pipe's write end itself."""
    while _alive(pid):
        time.sleep(0.5)
    os._exit(0)


def parse_in_worker(body: bytes) -> Batch:
    assert _worker_schema is not None, "init_insert_worker was not run"
    return parse_insert_body(body, _worker_schema)
