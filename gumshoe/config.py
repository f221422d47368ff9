"""Config file parsing: the original's config.toml format -> a frozen Config.

No internal imports besides errors. Every key may be omitted (defaults come from the embedded
default config, the repository's top-level config.toml); an unknown key is an error naming it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                   "m": 60.0, "h": 3600.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
               "gb": 10**9, "t": 10**12, "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20,
               "mib": 2**20, "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40}
_DURABILITY = ("fsync", "os", "none")


def parse_duration(text: str, key: str = "duration") -> float:
    """Parse a Go duration ("10s", "1h30m", "500ms") into seconds."""
    if not isinstance(text, str):
        raise ConfigError(f"{key}: expected a duration string like \"10s\", got {text!r}")
    s = text.strip()
    if s in ("0", ""):
        if s == "0":
            return 0.0
        raise ConfigError(f"{key}: empty duration")
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ConfigError(f"{key}: bad duration {text!r} (units: ns, us, ms, s, m, h)")
    return total


def format_duration(seconds: float) -> str:
    """Whole seconds in the largest unit that divides them: 3600 -> "1h", 90 -> "90s",
    86400 -> "1d" (for display; parse_duration reads s, m and h)."""
    n = int(seconds)
    if n != seconds or n <= 0:
        return f"{seconds:g}s"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}s"


def parse_size(text: str | int, key: str = "size") -> int:
    """Parse a byte size ("1MB" = 10**6, "1MiB" = 2**20, "100" = 100 bytes)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ConfigError(f"{key}: size must not be negative, got {text}")
        return text
    if not isinstance(text, str):
        raise ConfigError(f"{key}: expected a size string like \"1MB\", got {text!r}")
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ConfigError(f"{key}: bad size {text!r} (e.g. \"1MB\", \"512KiB\")")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


@dataclasses.dataclass(frozen=True, slots=True)
class SchemaConfig:
    segment_size: int
    interval_duration: int  # seconds
    timestamp_column: tuple[str, str]
    dimension_columns: tuple[tuple[str, str], ...]
    metric_columns: tuple[tuple[str, str], ...]
    segment_size_text: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class AuthConfig:
    """API keys by role ([auth]). Keys are off (every route open, as the original) unless a
    read, write or admin key is configured."""

    read_keys: tuple[str, ...] = ()
    write_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    collect_keys: tuple[str, ...] = ()  # empty: collect routes need no key
    shard_key: str = ""  # the router's key for its shards (an admin key there)

    @property
    def enabled(self) -> bool:
        return bool(self.read_keys or self.write_keys or self.admin_keys)


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    listen_addr: str
    statsd_addr: str
    open_file_limit: int
    database_dir: str
    flush_interval: float  # seconds
    query_parallelism: int
    retention_days: int  # 0 = keep everything
    durability: str
    max_body_size: int
    max_groups: int
    batch_id_window: float  # seconds
    schema: SchemaConfig
    # Bounds on connections, requests and queries (the HTTP edge and the query service).
    idle_timeout: float = 15.0  # seconds a keep-alive connection may wait for a request
    request_timeout: float = 30.0  # seconds for a request's headers and body to arrive
    max_connections: int = 1000  # further capped below the process's file-descriptor limit
    max_inflight_body: int = 512 * 10**6  # bytes of request bodies being read at once
    query_timeout: float = 30.0  # seconds
    query_memory: int = 10**9  # estimated bytes one query may use
    query_memory_pool: int = 2 * 10**9  # estimated bytes all running queries may use
    allowed_hosts: tuple[str, ...] = ()  # empty: loopback names on loopback, else any
    auth: AuthConfig = AuthConfig()

    @property
    def in_memory(self) -> bool:
        return self.database_dir == "MEMORY"

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def default_config_text() -> str:
    return resources.files("gumshoe").joinpath("default_config.toml").read_text("utf-8")


def _columns(value: Any, key: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of [name, type] pairs")
    out = []
    for i, col in enumerate(value):
        if (not isinstance(col, list) or len(col) != 2
                or not all(isinstance(c, str) for c in col)):
            raise ConfigError(f"{key}[{i}]: expected [name, type], got {col!r}")
        out.append((col[0], col[1]))
    return tuple(out)


def _int(value: Any, key: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{key}: must be at least {minimum}, got {value}")
    return value


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
    return tuple(value)


def _positive_duration(raw: dict[str, Any], key: str) -> float:
    seconds = parse_duration(raw[key], key)
    if seconds <= 0:
        raise ConfigError(f"{key}: must be more than 0, got {raw[key]!r}")
    return seconds


def _positive_size(raw: dict[str, Any], key: str) -> int:
    size = parse_size(raw[key], key)
    if size < 1:
        raise ConfigError(f"{key}: must be at least 1 byte, got {raw[key]!r}")
    return size


def _auth(raw: dict[str, Any]) -> AuthConfig:
    keys = {role: _strings(raw[role], f"auth.{role}")
            for role in ("read_keys", "write_keys", "admin_keys", "collect_keys")}
    for role, values in keys.items():
        for k in values:
            if len(k) < 16 or not (k.isascii() and k.isprintable()) or " " in k:
                raise ConfigError(f"auth.{role}: a key must be at least 16 printable ASCII "
                                  "characters without spaces (e.g. `openssl rand -hex 24`)")
    return AuthConfig(**keys, shard_key=_str(raw["shard_key"], "auth.shard_key"))


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _merge(defaults: dict[str, Any], given: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            raise ConfigError(f"unknown config key {prefix + key!r}")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix + key}: expected a table")
            out[key] = _merge(defaults[key], value, prefix + key + ".")
        else:
            out[key] = value
    return out


def parse_config(text: str, source: str = "config") -> Config:
    """Parse config TOML text, filling omitted keys from the embedded default."""
    try:
        given = tomllib.loads(text)
        defaults = tomllib.loads(default_config_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None
    raw = _merge(defaults, given)
    s = raw["schema"]
    interval = parse_duration(s["interval_duration"], "schema.interval_duration")
    if interval < 60 or interval != int(interval):
        raise ConfigError(f"schema.interval_duration: must be a whole number of seconds, at "
                          f"least 1m; got {s['interval_duration']!r}")
    segment_size = parse_size(s["segment_size"], "schema.segment_size")
    if segment_size < 100:
        raise ConfigError(f"schema.segment_size: seems too small: {s['segment_size']!r}")
    ts = _columns([s["timestamp_column"]], "schema.timestamp_column")[0]
    schema = SchemaConfig(
        segment_size=segment_size,
        interval_duration=int(interval),
        timestamp_column=ts,
        dimension_columns=_columns(s["dimension_columns"], "schema.dimension_columns"),
        metric_columns=_columns(s["metric_columns"], "schema.metric_columns"),
        segment_size_text=str(s["segment_size"]),
    )
    flush = parse_duration(raw["flush_interval"], "flush_interval")
    if flush < 0.001:
        raise ConfigError(f"flush_interval: too small: {raw['flush_interval']!r}")
    durability = _str(raw["durability"], "durability")
    if durability not in _DURABILITY:
        raise ConfigError(f"durability: must be one of {', '.join(_DURABILITY)}; got "
                          f"{durability!r}")
    max_body_size = _positive_size(raw, "max_body_size")
    database_dir = _str(raw["database_dir"], "database_dir")
    if not database_dir:
        raise ConfigError("database_dir: must be provided; use \"MEMORY\" for an in-memory DB")
    return Config(
        listen_addr=_str(raw["listen_addr"], "listen_addr"),
        statsd_addr=_str(raw["statsd_addr"], "statsd_addr"),
        open_file_limit=_int(raw["open_file_limit"], "open_file_limit", 0),
        database_dir=database_dir,
        flush_interval=flush,
        query_parallelism=_int(raw["query_parallelism"], "query_parallelism", 1),
        retention_days=_int(raw["retention_days"], "retention_days", 0),
        durability=durability,
        max_body_size=max_body_size,
        max_groups=_int(raw["max_groups"], "max_groups", 1),
        batch_id_window=parse_duration(raw["batch_id_window"], "batch_id_window"),
        schema=schema,
        idle_timeout=_positive_duration(raw, "idle_timeout"),
        request_timeout=_positive_duration(raw, "request_timeout"),
        max_connections=_int(raw["max_connections"], "max_connections", 1),
        max_inflight_body=_positive_size(raw, "max_inflight_body"),
        query_timeout=_positive_duration(raw, "query_timeout"),
        query_memory=_positive_size(raw, "query_memory"),
        query_memory_pool=_positive_size(raw, "query_memory_pool"),
        allowed_hosts=tuple(h.lower() for h in _strings(raw["allowed_hosts"], "allowed_hosts")),
        auth=_auth(raw["auth"]),
    )


def config_toml(cfg: Config) -> str:
    """The config file text of `cfg`: parse_config(config_toml(cfg)) == cfg (sizes in bytes,
    durations in seconds). For tools and tests that start a server with --config."""
    def cols(pairs: tuple[tuple[str, str], ...]) -> str:
        return "[" + ", ".join(f"[{json.dumps(n)}, {json.dumps(t)}]" for n, t in pairs) + "]"

    def text(v: str) -> str:
        return json.dumps(v)  # a JSON string is a TOML basic string

    sc = cfg.schema
    return (f"listen_addr = {text(cfg.listen_addr)}\nstatsd_addr = {text(cfg.statsd_addr)}\n"
            f"open_file_limit = {cfg.open_file_limit}\ndatabase_dir = {text(cfg.database_dir)}\n"
            f'flush_interval = "{cfg.flush_interval!r}s"\n'
            f"query_parallelism = {cfg.query_parallelism}\n"
            f"retention_days = {cfg.retention_days}\ndurability = {text(cfg.durability)}\n"
            f'max_body_size = "{cfg.max_body_size}B"\nmax_groups = {cfg.max_groups}\n'
            f'batch_id_window = "{cfg.batch_id_window!r}s"\n'
            f'idle_timeout = "{cfg.idle_timeout!r}s"\n'
            f'request_timeout = "{cfg.request_timeout!r}s"\n'
            f"max_connections = {cfg.max_connections}\n"
            f'max_inflight_body = "{cfg.max_inflight_body}B"\n'
            f'query_timeout = "{cfg.query_timeout!r}s"\n'
            f'query_memory = "{cfg.query_memory}B"\n'
            f'query_memory_pool = "{cfg.query_memory_pool}B"\n'
            f"allowed_hosts = {json.dumps(list(cfg.allowed_hosts))}\n\n[schema]\n"
            f"segment_size = {text(sc.segment_size_text or f'{sc.segment_size}B')}\n"
            f'interval_duration = "{sc.interval_duration}s"\n'
            f"timestamp_column = {cols((sc.timestamp_column,))[1:-1]}\n"
            f"dimension_columns = {cols(sc.dimension_columns)}\n"
            f"metric_columns = {cols(sc.metric_columns)}\n\n[auth]\n"
            + "".join(f"{role} = {json.dumps(list(getattr(cfg.auth, role)))}\n"
                      for role in ("read_keys", "write_keys", "admin_keys", "collect_keys"))
            + f"shard_key = {text(cfg.auth.shard_key)}\n")


def load_config(path: str | Path | None = None) -> Config:
    """Load a config file; None means the embedded default."""
    if path is None:
        return parse_config(default_config_text(), "default config")
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {str(p)!r}: {e.strerror}") from None
    return parse_config(text, str(p))
