"""Request bodies of many rows -> one validated Batch: CSV with a header row, NDJSON, and the
JSON array of PUT /insert.

Imports values, jsonio, batch, schema and errors. A body is atomic: any bad row refuses it
whole, and the error names the line (1 is the CSV header) and the column:
`line 3, column visits: value '300' is out of range for uint8 [0, 255]`. Rows without a
timestamp get the arrival time. The CSV and JSON C parsers split the body; columns are typed
with C-level iterators and numpy (values.py, batch.parse_rows), never a Python statement per
row; line numbers are worked out only when there is an error to report.
"""

from __future__ import annotations

import csv
import io
import itertools
import operator
import re
from collections.abc import Callable, Sequence

import orjson

from .. import jsonio
from ..batch import Batch, parse_rows
from ..errors import ClientError, InsertError
from ..schema import Schema
from .values import check_columns, text_batch

CSV_TYPES = ("text/csv", "application/csv", "text/plain")
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl",
                "application/json-seq")
JSON_TYPES = ("application/json",)
_ROW_MESSAGE = re.compile(r"rows\[(\d+)\](?:\.([^:]+))?: ")


class UnsupportedFormat(ClientError):
    status = 415


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_row_format(content_type: str | None) -> bool:
    """Whether PUT /insert hands this body to parse_body (CSV or NDJSON) rather than its own
    JSON path."""
    mt = media_type(content_type)
    return mt in NDJSON_TYPES or mt in ("text/csv", "application/csv")


def parse_body(body: bytes, content_type: str | None, schema: Schema, now: int,
               default: str = "text/csv") -> Batch:
    """A CSV, NDJSON or JSON-array body -> Batch. `default` is the format of a body without a
    Content-Type. Raises UnsupportedFormat (415) or an InsertError naming line and column."""
    mt = media_type(content_type) or default
    if mt in CSV_TYPES:
        return parse_csv(body, schema, now)
    if mt in NDJSON_TYPES:
        return parse_ndjson(body, schema, now)
    if mt in JSON_TYPES:
        return jsonio.parse_insert_body(body, schema)
    raise UnsupportedFormat(f"Content-Type {mt!r} is not supported here: send text/csv (a "
                            "header row naming columns) or application/x-ndjson (one JSON "
                            "object per line)")


def _text(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        line = body.count(b"\n", 0, e.start) + 1
        raise InsertError(f"line {line}: not valid UTF-8 (byte {e.start})") from None
    return text.removeprefix("\ufeff")


# -- CSV --------------------------------------------------------------------------------------
def _csv_lines(text: str) -> list[int]:
    """The (last) physical line of every non-empty CSV record: the error path only."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out: list[int] = []
    try:
        out.extend(reader.line_num for record in reader if record)
    except csv.Error:
        pass
    return out


def _split_plain(text: str) -> tuple[list[str], list[list[str]] | None, int] | None:
    """A CSV without quotes, split with str methods (~5x faster than the csv module): the
    header, the columns (None when a line has another number of fields) and the row count.
    None when the text has quotes."""
    if '"' in text:
        return None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = list(filter(None, text.split("\n")))
    if not lines:
        return [], [], 0
    header = lines[0].split(",")
    rows = lines[1:]
    width = len(header)
    if rows and set(map(str.count, rows, itertools.repeat(","))) != {width - 1}:
        return header, None, len(rows)
    fields = ",".join(rows).split(",") if rows else []
    return header, [fields[j::width] for j in range(width)], len(rows)


def _records(text: str) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        return list(filter(None, reader))
    except csv.Error as e:
        raise InsertError(f"line {reader.line_num}: bad CSV: {e}") from None


def parse_csv(body: bytes, schema: Schema, now: int) -> Batch:
    """CSV (RFC 4180, a header row of column names; blank lines skipped) -> Batch."""
    text = _text(body)
    plain = _split_plain(text)
    records = _records(text) if plain is None or plain[1] is None else []
    if plain is None or plain[1] is None:
        if not records:
            return text_batch(schema, {}, 0, now, lambda i, c: c)
        header, rows = records[0], records[1:]
    else:
        header, rows = plain[0], []
        if not header:
            return text_batch(schema, {}, 0, now, lambda i, c: c)
    header = [h.strip() for h in header]
    lines: list[int] = []

    def line(i: int) -> int:  # data row i -> its line number, counted once, when needed
        if not lines:
            lines.extend(_csv_lines(text))
        return lines[i + 1] if i + 1 < len(lines) else i + 2

    check_columns(schema, header, lambda name: f"line {line(-1)}, column {name}")
    width = len(header)
    if plain is not None and plain[1] is not None:
        columns: dict[str, Sequence[str]] = dict(zip(header, plain[1], strict=True))
        n = plain[2]
    else:
        if rows and set(map(len, rows)) != {width}:
            i = next(i for i, r in enumerate(rows) if len(r) != width)
            raise InsertError(f"line {line(i)}: expected {width} fields (as the header), got "
                              f"{len(rows[i])}")
        columns = (dict(zip(header, zip(*rows), strict=True)) if rows
                   else {h: () for h in header})
        n = len(rows)
    return text_batch(schema, columns, n, now, lambda i, c: f"line {line(i)}, column {c}")


# -- NDJSON ------------------------------------------------------------------------------------
def parse_ndjson(body: bytes, schema: Schema, now: int) -> Batch:
    """One JSON object per line (blank lines skipped) -> Batch, validated as PUT /insert's
    rows are; a row without the timestamp gets `now`. The plain, common body takes the C
    scanner (jsonio.scan_ndjson_body); it declines everything else to the code below."""
    batch = jsonio.scan_ndjson_body(body, schema, now)
    if batch is not None:
        return batch
    raw = body.split(b"\n")
    lines = list(filter(None, map(bytes.strip, raw)))

    def line(i: int) -> str:  # non-blank line i -> its line number (error path)
        return f"line {list(itertools.compress(itertools.count(1), map(bytes.strip, raw)))[i]}"

    return json_objects(lines, schema, now, line)


def json_objects(items: list[bytes], schema: Schema, now: int, name: Callable[[int], str]
                 ) -> Batch:
    """JSON objects, one per item (NDJSON lines, queue items) -> Batch; `name(i)` says
    where item i is in errors ("line 3", "item 3")."""
    openers = sum(map(bytes.count, items, itertools.repeat(b"["))) + sum(
        map(bytes.count, items, itertools.repeat(b"{")))
    if openers > 2 * len(items) + 64:
        depth = max(map(jsonio.nesting_depth, items), default=0)
        if depth > jsonio.MAX_DEPTH:
            raise InsertError(f"JSON nested too deeply ({depth} levels, at most "
                              f"{jsonio.MAX_DEPTH})")
    try:
        rows = list(map(orjson.loads, items))
    except orjson.JSONDecodeError:
        i = _first_bad_json(items)
        raise InsertError(f"{name(i)}: invalid JSON") from None
    if rows and set(map(type, rows)) != {dict}:
        i = next(i for i, r in enumerate(rows) if type(r) is not dict)
        raise InsertError(f"{name(i)}: expected a JSON object")
    ts = {schema.timestamp.name: now}
    rows = list(map(operator.or_, itertools.repeat(ts), rows))  # the row's own wins
    try:
        return parse_rows(schema, rows)
    except InsertError as e:
        raise renamed(e, name) from None


def _first_bad_json(lines: list[bytes]) -> int:
    for i, text in enumerate(lines):
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError:
            return i
    raise AssertionError("no bad line")


def renamed(e: InsertError, row: Callable[[int], str]) -> InsertError:
    """batch.parse_rows' `rows[i].column: ...` as `<row(i)>, column column: ...`."""
    message = str(e)
    m = _ROW_MESSAGE.match(message)
    if m is None:
        return e
    where = row(int(m.group(1)))
    if m.group(2):
        where += f", column {m.group(2)}"
    return InsertError(f"{where}: {message[m.end():]}")
