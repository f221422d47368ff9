"""`gumtool import` decoding: one chunk of JSON lines or CSV -> the plan's source fields as
columns, with every bad line found and named by its line number in the chunk.

Imports gumshoe.native, gumtool.import_mapping (the Plan), msgspec (JSON) and pyarrow. No Python
statement runs per line on the success path:

* JSON lines and CSV, fastest path: the C scanner `gumshoe._jsonl` (when built) takes a chunk
  of plain lines (flat objects; CSV fields without inner quotes) whole, or declines it to the
  paths below, which decide every unusual or bad chunk (tests/gumtool/test_import_scan.py
  checks that it declines or agrees with pyarrow). Benchmark lines, CPU per row: JSON ~190 ns
  against pyarrow's ~970; CSV ~150 against ~240.
* JSON lines, fast path: pyarrow's JSON reader with an explicit schema of the plan's fields
  (typed columns, strings straight into Arrow buffers). Measured here (CPU time, one 16 MB
  chunk of 160k synthetic rows, machine shared): 0.12 s to columns, against 0.18-0.25 s for
  msgspec structs plus the per-column conversion of their Python values (msgspec into dicts:
  3.8x slower than structs; orjson per line: 2.5x). Any chunk it does not take whole (a bad
  line, a number in a string field, a blank line, two records on a line) goes to
* the msgspec path, which is also the reference of what is accepted: a decoder for a struct
  of exactly the plan's fields (types, integer ranges and, with `unknown = "error"`, unknown
  fields checked in the same C pass) decodes the chunk with `decode_lines`; the columns are
  gathered with `attrgetter`. A bad line is found by the error's byte offset or record index
  (or a binary search over line ranges), confirmed by decoding it alone, and decoding resumes
  after it. Numbers in string fields are taken as their JSON text.
* CSV: pyarrow's reader (single-threaded: the parallelism is across processes), strings as
  dictionary arrays (codes, never a Python string per row), numbers typed: 0.06 s CPU for a
  16 MB chunk of 436k rows here, 0.15 s with everything a worker does to it (a numpy reader
  would need a Python-level split of quoted fields); rows with a wrong
  number of fields come back through `invalid_row_handler` with their line number, a value
  that does not convert makes the chunk re-read as text and checked by regular expressions.
"""

from __future__ import annotations

import dataclasses
import io
import operator
import re
from typing import Annotated, Any, Optional, Union

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from gumshoe import native

from .import_mapping import Plan

MAX_BAD_PER_CHUNK = 64  # past this, the rest of a chunk is decoded line by line
_STRINGLIKE = Union[str, int, float, None]  # noqa: UP007 (msgspec needs runtime types)
_NUMBER = Union[int, float]  # noqa: UP007
_AT = re.compile(r" - at `\$(?:\[\d+\])?\.?([^`]*)`$")
_INDEX = re.compile(r"at `\$\[(\d+)\]")
_OFFSET = re.compile(r"\(byte (\d+)\)")


@dataclasses.dataclass
class Decoded:
    """The decoded records of a chunk, as columns."""

    n: int  # records
    n_lines: int  # lines in the chunk (the last may lack its newline)
    lines: np.ndarray | None  # each record's line index in the chunk; None: 0..n-1
    values: dict[str, Any]  # source field -> list of values (JSON) or a pyarrow Array (CSV)
    bad: list[tuple[int, str]]  # (line index, message), at most MAX_BAD_PER_CHUNK kept
    bad_count: int = 0

    def line_of(self, rows: np.ndarray) -> np.ndarray:
        return rows if self.lines is None else self.lines[rows]


def _msg(e: Exception) -> str:
    """msgspec's message with the field named up front: `field 'visits': Expected ...`."""
    text = str(e)
    m = _AT.search(text)
    if m and m.group(1):
        return f"field {m.group(1)!r}: {text[: m.start()]}"
    return _AT.sub("", text)


def count_lines(chunk: bytes) -> int:
    """Lines in a chunk (the last may lack its newline)."""
    if native.jsonl is not None:
        return int(native.jsonl.lines(chunk))  # memchr: bytes.count is a byte loop
    return chunk.count(b"\n") + (1 if chunk and not chunk.endswith(b"\n") else 0)


# -- JSON lines ------------------------------------------------------------------------------
def _json_type(plan: Plan, field: str) -> Any:
    if field == plan.timestamp_field:
        return str if plan.timestamp_format == "iso8601" else _NUMBER
    for t in plan.targets:
        if t.field == field and t.numeric:
            col = t.column
            if col.is_float:
                return Optional[float]  # noqa: UP045
            lo, hi = col.value_range
            meta = (msgspec.Meta(ge=0) if col.dtype == np.uint64 else
                    msgspec.Meta(ge=int(lo), le=int(hi)))
            return Optional[Annotated[int, meta]]  # noqa: UP045
    return _STRINGLIKE


def _arrow_json_type(plan: Plan, field: str) -> pa.DataType:
    if field == plan.timestamp_field:
        return pa.string() if plan.timestamp_format == "iso8601" else pa.float64()
    for t in plan.targets:
        if t.field == field and t.numeric:
            if t.column.is_float:
                return pa.float64()
            return pa.uint64() if t.column.dtype == np.uint64 else pa.int64()
    return pa.string()


def _scan_kind(plan: Plan, field: str) -> str:
    """How gumshoe._jsonl reads a field: its kind letter (as _arrow_json_type types it)."""
    t = _arrow_json_type(plan, field)
    return ("s" if t == pa.string() else "f" if t == pa.float64() else
            "u" if t == pa.uint64() else "i")


_SCAN_DTYPE = {"s": np.int32, "i": np.int64, "u": np.uint64, "f": np.float64}
_SCAN_ARROW = {"i": pa.int64(), "u": pa.uint64(), "f": pa.float64()}


class JsonDecoder:
    """Decodes chunks of JSON lines into the plan's fields (see the module docstring)."""

    use_arrow = True  # tests turn the pyarrow fast path off to check the msgspec path alone
    use_scan = True  # and the C scanner, to check pyarrow's path

    def __init__(self, plan: Plan) -> None:
        self.fields = plan.fields
        self.ts_field = plan.timestamp_field
        self.iso_field = plan.timestamp_field if plan.timestamp_format == "iso8601" else None
        # pyarrow.json cannot tell a dropped field from an unknown one: with unknown = "error"
        # and dropped fields, every chunk takes the msgspec path.
        self.arrow = None
        if plan.unknown == "ignore" or not plan.drop:
            self.arrow = pajson.ParseOptions(
                explicit_schema=pa.schema([(f, _arrow_json_type(plan, f)) for f in self.fields]),
                unexpected_field_behavior="ignore" if plan.unknown == "ignore" else "error",
                newlines_in_values=False)
        spec: list[Any] = []
        rename = {}
        for i, f in enumerate(self.fields):
            typ = _json_type(plan, f)
            spec.append((f"f{i}", typ) if i == 0 else (f"f{i}", typ, None))
            rename[f"f{i}"] = f
        if plan.unknown == "error":  # dropped fields are allowed (and not converted)
            for j, f in enumerate(sorted(plan.drop - set(self.fields))):
                spec.append((f"d{j}", msgspec.Raw, msgspec.Raw(b"null")))
                rename[f"d{j}"] = f
        # The C scanner (gumshoe._jsonl) stands in for pyarrow's reader where that runs: flat
        # objects only, anything else (and any bad line) declined to pyarrow and msgspec,
        # which say what is wrong. Unknown keys are skipped (unknown = "ignore") or decline.
        self.scan_fields: tuple[bytes, ...] = ()
        self.scan_kinds = b""
        if native.jsonl is not None and self.arrow is not None and len(self.fields) <= 64:
            self.scan_fields = tuple(f.encode() for f in self.fields)
            self.scan_kinds = "".join(_scan_kind(plan, f) for f in self.fields).encode()
        self.scan_unknown = plan.unknown == "ignore"
        struct = msgspec.defstruct("Record", spec, rename=rename, gc=False,
                                   forbid_unknown_fields=plan.unknown == "error")
        self.dec = msgspec.json.Decoder(struct)
        self.getters = [operator.attrgetter(f"f{i}") for i in range(len(self.fields))]

    def _scan(self, chunk: bytes) -> Decoded | None:
        """The chunk through the C scanner, or None when it declines."""
        assert native.jsonl is not None
        n_lines = count_lines(chunk)
        kinds = self.scan_kinds.decode()
        outs = tuple(np.empty(n_lines, _SCAN_DTYPE[k]) for k in kinds)
        nils = tuple(np.empty(n_lines, np.bool_) for k in kinds)
        got = native.jsonl.scan(chunk, self.scan_fields, self.scan_kinds, outs, nils,
                                self.scan_unknown)
        if got is None:
            return None
        rows, uniques = got
        if rows != n_lines:  # never expected
            raise AssertionError(f"gumshoe._jsonl: {rows} lines, expected {n_lines}")
        if nils[self.fields.index(self.ts_field)].any():
            return None  # a line without a time: bad, and the reference paths say why
        values: dict[str, Any] = {}
        for f, k, out, nil, u in zip(self.fields, kinds, outs, nils, uniques):
            mask = nil if nil.any() else None
            if k == "s":
                arr = pa.DictionaryArray.from_arrays(pa.array(out, mask=mask),
                                                     pa.array(u, pa.string()))
                values[f] = arr.dictionary_decode() if f == self.iso_field else arr
            else:
                values[f] = pa.array(out, _SCAN_ARROW[k], mask=mask)
        return Decoded(n_lines, n_lines, None, values, [])

    def decode(self, chunk: bytes) -> Decoded:
        if self.scan_fields and self.use_scan and chunk:
            scanned = self._scan(chunk)
            if scanned is not None:
                return scanned
        n_lines = count_lines(chunk)
        if self.arrow is not None and self.use_arrow and chunk:
            try:  # the fast path: typed columns straight from pyarrow's JSON reader
                table = pajson.read_json(io.BytesIO(chunk), read_options=pajson.ReadOptions(
                    use_threads=False, block_size=len(chunk) + 1), parse_options=self.arrow)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                table = None  # a bad line somewhere (or an unusual one): the msgspec path
            if table is not None and table.num_rows == n_lines:
                return Decoded(n_lines, n_lines, None,
                               {f: table.column(f).combine_chunks() for f in self.fields}, [])
        try:
            recs = self.dec.decode_lines(chunk)
        except (msgspec.DecodeError, ValueError):
            recs = None
        if recs is not None and len(recs) == n_lines:  # one record per line: the usual case
            return self._columns(recs, None, n_lines, [], 0)
        return self._careful(chunk, n_lines)

    def _columns(self, recs: list[Any], lines: np.ndarray | None, n_lines: int,
                 bad: list[tuple[int, str]], bad_count: int) -> Decoded:
        values = {f: list(map(g, recs)) for f, g in zip(self.fields, self.getters)}
        return Decoded(len(recs), n_lines, lines, values, bad, bad_count)

    def _careful(self, chunk: bytes, n_lines: int) -> Decoded:
        """Decode line ranges around the bad lines (a loop per bad line, not per line)."""
        nl = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10)
        starts = np.concatenate(([0], nl + 1))[:n_lines]
        ends = np.concatenate((nl, [len(chunk)]))[:n_lines]
        length = ends - starts
        blank = length == 0
        cr = np.flatnonzero(length == 1)
        if len(cr):
            blank[cr] = np.frombuffer(chunk, np.uint8)[starts[cr]] == 13
        nonblank = np.flatnonzero(~blank)
        parts: list[list[Any]] = []
        line_parts: list[np.ndarray] = []
        bad: list[tuple[int, str]] = []

        def segment(lo: int, hi: int) -> list[Any] | None:
            """Records of lines [lo, hi) when each non-blank line is exactly one record."""
            if lo >= hi:
                return []
            try:
                recs = self.dec.decode_lines(chunk[starts[lo]:ends[hi - 1]])
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
                return None
            want = np.searchsorted(nonblank, hi) - np.searchsorted(nonblank, lo)
            return recs if len(recs) == want else None

        def alone(i: int) -> str | None:
            """The error of line i decoded by itself, or None when it is a good record."""
            try:
                self.dec.decode(chunk[starts[i]:ends[i]])
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                return _msg(e)
            except ValueError as e:
                return str(e)
            return None

        def locate(lo: int) -> int | None:
            """The first line >= lo whose decode fails, by binary search over prefixes."""
            a, b = lo, n_lines  # segment(lo, a) decodes; segment(lo, b) does not
            while b - a > 1:
                m = (a + b) // 2
                if segment(lo, m) is None:
                    b = m
                else:
                    a = m
            return a if a < n_lines else None

        lo = 0
        slow_from = None
        while lo < n_lines:
            recs = segment(lo, n_lines)
            if recs is not None:
                parts.append(recs)
                line_parts.append(nonblank[np.searchsorted(nonblank, lo):])
                break
            if len(bad) >= MAX_BAD_PER_CHUNK:
                slow_from = lo
                break
            bad_line = locate(lo)
            message = alone(bad_line) if bad_line is not None else None
            if bad_line is None or message is None:
                slow_from = lo  # not one record per line somewhere: go line by line
                break
            head = segment(lo, bad_line)
            if head is None:
                slow_from = lo
                break
            parts.append(head)
            line_parts.append(nonblank[np.searchsorted(nonblank, lo):
                                       np.searchsorted(nonblank, bad_line)])
            bad.append((bad_line, message))
            lo = bad_line + 1
        bad_count = len(bad)
        if slow_from is not None:  # the rest line by line (many bad lines, or odd ones)
            recs_slow, lines_slow = [], []
            for i in nonblank[np.searchsorted(nonblank, slow_from):].tolist():
                try:
                    recs_slow.append(self.dec.decode(chunk[starts[i]:ends[i]]))
                    lines_slow.append(i)
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
                    bad_count += 1
                    if len(bad) < MAX_BAD_PER_CHUNK:
                        bad.append((i, _msg(e)))
            parts.append(recs_slow)
            line_parts.append(np.array(lines_slow, np.int64))
        recs_all = [r for p in parts for r in p] if len(parts) != 1 else parts[0]
        lines = np.concatenate(line_parts) if line_parts else np.zeros(0, np.int64)
        return self._columns(recs_all, lines.astype(np.int64), n_lines, bad, bad_count)


# -- CSV -------------------------------------------------------------------------------------
_INT_RE = r"^\s*[-+]?\d{1,19}\s*$"
_UINT_RE = r"^\s*\+?\d{1,20}\s*$"
_FLOAT_RE = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


def csv_kind(plan: Plan, field: str) -> str:
    """How a CSV field is read: "ts", "string", "int", "uint", "float"."""
    if field == plan.timestamp_field:
        return "string" if plan.timestamp_format == "iso8601" else "float"
    for t in plan.targets:
        if t.field == field and t.numeric:
            if t.column.is_float:
                return "float"
            return "uint" if t.column.dtype == np.uint64 else "int"
    return "string"


_ARROW = {"string": pa.dictionary(pa.int32(), pa.string()), "int": pa.int64(),
          "uint": pa.uint64(), "float": pa.float64()}


_CSV_SCAN = {"string": "s", "int": "i", "uint": "u", "float": "f"}


class CsvDecoder:
    """Decodes chunks of CSV lines (no header: the source's header gives the field names).

    Plain chunks go through the C scanner (gumshoe._jsonl.scan_csv: ~3x less CPU than
    pyarrow's reader); it declines anything unusual (quotes inside a field, a blank or bad
    line, a number that is not plain...), and pyarrow's reader, below, decides those."""

    use_scan = True  # tests turn the C scanner off to compare it with pyarrow's reader

    def __init__(self, plan: Plan, header: list[str], kinds: dict[str, str] | None = None
                 ) -> None:
        """`kinds` (field -> "string"/"int"/"uint"/"float") reads only those fields."""
        self.plan = plan
        self.header = header
        self.all_fields = list(kinds) if kinds is not None else plan.fields
        self.fields = [f for f in self.all_fields if f in header]
        self.kinds = {f: (kinds[f] if kinds is not None else csv_kind(plan, f))
                      for f in self.fields}
        self.float_time = False  # a chunk had a non-integer Unix time
        self.columns = tuple(header.index(f) for f in self.fields)

    def _read(self, chunk: bytes, types: dict[str, Any], bad: dict[int, str]) -> pa.Table:
        def invalid(row: Any) -> str:
            if row.text.strip():
                bad.setdefault(row.number - 1, f"expected {row.expected_columns} fields "
                               f"(the header's), got {row.actual_columns}")
            return "skip"

        return pacsv.read_csv(
            io.BytesIO(chunk),
            read_options=pacsv.ReadOptions(column_names=self.header, use_threads=False,
                                           block_size=max(1 << 20, len(chunk) + 1)),
            parse_options=pacsv.ParseOptions(invalid_row_handler=invalid,
                                             ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types=types, include_columns=self.fields, null_values=[""],
                strings_can_be_null=True, quoted_strings_can_be_null=True))

    def _scan(self, chunk: bytes) -> Decoded | None:
        """The chunk through the C scanner (plain CSV only), or None when it declines."""
        assert native.jsonl is not None
        n_lines = count_lines(chunk)
        kinds = "".join(_CSV_SCAN[self.kinds[f]] for f in self.fields)
        outs = tuple(np.empty(n_lines, _SCAN_DTYPE[k]) for k in kinds)
        nils = tuple(np.empty(n_lines, np.bool_) for k in kinds)
        got = native.jsonl.scan_csv(chunk, len(self.header), self.columns, kinds.encode(),
                                    outs, nils)
        if got is None:
            return None
        rows, uniques = got
        if rows != n_lines:  # never expected
            raise AssertionError(f"gumshoe._jsonl: {rows} lines, expected {n_lines}")
        values: dict[str, Any] = dict.fromkeys(self.all_fields)  # None: not in this file
        for f, k, out, nil, u in zip(self.fields, kinds, outs, nils, uniques):
            mask = nil if nil.any() else None
            values[f] = (pa.DictionaryArray.from_arrays(pa.array(out, mask=mask),
                                                        pa.array(u, pa.string()))
                         if k == "s" else pa.array(out, _SCAN_ARROW[k], mask=mask))
        return Decoded(n_lines, n_lines, None, values, [])

    def decode(self, chunk: bytes) -> Decoded:
        if self.use_scan and native.jsonl is not None and chunk and 0 < len(self.fields) <= 64:
            scanned = self._scan(chunk)
            if scanned is not None:
                return scanned
        n_lines = count_lines(chunk)
        bad: dict[int, str] = {}
        types = {f: _ARROW[k] for f, k in self.kinds.items()}
        ts = self.plan.timestamp_field
        as_text = False
        table = None
        if self.kinds.get(ts) == "float" and not self.float_time:
            try:  # whole Unix times parse as integers ~10% faster than as floats
                table = self._read(chunk, {**types, ts: pa.int64()}, bad)
            except pa.ArrowInvalid:  # a fraction, an exponent or any bad value
                bad.clear()
                self.float_time = True  # the file has them: no second try for its chunks
        try:
            if table is None:
                table = self._read(chunk, types, bad)
        except pa.ArrowInvalid:  # a value that does not convert: read as text, check each
            bad.clear()
            table = self._read(chunk, {f: (_ARROW["string"] if k == "string" else pa.string())
                                       for f, k in self.kinds.items()}, bad)
            as_text = True
        is_row = np.ones(n_lines, bool)
        is_row[np.fromiter(bad, np.int64, len(bad))] = False
        rows_lines = np.flatnonzero(is_row)
        if len(rows_lines) != table.num_rows:  # never expected: each line is a row or bad
            raise AssertionError(f"CSV rows {table.num_rows} != lines {len(rows_lines)}")
        keep = None
        # pyarrow reads a blank line as a row of nulls: a column without nulls rules them out
        # (the scan below costs about a fifth of the parse)
        maybe_blank = not any(table.column(f).null_count == 0 for f in self.fields)
        if maybe_blank and (b"\n\n" in chunk or chunk.startswith((b"\n", b"\r\n"))
                            or b"\n\r\n" in chunk):
            nl = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10)
            starts = np.concatenate(([0], nl + 1))[:n_lines]
            ends = np.concatenate((nl, [len(chunk)]))[:n_lines]
            length = (ends - starts)[rows_lines]
            blank = length == 0
            cr = np.flatnonzero(length == 1)
            if len(cr):
                blank[cr] = np.frombuffer(chunk, np.uint8)[starts[rows_lines[cr]]] == 13
            if blank.any():
                keep = ~blank
                rows_lines = rows_lines[keep]
        values: dict[str, Any] = {}
        row_bad = np.zeros(len(rows_lines), bool)
        for f in self.fields:
            raw = table.column(f).combine_chunks()
            if keep is not None:
                raw = raw.filter(pa.array(keep))
            col = raw
            if as_text and self.kinds[f] in ("int", "uint", "float"):
                col, invalid = _check_numbers(raw, self.kinds[f])
                what = "a number" if self.kinds[f] == "float" else "an integer"
                for i in np.flatnonzero(invalid & ~row_bad).tolist():
                    line = int(rows_lines[i])
                    bad[line] = (f"field {f!r}: {raw[i].as_py()!r} is not {what}"
                                 if len(bad) < MAX_BAD_PER_CHUNK else "")
                row_bad |= invalid
            values[f] = col
        if row_bad.any():  # drop them (their line numbers are in `bad`)
            good = pa.array(~row_bad)
            values = {f: v.filter(good) for f, v in values.items()}
            rows_lines = rows_lines[~row_bad]
        for f in self.all_fields:
            if f not in values:
                values[f] = None  # not in this file: every row lacks it
        bad_list = sorted(bad.items())[:MAX_BAD_PER_CHUNK]
        return Decoded(len(rows_lines), n_lines, rows_lines, values, bad_list, len(bad))


def _check_numbers(col: pa.Array, kind: str) -> tuple[pa.Array, np.ndarray]:
    """Text values -> numbers; (the numbers, nulls where invalid; invalid mask)."""
    pattern = {"int": _INT_RE, "uint": _UINT_RE, "float": _FLOAT_RE}[kind]
    ok = pc.match_substring_regex(col, pattern)
    invalid = pc.and_(pc.is_valid(col), pc.invert(pc.fill_null(ok, False)))
    invalid_np = invalid.to_numpy(zero_copy_only=False)
    cleaned = pc.utf8_trim_whitespace(pc.if_else(invalid, None, col))
    target = {"int": pa.int64(), "uint": pa.uint64(), "float": pa.float64()}[kind]
    try:
        return cleaned.cast(target), invalid_np
    except (pa.ArrowInvalid, OverflowError):  # beyond 64 bits: find them one by one (rare)
        out, extra = [], np.zeros(len(col), bool)
        for i, v in enumerate(cleaned.to_pylist()):
            try:
                out.append(None if v is None else pa.scalar(int(v) if kind != "float" else
                                                            float(v), target).as_py())
            except (ValueError, OverflowError, pa.ArrowInvalid):
                out.append(None)
                extra[i] = True
        return pa.array(out, target), invalid_np | extra
