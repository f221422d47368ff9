"""`gumtool import` mappings: how source records (JSON lines, CSV rows) become rows of a schema.

Imports gumshoe config, schema and errors only. A mapping is a small TOML file; the built-in
`kissmetrics` preset is a mapping too (KISSmetrics "Data Export" records: `_n` event name, `_p`
person, `_t` Unix time, `_p2` on alias records, every other key a property). `resolve` checks a
mapping against a schema once and returns the `Plan` every worker process parses with: which
source field fills which column, the timestamp field and format, constants, the identity,
event and alias fields, and what an unknown field does.

Mapping file (every key optional)::

    unknown = "ignore"        # or "error": a field neither mapped, dropped nor a column name
    drop = ["debug"]          # source fields to ignore (also under unknown = "error")
    identity = "user"         # the field --ignore-users and alias records apply to
    event = "type"            # the field --only-events applies to
    alias = "alias_of"        # records with this field tie `identity` to it (not imported)
    [timestamp]
    field = "time"            # default: the schema's timestamp column name
    format = "unix_ms"        # unix (seconds), unix_ms, iso8601 (with a UTC offset)
    [columns]                 # source field -> column (a field named like a column maps to it)
    "user agent" = "device"
    [constants]               # column -> the value of every row
    source = "import-2026"
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path
from typing import Any

from gumshoe.errors import GumshoeError
from gumshoe.schema import Column, Schema

TIMESTAMP_FORMATS = ("unix", "unix_ms", "iso8601")
UNKNOWN = ("ignore", "error")
_KEYS = {"unknown", "drop", "identity", "event", "alias", "timestamp", "columns", "constants"}


class ImportFailed(GumshoeError):
    """`gumtool import` cannot go on (bad mapping, bad input file, a server refusing a batch)."""


@dataclasses.dataclass(frozen=True)
class Mapping:
    """A mapping as written (see the module docstring); `None` means "not set"."""

    timestamp_field: str | None = None
    timestamp_format: str | None = None
    columns: dict[str, str] = dataclasses.field(default_factory=dict)
    constants: dict[str, Any] = dataclasses.field(default_factory=dict)
    drop: frozenset[str] = frozenset()
    unknown: str | None = None
    identity: str | None = None
    event: str | None = None
    alias: str | None = None
    # Records without the event field are not events (KISSmetrics property records): skipped.
    require_event: bool = False

    def over(self, base: Mapping) -> Mapping:
        """This mapping's settings on top of `base` (a preset)."""
        return Mapping(
            self.timestamp_field or base.timestamp_field,
            self.timestamp_format or base.timestamp_format,
            {**base.columns, **self.columns}, {**base.constants, **self.constants},
            base.drop | self.drop, self.unknown or base.unknown,
            self.identity or base.identity, self.event or base.event,
            self.alias or base.alias, self.require_event or base.require_event)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ImportFailed(f"{where}: expected a non-empty string, got {value!r}")
    return value


def load_mapping(path: str | Path) -> Mapping:
    """Read a mapping TOML file; ImportFailed naming the key at fault."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ImportFailed(f"{path}: {e}") from None
    return parse_mapping(raw, str(path))


def parse_mapping(raw: dict[str, Any], source: str = "mapping") -> Mapping:
    unknown_keys = sorted(set(raw) - _KEYS)
    if unknown_keys:
        raise ImportFailed(f"{source}: unknown key {unknown_keys[0]!r} (known: "
                           f"{', '.join(sorted(_KEYS))})")
    ts = raw.get("timestamp", {})
    if not isinstance(ts, dict) or set(ts) - {"field", "format"}:
        raise ImportFailed(f"{source}: [timestamp] takes `field` and `format`")
    fmt = ts.get("format")
    if fmt is not None and fmt not in TIMESTAMP_FORMATS:
        raise ImportFailed(f"{source}: timestamp.format: expected one of "
                           f"{', '.join(TIMESTAMP_FORMATS)}; got {fmt!r}")
    columns = raw.get("columns", {})
    if not isinstance(columns, dict):
        raise ImportFailed(f"{source}: [columns] must be a table of source field = column")
    for k, v in columns.items():
        _str(v, f"{source}: columns.{k}")
    constants = raw.get("constants", {})
    if not isinstance(constants, dict):
        raise ImportFailed(f"{source}: [constants] must be a table of column = value")
    drop = raw.get("drop", [])
    if not isinstance(drop, list):
        raise ImportFailed(f"{source}: drop: expected a list of field names")
    unknown = raw.get("unknown")
    if unknown is not None and unknown not in UNKNOWN:
        raise ImportFailed(f"{source}: unknown: expected \"ignore\" or \"error\"; got "
                           f"{unknown!r}")
    identity, event, alias = (_str(raw[k], f"{source}: {k}") if k in raw else None
                              for k in ("identity", "event", "alias"))
    return Mapping(
        _str(ts["field"], f"{source}: timestamp.field") if "field" in ts else None, fmt,
        dict(columns), dict(constants),
        frozenset(_str(d, f"{source}: drop[{i}]") for i, d in enumerate(drop)), unknown,
        identity, event, alias)


def kissmetrics(event_column: str, identity_column: str | None) -> Mapping:
    """The `--preset kissmetrics` mapping."""
    columns = {"_n": event_column}
    if identity_column:
        columns["_p"] = identity_column
    return Mapping("_t", "unix", columns, {}, frozenset(), "ignore", "_p", "_n", "_p2",
                   require_event=True)


PRESETS = ("kissmetrics",)


# -- the resolved plan ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Target:
    """How one column of the schema is filled: from a source field, a constant, or nil."""

    column: Column
    field: str | None = None
    constant: Any = None

    @property
    def numeric(self) -> bool:
        """Read as a number (a numeric dimension or metric); strings and uniques identities
        are read as text."""
        return not self.column.is_string and not self.column.kind.is_sketch


@dataclasses.dataclass(frozen=True)
class Plan:
    """A mapping resolved against a schema: what every worker parses with (picklable)."""

    schema: Schema
    timestamp_field: str
    timestamp_format: str
    targets: tuple[Target, ...]  # one per dimension and metric, in schema order
    drop: frozenset[str]
    unknown: str
    identity: str | None
    event: str | None
    alias: str | None
    require_event: bool

    @property
    def fields(self) -> list[str]:
        """Every source field read, each once: timestamp first."""
        out = [self.timestamp_field]
        for f in (*(t.field for t in self.targets), self.identity, self.event, self.alias):
            if f is not None and f not in out:
                out.append(f)
        return out

    def describe(self) -> str:
        """A stable text of everything that decides the imported rows (for the checkpoint)."""
        return repr((self.schema.to_json(), self.timestamp_field, self.timestamp_format,
                     [(t.column.name, t.field, t.constant) for t in self.targets],
                     sorted(self.drop), self.unknown, self.identity, self.event, self.alias,
                     self.require_event))


def _constant(col: Column, value: Any, where: str) -> Any:
    if col.kind.is_sketch:  # one identity for every row would count 1
        raise ImportFailed(f"{where}: column {col.name!r} is a uniques column; fill it from a "
                           "field, not a constant")
    if col.is_string:
        if not isinstance(value, str):
            raise ImportFailed(f"{where}: column {col.name!r} is a string column; got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ImportFailed(f"{where}: column {col.name!r} ({col.type_name}) needs a number; "
                           f"got {value!r}")
    lo, hi = col.value_range
    if col.is_float:
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ImportFailed(f"{where}: {value!r} is out of range for {col.type_name}")
        return float(value)
    if not isinstance(value, int) and value != int(value):
        raise ImportFailed(f"{where}: {value!r} is not an integer ({col.type_name})")
    if not lo <= int(value) <= hi:
        raise ImportFailed(f"{where}: {value!r} is out of range for {col.type_name} "
                           f"[{lo}, {hi}]")
    return int(value)


def resolve(mapping: Mapping, schema: Schema, source: str = "mapping") -> Plan:
    """Check `mapping` against `schema`; ImportFailed naming the first problem."""
    ts_col = schema.timestamp
    by_column: dict[str, str] = {}
    for field, column in mapping.columns.items():
        col = schema.column(column)
        if col is None or col.role == "timestamp":
            what = "the timestamp column (use [timestamp] field)" if col else "not a column"
            names = (c.name for c in (*schema.dimensions, *schema.metrics, *schema.uniques))
            raise ImportFailed(f"{source}: columns.{field} = {column!r}: {what}; columns: "
                               f"{', '.join(names)}")
        if column in by_column:
            raise ImportFailed(f"{source}: column {column!r} is filled from two fields, "
                               f"{by_column[column]!r} and {field!r}")
        by_column[column] = field
    for column in mapping.constants:
        col = schema.column(column)
        if col is None or col.role == "timestamp":
            raise ImportFailed(f"{source}: constants.{column}: not a dimension or metric column")
        if column in by_column:
            raise ImportFailed(f"{source}: column {column!r} is both a constant and filled from "
                               f"field {by_column[column]!r}")
    ts_field = mapping.timestamp_field or ts_col.name
    mapped_fields = set(mapping.columns)
    targets = []
    for col in (*schema.dimensions, *schema.metrics, *schema.uniques):
        if col.name in mapping.constants:
            targets.append(Target(col, constant=_constant(col, mapping.constants[col.name],
                                                          f"{source}: constants.{col.name}")))
        elif col.name in by_column:
            targets.append(Target(col, field=by_column[col.name]))
        elif (col.name not in mapped_fields and col.name not in mapping.drop
              and col.name != ts_field):
            targets.append(Target(col, field=col.name))  # a field named like the column
        else:
            targets.append(Target(col))
    return Plan(schema, ts_field, mapping.timestamp_format or "unix", tuple(targets),
                mapping.drop, mapping.unknown or "ignore", mapping.identity, mapping.event,
                mapping.alias, mapping.require_event)


def check_string_target(schema: Schema, column: str, flag: str) -> None:
    """A preset's column (`--event-column`, `--identity-column`) must be a string dimension."""
    col = schema.column(column)
    if col is None or not col.is_string:
        what = "not a column of the schema" if col is None else f"a {col.type_name} column"
        raise ImportFailed(f"{flag} {column!r}: {what}; it must be a string dimension "
                           "(e.g. [\"" + column + "\", \"string:uint16\"])")
