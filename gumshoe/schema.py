"""Column types and the Schema: names, roles, numpy storage dtypes, equivalence checks.

Imports only config, errors and kinds (a metric column's kind: sum, min or max). A Schema is
frozen; it is built from the [schema] section of a config and persisted in the database
metadata (`to_json` / `from_json`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .config import Config, SchemaConfig, format_duration
from .errors import ClientError, ConfigError, SchemaMismatchError
from .kinds import SUM, Kind, parse_type, wide_dtype
from .tiers import Tiers

NUMERIC_TYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                 "float32", "float64")
STRING_CODE_TYPES = ("uint8", "uint16", "uint32")
COUNT_DTYPE = np.dtype(np.int64)
_MAX_NAME_BYTES = 200  # dictionary file names embed the column name


def sum_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a metric of `dtype` is stored and summed in: wide enough never to wrap
    (every kind keeps its values in this 64-bit type)."""
    return wide_dtype(dtype)


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    """One column. `dtype` is the declared value type (codes for string dimensions); a
    metric's `kind` says how its rolled-up values combine (kinds.py)."""

    name: str
    type_name: str  # as written in the config: "uint8", "string:uint16", "min:int32", ...
    role: str  # "timestamp" | "dimension" | "metric"
    dtype: np.dtype
    is_string: bool = False
    kind: Kind = SUM

    @property
    def is_float(self) -> bool:
        return self.dtype.kind == "f"

    @property
    def store_dtype(self) -> np.dtype:
        """Stored dtype: codes/values for dimensions, the wide sum dtype for metrics."""
        return sum_dtype(self.dtype) if self.role == "metric" else self.dtype

    @property
    def capacity(self) -> int:
        """How many distinct strings a string dimension can hold."""
        return int(np.iinfo(self.dtype).max) + 1

    @property
    def value_range(self) -> tuple[int | float, int | float]:
        if self.dtype.kind == "f":
            info = np.finfo(self.dtype)
            return float(info.min), float(info.max)
        iinfo = np.iinfo(self.dtype)
        return int(iinfo.min), int(iinfo.max)


def _parse_column(name: str, type_name: str, role: str) -> Column:
    if not name:
        raise ConfigError(f"{role} column: empty column name")
    if "/" in name or "\0" in name or len(name.encode()) > _MAX_NAME_BYTES:
        raise ConfigError(f"{role} column {name!r}: a column name must not contain '/' or NUL "
                          f"nor exceed {_MAX_NAME_BYTES} bytes (names are used in file names)")
    if type_name.startswith("string:"):
        base = type_name[len("string:"):]
        if role == "metric":
            raise ConfigError(f"metric column ({name!r}) has string type; not allowed for "
                              "metric columns")
        if role == "timestamp":
            raise ConfigError(f"timestamp column ({name!r}) cannot be a string")
        if base not in STRING_CODE_TYPES:
            raise ConfigError(f"got type {base!r} for column {name!r} (must be uint8, uint16 or "
                              "uint32)")
        return Column(name, type_name, role, np.dtype(base), is_string=True)
    kind, base = parse_type(type_name) if role == "metric" else (SUM, type_name)
    if kind.is_sketch:
        return Column(name, type_name, role, np.dtype(base), kind=kind)
    if base not in NUMERIC_TYPES:
        strings = (", each also as min:<type> or max:<type>, or uniques" if role == "metric"
                   else ", or string:" + "/".join(STRING_CODE_TYPES))
        raise ConfigError(f"column {name!r}: bad type: {type_name} (valid types: "
                          f"{', '.join(NUMERIC_TYPES)}{strings})")
    if role == "timestamp" and type_name != "uint32":
        raise ConfigError(f"timestamp column ({name!r}) must be uint32")
    return Column(name, type_name, role, np.dtype(base), kind=kind)


@dataclasses.dataclass(frozen=True, slots=True)
class Schema:
    timestamp: Column
    dimensions: tuple[Column, ...]
    metrics: tuple[Column, ...]
    segment_size: int
    interval_duration: int  # seconds
    # [schema] tiers: (duration, keep) pairs in seconds, finest first (tiers.py); () = none
    tiers: tuple[tuple[int, int], ...] = ()
    # `uniques` metric columns (distinct counts: a sketch per row, Block.sketches), kept apart
    # from `metrics` (the numeric columns every sum/min/max path iterates)
    uniques: tuple[Column, ...] = ()
    _by_name: dict[str, Column] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})

    @classmethod
    def from_config(cls, sc: SchemaConfig) -> Schema:
        ts = _parse_column(sc.timestamp_column[0], sc.timestamp_column[1], "timestamp")
        dims = tuple(_parse_column(n, t, "dimension") for n, t in sc.dimension_columns)
        every = tuple(_parse_column(n, t, "metric") for n, t in sc.metric_columns)
        if not every:
            raise ConfigError("schema must include at least one metric column")
        mets = tuple(m for m in every if not m.kind.is_sketch)
        uniques = tuple(m for m in every if m.kind.is_sketch)
        seen: set[str] = set()
        for col in (ts, *dims, *every):
            if col.name in seen:
                raise ConfigError(f"duplicate column name {col.name!r}")
            seen.add(col.name)
        schema = cls(ts, dims, mets, sc.segment_size, sc.interval_duration, sc.tiers, uniques)
        if schema.row_bytes > sc.segment_size:
            raise ConfigError(f"schema.segment_size: {sc.segment_size} bytes cannot hold one row "
                              f"({schema.row_bytes} bytes)")
        return schema

    # -- look-ups -------------------------------------------------------------------------
    @property
    def columns(self) -> tuple[Column, ...]:
        return (self.timestamp, *self.dimensions, *self.metrics, *self.uniques)

    def column(self, name: str) -> Column | None:
        return self._by_name.get(name)

    def dictionary_column(self, name: str) -> Column:
        """The string dimension `name`, or a ClientError saying why it has no dictionary."""
        col = self._by_name.get(name)
        if col is None:
            raise ClientError(f"No such dimension: {name}")
        if not col.is_string:
            what = {"dimension": "a numeric dimension", "metric": "a metric",
                    "timestamp": "the timestamp column"}[col.role]
            raise ClientError(f"No such dimension: {name} ({what} of type {col.type_name} has "
                              "no dictionary of strings; group by it to see its values)")
        return col

    @property
    def string_dimensions(self) -> tuple[Column, ...]:
        return tuple(d for d in self.dimensions if d.is_string)

    @property
    def row_bytes(self) -> int:
        """Stored bytes per rolled-up row: count, each dimension plus nil flag, each metric."""
        return (COUNT_DTYPE.itemsize + sum(d.dtype.itemsize + 1 for d in self.dimensions)
                + sum(m.store_dtype.itemsize for m in self.metrics))

    @property
    def rows_per_segment(self) -> int:
        return max(1, self.segment_size // self.row_bytes)

    # -- persistence ----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "timestamp_column": [self.timestamp.name, self.timestamp.type_name],
            "dimension_columns": [[d.name, d.type_name] for d in self.dimensions],
            "metric_columns": [[m.name, m.type_name] for m in (*self.metrics, *self.uniques)],
            "segment_size": self.segment_size,
            "interval_duration": self.interval_duration,
            **({"tiers": [list(t) for t in self.tiers]} if self.tiers else {}),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Schema:
        sc = SchemaConfig(
            segment_size=int(obj["segment_size"]),
            interval_duration=int(obj["interval_duration"]),
            timestamp_column=(str(obj["timestamp_column"][0]), str(obj["timestamp_column"][1])),
            dimension_columns=tuple((str(n), str(t)) for n, t in obj["dimension_columns"]),
            metric_columns=tuple((str(n), str(t)) for n, t in obj["metric_columns"]),
            tiers=tuple((int(d), int(k)) for d, k in obj.get("tiers", ())),
        )
        return cls.from_config(sc)

    def check_same(self, other: Schema, hint: str = "") -> None:
        """Raise SchemaMismatchError naming the first difference between stored `self` and
        configured `other` (columns, types, segment size, interval duration)."""
        def fmt(cols: tuple[Column, ...]) -> str:
            return ", ".join(f"{c.name}:{c.type_name}" for c in cols) or "none"

        problems = []
        if (self.timestamp.name, self.timestamp.type_name) != (other.timestamp.name,
                                                               other.timestamp.type_name):
            problems.append(f"timestamp column is {self.timestamp.name}:"
                            f"{self.timestamp.type_name}, config has {other.timestamp.name}:"
                            f"{other.timestamp.type_name}")
        for kind, a, b in (("dimension", self.dimensions, other.dimensions),
                           ("metric", self.metrics, other.metrics),
                           ("uniques metric", self.uniques, other.uniques)):
            if [(c.name, c.type_name) for c in a] != [(c.name, c.type_name) for c in b]:
                problems.append(f"{kind} columns are [{fmt(a)}], config has [{fmt(b)}]")
        if self.segment_size != other.segment_size:
            problems.append(f"segment size is {self.segment_size}, config has "
                            f"{other.segment_size}")
        if self.interval_duration != other.interval_duration:
            problems.append(f"interval duration is {self.interval_duration}s, config has "
                            f"{other.interval_duration}s")
        elif self.tiers and [d for d, _ in self.tiers] != [d for d, _ in other.tiers]:
            # keeps may change (the watermarks never move back); durations may not, and tiers
            # may be added to a database of the first tier's duration, never taken away
            def fmt_tiers(tiers: tuple[tuple[int, int], ...]) -> str:
                return ", ".join(format_duration(d) for d, _ in tiers) or "none"
            problems.append(f"tier durations are [{fmt_tiers(self.tiers)}], config has "
                            f"[{fmt_tiers(other.tiers)}]")
        if problems:
            raise SchemaMismatchError("schemas do not match: " + "; ".join(problems) + hint)

    def interval_start(self, ts: np.ndarray) -> np.ndarray:
        """Start of the interval holding each timestamp (aligned to the Unix epoch); with
        tiers, of the finest tier (the database's watermarks say which tier holds a row)."""
        return ts - ts % self.interval_duration

    @property
    def tiering(self) -> Tiers | None:
        """The tiers (None without `tiers`: one interval duration)."""
        return Tiers.of(self.tiers) if self.tiers else None

    @property
    def durations(self) -> tuple[int, ...]:
        """Every interval duration the database may hold, finest first."""
        return tuple(d for d, _ in self.tiers) or (self.interval_duration,)

    def shard_start(self, ts: np.ndarray) -> np.ndarray:
        """The time the router's shard function hashes for each timestamp: the interval start
        without tiers, the coarsest tier's bucket with them (so a roll-up key stays on one
        shard through every re-roll)."""
        tiers = self.tiering
        return self.interval_start(ts) if tiers is None else tiers.shard_start(ts)


def describe(config: Config) -> dict[str, Any]:
    """GET /schema: the columns and storage settings, for the console and clients."""
    s = config.schema

    def col(pair: tuple[str, str]) -> dict[str, str]:
        return {"name": pair[0], "type": pair[1]}

    def metric(pair: tuple[str, str]) -> dict[str, Any]:
        # its kind (sum, min, max, uniques) and the aggregates it answers
        kind = parse_type(pair[1])[0]
        return {**col(pair), "kind": kind.name, "aggregates": list(kind.aggregates)}

    metrics = [metric(c) for c in s.metric_columns]
    return {"timestamp": col(s.timestamp_column),
            "dimensions": [col(c) for c in s.dimension_columns],
            "metrics": metrics,
            "aggregateTypes": list(dict.fromkeys(a for m in metrics for a in m["aggregates"])),
            "interval": format_duration(s.interval_duration),
            "retention_days": config.retention_days,
            **({"tiers": [[format_duration(d), format_duration(k)] for d, k in s.tiers]}
               if s.tiers else {}),
            "segment_size": s.segment_size}
