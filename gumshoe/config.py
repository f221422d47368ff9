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


_AGE_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w)")
_AGE_UNITS = {**_DURATION_UNITS, "d": 86400.0, "w": 604800.0}


def parse_age(text: str, key: str) -> float:
    """Parse a long duration into seconds: a Go duration that may also use days and weeks
    ("30d", "1d12h", "2w"; "0" is 0). For ages such as [archive] keep."""
    if not isinstance(text, str):
        raise ConfigError(f"{key}: expected a duration string like \"30d\", got {text!r}")
    s = text.strip()
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _AGE_RE.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _AGE_UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ConfigError(f"{key}: bad duration {text!r} (units: s, m, h, d, w)")
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


_SPAN_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_SPAN_RE = re.compile(r"(\d+)(s|m|h|d|w|y)")


def parse_span(text: Any, key: str) -> int:
    """Whole seconds of a span like "5m", "30d", "3y" or "1d12h" (units s, m, h, d, w and
    y = 365 days), for [schema] tiers."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{key}: expected a span like \"5m\", \"30d\" or \"3y\", got "
                          f"{text!r}")
    s, pos, total = text.strip(), 0, 0
    for m in _SPAN_RE.finditer(s):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _SPAN_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or total <= 0:
        raise ConfigError(f"{key}: bad span {text!r} (a positive whole number of s, m, h, d, "
                          "w or y, e.g. \"5m\", \"30d\", \"3y\")")
    return total


def _tiers(value: Any) -> tuple[tuple[int, int], ...]:
    """[schema] tiers: [[duration, keep], ...] -> ((seconds, seconds), ...), checked: every
    duration at least 1m and dividing the next, every keep at least its duration and longer
    than the one before."""
    key = "schema.tiers"
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of [duration, keep] pairs such as "
                          f"[[\"5m\", \"1d\"], [\"1h\", \"30d\"]], got {value!r}")
    out: list[tuple[int, int]] = []
    for i, pair in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise ConfigError(f"{where}: expected [duration, keep] such as [\"5m\", \"1d\"], "
                              f"got {pair!r}")
        duration = parse_span(pair[0], f"{where}[0]")
        keep = parse_span(pair[1], f"{where}[1]")
        if duration < 60:
            raise ConfigError(f"{where}[0]: an interval duration must be at least 1m, got "
                              f"{pair[0]!r}")
        if keep < duration:
            raise ConfigError(f"{where}[1]: keep {pair[1]!r} is shorter than the tier's "
                              f"duration {pair[0]!r}")
        if out:
            prev_duration, prev_keep = out[-1]
            if duration <= prev_duration or duration % prev_duration:
                raise ConfigError(f"{where}[0]: {pair[0]!r} must be a multiple of the previous "
                                  f"tier's duration ({format_duration(prev_duration)}) and "
                                  "longer than it")
            if keep <= prev_keep:
                raise ConfigError(f"{where}[1]: keep {pair[1]!r} must be longer than the "
                                  f"previous tier's ({format_duration(prev_keep)}): each keep "
                                  "is an age, counted from now")
        out.append((duration, keep))
    return tuple(out)


@dataclasses.dataclass(frozen=True, slots=True)
class SchemaConfig:
    segment_size: int
    interval_duration: int  # seconds
    timestamp_column: tuple[str, str]
    dimension_columns: tuple[tuple[str, str], ...]
    metric_columns: tuple[tuple[str, str], ...]
    segment_size_text: str = ""
    # [schema] tiers: (interval duration, keep) in seconds, finest first; () = one duration
    tiers: tuple[tuple[int, int], ...] = ()


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


# -- [collect] and [funnel]: the collect routes, the tracker script, queue sources, the funnel ----
COLLECT_FORMATS = ("json",)  # a [[collect.sources]] format: "json" or a template with {column}


@dataclasses.dataclass(frozen=True, slots=True)
class ScriptConfig:
    """[collect.script]: GET /script.js and the columns its fields fill ("" = not sent)."""

    enabled: bool = True
    endpoint: str = ""  # where events go; "" = /pixel.gif of the server that served the script
    event: str = ""  # column of the event name ("pageview" for page views)
    path: str = ""  # column of the page path
    referrer: str = ""  # column of the referrer's host
    device: str = ""  # column of the device class (desktop, mobile, tablet)
    track_localhost: bool = False
    track_automated: bool = False  # browsers driven by automation (navigator.webdriver)
    opt_out: str = "gumshoe_opt_out"  # localStorage key / window flag that stops tracking


@dataclasses.dataclass(frozen=True, slots=True)
class EnrichConfig:
    """[collect.enrich]: columns the server fills on one-event routes ("" / [] = off)."""

    browser: str = ""  # User-Agent -> browser family
    os: str = ""  # User-Agent -> operating system family
    device: str = ""  # User-Agent -> desktop / mobile / tablet / bot
    page: str = ""  # the Referer header (the page that sent the beacon) -> its path
    host_of: tuple[str, ...] = ()  # columns given URLs, stored as their host
    path_of: tuple[str, ...] = ()  # columns given URLs, stored as their path


@dataclasses.dataclass(frozen=True, slots=True)
class CollectRoute:
    """One [[collect.routes]] entry: a GET path template whose {placeholders} are columns."""

    path: str
    set: tuple[tuple[str, Any], ...] = ()  # columns fixed by the route


@dataclasses.dataclass(frozen=True, slots=True)
class CollectSource:
    """One [[collect.sources]] entry: a queue consumed into the database."""

    type: str  # "redis"
    url: str
    key: str
    stream: bool = False  # a stream with a consumer group instead of a list
    format: str = "json"  # "json", or a template such as "{appid}/{name}/{at:date}/{value}"
    batch_size: int = 1000
    group: str = "gumshoe"  # the stream's consumer group
    poll_interval: float = 1.0  # seconds to wait when the queue is empty


@dataclasses.dataclass(frozen=True, slots=True)
class CollectConfig:
    allowed_origins: tuple[str, ...] = ("*",)  # CORS origins of the collect routes
    script: ScriptConfig = ScriptConfig()
    enrich: EnrichConfig = EnrichConfig()
    routes: tuple[CollectRoute, ...] = ()
    sources: tuple[CollectSource, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class FunnelConfig:
    """[funnel]: batching, spool and upstream settings of `gumshoe funnel`."""

    id: str = ""  # batch id prefix; "" = generated once and kept in the spool
    batch_rows: int = 10000
    batch_wait: float = 0.2  # seconds
    spool_size: int = 10**9  # bytes of unforwarded events; beyond it 503
    upstream_timeout: float = 10.0  # seconds
    retry_max: float = 5.0  # seconds: the longest wait between upstream retries
    shutdown_timeout: float = 10.0  # seconds SIGTERM spends forwarding before exit


@dataclasses.dataclass(frozen=True, slots=True)
class ArchiveConfig:
    """[archive]: every accepted batch also kept raw (gumshoe/archive.py; README "Archive")."""

    enabled: bool = False
    dir: str = ""  # "" = the `archive` subdirectory of database_dir
    keep: float = 30 * 86400.0  # seconds; files whose last batch is older are deleted; 0 = never
    rotate: int = 10**9  # bytes: the active file is closed at this size


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
    max_future: float = 86400.0  # seconds a row's timestamp may be ahead of the clock; 0: any
    auth: AuthConfig = AuthConfig()
    collect: CollectConfig = CollectConfig()
    funnel: FunnelConfig = FunnelConfig()
    archive: ArchiveConfig = ArchiveConfig()

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


# -- [collect] and [funnel] ---------------------------------------------------------------------
_SOURCE_KEYS = {"type", "url", "key", "stream", "format", "batch_size", "group", "poll_interval"}
_FUNNEL_ID_RE = re.compile(r"[A-Za-z0-9_.-]{0,64}")


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _tables(value: Any, key: str, allowed: set[str]) -> list[dict[str, Any]]:
    """An array of tables ([[key]]) whose entries may only use `allowed` keys."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{key}: expected an array of tables ([[{key}]])")
    for i, entry in enumerate(value):
        for k in entry:
            if k not in allowed:
                raise ConfigError(f"unknown config key '{key}[{i}].{k}'")
    return value


def _collect(raw: dict[str, Any]) -> CollectConfig:
    s, e = raw["script"], raw["enrich"]
    script = ScriptConfig(
        enabled=_bool(s["enabled"], "collect.script.enabled"),
        **{k: _str(s[k], f"collect.script.{k}")
           for k in ("endpoint", "event", "path", "referrer", "device", "opt_out")},
        track_localhost=_bool(s["track_localhost"], "collect.script.track_localhost"),
        track_automated=_bool(s["track_automated"], "collect.script.track_automated"))
    enrich = EnrichConfig(
        **{k: _str(e[k], f"collect.enrich.{k}") for k in ("browser", "os", "device", "page")},
        host_of=_strings(e["host_of"], "collect.enrich.host_of"),
        path_of=_strings(e["path_of"], "collect.enrich.path_of"))
    routes = []
    for i, r in enumerate(_tables(raw["routes"], "collect.routes", {"path", "set"})):
        where = f"collect.routes[{i}]"
        path = _str(r.get("path"), f"{where}.path")
        if not path.startswith("/"):
            raise ConfigError(f"{where}.path: must start with '/', got {path!r}")
        fixed = r.get("set", {})
        if not isinstance(fixed, dict) or not all(
                isinstance(v, (str, int, float)) for v in fixed.values()):
            raise ConfigError(f"{where}.set: expected a table of column = value")
        routes.append(CollectRoute(path, tuple(fixed.items())))
    sources = []
    for i, src in enumerate(_tables(raw["sources"], "collect.sources", _SOURCE_KEYS)):
        where = f"collect.sources[{i}]"
        for required in ("type", "url", "key"):
            if required not in src:
                raise ConfigError(f"{where}: missing key {required!r}")
        if src["type"] != "redis":
            raise ConfigError(f"{where}.type: only \"redis\" is supported, got {src['type']!r}")
        url = _str(src["url"], f"{where}.url")
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"{where}.url: expected redis://HOST:PORT/DB, got {url!r}")
        key = _str(src["key"], f"{where}.key")
        if not key:
            raise ConfigError(f"{where}.key: must not be empty")
        batch_size = _int(src.get("batch_size", 1000), f"{where}.batch_size", 1)
        if batch_size > 100_000:
            raise ConfigError(f"{where}.batch_size: at most 100000, got {batch_size}")
        sources.append(CollectSource(
            "redis", url, key, stream=_bool(src.get("stream", False), f"{where}.stream"),
            format=_str(src.get("format", "json"), f"{where}.format"), batch_size=batch_size,
            group=_str(src.get("group", "gumshoe"), f"{where}.group"),
            poll_interval=_positive_duration({f"{where}.poll_interval": src.get(
                "poll_interval", "1s")}, f"{where}.poll_interval")))
    return CollectConfig(_strings(raw["allowed_origins"], "collect.allowed_origins"), script,
                         enrich, tuple(routes), tuple(sources))


def _funnel(raw: dict[str, Any]) -> FunnelConfig:
    fid = _str(raw["id"], "funnel.id")
    if not _FUNNEL_ID_RE.fullmatch(fid):
        raise ConfigError(f"funnel.id: at most 64 letters, digits, '_', '.' or '-', got {fid!r}")
    wait = parse_duration(raw["batch_wait"], "funnel.batch_wait")
    return FunnelConfig(
        id=fid, batch_rows=_int(raw["batch_rows"], "funnel.batch_rows", 1), batch_wait=wait,
        spool_size=parse_size(raw["spool_size"], "funnel.spool_size"),
        upstream_timeout=parse_duration(raw["upstream_timeout"], "funnel.upstream_timeout"),
        retry_max=parse_duration(raw["retry_max"], "funnel.retry_max"),
        shutdown_timeout=parse_duration(raw["shutdown_timeout"], "funnel.shutdown_timeout"))


def _archive(raw: dict[str, Any]) -> ArchiveConfig:
    return ArchiveConfig(enabled=_bool(raw["enabled"], "archive.enabled"),
                         dir=_str(raw["dir"], "archive.dir"),
                         keep=parse_age(raw["keep"], "archive.keep"),
                         rotate=_positive_size({"archive.rotate": raw["rotate"]},
                                               "archive.rotate"))


def _toml_value(v: Any) -> str:
    """A TOML value for a str, int, float, bool or list of them (JSON spells them alike)."""
    return json.dumps(v)


def collect_toml(c: CollectConfig, f: FunnelConfig) -> str:
    """The [collect] and [funnel] tables of config_toml."""
    s, e = c.script, c.enrich
    out = [f"[collect]\nallowed_origins = {_toml_value(list(c.allowed_origins))}\n",
           "[collect.script]\n" + "".join(
               f"{k} = {_toml_value(getattr(s, k))}\n" for k in (
                   "enabled", "endpoint", "event", "path", "referrer", "device",
                   "track_localhost", "track_automated", "opt_out")),
           "[collect.enrich]\n" + "".join(
               f"{k} = {_toml_value(list(v) if isinstance(v, tuple) else v)}\n"
               for k in ("browser", "os", "device", "page", "host_of", "path_of")
               for v in (getattr(e, k),))]
    for r in c.routes:
        fixed = ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in r.set)
        out.append(f"[[collect.routes]]\npath = {_toml_value(r.path)}\nset = {{{fixed}}}\n")
    for src in c.sources:
        out.append("[[collect.sources]]\n" + "".join(
            f"{k} = {_toml_value(getattr(src, k))}\n"
            for k in ("type", "url", "key", "stream", "format", "batch_size", "group"))
            + f'poll_interval = "{src.poll_interval!r}s"\n')
    out.append(f"[funnel]\nid = {_toml_value(f.id)}\nbatch_rows = {f.batch_rows}\n"
               f'batch_wait = "{f.batch_wait!r}s"\nspool_size = "{f.spool_size}B"\n'
               f'upstream_timeout = "{f.upstream_timeout!r}s"\n'
               f'retry_max = "{f.retry_max!r}s"\n'
               f'shutdown_timeout = "{f.shutdown_timeout!r}s"\n')
    return "\n".join(out)


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


def _tiered(tiers: tuple[tuple[int, int], ...], given: dict[str, Any], interval: int,
            retention_days: int) -> tuple[int, int]:
    """interval_duration and retention_days under `tiers`: the first duration and the last
    keep (in days; 0 when it is not whole days: the tiers decide). Either key, when written in
    the config, must say the same."""
    first, last_keep = tiers[0][0], tiers[-1][1]
    schema = given.get("schema", {})
    if "interval_duration" in schema and interval != first:
        raise ConfigError(f"schema.interval_duration: {schema['interval_duration']!r} differs "
                          f"from the first of schema.tiers ({format_duration(first)}); omit it "
                          "or make them equal")
    days = last_keep // 86400 if last_keep % 86400 == 0 else 0
    if "retention_days" in given and given["retention_days"] != days:
        raise ConfigError(f"retention_days: {given['retention_days']!r} differs from the last "
                          f"keep of schema.tiers ({format_duration(last_keep)}); omit it "
                          "(the last tier's keep is the retention) or make them equal")
    return first, days


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
    tiers = _tiers(s["tiers"])
    retention_days = _int(raw["retention_days"], "retention_days", 0)
    if tiers:
        interval, retention_days = _tiered(tiers, given, int(interval), retention_days)
    schema = SchemaConfig(
        segment_size=segment_size,
        interval_duration=int(interval),
        timestamp_column=ts,
        dimension_columns=_columns(s["dimension_columns"], "schema.dimension_columns"),
        metric_columns=_columns(s["metric_columns"], "schema.metric_columns"),
        segment_size_text=str(s["segment_size"]),
        tiers=tiers,
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
        retention_days=retention_days,
        durability=durability,
        max_body_size=max_body_size,
        max_groups=_int(raw["max_groups"], "max_groups", 1),
        batch_id_window=parse_duration(raw["batch_id_window"], "batch_id_window"),
        max_future=parse_duration(raw["max_future"], "max_future"),
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
        collect=_collect(raw["collect"]),
        funnel=_funnel(raw["funnel"]),
        archive=_archive(raw["archive"]),
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
            + ("" if sc.tiers else f"retention_days = {cfg.retention_days}\n")
            + f"durability = {text(cfg.durability)}\n"
            f'max_body_size = "{cfg.max_body_size}B"\nmax_groups = {cfg.max_groups}\n'
            f'batch_id_window = "{cfg.batch_id_window!r}s"\n'
            f'max_future = "{cfg.max_future!r}s"\n'
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
            f"tiers = {json.dumps([[f'{d}s', f'{k}s'] for d, k in sc.tiers])}\n"
            f"timestamp_column = {cols((sc.timestamp_column,))[1:-1]}\n"
            f"dimension_columns = {cols(sc.dimension_columns)}\n"
            f"metric_columns = {cols(sc.metric_columns)}\n\n[auth]\n"
            + "".join(f"{role} = {json.dumps(list(getattr(cfg.auth, role)))}\n"
                      for role in ("read_keys", "write_keys", "admin_keys", "collect_keys"))
            + f"shard_key = {text(cfg.auth.shard_key)}\n\n"
            + collect_toml(cfg.collect, cfg.funnel)
            + f"\n[archive]\nenabled = {_toml_value(cfg.archive.enabled)}\n"
            f"dir = {text(cfg.archive.dir)}\nkeep = \"{cfg.archive.keep!r}s\"\n"
            f'rotate = "{cfg.archive.rotate}B"\n')


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
