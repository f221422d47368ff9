"""Result rows as CSV (RFC 4180), for `POST /query?format=csv`.

Imports query and jsonio. The header is the query's output names in a stable order
(groupings, aggregates, post-aggregations, rowCount: `Query.output_names`); each row follows
it. Records end with CRLF. A field is quoted (`"`, inner quotes doubled) when it holds a comma,
a quote, CR or LF, or is the empty string, so that an empty string (`""`) and null (an empty
field) stay apart. Numbers are written exactly as the JSON response writes them (`3`, `0.5`,
`1e30`), strings as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import jsonio
from .query import Query

MEDIA_TYPE = "text/csv; charset=utf-8"
_SPECIAL = frozenset(',"\r\n')


def _quote(s: str) -> str:
    if s == "" or not _SPECIAL.isdisjoint(s):
        return '"' + s.replace('"', '""') + '"'
    return s


def _numbers(values: list[Any]) -> list[str]:
    """Numbers (and None) rendered by the JSON encoder, one array per column."""
    if not values:
        return []
    text = jsonio.dumps(values, newline=False).decode()[1:-1]
    return ["" if v == "null" else v for v in text.split(",")]


def _column(values: list[Any]) -> list[str]:
    out = [""] * len(values)
    numeric = [i for i, v in enumerate(values) if v is not None and not isinstance(v, str)]
    for i, v in enumerate(values):
        if isinstance(v, str):
            out[i] = _quote(v)
    for i, text in zip(numeric, _numbers([values[i] for i in numeric])):
        out[i] = text
    return out


def csv_chunks(query: Query, rows: list[dict[str, Any]], chunk_rows: int = 10_000
               ) -> Iterator[bytes]:
    """The CSV text of `rows` (result rows of `query`) as UTF-8 chunks: the header, then
    `chunk_rows` records at a time (for a streaming response)."""
    names = query.output_names()
    yield (",".join(_quote(n) for n in names) + "\r\n").encode()
    for lo in range(0, len(rows), chunk_rows):
        part = rows[lo:lo + chunk_rows]
        columns = [_column([r.get(n) for r in part]) for n in names]
        yield "".join(",".join(fields) + "\r\n" for fields in zip(*columns)).encode()


def to_csv(query: Query, rows: list[dict[str, Any]]) -> bytes:
    """The whole CSV document of `rows`: header and records, CRLF line ends."""
    return b"".join(csv_chunks(query, rows))
